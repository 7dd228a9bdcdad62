"""A hardened confidential envelope beside Atoma's: profile ``atoma-lab/hardened-v1``. Pure.

Atoma's envelope (:mod:`atoma_lab.protocol.atoma.envelope`, atoma-protocol.md section 9) has no replay
protection, no binding of a response to its request, one AES key for both directions and no AAD.
This profile keeps Atoma's primitives (X25519, HKDF-SHA256, AES-256-GCM, BLAKE2b-256, Sui Ed25519
signatures) and fixes those four points, in the manner of Phala's E2EE v2 (timestamp window plus
nonce cache, JCS AAD) and OHTTP (RFC 9458: key ids, a response bound to its request).

Client                                        Node
------                                        ----
``seal_request``  -> :class:`HardenedRequest`  -> ``open_request``  (key ring, replay guard, now)
``open_response`` <- :class:`HardenedResponse` <- ``seal_response`` (signer)

Keys (one per direction)::

    shared = X25519(client_sk, node_pk)                      # fresh client key per request
    k_c2n  = HKDF-SHA256(salt, shared, LABEL_C2N ‖ client_pk ‖ node_pk, 32)
    k_n2c  = HKDF-SHA256(salt, shared, LABEL_N2C ‖ client_pk ‖ node_pk, 32)
    LABEL_C2N = b"atoma-lab/hardened-v1 client->node"
    LABEL_N2C = b"atoma-lab/hardened-v1 node->client"

``salt`` is the request's 16 random bytes. Each key seals exactly one message (the request, the
response), and the contexts below are single-use, so no nonce can repeat under a key.

AAD (binary, fixed order; ``str16`` = u16 BE length ‖ UTF-8, ``u64`` = 8 bytes BE,
``opt(x)`` = ``00`` or ``01 ‖ x``)::

    request  = str16("atoma-lab/hardened-v1") ‖ 01 ‖ str16(model_name) ‖ u64(stack_small_id)
             ‖ node_key_id[32] ‖ client_dh_public_key[32] ‖ salt[16] ‖ nonce[12]
             ‖ u64(timestamp) ‖ request_id[16] ‖ opt(u64(num_compute_units))
    response = str16("atoma-lab/hardened-v1") ‖ 02 ‖ request_id[16] ‖ request_hash[32]
             ‖ nonce[12] ‖ opt(u64(prompt_tokens) ‖ u64(total_tokens) ‖ opt(u64(completion_tokens)))

``node_key_id = BLAKE2b-256(node X25519 public key)`` (whole). ``timestamp`` is the client's Unix
time in whole seconds. ``request_id`` is 16 random bytes.

Hashes and the signature::

    request_hash  = BLAKE2b-256(request AAD ‖ request ciphertext)
    response_hash = BLAKE2b-256(response AAD ‖ response ciphertext)
    receipt       = BLAKE2b-256(str16("atoma-lab/hardened-v1 receipt") ‖ request_hash ‖ response_hash)
    signature     = Sui Ed25519 (flag ‖ sig ‖ pk) over the 32 raw receipt bytes

Both hashes are over wire bytes, so a proxy can check the node's signature without the plaintext,
and no hash of the plaintext travels in clear (Atoma's ``plaintext_body_hash`` lets anyone confirm
a guessed input).

The node answers precisely:

* the key id names no key in its :class:`NodeKeyRing` (or one retired longer than the grace
  window) -> :class:`NodeKeyMismatchError` (409 ``STALE_NODE_KEY``): take a new lock, seal again;
* the timestamp lies outside the :class:`ReplayGuard` window -> :class:`StaleRequestError`;
* AEAD failure (any bound field changed) -> :class:`DecryptionError`;
* the same ``(node_key_id, client key, request_id)`` already served within the window ->
  :class:`ReplayedRequestError`. The guard records a request only after it authenticated, so a
  forged copy cannot block the real one.

Downgrades: every message carries ``profile: "atoma-lab/hardened-v1"``, parsing is strict (no
unknown fields), and :func:`parse_request` refuses an Atoma-shaped body where the hardened profile is
required and a hardened-looking body that lacks the profile (:class:`ProfileMismatchError`).

Randomness (client key, salt, nonces, request id) can be injected through keyword-only arguments so
that golden vectors are reproducible; time is always an argument.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atoma_lab.crypto import hpke
from atoma_lab.crypto.aead import NONCE_SIZE, TAG_SIZE
from atoma_lab.crypto.hashing import HASH_SIZE, blake2b_256
from atoma_lab.crypto.kdf import SALT_SIZE, derive_key
from atoma_lab.crypto.keys import X25519_KEY_SIZE, X25519KeyPair
from atoma_lab.crypto.signing import SuiSignature, SuiSigner, verify_sui_signature
from atoma_lab.encoding import b64decode, b64encode, dumps, loads, require_int, require_str
from atoma_lab.errors import (
    DecryptionError,
    InvalidFieldError,
    InvalidLengthError,
    NodeKeyMismatchError,
    ProfileMismatchError,
    ReplayedRequestError,
    ResponseMismatchError,
    ServiceUnavailableError,
    StaleRequestError,
)
from atoma_lab.protocol.atoma.messages import (  # the strict JSON helpers are shared
    ConfidentialComputeRequest,
    Usage,
    _object,
    _required,
)

PROFILE = "atoma-lab/hardened-v1"
# The same profile with the request sealed by RFC 9180 HPKE base mode (DHKEM(X25519,
# HKDF-SHA256), HKDF-SHA256, AES-256-GCM) instead of X25519 + HKDF + AES-GCM by hand, as OHTTP
# (RFC 9458) does; the response key is an HPKE export. Wire fields, AAD, hashes, receipt and
# replay rules are the hardened profile's.
PROFILE_HPKE = "atoma-lab/hardened-hpke-v1"
PROFILES = (PROFILE, PROFILE_HPKE)
HPKE_INFO = b"atoma-lab/hardened-hpke-v1 request"  # HPKE info prefix (‖ node key id ‖ salt)
HPKE_EXPORT_N2C = b"atoma-lab/hardened-hpke-v1 node->client"  # exporter context, response key
HPKE_SUITE = hpke.X25519_SHA256_AES256GCM
LABEL_C2N = b"atoma-lab/hardened-v1 client->node"  # HKDF info prefix, client -> node key
LABEL_N2C = b"atoma-lab/hardened-v1 node->client"  # HKDF info prefix, node -> client key
RECEIPT_LABEL = b"atoma-lab/hardened-v1 receipt"  # domain of the node's signed digest
REQUEST_ID_SIZE = 16  # bytes
KEY_ID_SIZE = HASH_SIZE  # bytes, BLAKE2b-256 of the node's X25519 public key
DEFAULT_REPLAY_WINDOW_S = 300.0  # seconds either side of now (Phala E2EE v2 uses +-300 s)
DEFAULT_REPLAY_CACHE_ENTRIES = 1_000_000  # entries; beyond that the guard refuses (fail closed)
DEFAULT_KEY_GRACE_S = 60.0  # seconds an old node key is still accepted after rotation
_MSG_REQUEST = b"\x01"
_MSG_RESPONSE = b"\x02"
# Fields only Atoma's profile has: a hardened body with one of them is a spliced/downgraded one.
_ATOMA_ONLY_REQUEST_FIELDS = frozenset({"node_dh_public_key", "plaintext_body_hash", "stream"})
_ATOMA_ONLY_RESPONSE_FIELDS = frozenset({"response_hash"})
_HARDENED_ONLY_REQUEST_FIELDS = frozenset({"node_key_id", "timestamp", "request_id"})
_HARDENED_ONLY_RESPONSE_FIELDS = frozenset({"request_id", "request_hash"})

RandomBytes = Callable[[int], bytes]


# ------------------------------------------------------------------------------------------------
# Byte layouts
# ------------------------------------------------------------------------------------------------


def _str16(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError("string too long for a 16-bit length prefix")
    return len(data).to_bytes(2, "big") + data


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _opt_u64(value: int | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + _u64(value)


_PROFILE_PREFIX = _str16(PROFILE)


def node_key_id(node_public_key: bytes) -> bytes:
    """The 32-byte id of a node X25519 key: BLAKE2b-256 of the public key."""
    if len(node_public_key) != X25519_KEY_SIZE:
        raise ValueError(f"node public key must be {X25519_KEY_SIZE} bytes")
    return blake2b_256(bytes(node_public_key))


def derive_direction_keys(shared_secret: bytes, salt: bytes, client_public_key: bytes,
                          node_public_key: bytes) -> tuple[bytes, bytes]:
    """``(k_c2n, k_n2c)``: HKDF-SHA256 with the request salt and one label per direction."""
    parties = bytes(client_public_key) + bytes(node_public_key)
    return (
        derive_key(shared_secret, salt, info=LABEL_C2N + parties),
        derive_key(shared_secret, salt, info=LABEL_N2C + parties),
    )


def receipt_digest(request_hash: bytes, response_hash: bytes) -> bytes:
    """The 32 bytes the node signs: binds the response to the request it answers."""
    return blake2b_256(_str16(RECEIPT_LABEL) + bytes(request_hash) + bytes(response_hash))


# ------------------------------------------------------------------------------------------------
# Wire messages
# ------------------------------------------------------------------------------------------------


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


def _response_aad(profile: str, request_id: bytes, request_hash: bytes, nonce: bytes,
                  usage: Usage | None) -> bytes:
    if usage is None:
        bound_usage = b"\x00"
    else:
        bound_usage = (b"\x01" + _u64(usage.prompt_tokens) + _u64(usage.total_tokens)
                       + _opt_u64(usage.completion_tokens))
    prefix = _PROFILE_PREFIX if profile == PROFILE else _str16(profile)
    return prefix + _MSG_RESPONSE + request_id + request_hash + nonce + bound_usage


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


# ------------------------------------------------------------------------------------------------
# Replay guard and node key ring (pure: time is an argument)
# ------------------------------------------------------------------------------------------------


class ReplayGuard:
    """A timestamp window and a bounded cache of requests seen inside it.

    ``check(key, timestamp, now)`` accepts a request once: its ``timestamp`` must lie within
    ``window_s`` of ``now`` (either side, for clock skew) and ``key`` must not have been accepted
    before. An entry is evicted once its timestamp falls out of the window: from then on the window
    check alone refuses a replay of it, because the timestamp is authenticated with the request.
    The guard's clock never runs backwards (``now`` below the largest seen counts as that), so an
    evicted entry cannot come back into the window. When ``max_entries`` requests are live in the
    window the guard refuses new ones (:class:`ServiceUnavailableError`) rather than forget one.
    """

    __slots__ = ("_entries", "_latest_now", "max_entries", "window_s")

    def __init__(self, *, window_s: float = DEFAULT_REPLAY_WINDOW_S,
                 max_entries: int = DEFAULT_REPLAY_CACHE_ENTRIES) -> None:
        if not window_s > 0:
            raise ValueError("window_s must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.window_s = float(window_s)
        self.max_entries = max_entries
        self._entries: dict[bytes, int] = {}  # key -> timestamp, in insertion order
        self._latest_now = float("-inf")

    @property
    def entries(self) -> int:
        """How many accepted requests the cache holds now (a guard is never falsy)."""
        return len(self._entries)

    def _clock(self, now: float) -> float:
        if now > self._latest_now:
            self._latest_now = float(now)
        return self._latest_now

    def check_window(self, timestamp: int, now: float) -> None:
        """:class:`StaleRequestError` unless ``|now - timestamp| <= window_s``; records nothing."""
        now = self._clock(now)
        if abs(now - timestamp) > self.window_s:
            raise StaleRequestError(
                f"timestamp is outside the {self.window_s:g} s replay window", field="timestamp"
            )

    def _evict(self, now: float, *, full_scan: bool) -> None:
        cutoff = now - self.window_s
        entries = self._entries
        if full_scan:
            for key in [k for k, ts in entries.items() if ts < cutoff]:
                del entries[key]
            return
        # Cheap path: drop from the oldest insertions while they are out of the window.
        while entries:
            key = next(iter(entries))
            if entries[key] >= cutoff:
                break
            del entries[key]

    def check(self, key: bytes, timestamp: int, now: float) -> None:
        """Accept ``key`` once within the window, or raise.

        :class:`StaleRequestError` outside the window, :class:`ReplayedRequestError` for a key
        already accepted, :class:`ServiceUnavailableError` when the cache is full.
        """
        self.check_window(timestamp, now)
        now = self._latest_now
        self._evict(now, full_scan=False)
        if key in self._entries:
            raise ReplayedRequestError("this request was already served", field="request_id")
        if len(self._entries) >= self.max_entries:
            self._evict(now, full_scan=True)
            if len(self._entries) >= self.max_entries:
                raise ServiceUnavailableError("replay cache is full; try again shortly")
        self._entries[bytes(key)] = timestamp

    def __repr__(self) -> str:
        return f"ReplayGuard(window_s={self.window_s:g}, entries={len(self._entries)})"


@dataclass(frozen=True, slots=True)
class _RetiredKey:
    key: X25519KeyPair
    retired_at: float


class NodeKeyRing:
    """A node's current X25519 key and the keys it rotated away from, each usable for a grace
    window after its retirement. Immutable: :meth:`rotate` returns a new ring."""

    __slots__ = ("_by_id", "_current", "_retired", "grace_s")

    def __init__(self, current: X25519KeyPair, *, retired: Iterable[tuple[X25519KeyPair, float]] = (),
                 grace_s: float = DEFAULT_KEY_GRACE_S) -> None:
        if grace_s < 0:
            raise ValueError("grace_s must not be negative")
        self.grace_s = float(grace_s)
        self._current = current
        self._retired = tuple(_RetiredKey(k, float(t)) for k, t in retired)
        self._by_id: dict[bytes, _RetiredKey | None] = {
            node_key_id(r.key.public_bytes): r for r in self._retired
        }
        self._by_id[node_key_id(current.public_bytes)] = None

    @property
    def current(self) -> X25519KeyPair:
        return self._current

    @property
    def current_key_id(self) -> bytes:
        return node_key_id(self._current.public_bytes)

    def rotate(self, new_key: X25519KeyPair, *, now: float) -> NodeKeyRing:
        """A ring whose current key is ``new_key``; the old one is retired at ``now``, and keys
        retired longer than the grace window ago are dropped."""
        keep = [(r.key, r.retired_at) for r in self._retired if now - r.retired_at <= self.grace_s]
        return NodeKeyRing(new_key, retired=[*keep, (self._current, now)], grace_s=self.grace_s)

    def lookup(self, key_id: bytes, *, now: float) -> X25519KeyPair:
        """The key with ``key_id``, or :class:`NodeKeyMismatchError` (unknown, or past grace)."""
        if key_id not in self._by_id:
            raise NodeKeyMismatchError(
                "node_key_id names no key of this node; take a new lock and seal again",
                field="node_key_id",
            )
        retired = self._by_id[key_id]
        if retired is None:
            return self._current
        if now - retired.retired_at > self.grace_s:
            raise NodeKeyMismatchError(
                "node_key_id names a key this node retired; take a new lock and seal again",
                field="node_key_id",
            )
        return retired.key

    def __repr__(self) -> str:
        return (f"NodeKeyRing(current={self.current_key_id.hex()[:16]}..., "
                f"retired={len(self._retired)}, grace_s={self.grace_s:g})")


# ------------------------------------------------------------------------------------------------
# Seal and open
# ------------------------------------------------------------------------------------------------


def _decrypt(cipher: AESGCM, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return cipher.decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise DecryptionError("AES-256-GCM authentication failed") from exc


def _draw(value: bytes | None, size: int, name: str, rng: RandomBytes) -> bytes:
    out = rng(size) if value is None else value
    if not isinstance(out, bytes) or len(out) != size:
        raise ValueError(f"{name} must be {size} bytes")
    return out


@dataclass(slots=True, repr=False)
class HardenedClientContext:
    """What the client keeps to open the one response to a sealed request. Single use."""

    _n2c: AESGCM
    request_id: bytes
    request_hash: bytes
    node_public_key: bytes
    _opened: bool = False
    profile: str = PROFILE

    def __repr__(self) -> str:
        return f"HardenedClientContext(request_id={self.request_id.hex()}, <key redacted>)"


@dataclass(frozen=True, slots=True)
class SealedHardenedRequest:
    """A sealed request and the client context needed to open its response."""

    request: HardenedRequest
    context: HardenedClientContext


def seal_request(
    plaintext: bytes,
    *,
    node_public_key: bytes,
    model_name: str,
    stack_small_id: int,
    now: float,
    num_compute_units: int | None = None,
    client_key: X25519KeyPair | None = None,
    salt: bytes | None = None,
    nonce: bytes | None = None,
    request_id: bytes | None = None,
    rng: RandomBytes = secrets.token_bytes,
    profile: str = PROFILE,
) -> SealedHardenedRequest:
    """Encrypt ``plaintext`` (the exact OpenAI JSON bytes) for a node key, hardened profile.

    ``now`` (Unix seconds) becomes the request's ``timestamp`` (rounded down). A fresh client key,
    salt, nonce and request id are drawn unless injected (for vectors). ``profile=PROFILE_HPKE``
    seals with HPKE: ``client_key`` is then the HPKE ephemeral key (``client_dh_public_key`` is
    ``enc``), and ``nonce`` is bound in the AAD but HPKE derives the AEAD nonce itself.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}")
    if not isinstance(plaintext, bytes):
        raise TypeError("plaintext must be bytes")
    if now < 0:
        raise ValueError("now must be a Unix time in seconds")
    client_key = client_key or X25519KeyPair.generate()
    salt = _draw(salt, SALT_SIZE, "salt", rng)
    nonce = _draw(nonce, NONCE_SIZE, "nonce", rng)
    request_id = _draw(request_id, REQUEST_ID_SIZE, "request_id", rng)
    node_public_key = bytes(node_public_key)
    key_id = node_key_id(node_public_key)
    hpke_ctx = None
    client_public = client_key.public_bytes
    if profile == PROFILE_HPKE:  # enc is the ephemeral key's public bytes (DHKEM(X25519))
        client_public, hpke_ctx = hpke.setup_base_sender(
            HPKE_SUITE, node_public_key, HPKE_INFO + key_id + salt, ephemeral_key=client_key)
    else:
        shared = client_key.exchange(node_public_key)
        k_c2n, k_n2c = derive_direction_keys(shared, salt, client_key.public_bytes,
                                             node_public_key)
    # Every field but the ciphertext, validated by the dataclass; the AAD does not cover the
    # ciphertext, which replaces the tag-sized stand-in below.
    header = HardenedRequest(
        model_name=model_name,
        stack_small_id=stack_small_id,
        node_key_id=key_id,
        client_dh_public_key=client_public,
        salt=salt,
        nonce=nonce,
        timestamp=int(now),
        request_id=request_id,
        ciphertext=bytes(TAG_SIZE),
        num_compute_units=num_compute_units,
        profile=profile,
    )
    if hpke_ctx is not None:
        ciphertext = hpke_ctx.seal(plaintext, header.aad())
        k_n2c = hpke_ctx.export(HPKE_EXPORT_N2C, 32)
    else:
        ciphertext = AESGCM(k_c2n).encrypt(nonce, plaintext, header.aad())
    request = replace(header, ciphertext=ciphertext)
    context = HardenedClientContext(
        _n2c=AESGCM(k_n2c), request_id=request_id, request_hash=request.request_hash(),
        node_public_key=node_public_key, profile=profile,
    )
    return SealedHardenedRequest(request=request, context=context)


