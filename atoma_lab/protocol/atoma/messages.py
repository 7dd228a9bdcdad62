"""Atoma's confidential wire messages, with Atoma's JSON field names exactly.

Binary fields are ``bytes`` in Python and strict standard base64 on the wire
(atoma-protocol.md sections 1.1, 1.2, 1.4; structs in atoma-proxy ``src/server/types.rs`` and
atoma-node ``atoma-service/src/types.rs``). Parsing raises a subclass of
:class:`~atoma_lab.errors.InvalidFieldError` that names the field; messages never repeat values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from atoma_lab.crypto.aead import NONCE_SIZE, TAG_SIZE
from atoma_lab.crypto.hashing import HASH_SIZE
from atoma_lab.crypto.kdf import SALT_SIZE
from atoma_lab.crypto.keys import X25519_KEY_SIZE
from atoma_lab.encoding import b64decode, b64encode, dumps, loads, require_int, require_str
from atoma_lab.errors import InvalidFieldError, InvalidLengthError, MissingFieldError

DEFAULT_MAX_NUM_TOKENS = 8192  # MAX_NUM_TOKENS_FOR_CONFIDENTIAL_COMPUTE, atoma-proxy nodes.rs
DEFAULT_LOCK_TIMEOUT_S = 5  # MAX_TIMEOUT_FOR_CONFIDENTIAL_COMPUTE, seconds


def _object(data: object, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidFieldError(f"{what}: expected a JSON object", field=what)
    return data


def _required(data: dict[str, Any], name: str) -> Any:
    if name not in data or data[name] is None:
        raise MissingFieldError(f"{name}: required", field=name)
    return data[name]


def _optional_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    return None if value is None else require_int(value, field=name)


def _check_size(value: bytes, name: str, size: int) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) != size:
        raise InvalidLengthError(f"{name}: expected {size} bytes, got {len(value)}", field=name)
    return value


def check_caller_fields(stack_small_id: object, model_name: object, stream: object,
                        num_compute_units: object) -> None:
    """The fields of a :class:`ConfidentialComputeRequest` its sender chooses rather than
    computes; ``seal_request`` checks these before building the request with ``trusted``."""
    require_int(stack_small_id, field="stack_small_id")
    require_str(model_name, field="model_name")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidFieldError("stream: expected a boolean", field="stream")
    if num_compute_units is not None:
        require_int(num_compute_units, field="num_compute_units")


_new = object.__new__
_Setter = Callable[[object, Any], None]


def _slot_setters(cls: type) -> tuple[_Setter, ...]:
    """The member descriptors' ``__set__`` of a frozen, slotted dataclass, in field order.

    Setting slots through them skips ``__init__`` and its checks: a five-field response costs
    ~0.7 us this way, ~1.2 us through ``object.__setattr__`` and ~2 us through the checked
    ``__init__`` (measured on the project's CPU machine). Only for values the caller has just
    made or validated itself (the envelope's hot path, ``trusted`` below).
    """
    return tuple(getattr(cls, f.name).__set__ for f in fields(cls))


@dataclass(frozen=True, slots=True)
class ConfidentialComputeRequest:
    """The body of ``POST /v1/confidential/embeddings`` (client -> proxy -> node)."""

    ciphertext: bytes = field(repr=False)
    stack_small_id: int
    nonce: bytes
    salt: bytes
    client_dh_public_key: bytes
    node_dh_public_key: bytes
    plaintext_body_hash: bytes
    model_name: str
    stream: bool | None = None
    num_compute_units: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ciphertext, bytes):
            raise TypeError("ciphertext must be bytes")
        if len(self.ciphertext) < TAG_SIZE:
            raise InvalidLengthError(
                f"ciphertext: at least {TAG_SIZE} bytes (the tag), got {len(self.ciphertext)}",
                field="ciphertext",
            )
        check_caller_fields(self.stack_small_id, self.model_name, self.stream,
                            self.num_compute_units)
        _check_size(self.nonce, "nonce", NONCE_SIZE)
        _check_size(self.salt, "salt", SALT_SIZE)
        _check_size(self.client_dh_public_key, "client_dh_public_key", X25519_KEY_SIZE)
        _check_size(self.node_dh_public_key, "node_dh_public_key", X25519_KEY_SIZE)
        _check_size(self.plaintext_body_hash, "plaintext_body_hash", HASH_SIZE)

    @classmethod
    def trusted(cls, ciphertext: bytes, stack_small_id: int, nonce: bytes, salt: bytes,
                client_dh_public_key: bytes, node_dh_public_key: bytes,
                plaintext_body_hash: bytes, model_name: str, stream: bool | None,
                num_compute_units: int | None) -> ConfidentialComputeRequest:
        """Build without validation, for values the envelope has just produced or checked."""
        obj = _new(cls)
        s = _REQUEST_SETTERS
        s[0](obj, ciphertext)
        s[1](obj, stack_small_id)
        s[2](obj, nonce)
        s[3](obj, salt)
        s[4](obj, client_dh_public_key)
        s[5](obj, node_dh_public_key)
        s[6](obj, plaintext_body_hash)
        s[7](obj, model_name)
        s[8](obj, stream)
        s[9](obj, num_compute_units)
        return obj

    @classmethod
    def from_dict(cls, data: object) -> ConfidentialComputeRequest:
        d = _object(data, "body")
        return cls(
            ciphertext=b64decode(_required(d, "ciphertext"), field="ciphertext"),
            stack_small_id=require_int(_required(d, "stack_small_id"), field="stack_small_id"),
            nonce=b64decode(_required(d, "nonce"), field="nonce", size=NONCE_SIZE),
            salt=b64decode(_required(d, "salt"), field="salt", size=SALT_SIZE),
            client_dh_public_key=b64decode(
                _required(d, "client_dh_public_key"), field="client_dh_public_key",
                size=X25519_KEY_SIZE,
            ),
            node_dh_public_key=b64decode(
                _required(d, "node_dh_public_key"), field="node_dh_public_key",
                size=X25519_KEY_SIZE,
            ),
            plaintext_body_hash=b64decode(
                _required(d, "plaintext_body_hash"), field="plaintext_body_hash", size=HASH_SIZE
            ),
            model_name=require_str(_required(d, "model_name"), field="model_name"),
            stream=d.get("stream"),
            num_compute_units=_optional_int(d, "num_compute_units"),
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> ConfidentialComputeRequest:
        return cls.from_dict(loads(body, what="confidential compute request"))

    def to_dict(self) -> dict[str, Any]:
        """Wire form, keys in the Rust struct's order; ``None`` optionals are left out."""
        out: dict[str, Any] = {
            "ciphertext": b64encode(self.ciphertext),
            "stack_small_id": self.stack_small_id,
            "nonce": b64encode(self.nonce),
            "salt": b64encode(self.salt),
            "client_dh_public_key": b64encode(self.client_dh_public_key),
            "node_dh_public_key": b64encode(self.node_dh_public_key),
            "plaintext_body_hash": b64encode(self.plaintext_body_hash),
        }
        if self.stream is not None:
            out["stream"] = self.stream
        out["model_name"] = self.model_name  # after ``stream``, as in the Rust struct
        if self.num_compute_units is not None:
            out["num_compute_units"] = self.num_compute_units
        return out

    def to_json(self) -> bytes:
        return dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class Usage:
    """Atoma's ``Usage`` (clear-text copy beside a confidential response)."""

    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = None

    def __post_init__(self) -> None:
        require_int(self.prompt_tokens, field="usage.prompt_tokens")
        require_int(self.total_tokens, field="usage.total_tokens")
        if self.completion_tokens is not None:
            require_int(self.completion_tokens, field="usage.completion_tokens")

    @classmethod
    def from_dict(cls, data: object) -> Usage:
        d = _object(data, "usage")
        for name in ("prompt_tokens", "total_tokens"):
            if d.get(name) is None:
                raise MissingFieldError(f"usage.{name}: required", field=f"usage.{name}")
        return cls(
            prompt_tokens=require_int(d["prompt_tokens"], field="usage.prompt_tokens"),
            total_tokens=require_int(d["total_tokens"], field="usage.total_tokens"),
            completion_tokens=(
                None if d.get("completion_tokens") is None
                else require_int(d["completion_tokens"], field="usage.completion_tokens")
            ),
        )

    def to_dict(self) -> dict[str, int]:
        out = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.total_tokens}
        if self.completion_tokens is not None:
            out["completion_tokens"] = self.completion_tokens
        return out


@dataclass(frozen=True, slots=True)
class ConfidentialComputeResponse:
    """The node's encrypted answer (node -> proxy -> client), keys in Atoma's order."""

    nonce: bytes
    ciphertext: bytes = field(repr=False)
    response_hash: bytes | None = None
    signature: str | None = None
    usage: Usage | None = None

    def __post_init__(self) -> None:
        _check_size(self.nonce, "nonce", NONCE_SIZE)
        if not isinstance(self.ciphertext, bytes):
            raise TypeError("ciphertext must be bytes")
        if len(self.ciphertext) < TAG_SIZE:
            raise InvalidLengthError(
                f"ciphertext: at least {TAG_SIZE} bytes (the tag), got {len(self.ciphertext)}",
                field="ciphertext",
            )
        if self.response_hash is not None:
            _check_size(self.response_hash, "response_hash", HASH_SIZE)
        if self.signature is not None:
            require_str(self.signature, field="signature")

    @classmethod
    def trusted(cls, nonce: bytes, ciphertext: bytes, response_hash: bytes | None,
                signature: str | None, usage: Usage | None) -> ConfidentialComputeResponse:
        """Build without validation, for values the envelope has just produced itself."""
        obj = _new(cls)
        s = _RESPONSE_SETTERS
        s[0](obj, nonce)
        s[1](obj, ciphertext)
        s[2](obj, response_hash)
        s[3](obj, signature)
        s[4](obj, usage)
        return obj

    @classmethod
    def from_dict(cls, data: object) -> ConfidentialComputeResponse:
        d = _object(data, "response")
        rh = d.get("response_hash")
        usage = d.get("usage")
        return cls(
            nonce=b64decode(_required(d, "nonce"), field="nonce", size=NONCE_SIZE),
            ciphertext=b64decode(_required(d, "ciphertext"), field="ciphertext"),
            response_hash=None if rh is None else b64decode(rh, field="response_hash",
                                                            size=HASH_SIZE),
            signature=None if d.get("signature") is None
            else require_str(d["signature"], field="signature"),
            usage=None if usage is None else Usage.from_dict(usage),
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> ConfidentialComputeResponse:
        return cls.from_dict(loads(body, what="confidential compute response"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nonce": b64encode(self.nonce), "ciphertext": b64encode(self.ciphertext)}
        if self.response_hash is not None:
            out["response_hash"] = b64encode(self.response_hash)
        if self.signature is not None:
            out["signature"] = self.signature
        if self.usage is not None:
            out["usage"] = self.usage.to_dict()
        return out

    def to_json(self) -> bytes:
        return dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class NodesCreateLockRequest:
    """Body of ``POST /v1/nodes/lock``."""

    model: str
    max_num_tokens: int | None = None
    timeout: int | None = None

    def __post_init__(self) -> None:
        require_str(self.model, field="model", allow_empty=False)
        if self.max_num_tokens is not None:
            require_int(self.max_num_tokens, field="max_num_tokens", minimum=1)
        if self.timeout is not None:
            require_int(self.timeout, field="timeout", minimum=1)

    @classmethod
    def from_dict(cls, data: object) -> NodesCreateLockRequest:
        d = _object(data, "body")
        return cls(
            model=_required(d, "model"),
            max_num_tokens=d.get("max_num_tokens"),
            timeout=d.get("timeout"),
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> NodesCreateLockRequest:
        return cls.from_dict(loads(body, what="lock request"))

    @property
    def effective_max_num_tokens(self) -> int:
        return DEFAULT_MAX_NUM_TOKENS if self.max_num_tokens is None else self.max_num_tokens

    @property
    def effective_timeout_s(self) -> int:
        return DEFAULT_LOCK_TIMEOUT_S if self.timeout is None else self.timeout

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        if self.max_num_tokens is not None:
            out["max_num_tokens"] = self.max_num_tokens
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out

    def to_json(self) -> bytes:
        try:
            return dumps(self.to_dict())
        except TypeError as exc:  # orjson refuses a str that UTF-8 cannot carry
            raise InvalidFieldError("model: not valid Unicode text (a lone surrogate?)",
                                    field="model") from exc


@dataclass(frozen=True, slots=True)
class NodesCreateLockResponse:
    """Answer of ``POST /v1/nodes/lock``, keys in Atoma's struct order."""

    public_key: bytes
    node_small_id: int
    stack_small_id: int
    stack_entry_digest: str | None = None

    def __post_init__(self) -> None:
        _check_size(self.public_key, "public_key", X25519_KEY_SIZE)
        require_int(self.node_small_id, field="node_small_id")
        require_int(self.stack_small_id, field="stack_small_id")
        if self.stack_entry_digest is not None:
            require_str(self.stack_entry_digest, field="stack_entry_digest")

    @classmethod
    def from_dict(cls, data: object) -> NodesCreateLockResponse:
        d = _object(data, "response")
        return cls(
            public_key=b64decode(_required(d, "public_key"), field="public_key",
                                 size=X25519_KEY_SIZE),
            node_small_id=require_int(_required(d, "node_small_id"), field="node_small_id"),
            stack_small_id=require_int(_required(d, "stack_small_id"), field="stack_small_id"),
            stack_entry_digest=d.get("stack_entry_digest"),
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> NodesCreateLockResponse:
        return cls.from_dict(loads(body, what="lock response"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "public_key": b64encode(self.public_key),
            "node_small_id": self.node_small_id,
            "stack_entry_digest": self.stack_entry_digest,
            "stack_small_id": self.stack_small_id,
        }

    def to_json(self) -> bytes:
        return dumps(self.to_dict())


_REQUEST_SETTERS = _slot_setters(ConfidentialComputeRequest)
_RESPONSE_SETTERS = _slot_setters(ConfidentialComputeResponse)
