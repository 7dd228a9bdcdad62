"""Crafted bad requests sent to a network's proxy, and the status, code and charge each got."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from atoma_lab.client import DEFAULT_MODEL, AtomaLabClient
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.encoding import b64decode, b64encode, dumps, loads
from atoma_lab.errors import AtomaLabError
from atoma_lab.lab.notebook.wire import shorten
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.atoma.messages import NodesCreateLockResponse
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.services.node import CONFIDENTIAL_EMBEDDINGS_PATH, EMBEDDINGS_PATH
from atoma_lab.transport.base import Headers, Request, Response

CONFIDENTIAL_PATH = CONFIDENTIAL_EMBEDDINGS_PATH
PLAIN_PATH = EMBEDDINGS_PATH


def error_of(resp: Response) -> tuple[int, str | None]:
    """``(status, error.code)`` of an answer; the code is ``None`` when there is none."""
    return resp.status, resp.error_code()


def flip_b64(value: str, index: int = 0) -> str:
    """A base64 value with one bit of byte ``index`` flipped (still valid base64)."""
    raw = bytearray(b64decode(value, field="value"))
    raw[index] ^= 0x01
    return b64encode(bytes(raw))


class CaseKit:
    """What a negative case builds its request with: fresh locks, sealed wire bodies, requests
    with or without the network's API key."""

    def __init__(self, net: Any, model: str = DEFAULT_MODEL) -> None:
        self.net = net
        self.model = model
        self.client: AtomaLabClient = net.client()
        self._other_token: str | None = None

    def lock(self) -> NodesCreateLockResponse:
        return self.client.nodes.lock(self.model)

    def sealed(self, plaintext: bytes | None = None, *, model_name: str | None = None,
               node_key: bytes | None = None, lock: NodesCreateLockResponse | None = None,
               ) -> dict[str, Any]:
        """A valid wire body for a fresh lock (or ``lock``), sealed to the node's key."""
        lock = lock or self.lock()
        if plaintext is None:
            plaintext = CreateEmbeddingRequest(input=["negative matrix"], model=self.model).to_json()
        sealed = seal_request(plaintext, node_public_key=node_key or lock.public_key,
                              stack_small_id=lock.stack_small_id,
                              model_name=model_name or self.model)
        return sealed.request.to_dict()

    def other_token(self) -> str:
        """The API key of a second user (made on first use)."""
        if self._other_token is None:
            self._other_token = self.net.add_user("mallory")
        return self._other_token

    def request(self, body: Mapping[str, Any] | bytes, *, token: str | None = "default",
                path: str = CONFIDENTIAL_PATH) -> Request:
        """A POST to the proxy; ``token="default"`` is the network's key, ``None`` sends none."""
        headers = Headers({"content-type": "application/json", "accept": "application/json"})
        if token is not None:
            headers["authorization"] = f"Bearer {self.net.api_key if token == 'default' else token}"
        payload = body if isinstance(body, bytes) else dumps(dict(body))
        return Request("POST", path, headers, payload)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True, slots=True)
class NegativeCase:
    """One bad request: what it is, what it should get, and how to make it."""

    name: str
    status: int
    code: str
    make: Callable[[CaseKit], Request]
    refused_by: str = "proxy"


def _with(**changes: Any) -> Callable[[CaseKit], Request]:
    def make(kit: CaseKit) -> Request:
        d = kit.sealed()
        for name, value in changes.items():
            d[name] = value(d[name]) if callable(value) else value
        return kit.request(d)
    return make


def _without(name: str) -> Callable[[CaseKit], Request]:
    def make(kit: CaseKit) -> Request:
        d = kit.sealed()
        del d[name]
        return kit.request(d)
    return make


def _replayed(kit: CaseKit) -> Request:
    req = kit.request(kit.sealed())
    first = kit.net.send(req)
    if not first.ok:
        raise RuntimeError(f"the request to replay failed: {first.status}")
    return req


def _rotated(kit: CaseKit) -> Request:
    d = kit.sealed()
    kit.net.rotate(0)
    return kit.request(d)


def _bad_plaintext(plaintext: bytes) -> Callable[[CaseKit], Request]:
    return lambda kit: kit.request(kit.sealed(plaintext))