@dataclass(slots=True, repr=False)
class HardenedNodeContext:
    """What the node keeps to seal the one response to an opened request. Single use."""

    _n2c: AESGCM
    request_id: bytes
    request_hash: bytes
    _sealed: bool = False
    profile: str = PROFILE

    def __repr__(self) -> str:
        return f"HardenedNodeContext(request_id={self.request_id.hex()}, <key redacted>)"


class OpenedHardenedRequest(NamedTuple):
    """A request the node has authenticated, decrypted and recorded in its replay guard."""

    plaintext: bytes
    request: HardenedRequest
    context: HardenedNodeContext

    def __repr__(self) -> str:
        return f"OpenedHardenedRequest(<{len(self.plaintext)} bytes>, {self.context!r})"


def open_request(
    request: HardenedRequest,
    keys: NodeKeyRing | X25519KeyPair,
    *,
    guard: ReplayGuard,
    now: float,
) -> OpenedHardenedRequest:
    """Open a hardened request on the node, checks in this order:

    1. ``node_key_id`` names a key of the ring, current or within grace
       (:class:`NodeKeyMismatchError`);
    2. ``timestamp`` within the guard's window (:class:`StaleRequestError`);
    3. X25519 + HKDF + AES-256-GCM with the request AAD (:class:`InvalidPublicKeyError`,
       :class:`DecryptionError`);
    4. not seen before (:class:`ReplayedRequestError`); recorded only now that it authenticated.
    """
    ring = keys if isinstance(keys, NodeKeyRing) else NodeKeyRing(keys)
    node_key = ring.lookup(request.node_key_id, now=now)
    guard.check_window(request.timestamp, now)
    aad = request.aad()
    if request.profile == PROFILE_HPKE:
        hpke_ctx = hpke.setup_base_recipient(HPKE_SUITE, request.client_dh_public_key, node_key,
                                             HPKE_INFO + request.node_key_id + request.salt)
        plaintext = hpke_ctx.open(request.ciphertext, aad)
        k_n2c = hpke_ctx.export(HPKE_EXPORT_N2C, 32)
    else:
        shared = node_key.exchange(request.client_dh_public_key)
        k_c2n, k_n2c = derive_direction_keys(shared, request.salt, request.client_dh_public_key,
                                             node_key.public_bytes)
        plaintext = _decrypt(AESGCM(k_c2n), request.nonce, request.ciphertext, aad)
    guard.check(request.replay_key, request.timestamp, now)
    context = HardenedNodeContext(
        _n2c=AESGCM(k_n2c), request_id=request.request_id,
        request_hash=blake2b_256(aad + request.ciphertext), profile=request.profile,
    )
    return OpenedHardenedRequest(plaintext=plaintext, request=request, context=context)


