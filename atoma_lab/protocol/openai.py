"""OpenAI embeddings request and response, as Atoma's SDKs and services exchange them.

``CreateEmbeddingRequest`` accepts what the OpenAI API accepts for ``input``: a string, a list of
strings, a list of token ids, or a list of lists of token ids (at most 2048 inputs). Parsing is
strict and names the offending field; unknown keys are ignored, as serde does (Atoma's proxy even
injects ``max_completion_tokens`` into embeddings bodies). Each model is declared once
(:mod:`atoma_lab.protocol.wire`), its fields in the order OpenAI's and Atoma's SDKs write them.

Text is bounded before anyone tokenises it: at most :data:`MAX_INPUT_CHARS` characters per input
and :data:`MAX_REQUEST_CHARS` per request, everywhere (400 ``INPUT_TOO_LONG`` naming the input);
a node's engine bounds it further by its model's maximum sequence length
(:func:`check_input_chars`).
"""

from __future__ import annotations

from typing import Any, Literal, Self

import numpy as np

from atoma_lab.crypto.hashing import HASH_SIZE
from atoma_lab.encoding import b64decode, require_int
from atoma_lab.errors import InputTooLongError, InvalidFieldError, PeerProtocolError
from atoma_lab.protocol.wire import (
    U32_MAX,
    Base64Text,
    Bytes,
    Choice,
    Kind,
    ListOf,
    Nested,
    Ref,
    Text,
    UInt,
    WireModel,
    b64_pattern,
    wire,
)

MAX_INPUTS = 2048  # OpenAI's limit on the number of inputs in one request
# The hard caps on text, whatever the model: no embedding model reads a million characters (a
# token covers at least one), and a request's text fits the 64 MiB body limit.
MAX_INPUT_CHARS = 1 << 20  # characters per text input
MAX_REQUEST_CHARS = 1 << 24  # characters of text per request
MAX_TOKEN_ID = U32_MAX
EncodingFormat = Literal["float", "base64"]
EmbeddingInput = str | list[str] | list[int] | list[list[int]]


def check_input_chars(inputs: str | list[str] | list[int] | list[list[int]], *,
                      max_input_chars: int = MAX_INPUT_CHARS,
                      max_request_chars: int = MAX_REQUEST_CHARS) -> None:
    """Refuse text inputs longer than ``max_input_chars`` characters each or
    ``max_request_chars`` together (400 ``INPUT_TOO_LONG`` naming the input), before any
    tokeniser reads them. Token-id inputs pass (their length is their cost)."""
    if isinstance(inputs, str):
        if len(inputs) > max_input_chars:
            raise InputTooLongError(f"input: {len(inputs)} characters; at most "
                                    f"{max_input_chars} per input", field="input")
        return
    total = 0
    for i, item in enumerate(inputs):
        if not isinstance(item, str):
            return  # token ids (the parser allows no mix)
        if len(item) > max_input_chars:
            raise InputTooLongError(f"input[{i}]: {len(item)} characters; at most "
                                    f"{max_input_chars} per input", field=f"input[{i}]")
        total += len(item)
    if total > max_request_chars:
        raise InputTooLongError(f"input: {total} characters in all; at most {max_request_chars} "
                                "per request", field="input")


def _parse_input(value: object) -> EmbeddingInput:
    if isinstance(value, str):
        check_input_chars(value)
        return value
    if not isinstance(value, list):
        raise InvalidFieldError(
            "input: expected a string, a list of strings, a list of token ids or a list of "
            "lists of token ids",
            field="input",
        )
    if not value:
        raise InvalidFieldError("input: must not be an empty list", field="input")
    first = value[0]
    if isinstance(first, str):
        if len(value) > MAX_INPUTS:
            raise InvalidFieldError(
                f"input: at most {MAX_INPUTS} inputs, got {len(value)}", field="input"
            )
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise InvalidFieldError(f"input[{i}]: expected a string", field=f"input[{i}]")
        check_input_chars(value)
        return list(value)
    if isinstance(first, int) and not isinstance(first, bool):
        return [require_int(t, field=f"input[{i}]", maximum=MAX_TOKEN_ID) for i, t in enumerate(value)]
    if isinstance(first, list):
        if len(value) > MAX_INPUTS:
            raise InvalidFieldError(
                f"input: at most {MAX_INPUTS} inputs, got {len(value)}", field="input"
            )
        out: list[list[int]] = []
        for i, item in enumerate(value):
            if not isinstance(item, list) or not item:
                raise InvalidFieldError(
                    f"input[{i}]: expected a non-empty list of token ids", field=f"input[{i}]"
                )
            out.append(
                [require_int(t, field=f"input[{i}][{j}]", maximum=MAX_TOKEN_ID) for j, t in enumerate(item)]
            )
        return out
    raise InvalidFieldError("input[0]: expected a string, a token id or a list of token ids",
                            field="input[0]")


class EmbeddingInputKind(Kind):
    """``input``: a string, strings, token ids or lists of token ids (normalised to lists)."""

    def check(self, value: Any, field: str) -> EmbeddingInput:
        return _parse_input(value)

    decode = check

    def schema(self, ref: Ref) -> dict[str, Any]:
        token_ids = {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                "maximum": MAX_TOKEN_ID}, "minItems": 1}
        text = {"type": "string", "maxLength": MAX_INPUT_CHARS}
        return {"anyOf": [
            text,
            {"type": "array", "items": text, "minItems": 1, "maxItems": MAX_INPUTS},
            token_ids,
            {"type": "array", "items": token_ids, "minItems": 1, "maxItems": MAX_INPUTS},
        ]}


