"""OpenAI embeddings request and response, as Atoma's SDKs and services exchange them.

``CreateEmbeddingRequest`` accepts what the OpenAI API accepts for ``input``: a string, a list of
strings, a list of token ids, or a list of lists of token ids (at most 2048 inputs). Parsing is
strict and names the offending field; unknown keys are ignored, as serde does (Atoma's proxy even
injects ``max_completion_tokens`` into embeddings bodies).

Text is bounded before anyone tokenises it: at most :data:`MAX_INPUT_CHARS` characters per input
and :data:`MAX_REQUEST_CHARS` per request, everywhere (400 ``INPUT_TOO_LONG`` naming the input);
a node's engine bounds it further by its model's maximum sequence length
(:func:`check_input_chars`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from atoma_lab.encoding import b64decode, dumps, loads, require_int, require_str
from atoma_lab.errors import (
    InputTooLongError,
    InvalidFieldError,
    MissingFieldError,
    PeerProtocolError,
)

MAX_INPUTS = 2048  # OpenAI's limit on the number of inputs in one request
# The hard caps on text, whatever the model: no embedding model reads a million characters (a
# token covers at least one), and a request's text fits the 64 MiB body limit.
MAX_INPUT_CHARS = 1 << 20  # characters per text input
MAX_REQUEST_CHARS = 1 << 24  # characters of text per request
MAX_TOKEN_ID = 2**32 - 1
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


@dataclass(frozen=True, slots=True)
class CreateEmbeddingRequest:
    """An OpenAI ``POST /v1/embeddings`` body."""

    input: EmbeddingInput
    model: str
    encoding_format: EncodingFormat | None = None
    dimensions: int | None = None
    user: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", _parse_input(self.input))
        require_str(self.model, field="model", allow_empty=False)
        if self.encoding_format not in (None, "float", "base64"):
            raise InvalidFieldError("encoding_format: must be 'float' or 'base64'",
                                    field="encoding_format")
        if self.dimensions is not None:
            require_int(self.dimensions, field="dimensions", minimum=1, maximum=2**32 - 1)
        if self.user is not None:
            require_str(self.user, field="user")

    @classmethod
    def from_dict(cls, data: object) -> CreateEmbeddingRequest:
        """Validate a parsed JSON object."""
        if not isinstance(data, dict):
            raise InvalidFieldError("body: expected a JSON object", field="body")
        for name in ("input", "model"):
            if name not in data:
                raise MissingFieldError(f"{name}: required", field=name)
        return cls(
            input=data["input"],
            model=data["model"],
            encoding_format=data.get("encoding_format"),
            dimensions=data.get("dimensions"),
            user=data.get("user"),
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> CreateEmbeddingRequest:
        """Parse and validate JSON bytes."""
        return cls.from_dict(loads(body, what="embeddings request"))

    def to_dict(self) -> dict[str, Any]:
        """Keys in the Python SDK's order: input, model, then the optional ones that are set."""
        out: dict[str, Any] = {"input": self.input, "model": self.model}
        if self.dimensions is not None:
            out["dimensions"] = self.dimensions
        if self.encoding_format is not None:
            out["encoding_format"] = self.encoding_format
        if self.user is not None:
            out["user"] = self.user
        return out

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON, byte-identical to the Python SDK's ``model_dump_json()``.

        Text that UTF-8 cannot carry (a lone surrogate, as ``"\\ud800"`` makes) is an
        :class:`InvalidFieldError` naming its field (``input[i]``, ``model``, ``user``)."""
        try:
            return dumps(self.to_dict())
        except TypeError as exc:  # orjson refuses str that is not valid UTF-8
            field = self._unencodable_field()
            if field is None:
                raise
            raise InvalidFieldError(f"{field}: not valid Unicode text (a lone surrogate?)",
                                    field=field) from exc

    def _unencodable_field(self) -> str | None:
        named: list[tuple[str, object]] = [("model", self.model), ("user", self.user)]
        if isinstance(self.input, str):
            named.append(("input", self.input))
        elif self.input and isinstance(self.input[0], str):
            named += [(f"input[{i}]", item) for i, item in enumerate(self.input)]
        for name, value in named:
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return name
        return None

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


@dataclass(frozen=True, slots=True)
class EmbeddingUsage:
    """``usage`` of an embeddings response (no completion tokens for embeddings)."""

    prompt_tokens: int
    total_tokens: int

    def __post_init__(self) -> None:
        require_int(self.prompt_tokens, field="usage.prompt_tokens")
        require_int(self.total_tokens, field="usage.total_tokens")

    @classmethod
    def from_dict(cls, data: object, *, field: str = "usage") -> EmbeddingUsage:
        if not isinstance(data, dict):
            raise InvalidFieldError(f"{field}: expected an object", field=field)
        for name in ("prompt_tokens", "total_tokens"):
            if name not in data:
                raise MissingFieldError(f"{field}.{name}: required", field=f"{field}.{name}")
        return cls(
            prompt_tokens=require_int(data["prompt_tokens"], field=f"{field}.prompt_tokens"),
            total_tokens=require_int(data["total_tokens"], field=f"{field}.total_tokens"),
        )

    def to_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "total_tokens": self.total_tokens}


@dataclass(frozen=True, slots=True)
class Embedding:
    """One ``data`` item: its index and its vector (float32)."""

    index: int
    embedding: np.ndarray = field(repr=False)


def _float_vector(items: list[Any]) -> np.ndarray | None:
    """A JSON list of numbers as float32, checked in C rather than per float in Python;
    ``None`` if it holds anything else (strings, booleans, nested lists, nulls)."""
    if not set(map(type, items)) <= {float, int}:  # bool is its own type, so it is refused
        return None
    return np.array(items, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class CreateEmbeddingResponse:
    """An OpenAI embeddings response, with numpy access to the vectors."""

    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: str = "list"

    @classmethod
    def from_dict(cls, payload: Any) -> CreateEmbeddingResponse:
        """Validate a parsed response (float lists or base64 little-endian float32 strings).

        A malformed response is the peer's fault: :class:`PeerProtocolError`.
        """
        try:
            if not isinstance(payload, dict):
                raise InvalidFieldError("response: expected an object", field="response")
            items = payload.get("data")
            if not isinstance(items, list):
                raise InvalidFieldError("data: expected a list", field="data")
            data = []
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise InvalidFieldError(f"data[{i}]: expected an object", field=f"data[{i}]")
                index = require_int(item.get("index"), field=f"data[{i}].index")
                raw = item.get("embedding")
                if isinstance(raw, str):
                    buf = b64decode(raw, field=f"data[{i}].embedding")
                    if len(buf) % 4:
                        raise InvalidFieldError(f"data[{i}].embedding: not float32 data",
                                                field=f"data[{i}].embedding")
                    vec = np.frombuffer(buf, dtype="<f4").astype(np.float32)
                elif isinstance(raw, list) and (floats := _float_vector(raw)) is not None:
                    vec = floats
                else:
                    raise InvalidFieldError(f"data[{i}].embedding: expected floats or base64",
                                            field=f"data[{i}].embedding")
                data.append(Embedding(index=index, embedding=vec))
            model = require_str(payload.get("model"), field="model")
            usage = EmbeddingUsage.from_dict(payload.get("usage"))
        except InvalidFieldError as exc:
            raise PeerProtocolError(f"malformed embeddings response: {exc.message}") from exc
        kind = str(payload.get("object", "list"))
        return cls(data=data, model=model, usage=usage, object=kind)

    @classmethod
    def from_json(cls, body: bytes | str) -> CreateEmbeddingResponse:
        return cls.from_dict(loads(body, what="embeddings response"))

    def to_numpy(self) -> np.ndarray:
        """All vectors as one ``(n, d)`` float32 array, in ``index`` order."""
        ordered = sorted(self.data, key=lambda e: e.index)
        if not ordered:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([e.embedding for e in ordered])
