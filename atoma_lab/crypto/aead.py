"""AES-256-GCM with a 96-bit nonce and the 128-bit tag appended (Atoma's AEAD)."""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atoma_lab.errors import DecryptionError

NONCE_SIZE = 12  # bytes, AES-GCM (atoma-utils/src/lib.rs, constants::NONCE_SIZE)
TAG_SIZE = 16  # bytes, appended to the ciphertext
KEY_SIZE = 32  # bytes, AES-256


class AesGcmKey:
    """An AES-256-GCM key with its cipher context built once.

    It exposes no way to pick a nonce except as an argument the caller must vary; the envelope
    layer (:mod:`atoma_lab.protocol.atoma.envelope`) is the API that chooses nonces.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"AES-256-GCM key must be {KEY_SIZE} bytes, got {len(key)}")
        self._aead = AESGCM(bytes(key))

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes | None = None) -> bytes:
        """Ciphertext followed by the 16-byte tag."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
        return self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes | None = None) -> bytes:
        """The plaintext, or :class:`DecryptionError` if the tag does not verify."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
        if len(ciphertext) < TAG_SIZE:
            raise DecryptionError(
                f"ciphertext is {len(ciphertext)} bytes, shorter than the {TAG_SIZE}-byte tag",
                field="ciphertext",
            )
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag as exc:
            raise DecryptionError("AES-256-GCM authentication failed") from exc

    def __repr__(self) -> str:
        return "AesGcmKey(<redacted>)"


def encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes | None = None) -> bytes:
    """One-shot AES-256-GCM encryption (ciphertext ‖ tag)."""
    return AesGcmKey(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes | None = None) -> bytes:
    """One-shot AES-256-GCM decryption; :class:`DecryptionError` on a bad tag."""
    return AesGcmKey(key).decrypt(nonce, ciphertext, aad)
