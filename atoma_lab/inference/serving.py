"""OpenAI ``/v1/embeddings`` on top of an engine or a dynamic batcher.

Response bytes are written without per-float Python work: float vectors go to orjson as float32
numpy rows (``OPT_SERIALIZE_NUMPY``), base64 vectors are the rows' little-endian float32 bytes
(what openai-python decodes with ``np.frombuffer(..., dtype="float32")``). Keys come in OpenAI's
order: ``{"object":"list","data":[{"object":"embedding","embedding":...,"index":i}],
"model":...,"usage":{"prompt_tokens":N,"total_tokens":N}}``.

``prompt_tokens`` is the number of tokens the model processed (special tokens included, after
truncation), counted by the model's own tokenizer; embeddings have no completion, so
``total_tokens`` equals it.
"""

from __future__ import annotations

import binascii
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from atoma_lab.errors import InvalidFieldError, ModelNotFoundError, quoted
from atoma_lab.inference.batching import DynamicBatcher
from atoma_lab.inference.engine import Embedder, EmbeddingEngine, EmbeddingResult
from atoma_lab.protocol.openai import (
    MAX_REQUEST_CHARS,
    CreateEmbeddingRequest,
    EmbeddingUsage,
    check_input_chars,
)

EncodingFormat = Literal["float", "base64"]
# A node refuses text far longer than its model reads, before tokenising: the tokeniser reads all
# of an input even when it keeps only max_seq_length tokens. A token rarely spans more than a
# few characters, so 64 per token is generous (16,384 characters for a 256-token model).
MAX_CHARS_PER_TOKEN = 64
NODE_MAX_REQUEST_CHARS = 1 << 22  # characters of text per request at a node (4 Mi)


def _b64_row(row: np.ndarray) -> str:
    return binascii.b2a_base64(np.ascontiguousarray(row, dtype="<f4").tobytes(),
                               newline=False).decode("ascii")


def encode_embeddings_response(vectors: np.ndarray, *, model: str, prompt_tokens: int,
                               encoding_format: EncodingFormat | None = "float",
                               total_tokens: int | None = None) -> bytes:
    """OpenAI embeddings response JSON for ``vectors`` (``(n, d)``, any float dtype)."""
    if vectors.ndim != 2:
        raise ValueError("vectors must be a 2-D array")
    fmt = encoding_format or "float"
    if fmt == "float":
        rows: Any = np.ascontiguousarray(vectors, dtype=np.float32)
    elif fmt == "base64":
        rows = [_b64_row(v) for v in vectors]
    else:
        raise InvalidFieldError("encoding_format: must be 'float' or 'base64'",
                                field="encoding_format")
    body = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": row, "index": i}
                 for i, row in enumerate(rows)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens,
                  "total_tokens": prompt_tokens if total_tokens is None else total_tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _check_model(embedder: Embedder, request: CreateEmbeddingRequest,
                 served_names: Sequence[str] | None) -> None:
    names = tuple(served_names) if served_names else (embedder.model_name,)
    if request.model not in names:
        raise ModelNotFoundError(f"model {quoted(request.model)} is not served here; "
                                 f"this engine serves {list(names)}")


def _finish(request: CreateEmbeddingRequest, result: EmbeddingResult,
            ) -> tuple[bytes, EmbeddingUsage]:
    n = result.prompt_tokens
    body = encode_embeddings_response(result.vectors, model=request.model, prompt_tokens=n,
                                      encoding_format=request.encoding_format)
    return body, EmbeddingUsage(prompt_tokens=n, total_tokens=n)


def _inputs(request: CreateEmbeddingRequest) -> list[str] | list[list[int]]:
    inputs = request.inputs()
    if not inputs:
        raise InvalidFieldError("input: must not be an empty list", field="input")
    return inputs


def embed_request(embedder: Embedder, request: CreateEmbeddingRequest, *,
                  truncate: bool | None = None,
                  served_names: Sequence[str] | None = None) -> tuple[bytes, EmbeddingUsage]:
    """Answer ``request`` with ``embedder`` (an engine or a :class:`DynamicBatcher`).

    Returns the response JSON bytes and the usage they contain. ``request.model`` must be
    ``embedder.model_name`` or one of ``served_names`` (else :class:`ModelNotFoundError`);
    the response names the model as the request did.
    """
    _check_model(embedder, request, served_names)
    result = embedder.embed(_inputs(request), dimensions=request.dimensions, truncate=truncate)
    return _finish(request, result)


