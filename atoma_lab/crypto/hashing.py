"""BLAKE2b with a 32-byte digest (the parameter block's digest length, not BLAKE2b-512 cut)."""

from __future__ import annotations

import hashlib

HASH_SIZE = 32  # bytes (atoma-utils/src/lib.rs, constants::PAYLOAD_HASH_SIZE)


def blake2b_256(data: bytes) -> bytes:
    """BLAKE2b-256 of ``data``; equals RustCrypto ``Blake2b<U32>``."""
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()
