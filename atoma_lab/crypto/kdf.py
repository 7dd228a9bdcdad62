"""HKDF-SHA256 (RFC 5869), and Atoma's use of it."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

AES256_KEY_SIZE = 32  # bytes
SALT_SIZE = 16  # bytes, Atoma's request salt (atoma-utils/src/lib.rs, constants::SALT_SIZE)
_SHA256 = hashes.SHA256()


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes = b"", length: int = 32) -> bytes:
    """HKDF-Extract-then-Expand with SHA-256. ``salt=None`` means the RFC's all-zero salt."""
    if not 1 <= length <= 255 * 32:
        raise ValueError("HKDF-SHA256 output length must be 1..8160 bytes")
    return HKDF(algorithm=_SHA256, length=length, salt=salt, info=info).derive(bytes(ikm))


def derive_key(shared_secret: bytes, salt: bytes, *, info: bytes = b"") -> bytes:
    """The AES-256 key Atoma derives: HKDF-SHA256(salt=request salt, IKM=shared, info, L=32).

    Atoma uses an empty ``info``; hardened profiles pass a label per direction.
    """
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    return hkdf_sha256(shared_secret, salt=salt, info=info, length=AES256_KEY_SIZE)
