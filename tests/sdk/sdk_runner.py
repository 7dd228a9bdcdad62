"""Run the official atoma-sdk in its own interpreter and talk to it (see ``sdk_client.py``).

The SDK pins ``pydantic<2.11`` and ``httpx<0.29``, which clash with atoma-lab's, so it lives in a
venv of its own and is never imported here. Its interpreter is ``$ATOMA_LAB_SDK_PYTHON``, else
``<repo>/.venv-sdk/bin/python``; when that default is missing, :func:`ensure_sdk_python` creates
the venv (``python -m venv`` + ``pip install -r tests/sdk_requirements.txt``), like
``make sdk-setup``.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster import pump_lines

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("sdk_client.py")
REQUIREMENTS = REPO / "tests" / "sdk_requirements.txt"
DEFAULT_VENV = REPO / ".venv-sdk"
SDK_VERSION = "0.1.3"  # what tests/sdk_requirements.txt pins
REPLY_TIMEOUT_S = 120.0  # generous: a cold start imports pydantic and the whole SDK
SETUP_TIMEOUT_S = 900.0


class SdkProcessError(RuntimeError):
    """The SDK process failed, died or did not answer in time."""


def ensure_sdk_python() -> Path:
    """The SDK venv's interpreter, creating the default venv when it is missing."""
    configured = os.environ.get("ATOMA_LAB_SDK_PYTHON")
    if configured:
        python = Path(configured)
        if not python.exists():
            raise SdkProcessError(f"ATOMA_LAB_SDK_PYTHON={configured} does not exist")
        return python
    python = DEFAULT_VENV / "bin" / "python"
    if python.exists():
        return python
    steps = [
        [sys.executable, "-m", "venv", str(DEFAULT_VENV)],
        [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=SETUP_TIMEOUT_S,
                              check=False)
        if done.returncode != 0:
            raise SdkProcessError(
                f"creating the SDK venv failed at {' '.join(step[:4])}:\n{done.stderr[-4000:]}"
            )
    return python


class SdkClient:
    """One long-lived SDK process; line-delimited JSON both ways."""

    def __init__(self, python: Path) -> None:
        env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            [str(python), str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        pump_lines(self._proc.stdout, into=self._lines)
        pump_lines(self._proc.stderr, keep=self._stderr)

    # -- plumbing ---------------------------------------------------------------------------------

    def _fail(self, why: str) -> SdkProcessError:
        tail = "".join(self._stderr)[-4000:]
        return SdkProcessError(f"{why}\n--- SDK process stderr ---\n{tail}")

    def _send(self, obj: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(obj, ensure_ascii=False) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError as exc:
            raise self._fail("the SDK process is gone") from exc

    def _recv(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=REPLY_TIMEOUT_S)
        except queue.Empty:
            raise self._fail(f"no answer within {REPLY_TIMEOUT_S} s") from None
        if line is None:
            raise self._fail(f"the SDK process exited (code {self._proc.poll()})")
        return json.loads(line)

    def _reply(self, msg: dict[str, Any]) -> dict[str, Any]:
        if "failure" in msg:
            raise self._fail(f"the SDK side raised:\n{msg['failure']}")
        if "reply" not in msg:
            raise self._fail(f"unexpected message from the SDK process: {sorted(msg)}")
        return msg["reply"]

    def call(self, cmd: str, **kwargs: Any) -> dict[str, Any]:
        self._send({"cmd": cmd, **kwargs})
        return self._reply(self._recv())

    # -- commands ---------------------------------------------------------------------------------

    def version(self) -> str:
        return self.call("version")["atoma_sdk"]

    def dump_requests(self, requests: list[dict[str, Any]]) -> list[bytes]:
        """The SDK's ``CreateEmbeddingRequest(**kw).model_dump_json()`` bytes for each kwargs."""
        return [p.encode("utf-8") for p in self.call("dump", requests=requests)["plaintexts"]]

    def encrypt(self, lock_response: bytes, request: dict[str, Any], model: str) -> dict[str, Any]:
        """``crypto_utils.encrypt_message`` with ``lock_response`` as the lock call's answer.

        Returns ``handle`` (for :meth:`decrypt`), ``wire`` (the request body as the SDK sends
        it), ``plaintext`` (``model_dump_json()``) and ``lock_calls`` (models it locked for).
        """
        return self.call("encrypt", lock_response=lock_response.decode("utf-8"),
                         request=request, model=model)

    def decrypt(self, handle: int, response: bytes) -> dict[str, Any]:
        """``crypto_utils.decrypt_message`` on the SDK side; ``ok`` False with ``error`` if it
        refused, else ``plaintext`` and the parsed ``embeddings``, ``usage``, ``model``."""
        return self.call("decrypt", handle=handle, response=response.decode("utf-8"))

    def create(
        self,
        request: dict[str, Any],
        on_http: Callable[[dict[str, Any]], tuple[int, bytes]],
        *,
        token: str = "test-token",
        server_url: str = "http://proxy.invalid",
    ) -> dict[str, Any]:
        """``AtomaSDK(...).confidential_embeddings.create(**request)`` over a mocked transport;
        ``on_http(event) -> (status, body)`` answers each HTTP request the SDK makes."""
        self._send({"cmd": "create", "request": request, "token": token,
                    "server_url": server_url})
        while True:
            msg = self._recv()
            if msg.get("event") != "http":
                return self._reply(msg)
            status, body = on_http(msg)
            self._send({"status": status, "body": body.decode("utf-8")})

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._send({"cmd": "quit"})
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (SdkProcessError, OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> SdkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