class CreateEmbeddingRequest(WireModel, root="body", what="embeddings request",
                             null_is_missing=False):
    """An OpenAI ``POST /v1/embeddings`` body (keys in the Python SDK's order: input, model, then
    the optional ones that are set)."""

    input: EmbeddingInput = wire(EmbeddingInputKind())
    model: str = wire(Text(nonempty=True))
    dimensions: int | None = wire(UInt(1, U32_MAX), default=None, kw_only=True)
    encoding_format: EncodingFormat | None = wire(Choice("float", "base64"), default=None,
                                                  kw_only=True)
    user: str | None = wire(Text(), default=None, kw_only=True)

    @property
    def is_tokens(self) -> bool:
        """Whether the inputs are token ids rather than text."""
        inp = self.input
        return isinstance(inp, list) and bool(inp) and not isinstance(inp[0], str)

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list: a single string or a single token list becomes a list of one."""
        inp = self.input
        if isinstance(inp, str):
            return [inp]
        if inp and isinstance(inp[0], int):
            return [inp]
        return inp  # type: ignore[return-value]


class EmbeddingUsage(WireModel, root="usage", what="usage", null_is_missing=False):
    """``usage`` of an embeddings response (no completion tokens for embeddings)."""

    prompt_tokens: int = wire(UInt())
    total_tokens: int = wire(UInt())


def _float_vector(items: list[Any]) -> np.ndarray | None:
    """A JSON list of numbers as float32, checked in C rather than per float in Python;
    ``None`` if it holds anything else (strings, booleans, nested lists, nulls)."""
    if not set(map(type, items)) <= {float, int}:  # bool is its own type, so it is refused
        return None
    return np.array(items, dtype=np.float32)


class Float32Vector(Kind):
    """One embedding: a float32 numpy vector in Python; on the wire a list of numbers or, with
    ``encoding_format="base64"``, base64 of its little-endian float32 bytes."""

    def check(self, value: Any, field: str) -> np.ndarray:
        if not isinstance(value, np.ndarray) or value.ndim != 1:
            raise TypeError(f"{field} must be a 1-D numpy array")
        return value

    def decode(self, value: Any, field: str) -> np.ndarray:
        if isinstance(value, str):
            buf = b64decode(value, field=field)
            if len(buf) % 4:
                raise InvalidFieldError(f"{field}: not float32 data", field=field)
            return np.frombuffer(buf, dtype="<f4").astype(np.float32)
        if isinstance(value, list) and (floats := _float_vector(value)) is not None:
            return floats
        raise InvalidFieldError(f"{field}: expected floats or base64", field=field)

    def schema(self, ref: Ref) -> dict[str, Any]:
        return {"anyOf": [
            {"type": "array", "items": {"type": "number"}},
            {"type": "string", "contentEncoding": "base64", "pattern": b64_pattern(),
             "description": "little-endian float32 values"},
        ]}


class Embedding(WireModel, root="embedding", what="embedding", null_is_missing=False):
    """One ``data`` item: its index and its vector (float32; written as a numpy array, which
    :func:`atoma_lab.encoding.dumps` writes as float32 numbers)."""

    object: str = wire(Choice("embedding"), default="embedding", kw_only=True)
    embedding: np.ndarray = wire(Float32Vector(), kw_only=True, repr=False)
    index: int = wire(UInt(), kw_only=True)  # type: ignore[assignment]  # shadows tuple.index


class CreateEmbeddingResponse(WireModel, root="response", what="embeddings response",
                              null_is_missing=False):
    """An OpenAI embeddings response, with numpy access to the vectors. A malformed one is the
    peer's fault: parsing raises :class:`PeerProtocolError`."""

    object: str = wire(Choice("list"), default="list", kw_only=True)
    data: list[Embedding] = wire(ListOf(Nested(Embedding)))
    model: str = wire(Text())
    usage: EmbeddingUsage = wire(Nested(EmbeddingUsage))

    @classmethod
    def from_dict(cls, data: Any) -> Self:  # ``object`` is a field name in this class
        """Validate a parsed response (float lists or base64 little-endian float32 strings)."""
        try:
            return super().from_dict(data)
        except InvalidFieldError as exc:
            raise PeerProtocolError(f"malformed embeddings response: {exc.message}") from exc

    def to_numpy(self) -> np.ndarray:
        """All vectors as one ``(n, d)`` float32 array, in ``index`` order."""
        ordered = sorted(self.data, key=lambda e: e.index)
        if not ordered:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([e.embedding for e in ordered])


class SignedEmbeddingResponse(CreateEmbeddingResponse, what="signed embeddings response"):
    """The plain route's answer: the OpenAI response followed by the node's ``signature`` and
    ``response_hash`` over the serde-compact bytes of the rest (atoma-protocol.md section 2.6)."""

    signature: str = wire(Base64Text(), description="Sui signature: base64 of flag || "
                                                    "signature || public key")
    response_hash: bytes = wire(Bytes(HASH_SIZE),
                                description="BLAKE2b-256 of the rest, serde-compact")
