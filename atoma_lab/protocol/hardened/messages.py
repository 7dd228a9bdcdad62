"""The hardened profile's wire messages, strict parsing and downgrade checks. Pure.

Each model is declared once (:mod:`atoma_lab.protocol.wire`); unlike Atoma's, unknown keys are
refused, and a body of the other profile, or a profile-less one carrying this profile's fields, is
a :class:`~atoma_lab.errors.ProfileMismatchError`.
"""


from __future__ import annotations

from typing import Any, Self

from atoma_lab.crypto.aead import NONCE_SIZE, TAG_SIZE
from atoma_lab.crypto.hashing import HASH_SIZE, blake2b_256
from atoma_lab.crypto.kdf import SALT_SIZE
from atoma_lab.crypto.keys import X25519_KEY_SIZE
from atoma_lab.errors import InvalidFieldError, ProfileMismatchError
from atoma_lab.protocol.atoma.messages import (
    SUI_SIGNATURE,
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    Usage,
)
from atoma_lab.protocol.hardened.layout import (
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
from atoma_lab.protocol.wire import (
    Base64Text,
    Bytes,
    Choice,
    Nested,
    Text,
    UInt,
    WireModel,
    wire,
    wire_names,
)


def _object(data: object, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidFieldError(f"{what}: expected a JSON object", field=what)
    return data


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


_PROFILE_FIELD = "the envelope profile (bound in the AAD)"


class HardenedRequest(WireModel, root="body", what="hardened request", unknown="forbid"):
    """The hardened confidential request body (client -> proxy -> node): atoma-lab's hardened
    profile, not Atoma's."""

    profile: str = wire(Choice(*PROFILES, error=ProfileMismatchError), default=PROFILE,
                        kw_only=True, required=True, description=_PROFILE_FIELD)
    model_name: str = wire(Text(nonempty=True))
    stack_small_id: int = wire(UInt())
    node_key_id: bytes = wire(Bytes(KEY_ID_SIZE),
                              description="BLAKE2b-256 of the node key it is sealed to")
    client_dh_public_key: bytes = wire(Bytes(X25519_KEY_SIZE),
                                       description="ephemeral X25519 key (HPKE enc)")
    salt: bytes = wire(Bytes(SALT_SIZE), description="HKDF salt")
    nonce: bytes = wire(Bytes(NONCE_SIZE), description="AES-GCM nonce (bound in the AAD)")
    timestamp: int = wire(UInt(), description="client Unix time, seconds (replay window)")
    request_id: bytes = wire(Bytes(REQUEST_ID_SIZE), description="random request id")
    num_compute_units: int | None = wire(UInt(), default=None, kw_only=True)
    ciphertext: bytes = wire(Bytes(min_size=TAG_SIZE), repr=False,
                             description="AES-256-GCM output with the AAD, tag appended")

    def aad(self) -> bytes:
        """The request AAD (layout in docs/hardened-profile.md)."""
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
    def from_dict(cls, data: object) -> Self:
        d = _object(data, "body")
        _check_profile(d, atoma_only=ATOMA_ONLY_REQUEST_FIELDS, allowed=_REQUEST_FIELDS,
                       what="request")
        return super().from_dict(d)


class HardenedResponse(WireModel, root="response", what="hardened response", unknown="forbid"):
    """The hardened confidential response body (node -> proxy -> client): atoma-lab's hardened
    profile, not Atoma's."""

    profile: str = wire(Choice(*PROFILES, error=ProfileMismatchError), default=PROFILE,
                        kw_only=True, required=True, description=_PROFILE_FIELD)
    request_id: bytes = wire(Bytes(REQUEST_ID_SIZE), description="the request it answers")
    request_hash: bytes = wire(Bytes(HASH_SIZE),
                               description="BLAKE2b-256 of request AAD and ciphertext")
    nonce: bytes = wire(Bytes(NONCE_SIZE), description="AES-GCM nonce of the response")
    ciphertext: bytes = wire(Bytes(min_size=TAG_SIZE), repr=False,
                             description="the sealed OpenAI response")
    signature: str = wire(Base64Text(nonempty=True), description=SUI_SIGNATURE)
    usage: Usage | None = wire(Nested(Usage), default=None)

    def aad(self) -> bytes:
        """The response AAD (layout in docs/hardened-profile.md)."""
        return _response_aad(self.profile, self.request_id, self.request_hash, self.nonce,
                             self.usage)

    def response_hash(self) -> bytes:
        """BLAKE2b-256(AAD ‖ ciphertext)."""
        return blake2b_256(self.aad() + self.ciphertext)

    @classmethod
    def from_dict(cls, data: object) -> Self:
        d = _object(data, "response")
        _check_profile(d, atoma_only=ATOMA_ONLY_RESPONSE_FIELDS, allowed=_RESPONSE_FIELDS,
                       what="response")
        return super().from_dict(d)


# What tells the profiles apart, from the two declarations: a field only Atoma's profile has marks
# a hardened body as spliced or downgraded; one only the hardened profile has marks a body
# without a profile as a hardened one with its profile stripped.
_REQUEST_FIELDS = frozenset(wire_names(HardenedRequest))
_RESPONSE_FIELDS = frozenset(wire_names(HardenedResponse))
ATOMA_ONLY_REQUEST_FIELDS = frozenset(wire_names(ConfidentialComputeRequest)) - _REQUEST_FIELDS
ATOMA_ONLY_RESPONSE_FIELDS = frozenset(wire_names(ConfidentialComputeResponse)) - _RESPONSE_FIELDS
HARDENED_ONLY_REQUEST_FIELDS = _REQUEST_FIELDS - {"profile"} - set(
    wire_names(ConfidentialComputeRequest))
HARDENED_ONLY_RESPONSE_FIELDS = _RESPONSE_FIELDS - {"profile"} - set(
    wire_names(ConfidentialComputeResponse))


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
    spliced = sorted(HARDENED_ONLY_REQUEST_FIELDS & d.keys())
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
    if "profile" not in d and not (HARDENED_ONLY_RESPONSE_FIELDS & d.keys()):
        raise ProfileMismatchError(
            f"an Atoma-profile response to a {PROFILE} request", field="profile"
        )
    return HardenedResponse.from_dict(d)