def seal_response(
    plaintext: bytes,
    context: HardenedNodeContext,
    *,
    signer: SuiSigner,
    usage: Usage | None = None,
    nonce: bytes | None = None,
    rng: RandomBytes = secrets.token_bytes,
) -> HardenedResponse:
    """Encrypt the response under the node->client key, bound to the request, and sign the receipt.

    ``usage`` travels in clear for the proxy and is bound into the AAD, so the client sees what
    the node reported.
    """
    if not isinstance(plaintext, bytes):
        raise TypeError("plaintext must be bytes")
    if context._sealed:
        raise ValueError("this request's response was already sealed")
    nonce = _draw(nonce, NONCE_SIZE, "nonce", rng)
    context._sealed = True
    if usage is not None and not isinstance(usage, Usage):
        raise TypeError("usage must be a Usage")
    aad = _response_aad(context.profile, context.request_id, context.request_hash, nonce, usage)
    ciphertext = context._n2c.encrypt(nonce, plaintext, aad)
    digest = receipt_digest(context.request_hash, blake2b_256(aad + ciphertext))
    return HardenedResponse(
        request_id=context.request_id, request_hash=context.request_hash, nonce=nonce,
        ciphertext=ciphertext, signature=signer.sign(digest).to_base64(), usage=usage,
        profile=context.profile,
    )


