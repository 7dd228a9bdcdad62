"""Byte layouts of the hardened profile: constants, the AAD building blocks, the direction keys
and the receipt (docs/hardened-profile.md). Key ids (:func:`~atoma_lab.protocol.keyring.node_key_id`)
belong to the node key ring, which both profiles share. Pure."""


from __future__ import annotations

from atoma_lab.crypto import hpke
from atoma_lab.crypto.hashing import HASH_SIZE, blake2b_256
from atoma_lab.crypto.kdf import derive_key
from atoma_lab.protocol.atoma.messages import (  # the strict JSON helpers are shared
    Usage,
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
_MSG_REQUEST = b"\x01"
_MSG_RESPONSE = b"\x02"





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


def _response_aad(profile: str, request_id: bytes, request_hash: bytes, nonce: bytes,
                  usage: Usage | None) -> bytes:
    if usage is None:
        bound_usage = b"\x00"
    else:
        bound_usage = (b"\x01" + _u64(usage.prompt_tokens) + _u64(usage.total_tokens)
                       + _opt_u64(usage.completion_tokens))
    prefix = _PROFILE_PREFIX if profile == PROFILE else _str16(profile)
    return prefix + _MSG_RESPONSE + request_id + request_hash + nonce + bound_usage
