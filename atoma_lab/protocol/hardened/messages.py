"""The hardened profile's wire messages, strict parsing and downgrade checks. Pure."""


from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atoma_lab.crypto.aead import NONCE_SIZE, TAG_SIZE
from atoma_lab.crypto.hashing import HASH_SIZE, blake2b_256
from atoma_lab.crypto.kdf import SALT_SIZE
from atoma_lab.crypto.keys import X25519_KEY_SIZE
from atoma_lab.encoding import b64decode, b64encode, dumps, loads, require_int, require_str
from atoma_lab.errors import (
    InvalidFieldError,
    InvalidLengthError,
    ProfileMismatchError,
)
from atoma_lab.protocol.atoma.messages import (  # the strict JSON helpers are shared
    ConfidentialComputeRequest,
    Usage,
    _object,
    _required,
)
from atoma_lab.protocol.hardened.layout import (
    _ATOMA_ONLY_REQUEST_FIELDS,
    _ATOMA_ONLY_RESPONSE_FIELDS,
    _HARDENED_ONLY_REQUEST_FIELDS,
    _HARDENED_ONLY_RESPONSE_FIELDS,
    _MSG_REQUEST,
    _PROFILE_PREFIX,
    KEY_ID_SIZE,
    PROFILE,
    PROFILES,
    REQUEST_ID_SIZE,
    _opt_u64,
    _response_aad,
    _str16,
    _u64,
)


def _check_bytes(value: object, name: str, size: int) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) != size:
        raise InvalidLengthError(f"{name}: expected {size} bytes, got {len(value)}", field=name)