class OpenedHardenedResponse(NamedTuple):
    """A decrypted response whose binding and signature were checked."""

    plaintext: bytes
    request_hash: bytes
    response_hash: bytes
    signer: SuiSignature
    usage: Usage | None

    def __repr__(self) -> str:
        return (f"OpenedHardenedResponse(<{len(self.plaintext)} bytes>, "
                f"response_hash={self.response_hash.hex()})")


def verify_receipt(request_hash: bytes, response: HardenedResponse, *,
                   expected_signer_address: str | None = None) -> SuiSignature:
    """Check the node's signature over the receipt of ``response`` to the request with
    ``request_hash``; needs no key, so a proxy can run it. :class:`SignatureError` if it fails."""
    digest = receipt_digest(request_hash, response.response_hash())
    return verify_sui_signature(response.signature, digest,
                                expected_address=expected_signer_address)


def open_response(
    response: HardenedResponse,
    context: HardenedClientContext,
    *,
    expected_signer_address: str | None = None,
) -> OpenedHardenedResponse:
    """Open a hardened response on the client:

    1. it must name this context's request id and request hash (:class:`ResponseMismatchError`);
    2. the node's signature over the receipt must verify, by ``expected_signer_address`` if given
       (:class:`SignatureError`);
    3. AES-256-GCM under the node->client key with the response AAD (:class:`DecryptionError`).

    The context opens one response; a second call is a ``ValueError``.
    """
    if context._opened:
        raise ValueError("this context already opened a response")
    if response.profile != context.profile:
        raise ProfileMismatchError(f"a {response.profile} response to a {context.profile} "
                                   "request", field="profile")
    if not hmac.compare_digest(response.request_id, context.request_id):
        raise ResponseMismatchError("response answers another request_id", field="request_id")
    if not hmac.compare_digest(response.request_hash, context.request_hash):
        raise ResponseMismatchError("response answers another request", field="request_hash")
    aad = response.aad()
    response_hash = blake2b_256(aad + response.ciphertext)
    signer = verify_sui_signature(
        response.signature, receipt_digest(context.request_hash, response_hash),
        expected_address=expected_signer_address,
    )
    plaintext = _decrypt(context._n2c, response.nonce, response.ciphertext, aad)
    context._opened = True
    return OpenedHardenedResponse(plaintext=plaintext, request_hash=context.request_hash,
                                  response_hash=response_hash, signer=signer, usage=response.usage)


__all__ = [
    "DEFAULT_KEY_GRACE_S",
    "DEFAULT_REPLAY_CACHE_ENTRIES",
    "DEFAULT_REPLAY_WINDOW_S",
    "HPKE_EXPORT_N2C",
    "HPKE_INFO",
    "LABEL_C2N",
    "LABEL_N2C",
    "PROFILE",
    "PROFILES",
    "PROFILE_HPKE",
    "RECEIPT_LABEL",
    "HardenedClientContext",
    "HardenedNodeContext",
    "HardenedRequest",
    "HardenedResponse",
    "NodeKeyRing",
    "OpenedHardenedRequest",
    "OpenedHardenedResponse",
    "ReplayGuard",
    "SealedHardenedRequest",
    "derive_direction_keys",
    "node_key_id",
    "open_request",
    "open_response",
    "parse_request",
    "parse_response",
    "receipt_digest",
    "seal_request",
    "seal_response",
    "verify_receipt",
]