async def aembed_request(batcher: DynamicBatcher, request: CreateEmbeddingRequest, *,
                         truncate: bool | None = None,
                         served_names: Sequence[str] | None = None,
                         max_tokens: int | None = None, flow: Hashable = None,
                         ) -> tuple[bytes, EmbeddingUsage]:
    """:func:`embed_request` through a dynamic batcher, awaited (merges concurrent requests);
    ``max_tokens`` and ``flow`` as :meth:`DynamicBatcher.submit` takes them."""
    _check_model(batcher, request, served_names)
    result = await batcher.aembed(_inputs(request), dimensions=request.dimensions,
                                  truncate=truncate, max_tokens=max_tokens, flow=flow)
    return _finish(request, result)


@dataclass(frozen=True, slots=True)
class EmbedResponse:
    """OpenAI response bytes and the usage in them (what a node's embedder returns)."""

    body: bytes
    usage: EmbeddingUsage


class NodeEmbedder:
    """An engine behind a dynamic batcher, shaped for a node: ``models`` and ``async embed``.

    ``models`` are the served names (the engine's own first, then ``aliases``). Before anything
    is tokenised, a text input longer than ``max_chars_per_token`` times the model's
    ``max_seq_length`` characters, or requests with more than ``max_request_chars`` characters
    in all, are 400 ``INPUT_TOO_LONG`` naming the input. ``embed``'s ``max_tokens`` (the units
    the request may use) is checked right after tokenising, before the model runs (413
    ``COMPUTE_UNITS_EXCEEDED``), and its ``flow`` (the node's stack) keeps the batcher fair
    between callers.
    """

    def __init__(self, engine: EmbeddingEngine, *, aliases: Sequence[str] = (),
                 batcher: DynamicBatcher | None = None, truncate: bool | None = None,
                 max_chars_per_token: int = MAX_CHARS_PER_TOKEN,
                 max_request_chars: int = NODE_MAX_REQUEST_CHARS) -> None:
        if max_chars_per_token < 1 or not 1 <= max_request_chars <= MAX_REQUEST_CHARS:
            raise ValueError("max_chars_per_token must be at least 1, max_request_chars "
                             f"between 1 and {MAX_REQUEST_CHARS}")
        self.engine = engine
        self.batcher = batcher or DynamicBatcher(engine)
        self.truncate = truncate
        self.max_input_chars = max_chars_per_token * engine.max_seq_length
        self.max_request_chars = max_request_chars
        names = [engine.model_name, *aliases]
        self._models = tuple(dict.fromkeys(names))

    @property
    def models(self) -> Sequence[str]:
        return self._models

    def check_lengths(self, request: CreateEmbeddingRequest) -> None:
        """Refuse over-long text before it reaches the tokeniser (see the class docstring)."""
        check_input_chars(request.input, max_input_chars=self.max_input_chars,
                          max_request_chars=self.max_request_chars)

    async def embed(self, request: CreateEmbeddingRequest, *, max_tokens: int | None = None,
                    flow: Hashable = None) -> EmbedResponse:
        self.check_lengths(request)
        body, usage = await aembed_request(self.batcher, request, truncate=self.truncate,
                                           served_names=self._models, max_tokens=max_tokens,
                                           flow=flow)
        return EmbedResponse(body=body, usage=usage)

    def embed_sync(self, request: CreateEmbeddingRequest) -> EmbedResponse:
        self.check_lengths(request)
        body, usage = embed_request(self.batcher, request, truncate=self.truncate,
                                    served_names=self._models)
        return EmbedResponse(body=body, usage=usage)

    def close(self) -> None:
        self.batcher.close()
        self.engine.close()


__all__ = [
    "MAX_CHARS_PER_TOKEN",
    "NODE_MAX_REQUEST_CHARS",
    "EmbedResponse",
    "EncodingFormat",
    "NodeEmbedder",
    "aembed_request",
    "embed_request",
    "encode_embeddings_response",
]
