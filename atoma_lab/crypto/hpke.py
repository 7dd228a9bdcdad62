"""HPKE base mode (RFC 9180) with DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256.

AEADs: AES-128-GCM (0x0001), AES-256-GCM (0x0002) and ChaCha20-Poly1305 (0x0003).

pyca/cryptography 47+ ships ``cryptography.hazmat.primitives.hpke.Suite``, but its public API is a
single-shot ``encrypt(plaintext, public_key, info)`` with no AAD, no secret export and no way to fix
the ephemeral key (so no known-answer vectors). This module therefore builds the RFC's key schedule
from pyca's primitives (X25519, ``HKDF.extract``, ``HKDFExpand``, ``AESGCM``,
``ChaCha20Poly1305``), step by step as RFC 9180 sections 4, 4.1, 5.1, 5.2 and 5.3 write it, and
the tests check it against the RFC's Appendix A vectors and against pyca's own HPKE both ways.

API (names as in RFC 9180 section 5 and 6):

* :func:`seal_base` / :func:`open_base`: single-shot encryption with ``info`` and ``aad``;
* :func:`setup_base_sender` / :func:`setup_base_recipient`: contexts that seal/open a sequence of
  messages (the nonce is ``base_nonce XOR seq``; the sequence only moves forward, so no nonce is
  ever used twice under the key) and :meth:`Context.export` secrets (section 5.3);
* :func:`derive_key_pair`: DeriveKeyPair for X25519 (section 7.1.3), for vectors.

Data from a peer fails with typed errors: an ``enc`` of the wrong size is
:class:`~atoma_lab.errors.InvalidLengthError` (``field="enc"``), a low-order ``enc`` is
:class:`~atoma_lab.errors.InvalidPublicKeyError`, and any authentication failure (wrong key,
changed ``enc``, ciphertext, ``info`` or ``aad``) is :class:`~atoma_lab.errors.DecryptionError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from atoma_lab.crypto.keys import X25519_KEY_SIZE, X25519KeyPair
from atoma_lab.crypto.rng import RandomBytes
from atoma_lab.errors import DecryptionError, InvalidLengthError

KEM_DHKEM_X25519_HKDF_SHA256 = 0x0020  # RFC 9180 section 7.1
KDF_HKDF_SHA256 = 0x0001  # RFC 9180 section 7.2
MODE_BASE = 0x00  # RFC 9180 section 5
ENC_SIZE = X25519_KEY_SIZE  # bytes, Nenc of DHKEM(X25519)
SHARED_SECRET_SIZE = 32  # bytes, Nsecret of DHKEM(X25519, HKDF-SHA256)
HASH_SIZE = 32  # bytes, Nh of HKDF-SHA256
NONCE_SIZE = 12  # bytes, Nn of all three AEADs
TAG_SIZE = 16  # bytes, Nt of all three AEADs
MAX_EXPORT_SIZE = 255 * HASH_SIZE  # bytes, HKDF-Expand's limit

_VERSION_LABEL = b"HPKE-v1"  # RFC 9180 section 4
_SHA256 = hashes.SHA256()
_KEM_SUITE_ID = b"KEM" + KEM_DHKEM_X25519_HKDF_SHA256.to_bytes(2, "big")

class AeadId(IntEnum):
    """HPKE AEAD identifiers (RFC 9180 section 7.3) that this module implements."""

    AES_128_GCM = 0x0001
    AES_256_GCM = 0x0002
    CHACHA20_POLY1305 = 0x0003


_KEY_SIZE = {AeadId.AES_128_GCM: 16, AeadId.AES_256_GCM: 32, AeadId.CHACHA20_POLY1305: 32}


@dataclass(frozen=True, slots=True)
class Suite:
    """DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and one of the three AEADs."""

    aead: AeadId

    def __post_init__(self) -> None:
        object.__setattr__(self, "aead", AeadId(self.aead))

    @property
    def key_size(self) -> int:
        """Nk, bytes."""
        return _KEY_SIZE[self.aead]

    @property
    def suite_id(self) -> bytes:
        """``"HPKE" ‖ I2OSP(kem_id, 2) ‖ I2OSP(kdf_id, 2) ‖ I2OSP(aead_id, 2)`` (section 5.1)."""
        return (
            b"HPKE"
            + KEM_DHKEM_X25519_HKDF_SHA256.to_bytes(2, "big")
            + KDF_HKDF_SHA256.to_bytes(2, "big")
            + int(self.aead).to_bytes(2, "big")
        )

    def _cipher(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        if self.aead is AeadId.CHACHA20_POLY1305:
            return ChaCha20Poly1305(key)
        return AESGCM(key)


X25519_SHA256_AES128GCM = Suite(AeadId.AES_128_GCM)
X25519_SHA256_AES256GCM = Suite(AeadId.AES_256_GCM)
X25519_SHA256_CHACHA20POLY1305 = Suite(AeadId.CHACHA20_POLY1305)


# ------------------------------------------------------------------------------------------------
# Labeled HKDF (section 4)
# ------------------------------------------------------------------------------------------------


def labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    """``Extract(salt, "HPKE-v1" ‖ suite_id ‖ label ‖ ikm)`` with HKDF-SHA256."""
    return HKDF.extract(_SHA256, bytes(salt), _VERSION_LABEL + suite_id + label + bytes(ikm))


def labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    """``Expand(prk, I2OSP(L, 2) ‖ "HPKE-v1" ‖ suite_id ‖ label ‖ info, L)`` with HKDF-SHA256."""
    if not 1 <= length <= MAX_EXPORT_SIZE:
        raise ValueError(f"HKDF-SHA256 output length must be 1..{MAX_EXPORT_SIZE} bytes")
    labeled_info = length.to_bytes(2, "big") + _VERSION_LABEL + suite_id + label + bytes(info)
    return HKDFExpand(_SHA256, length, labeled_info).derive(bytes(prk))


# ------------------------------------------------------------------------------------------------
# DHKEM(X25519, HKDF-SHA256) (section 4.1, 7.1.3)
# ------------------------------------------------------------------------------------------------


def _extract_and_expand(dh: bytes, kem_context: bytes) -> bytes:
    eae_prk = labeled_extract(_KEM_SUITE_ID, b"", b"eae_prk", dh)
    return labeled_expand(_KEM_SUITE_ID, eae_prk, b"shared_secret", kem_context, SHARED_SECRET_SIZE)


def derive_key_pair(ikm: bytes) -> X25519KeyPair:
    """DeriveKeyPair(ikm) for X25519 (section 7.1.3); ``ikm`` of at least 32 bytes."""
    if len(ikm) < SHARED_SECRET_SIZE:
        raise ValueError(f"ikm must be at least {SHARED_SECRET_SIZE} bytes, got {len(ikm)}")
    dkp_prk = labeled_extract(_KEM_SUITE_ID, b"", b"dkp_prk", ikm)
    return X25519KeyPair.from_private_bytes(
        labeled_expand(_KEM_SUITE_ID, dkp_prk, b"sk", b"", X25519_KEY_SIZE)
    )


def encap(recipient_public_key: bytes, ephemeral_key: X25519KeyPair) -> tuple[bytes, bytes]:
    """``(shared_secret, enc)`` for ``pkR`` using the given ephemeral key (section 4.1)."""
    dh = ephemeral_key.exchange(recipient_public_key)  # refuses low-order keys
    enc = ephemeral_key.public_bytes
    return _extract_and_expand(dh, enc + bytes(recipient_public_key)), enc


def decap(enc: bytes, recipient_key: X25519KeyPair) -> bytes:
    """The shared secret for a received ``enc`` (section 4.1)."""
    _check_enc(enc)
    dh = recipient_key.exchange(enc)  # InvalidPublicKeyError for a low-order enc
    return _extract_and_expand(dh, bytes(enc) + recipient_key.public_bytes)


def _check_enc(enc: bytes) -> None:
    if not isinstance(enc, bytes | bytearray):
        raise TypeError(f"enc must be bytes, not {type(enc).__name__}")
    if len(enc) != ENC_SIZE:
        raise InvalidLengthError(f"enc: expected {ENC_SIZE} bytes, got {len(enc)}", field="enc")


# ------------------------------------------------------------------------------------------------
# Key schedule and contexts (section 5.1, 5.2, 5.3)
# ------------------------------------------------------------------------------------------------


class KeySchedule(NamedTuple):
    """The values KeyScheduleBase derives (exposed for known-answer tests; handle as secrets)."""

    key_schedule_context: bytes
    secret: bytes
    key: bytes
    base_nonce: bytes
    exporter_secret: bytes

    def __repr__(self) -> str:
        return "KeySchedule(<redacted>)"


def key_schedule_base(suite: Suite, shared_secret: bytes, info: bytes) -> KeySchedule:
    """KeySchedule(mode_base, shared_secret, info, psk="", psk_id="") (section 5.1)."""
    sid = suite.suite_id
    psk_id_hash = labeled_extract(sid, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(sid, b"", b"info_hash", bytes(info))
    context = bytes([MODE_BASE]) + psk_id_hash + info_hash
    secret = labeled_extract(sid, bytes(shared_secret), b"secret", b"")
    return KeySchedule(
        key_schedule_context=context,
        secret=secret,
        key=labeled_expand(sid, secret, b"key", context, suite.key_size),
        base_nonce=labeled_expand(sid, secret, b"base_nonce", context, NONCE_SIZE),
        exporter_secret=labeled_expand(sid, secret, b"exp", context, HASH_SIZE),
    )


class Context:
    """An HPKE encryption context: one direction, a sequence number, and the exporter.

    A sender context only seals and a recipient context only opens. The sequence number starts at
    0 and moves forward by one per successful seal/open (a failed open does not move it, as
    RFC 9180 section 5.2 says), so every message uses a nonce never used before under the key.
    """

    __slots__ = ("_base_nonce", "_cipher", "_exporter_secret", "_role", "_seq", "suite")

    def __init__(self, suite: Suite, schedule: KeySchedule, *, role: str) -> None:
        self.suite = suite
        self._cipher = suite._cipher(schedule.key)
        self._base_nonce = int.from_bytes(schedule.base_nonce, "big")
        self._exporter_secret = schedule.exporter_secret
        self._seq = 0
        self._role = role

    @property
    def sequence_number(self) -> int:
        """The sequence number the next message will use."""
        return self._seq

    def _nonce(self) -> bytes:
        if self._seq >= (1 << (8 * NONCE_SIZE)) - 1:  # section 5.2, MessageLimitReachedError
            raise ValueError("HPKE context exhausted its sequence numbers")
        return (self._base_nonce ^ self._seq).to_bytes(NONCE_SIZE, "big")

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Ciphertext ‖ tag of the next message (sender contexts only)."""
        if self._role != "sender":
            raise ValueError("a recipient context cannot seal")
        ciphertext = self._cipher.encrypt(self._nonce(), bytes(plaintext), bytes(aad))
        self._seq += 1
        return ciphertext

    def open(self, ciphertext: bytes, aad: bytes = b"") -> bytes:
        """The plaintext of the next message, or :class:`DecryptionError` (recipients only)."""
        if self._role != "recipient":
            raise ValueError("a sender context cannot open")
        if len(ciphertext) < TAG_SIZE:
            raise DecryptionError(
                f"ciphertext is {len(ciphertext)} bytes, shorter than the {TAG_SIZE}-byte tag",
                field="ciphertext",
            )
        try:
            plaintext = self._cipher.decrypt(self._nonce(), bytes(ciphertext), bytes(aad))
        except InvalidTag as exc:
            raise DecryptionError("HPKE authentication failed") from exc
        self._seq += 1
        return plaintext

    def export(self, exporter_context: bytes, length: int) -> bytes:
        """``LabeledExpand(exporter_secret, "sec", exporter_context, L)`` (section 5.3)."""
        return labeled_expand(
            self.suite.suite_id, self._exporter_secret, b"sec", bytes(exporter_context), length
        )

    def __repr__(self) -> str:
        return f"Context({self.suite.aead.name}, {self._role}, seq={self._seq}, <key redacted>)"


