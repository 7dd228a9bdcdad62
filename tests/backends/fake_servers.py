"""Small fake embedding servers for the RemoteEmbedder tests: the OpenAI API (as vLLM serves it,
under ``/v1``) and TEI's native ``/embed``, ``/tokenize`` and ``/info``, as Starlette apps on
127.0.0.1 (port 0) through :class:`~atoma_lab.server.ServerGroup`.

Each input's vector is :data:`DIM` floats from BLAKE2b of the input, L2-normalised; its token
count is its word count (or token-id count) plus two special tokens. An input of more than
:data:`MAX_WORDS` words is refused the way each server refuses an over-long input, with an error
body that quotes the input (as FastAPI's validation errors do). ``state.mode`` switches the
server into a failure: ``"hang"``, ``"garbage"``, ``"wrong_count"``, ``"nan"``, ``"reversed"``
(valid, data in reverse index order), ``"no_tokens_header"`` (TEI) or ``"status:NNN"``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from atoma_lab.server import ServerGroup

DIM = 24  # floats per fake vector
MAX_WORDS = 50  # longer inputs are refused as too long
HANG_LIMIT_S = 10.0  # a hanging handler gives up after this, or as soon as the mode changes


def fake_vector(item: str | list[int]) -> np.ndarray:
    digest = hashlib.blake2b(repr(item).encode("utf-8"), digest_size=DIM).digest()
    vec = np.frombuffer(digest, dtype=np.uint8).astype(np.float32) - np.float32(127.5)
    return (vec / np.linalg.norm(vec)).astype(np.float32)


def fake_tokens(item: str | list[int]) -> int:
    return (len(item.split()) if isinstance(item, str) else len(item)) + 2


def too_long(item: str | list[int]) -> bool:
    return fake_tokens(item) - 2 > MAX_WORDS


@dataclass
class FakeState:
    mode: str = "ok"
    calls: list[tuple[str, Any]] = field(default_factory=list)  # (path, parsed body)
    authorization: list[str | None] = field(default_factory=list)  # each call's header

    def status(self) -> int | None:
        return int(self.mode.split(":")[1]) if self.mode.startswith("status:") else None


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


async def _hang(state: FakeState) -> None:
    deadline = time.monotonic() + HANG_LIMIT_S
    while state.mode == "hang" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _common_failure(state: FakeState) -> Response | None:
    if state.mode == "hang":
        await _hang(state)
        return Response(b"", 503)
    if state.mode == "garbage":
        return Response(b'{"object": "list", "data": [', 200, media_type="application/json")
    status = state.status()
    if status is not None:
        return _json({"error": "the fake was told to fail", "error_type": "backend"}, status)
    return None


def _items(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [value]
    return list(value)


# ---------------------------------------------------------------------------------- OpenAI API


def openai_app(state: FakeState, *, model: str) -> Starlette:
    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.calls.append(("/v1/embeddings", body))
        state.authorization.append(request.headers.get("authorization"))
        if (failed := await _common_failure(state)) is not None:
            return failed
        if body.get("model") != model:
            return _json({"object": "error", "message": f"The model `{body.get('model')}` does "
                          "not exist.", "type": "NotFoundError", "param": None, "code": 404}, 404)
        items = _items(body["input"])
        for item in items:
            if too_long(item):
                return _json({"object": "error", "message": (
                    f"This model's maximum context length is {MAX_WORDS + 2} tokens. However, "
                    f"you requested {fake_tokens(item)} tokens in the input {item!r}. Please "
                    "reduce the length of the input."), "type": "BadRequestError",
                    "param": None, "code": 400}, 400)
        vectors = [fake_vector(x) for x in items]
        if state.mode == "wrong_count":
            vectors = vectors[:-1] if len(vectors) > 1 else vectors * 2
        if state.mode == "nan":
            vectors[0] = vectors[0].copy()
            vectors[0][3] = np.nan
        b64 = body.get("encoding_format") == "base64"
        data = [{"object": "embedding",
                 "embedding": (base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") if b64
                               else [float(x) for x in v]),
                 "index": i} for i, v in enumerate(vectors)]
        if state.mode == "reversed":
            data.reverse()
        n = sum(fake_tokens(x) for x in items)
        return _json({"id": "fake-1", "object": "list", "created": 1, "model": model,
                      "data": data, "usage": {"prompt_tokens": n, "total_tokens": n}})

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


# ---------------------------------------------------------------------------------- TEI native


def tei_app(state: FakeState, *, max_input_length: int = MAX_WORDS + 2) -> Starlette:
    async def embed(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.calls.append(("/embed", body))
        if (failed := await _common_failure(state)) is not None:
            return failed
        items = _items(body["inputs"])
        if len(items) > 32:
            return _json({"error": f"batch size {len(items)} > maximum allowed batch size 32",
                          "error_type": "Validation"}, 413)
        for item in items:
            if too_long(item) and not body.get("truncate"):
                return _json({"error": f"Input validation error: `inputs` must have less than "
                              f"{max_input_length} tokens. Given: {fake_tokens(item)} ({item!r})",
                              "error_type": "Validation"}, 413)
        vectors: list[list[float]] = [[float(x) for x in fake_vector(x)] for x in items]
        if state.mode == "wrong_count":
            vectors = vectors[:-1] if len(vectors) > 1 else vectors * 2
        if state.mode == "nan":
            vectors[0][3] = 1e39  # finite in JSON, infinite as float32
        counts = [min(fake_tokens(x), max_input_length) for x in items]
        headers = {} if state.mode == "no_tokens_header" else {"x-compute-tokens": str(sum(counts))}
        return _json(vectors, headers=headers)

    async def tokenize(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.calls.append(("/tokenize", body))
        out = []
        for item in _items(body["inputs"]):
            n = fake_tokens(item)
            out.append([{"id": 100 + j, "text": "t", "special": j in (0, n - 1), "start": None,
                         "stop": None} for j in range(n)])
        return _json(out)

    async def info(request: Request) -> Response:
        state.calls.append(("/info", None))
        return _json({"model_id": "fake", "max_input_length": max_input_length,
                      "max_client_batch_size": 32})

    return Starlette(routes=[Route("/embed", embed, methods=["POST"]),
                             Route("/tokenize", tokenize, methods=["POST"]),
                             Route("/info", info, methods=["GET"])])


# ---------------------------------------------------------------------------------- running


class FakeBackend:
    """One fake server on 127.0.0.1; ``url`` is what a RemoteEmbedder is given."""

    def __init__(self, api: str, *, model: str, port: int = 0) -> None:
        self.api = api
        self.state = FakeState()
        app = openai_app(self.state, model=model) if api == "openai" else tei_app(self.state)
        self._group = ServerGroup([(app, "127.0.0.1", port)])
        root = self._group.start()[0]
        self.port = int(root.rsplit(":", 1)[1])
        self.url = root + "/v1" if api == "openai" else root

    def calls(self, path: str) -> list[Any]:
        return [body for p, body in self.state.calls if p == path]

    def stop(self) -> None:
        self.state.mode = "ok"  # releases hanging handlers
        self._group.stop()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
