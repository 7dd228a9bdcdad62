"""Cryptographic building blocks on pyca/cryptography; no I/O, no clock, no global randomness.

Modules: :mod:`.keys` (X25519), :mod:`.kdf` (HKDF-SHA256), :mod:`.aead` (AES-256-GCM),
:mod:`.hashing` (BLAKE2b-256), :mod:`.signing` (Ed25519 / ECDSA in Sui's serialised form).
"""

from atoma_lab.crypto.aead import AesGcmKey, decrypt, encrypt
from atoma_lab.crypto.hashing import HASH_SIZE, blake2b_256
from atoma_lab.crypto.hpke import open_base, seal_base, setup_base_recipient, setup_base_sender
from atoma_lab.crypto.kdf import derive_key, hkdf_sha256
from atoma_lab.crypto.keys import X25519_KEY_SIZE, X25519KeyPair, x25519_shared_secret
from atoma_lab.crypto.signing import (
    SuiSignature,
    SuiSigner,
    sui_address,
    verify_sui_signature,
)

__all__ = [
    "HASH_SIZE",
    "X25519_KEY_SIZE",
    "AesGcmKey",
    "SuiSignature",
    "SuiSigner",
    "X25519KeyPair",
    "blake2b_256",
    "decrypt",
    "derive_key",
    "encrypt",
    "hkdf_sha256",
    "open_base",
    "seal_base",
    "setup_base_recipient",
    "setup_base_sender",
    "sui_address",
    "verify_sui_signature",
    "x25519_shared_secret",
]