def _ephemeral(ephemeral_key: X25519KeyPair | None, rng: RandomBytes | None) -> X25519KeyPair:
    if ephemeral_key is not None:
        return ephemeral_key
    if rng is not None:
        return derive_key_pair(rng(SHARED_SECRET_SIZE))
    return X25519KeyPair.generate()


def setup_base_sender(
    suite: Suite,
    recipient_public_key: bytes,
    info: bytes = b"",
    *,
    ephemeral_key: X25519KeyPair | None = None,
    rng: RandomBytes | None = None,
) -> tuple[bytes, Context]:
    """``(enc, sender context)`` (SetupBaseS, section 5.1.1).

    The ephemeral key is fresh from the OS unless ``ephemeral_key`` is given (vectors) or ``rng``
    supplies the 32 bytes of ikm for DeriveKeyPair.
    """
    shared, enc = encap(recipient_public_key, _ephemeral(ephemeral_key, rng))
    return enc, Context(suite, key_schedule_base(suite, shared, info), role="sender")


def setup_base_recipient(
    suite: Suite, enc: bytes, recipient_key: X25519KeyPair, info: bytes = b""
) -> Context:
    """The recipient context for ``enc`` (SetupBaseR, section 5.1.1)."""
    shared = decap(enc, recipient_key)
    return Context(suite, key_schedule_base(suite, shared, info), role="recipient")


