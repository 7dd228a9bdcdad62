"""The official Atoma Python client, driven over JSON lines. Runs in the SDK's own venv.

This file is executed by the interpreter of ``.venv-sdk`` (``atoma-sdk==0.1.3``), never imported
by atoma-lab's tests: the SDK pins pydantic and httpx versions that clash with atoma-lab's.
``tests/sdk/sdk_runner.py`` starts it and talks to it:

* requests arrive on stdin, one JSON object per line: ``{"cmd": ..., ...}``;
* answers leave on stdout, one JSON object per line: ``{"reply": ...}``, or, while an SDK call is
  in flight, ``{"event": "http", ...}`` for each HTTP request the SDK makes, which the test side
  answers with one ``{"status": ..., "body": ...}`` line;
* anything else the SDK prints goes to stderr.

The SDK's ephemeral X25519 private keys never leave this process: ``encrypt`` keeps them under a
handle and ``decrypt`` uses them there.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import traceback
from types import SimpleNamespace
from typing import Any

_PROTOCOL_OUT = sys.stdout
sys.stdout = sys.stderr  # keep stray prints off the protocol channel

import httpx  # noqa: E402
from atoma_sdk import AtomaSDK, crypto_utils, models, utils  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

# handle -> (client private key, node public key, salt), as confidential_embeddings.create keeps.
_SESSIONS: dict[int, tuple[Any, Any, bytes]] = {}


def send(obj: dict[str, Any]) -> None:
    _PROTOCOL_OUT.write(json.dumps(obj, ensure_ascii=False) + "\n")
    _PROTOCOL_OUT.flush()


def recv() -> dict[str, Any] | None:
    line = sys.stdin.readline()
    return json.loads(line) if line else None


class LockAnsweringNodes:
    """Stands in for ``atoma_sdk.nodes.Nodes`` inside ``crypto_utils.encrypt_message``.

    Its ``nodes_create_lock`` parses the lock response JSON the test side sent with the SDK's own
    ``NodesCreateLockResponse`` model, as the real call would.
    """

    lock_json = ""
    calls: list[str] = []  # noqa: RUF012

    def __init__(self, sdk_configuration: object) -> None:
        self.sdk_configuration = sdk_configuration

    def nodes_create_lock(self, *, model: str, **_: Any) -> Any:
        type(self).calls.append(model)
        return utils.unmarshal_json(type(self).lock_json, models.NodesCreateLockResponse)


def _embeddings(response: Any) -> dict[str, Any]:
    return {
        "model": response.model,
        "object": response.object,
        "usage": response.usage.model_dump(mode="json"),
        "indices": [item.index for item in response.data],
        "embeddings": [item.embedding for item in response.data],
    }


def cmd_version(msg: dict[str, Any]) -> dict[str, Any]:
    return {"atoma_sdk": importlib.metadata.version("atoma-sdk"), "python": sys.version}


def cmd_dump(msg: dict[str, Any]) -> dict[str, Any]:
    """``CreateEmbeddingRequest(**kwargs).model_dump_json()`` for each kwargs: the plaintext."""
    return {"plaintexts": [models.CreateEmbeddingRequest(**kw).model_dump_json()
                           for kw in msg["requests"]]}


def cmd_encrypt(msg: dict[str, Any]) -> dict[str, Any]:
    """``crypto_utils.encrypt_message`` with the lock answered by the test side's node key."""
    LockAnsweringNodes.lock_json = msg["lock_response"]
    LockAnsweringNodes.calls = []
    body = models.CreateEmbeddingRequest(**msg["request"])
    client_key = X25519PrivateKey.generate()
    real_nodes = crypto_utils.Nodes
    crypto_utils.Nodes = LockAnsweringNodes
    try:
        node_key, salt, request = crypto_utils.encrypt_message(
            sdk=SimpleNamespace(sdk_configuration=None),
            client_dh_private_key=client_key,
            request_body=body,
            model=msg["model"],
        )
    finally:
        crypto_utils.Nodes = real_nodes
    # The exact body confidential_embeddings.create puts on the wire.
    wire = utils.serialize_request_body(
        request, False, False, "json", models.ConfidentialComputeRequest
    ).content
    handle = len(_SESSIONS)
    _SESSIONS[handle] = (client_key, node_key, salt)
    return {
        "handle": handle,
        "wire": wire,
        "plaintext": body.model_dump_json(),
        "lock_calls": LockAnsweringNodes.calls,
    }


def cmd_decrypt(msg: dict[str, Any]) -> dict[str, Any]:
    """``crypto_utils.decrypt_message`` (hash checked when present), then the SDK's parse."""
    client_key, node_key, salt = _SESSIONS[msg["handle"]]
    response = utils.unmarshal_json(msg["response"], models.ConfidentialComputeResponse)
    try:
        plaintext = crypto_utils.decrypt_message(client_key, node_key, salt, response)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    parsed = utils.unmarshal_json(plaintext.decode("utf-8"), models.CreateEmbeddingResponse)
    return {"ok": True, "plaintext": plaintext.decode("utf-8"), **_embeddings(parsed)}


def cmd_create(msg: dict[str, Any]) -> dict[str, Any]:
    """The whole ``client.confidential_embeddings.create(...)`` over a mocked httpx transport."""

    def handler(request: httpx.Request) -> httpx.Response:
        send({
            "event": "http",
            "method": request.method,
            "path": request.url.path,
            "authorization": request.headers.get("authorization"),
            "content_type": request.headers.get("content-type"),
            "body": request.content.decode("utf-8"),
        })
        answer = recv()
        if answer is None:
            raise RuntimeError("test side closed the pipe")
        return httpx.Response(answer["status"], content=answer["body"].encode("utf-8"),
                              headers={"content-type": "application/json"})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    sdk = AtomaSDK(bearer_auth=msg["token"], client=client, server_url=msg["server_url"])
    try:
        result = sdk.confidential_embeddings.create(**msg["request"])
    except models.APIError as exc:
        return {"ok": False, "error": exc.message, "status_code": exc.status_code}
    return {"ok": True, **_embeddings(result)}


COMMANDS = {
    "version": cmd_version,
    "dump": cmd_dump,
    "encrypt": cmd_encrypt,
    "decrypt": cmd_decrypt,
    "create": cmd_create,
}


def main() -> None:
    while (msg := recv()) is not None:
        if msg.get("cmd") == "quit":
            break
        try:
            reply = {"reply": COMMANDS[msg["cmd"]](msg)}
        except Exception:  # report anything to the test side, which fails with it
            reply = {"failure": traceback.format_exc()}
        send(reply)


if __name__ == "__main__":
    main()