# The replay comes first: it is refused only while the user holds no other open lock on the stack
# (locks are per stack, not per request, in Atoma too), and cases the proxy refuses leave theirs
# open until they expire.
NEGATIVE_CASES: tuple[NegativeCase, ...] = (
    NegativeCase("replay of a served request", 425, "UNAVAILABLE_STACK", _replayed),
    NegativeCase("no API key", 401, "AUTH_ERROR", lambda k: k.request(k.sealed(), token=None)),
    NegativeCase("wrong API key", 401, "AUTH_ERROR",
                 lambda k: k.request(k.sealed(), token="atl-not-a-key")),
    NegativeCase("body is not JSON", 400, "INVALID_JSON", lambda k: k.request(b'{"ciphertext": ')),
    NegativeCase("nonce missing", 400, "MISSING_FIELD", _without("nonce")),
    NegativeCase("salt in unpadded base64", 400, "INVALID_BASE64",
                 _with(salt=lambda v: v.rstrip("="))),
    NegativeCase("nonce of 11 bytes", 400, "INVALID_LENGTH", _with(nonce=b64encode(bytes(11)))),
    NegativeCase("stack_small_id as a string", 400, "INVALID_FIELD",
                 _with(stack_small_id=lambda v: str(v))),
    NegativeCase("unknown stack", 404, "STACK_NOT_FOUND", _with(stack_small_id=987654)),
    NegativeCase("another user's stack", 403, "FORBIDDEN",
                 lambda k: k.request(k.sealed(), token=k.other_token())),
    NegativeCase("ciphertext: one bit flipped", 400, "DECRYPTION_FAILED",
                 _with(ciphertext=flip_b64), "node"),
    NegativeCase("ciphertext: last byte cut", 400, "DECRYPTION_FAILED",
                 _with(ciphertext=lambda v: b64encode(b64decode(v, field="c")[:-1])), "node"),
    NegativeCase("salt: one bit flipped", 400, "DECRYPTION_FAILED", _with(salt=flip_b64), "node"),
    NegativeCase("plaintext_body_hash of other bytes", 400, "HASH_MISMATCH",
                 _with(plaintext_body_hash=b64encode(blake2b_256(b"other bytes"))), "node"),
    NegativeCase("model_name changed in clear", 400, "MODEL_MISMATCH",
                 _with(model_name="some/other-model"), "node"),
    NegativeCase("client key of low order (all zeros)", 400, "INVALID_PUBLIC_KEY",
                 _with(client_dh_public_key=b64encode(bytes(32))), "node"),
    NegativeCase("sealed to a key that is not the node's", 409, "STALE_NODE_KEY",
                 _with(node_dh_public_key=lambda v: b64encode(X25519KeyPair.generate().public_bytes)),
                 "node"),
    NegativeCase("sealed plaintext is not JSON", 400, "INVALID_JSON",
                 _bad_plaintext(b"not json at all"), "node"),
    NegativeCase("sealed request has an empty input list", 400, "INVALID_FIELD",
                 lambda k: k.request(k.sealed(dumps({"input": [], "model": k.model}))), "node"),
    NegativeCase("plain route, unknown model", 404, "MODEL_NOT_FOUND",
                 lambda k: k.request({"input": "x", "model": "no/such-model"}, path=PLAIN_PATH)),
    NegativeCase("sealed to a key rotated out since", 409, "STALE_NODE_KEY", _rotated, "node"),
)


def negative_matrix(net: Any, *, model: str = DEFAULT_MODEL,
                    cases: Sequence[NegativeCase] = NEGATIVE_CASES) -> list[dict[str, Any]]:
    """Send each case's request to the proxy (``net.send``) and report what it got.

    Rows: ``case``, ``refused by``, ``status``, ``code``, ``expected``, ``as expected``,
    ``units charged`` (by this request; a refused one must be 0) and the error ``message``.
    The default cases add a second user and rotate node 1's key (last); the first, a replay,
    expects that the user holds no open lock yet.
    """
    kit = CaseKit(net, model)
    rows = []
    try:
        for case in cases:
            req = case.make(kit)
            charged_before = sum(int(r["units_charged"]) for r in net.ledger.settlements())
            resp = net.send(req)
            status, code = error_of(resp)
            charged = sum(int(r["units_charged"]) for r in net.ledger.settlements()) - charged_before
            try:
                message = str(loads(resp.body)["error"]["message"])
            except (AtomaLabError, KeyError, TypeError):
                message = ""
            rows.append({
                "case": case.name,
                "refused by": case.refused_by,
                "status": status,
                "code": code,
                "expected": f"{case.status} {case.code}",
                "as expected": (status, code) == (case.status, case.code),
                "units charged": charged,
                "message": shorten(message, 70),
            })
    finally:
        kit.close()
    return rows