class Sealed(NamedTuple):
    """A single-shot HPKE message: the encapsulated key and the ciphertext ‖ tag."""

    enc: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        """``enc ‖ ciphertext``, the layout pyca's ``Suite.encrypt`` and OHTTP use."""
        return self.enc + self.ciphertext

    def __repr__(self) -> str:
        return f"Sealed(enc={self.enc.hex()[:16]}..., <{len(self.ciphertext)} bytes>)"


def seal_base(
    suite: Suite,
    recipient_public_key: bytes,
    plaintext: bytes,
    *,
    info: bytes = b"",
    aad: bytes = b"",
    ephemeral_key: X25519KeyPair | None = None,
    rng: RandomBytes | None = None,
) -> Sealed:
    """Single-shot SealBase (section 6.1): a fresh ephemeral key per call unless injected."""
    enc, context = setup_base_sender(
        suite, recipient_public_key, info, ephemeral_key=ephemeral_key, rng=rng
    )
    return Sealed(enc, context.seal(plaintext, aad))


def open_base(
    suite: Suite,
    recipient_key: X25519KeyPair,
    enc: bytes,
    ciphertext: bytes,
    *,
    info: bytes = b"",
    aad: bytes = b"",
) -> bytes:
    """Single-shot OpenBase (section 6.1).

    :class:`InvalidLengthError` for an ``enc`` that is not 32 bytes, :class:`InvalidPublicKeyError`
    for a low-order one, :class:`DecryptionError` for anything that does not authenticate.
    """
    return setup_base_recipient(suite, enc, recipient_key, info).open(ciphertext, aad)


def split_enc(message: bytes) -> Sealed:
    """Split ``enc ‖ ciphertext`` (pyca's and OHTTP's layout) into its parts."""
    if len(message) < ENC_SIZE + TAG_SIZE:
        raise InvalidLengthError(
            f"HPKE message: at least {ENC_SIZE + TAG_SIZE} bytes, got {len(message)}",
            field="enc",
        )
    return Sealed(bytes(message[:ENC_SIZE]), bytes(message[ENC_SIZE:]))


__all__ = [
    "ENC_SIZE",
    "X25519_SHA256_AES128GCM",
    "X25519_SHA256_AES256GCM",
    "X25519_SHA256_CHACHA20POLY1305",
    "AeadId",
    "Context",
    "KeySchedule",
    "Sealed",
    "Suite",
    "decap",
    "derive_key_pair",
    "encap",
    "key_schedule_base",
    "labeled_expand",
    "labeled_extract",
    "open_base",
    "seal_base",
    "setup_base_recipient",
    "setup_base_sender",
    "split_enc",
]