def _check_ciphertext(value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError("ciphertext must be bytes")
    if len(value) < TAG_SIZE:
        raise InvalidLengthError(
            f"ciphertext: at least {TAG_SIZE} bytes (the tag), got {len(value)}", field="ciphertext"
        )


def _check_profile(d: dict[str, Any], *, atoma_only: frozenset[str], allowed: frozenset[str],
                   what: str) -> None:
    """Strict profile check: the hardened profile exactly, no Atoma-only or unknown fields."""
    profile = d.get("profile")
    if profile is None:
        raise ProfileMismatchError(
            f"{what} has no profile: an Atoma-profile body where {PROFILE} is required",
            field="profile",
        )
    if profile not in PROFILES:
        raise ProfileMismatchError(f"profile: expected one of {', '.join(PROFILES)}",
                                   field="profile")
    for name in sorted(d):
        if name in atoma_only:
            raise ProfileMismatchError(
                f"{name}: an Atoma-profile field in a {PROFILE} {what}", field=name
            )
        if name not in allowed:
            raise InvalidFieldError(f"{name}: unknown field in a {PROFILE} {what}", field=name)


_REQUEST_FIELDS = frozenset({
    "profile", "model_name", "stack_small_id", "node_key_id", "client_dh_public_key", "salt",
    "nonce", "timestamp", "request_id", "num_compute_units", "ciphertext",
})


@dataclass(frozen=True, slots=True)
class HardenedRequest:
    """The hardened confidential request body (client -> proxy -> node)."""

    model_name: str
    stack_small_id: int
    node_key_id: bytes
    client_dh_public_key: bytes
    salt: bytes
    nonce: bytes
    timestamp: int
    request_id: bytes
    ciphertext: bytes = field(repr=False)
    num_compute_units: int | None = None
    profile: str = PROFILE

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ProfileMismatchError(f"profile: expected one of {', '.join(PROFILES)}",
                                       field="profile")
        require_str(self.model_name, field="model_name", allow_empty=False)
        require_int(self.stack_small_id, field="stack_small_id")
        _check_bytes(self.node_key_id, "node_key_id", KEY_ID_SIZE)
        _check_bytes(self.client_dh_public_key, "client_dh_public_key", X25519_KEY_SIZE)
        _check_bytes(self.salt, "salt", SALT_SIZE)
        _check_bytes(self.nonce, "nonce", NONCE_SIZE)
        require_int(self.timestamp, field="timestamp")
        _check_bytes(self.request_id, "request_id", REQUEST_ID_SIZE)
        _check_ciphertext(self.ciphertext)
        if self.num_compute_units is not None:
            require_int(self.num_compute_units, field="num_compute_units")

    def aad(self) -> bytes:
        """The request AAD (layout in the module docstring)."""
        return (
            (_PROFILE_PREFIX if self.profile == PROFILE else _str16(self.profile))
            + _MSG_REQUEST + _str16(self.model_name) + _u64(self.stack_small_id)
            + self.node_key_id + self.client_dh_public_key + self.salt + self.nonce
            + _u64(self.timestamp) + self.request_id + _opt_u64(self.num_compute_units)
        )

    def request_hash(self) -> bytes:
        """BLAKE2b-256(AAD ‖ ciphertext): what the response and the receipt bind."""
        return blake2b_256(self.aad() + self.ciphertext)

    @property
    def replay_key(self) -> bytes:
        """What the replay cache remembers: node key id ‖ client key ‖ request id."""
        return self.node_key_id + self.client_dh_public_key + self.request_id

    @classmethod
    def from_dict(cls, data: object) -> HardenedRequest:
        d = _object(data, "body")
        _check_profile(d, atoma_only=_ATOMA_ONLY_REQUEST_FIELDS, allowed=_REQUEST_FIELDS,
                       what="request")
        ncu = d.get("num_compute_units")
        return cls(
            model_name=require_str(_required(d, "model_name"), field="model_name",
                                   allow_empty=False),
            stack_small_id=require_int(_required(d, "stack_small_id"), field="stack_small_id"),
            node_key_id=b64decode(_required(d, "node_key_id"), field="node_key_id",
                                  size=KEY_ID_SIZE),
            client_dh_public_key=b64decode(_required(d, "client_dh_public_key"),
                                           field="client_dh_public_key", size=X25519_KEY_SIZE),
            salt=b64decode(_required(d, "salt"), field="salt", size=SALT_SIZE),
            nonce=b64decode(_required(d, "nonce"), field="nonce", size=NONCE_SIZE),
            timestamp=require_int(_required(d, "timestamp"), field="timestamp"),
            request_id=b64decode(_required(d, "request_id"), field="request_id",
                                 size=REQUEST_ID_SIZE),
            ciphertext=b64decode(_required(d, "ciphertext"), field="ciphertext"),
            num_compute_units=None if ncu is None else require_int(ncu, field="num_compute_units"),
            profile=d["profile"],
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> HardenedRequest:
        return cls.from_dict(loads(body, what="hardened request"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "profile": self.profile,
            "model_name": self.model_name,
            "stack_small_id": self.stack_small_id,
            "node_key_id": b64encode(self.node_key_id),
            "client_dh_public_key": b64encode(self.client_dh_public_key),
            "salt": b64encode(self.salt),
            "nonce": b64encode(self.nonce),
            "timestamp": self.timestamp,
            "request_id": b64encode(self.request_id),
        }
        if self.num_compute_units is not None:
            out["num_compute_units"] = self.num_compute_units
        out["ciphertext"] = b64encode(self.ciphertext)
        return out

    def to_json(self) -> bytes:
        return dumps(self.to_dict())


_RESPONSE_FIELDS = frozenset({
    "profile", "request_id", "request_hash", "nonce", "ciphertext", "signature", "usage",
})


@dataclass(frozen=True, slots=True)
class HardenedResponse:
    """The hardened confidential response body (node -> proxy -> client)."""

    request_id: bytes
    request_hash: bytes
    nonce: bytes
    ciphertext: bytes = field(repr=False)
    signature: str
    usage: Usage | None = None
    profile: str = PROFILE

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ProfileMismatchError(f"profile: expected one of {', '.join(PROFILES)}",
                                       field="profile")
        _check_bytes(self.request_id, "request_id", REQUEST_ID_SIZE)
        _check_bytes(self.request_hash, "request_hash", HASH_SIZE)
        _check_bytes(self.nonce, "nonce", NONCE_SIZE)
        _check_ciphertext(self.ciphertext)
        require_str(self.signature, field="signature", allow_empty=False)
        if self.usage is not None and not isinstance(self.usage, Usage):
            raise TypeError("usage must be a Usage")

    def aad(self) -> bytes:
        """The response AAD (layout in the module docstring)."""
        return _response_aad(self.profile, self.request_id, self.request_hash, self.nonce,
                             self.usage)

    def response_hash(self) -> bytes:
        """BLAKE2b-256(AAD ‖ ciphertext)."""
        return blake2b_256(self.aad() + self.ciphertext)

    @classmethod
    def from_dict(cls, data: object) -> HardenedResponse:
        d = _object(data, "response")
        _check_profile(d, atoma_only=_ATOMA_ONLY_RESPONSE_FIELDS, allowed=_RESPONSE_FIELDS,
                       what="response")
        usage = d.get("usage")
        return cls(
            request_id=b64decode(_required(d, "request_id"), field="request_id",
                                 size=REQUEST_ID_SIZE),
            request_hash=b64decode(_required(d, "request_hash"), field="request_hash",
                                   size=HASH_SIZE),
            nonce=b64decode(_required(d, "nonce"), field="nonce", size=NONCE_SIZE),
            ciphertext=b64decode(_required(d, "ciphertext"), field="ciphertext"),
            signature=require_str(_required(d, "signature"), field="signature", allow_empty=False),
            usage=None if usage is None else Usage.from_dict(usage),
            profile=d["profile"],
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> HardenedResponse:
        return cls.from_dict(loads(body, what="hardened response"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "profile": self.profile,
            "request_id": b64encode(self.request_id),
            "request_hash": b64encode(self.request_hash),
            "nonce": b64encode(self.nonce),
            "ciphertext": b64encode(self.ciphertext),
            "signature": self.signature,
        }
        if self.usage is not None:
            out["usage"] = self.usage.to_dict()
        return out

    def to_json(self) -> bytes:
        return dumps(self.to_dict())


def parse_request(data: object, *, accept_atoma: bool = False
                  ) -> HardenedRequest | ConfidentialComputeRequest:
    """Parse a confidential request body of either profile, refusing downgrades.

    A body with ``profile`` is parsed strictly as hardened. A body without it is Atoma's, which is
    refused (:class:`ProfileMismatchError`) unless ``accept_atoma``, and refused in any case when it
    carries a hardened-only field (a hardened request with its profile stripped).
    """
    d = _object(data, "body")
    if "profile" in d:
        return HardenedRequest.from_dict(d)
    spliced = sorted(_HARDENED_ONLY_REQUEST_FIELDS & d.keys())
    if spliced:
        raise ProfileMismatchError(
            f"{spliced[0]}: a {PROFILE} field in a body without a profile", field="profile"
        )
    if not accept_atoma:
        raise ProfileMismatchError(
            f"an Atoma-profile request where {PROFILE} is required", field="profile"
        )
    return ConfidentialComputeRequest.from_dict(d)


def parse_response(data: object) -> HardenedResponse:
    """Parse a response to a hardened request; an Atoma-shaped one is a :class:`ProfileMismatchError`."""
    d = _object(data, "response")
    if "profile" not in d and not (_HARDENED_ONLY_RESPONSE_FIELDS & d.keys()):
        raise ProfileMismatchError(
            f"an Atoma-profile response to a {PROFILE} request", field="profile"
        )
    return HardenedResponse.from_dict(d)
