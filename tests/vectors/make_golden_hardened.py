"""Generate ``golden_hardened.json``: known-answer envelopes of the ``atoma-lab/hardened-v1`` profile.

Computed *independently of* ``atoma_lab`` (pyca ``cryptography``, :mod:`hashlib`, :mod:`base64`,
:mod:`json` only), from the profile as the module docstring of ``atoma_lab/protocol/hardened.py``
specifies it:

* ``shared = X25519(client_sk, node_pk)``;
* ``k_c2n = HKDF-SHA256(salt, shared, "atoma-lab/hardened-v1 client->node" ‖ client_pk ‖ node_pk)``,
  ``k_n2c`` likewise with ``"atoma-lab/hardened-v1 node->client"``, 32 bytes each;
* request AAD ``str16(profile) ‖ 01 ‖ str16(model_name) ‖ u64(stack_small_id) ‖ node_key_id ‖
  client_pk ‖ salt ‖ nonce ‖ u64(timestamp) ‖ request_id ‖ opt(u64(num_compute_units))`` with
  ``node_key_id = BLAKE2b-256(node_pk)``; ciphertext = AES-256-GCM(k_c2n, nonce, plaintext, AAD);
* ``request_hash = BLAKE2b-256(request AAD ‖ ciphertext)``;
* response AAD ``str16(profile) ‖ 02 ‖ request_id ‖ request_hash ‖ nonce ‖ opt(usage)``;
  ciphertext = AES-256-GCM(k_n2c, response nonce, plaintext, AAD);
* ``response_hash = BLAKE2b-256(response AAD ‖ ciphertext)``, ``receipt =
  BLAKE2b-256(str16("atoma-lab/hardened-v1 receipt") ‖ request_hash ‖ response_hash)``, signature
  ``b64(0x00 ‖ Ed25519(seed, receipt) ‖ pk)``.

Fixed inputs: RFC 7748 section 6.1 Alice (client) and Bob (node) keys, the RFC 8032 section 7.1
TEST 1 signer, byte ranges for salts, nonces and request ids. Deterministic.

Usage (from the repository root)::

    python tests/vectors/make_golden_hardened.py          # (re)write the JSON file
    python tests/vectors/make_golden_hardened.py --check  # exit 1 if the file is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when a test loads this file
# The RFC 7748 section 6.1 keys, the RFC 8032 TEST 1 seed, the primitives' helpers and the command
# line are shared.
from make_golden_envelopes import (
    ALICE_SK,
    BOB_SK,
    ED25519_SEED,
    MINILM,
    b64,
    blake2b_256,
    compact,
    hkdf_sha256,
    rfc7748_parties,
    rfc8032_signer,
    write_or_check,
)

OUT = Path(__file__).with_name("golden_hardened.json")

PROFILE = "atoma-lab/hardened-v1"

CASES = [
    {
        "name": "minimal",
        "request_plaintext": '{"input":"The quick brown fox","model":"' + MINILM + '"}',
        "model_name": MINILM,
        "stack_small_id": 7,
        "num_compute_units": None,
        "timestamp": 1_767_225_600,  # 2026-01-01T00:00:00Z
        "salt": bytes(range(0x00, 0x10)),
        "nonce": bytes(range(0x20, 0x2C)),
        "request_id": bytes(range(0x60, 0x70)),
        "response_plaintext": (
            '{"object":"list","data":[{"object":"embedding","embedding":[0.25,-0.5],"index":0}],'
            '"model":"' + MINILM + '","usage":{"prompt_tokens":6,"total_tokens":6}}'
        ),
        "response_nonce": bytes(range(0x40, 0x4C)),
        "usage": None,
    },
    {
        "name": "compute_units_and_usage",
        "request_plaintext": '{"input":["Grüß Gott","日本語"],"model":"' + MINILM + '"}',
        "model_name": MINILM,
        "stack_small_id": 2**53 + 1,
        "num_compute_units": 8192,
        "timestamp": 1_767_225_601,
        "salt": bytes(range(0x10, 0x20)),
        "nonce": bytes(range(0x30, 0x3C)),
        "request_id": bytes(range(0x70, 0x80)),
        "response_plaintext": (
            '{"object":"list","data":[{"object":"embedding","embedding":[1e-8],"index":0},'
            '{"object":"embedding","embedding":[-0.0],"index":1}],"model":"' + MINILM + '",'
            '"usage":{"prompt_tokens":9,"total_tokens":9}}'
        ),
        "response_nonce": bytes(range(0x50, 0x5C)),
        "usage": {"prompt_tokens": 9, "total_tokens": 9},
    },
]


def str16(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def opt_u64(value: int | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + u64(value)


def build() -> dict:
    client_pk, node_pk, shared = rfc7748_parties()
    key_id = blake2b_256(node_pk)
    signer, sui_address = rfc8032_signer()
    signer_pk = signer.public_key().public_bytes_raw()
    profile = str16(PROFILE.encode())

    cases = []
    for case in CASES:
        salt, nonce, request_id = case["salt"], case["nonce"], case["request_id"]
        k_c2n = hkdf_sha256(shared, salt, b"atoma-lab/hardened-v1 client->node" + client_pk + node_pk)
        k_n2c = hkdf_sha256(shared, salt, b"atoma-lab/hardened-v1 node->client" + client_pk + node_pk)
        request_aad = (
            profile + b"\x01" + str16(case["model_name"].encode()) + u64(case["stack_small_id"])
            + key_id + client_pk + salt + nonce + u64(case["timestamp"]) + request_id
            + opt_u64(case["num_compute_units"])
        )
        request_ct = AESGCM(k_c2n).encrypt(nonce, case["request_plaintext"].encode(), request_aad)
        request_hash = blake2b_256(request_aad + request_ct)
        request_wire = {
            "profile": PROFILE,
            "model_name": case["model_name"],
            "stack_small_id": case["stack_small_id"],
            "node_key_id": b64(key_id),
            "client_dh_public_key": b64(client_pk),
            "salt": b64(salt),
            "nonce": b64(nonce),
            "timestamp": case["timestamp"],
            "request_id": b64(request_id),
        }
        if case["num_compute_units"] is not None:
            request_wire["num_compute_units"] = case["num_compute_units"]
        request_wire["ciphertext"] = b64(request_ct)

        usage = case["usage"]
        usage_bytes = b"\x00" if usage is None else (
            b"\x01" + u64(usage["prompt_tokens"]) + u64(usage["total_tokens"]) + b"\x00"
        )
        response_nonce = case["response_nonce"]
        response_aad = profile + b"\x02" + request_id + request_hash + response_nonce + usage_bytes
        response_ct = AESGCM(k_n2c).encrypt(
            response_nonce, case["response_plaintext"].encode(), response_aad
        )
        response_hash = blake2b_256(response_aad + response_ct)
        receipt = blake2b_256(
            str16(b"atoma-lab/hardened-v1 receipt") + request_hash + response_hash
        )
        signature = b64(b"\x00" + signer.sign(receipt) + signer_pk)
        response_wire = {
            "profile": PROFILE,
            "request_id": b64(request_id),
            "request_hash": b64(request_hash),
            "nonce": b64(response_nonce),
            "ciphertext": b64(response_ct),
            "signature": signature,
        }
        if usage is not None:
            response_wire["usage"] = usage
        cases.append({
            "name": case["name"],
            "inputs": {
                "request_plaintext": case["request_plaintext"],
                "model_name": case["model_name"],
                "stack_small_id": case["stack_small_id"],
                "num_compute_units": case["num_compute_units"],
                "timestamp": case["timestamp"],
                "salt_hex": salt.hex(),
                "nonce_hex": nonce.hex(),
                "request_id_hex": request_id.hex(),
                "response_plaintext": case["response_plaintext"],
                "response_nonce_hex": response_nonce.hex(),
                "usage": usage,
            },
            "expected": {
                "k_c2n_hex": k_c2n.hex(),
                "k_n2c_hex": k_n2c.hex(),
                "request_aad_hex": request_aad.hex(),
                "request_hash_hex": request_hash.hex(),
                "request_wire_json": compact(request_wire),
                "response_aad_hex": response_aad.hex(),
                "response_hash_hex": response_hash.hex(),
                "receipt_hex": receipt.hex(),
                "response_wire_json": compact(response_wire),
            },
        })
    return {
        "description": (
            "atoma-lab golden envelopes of the atoma-lab/hardened-v1 profile. Generated by "
            "tests/vectors/make_golden_hardened.py with pyca cryptography and hashlib only; do "
            "not edit by hand."
        ),
        "keys": {
            "client_private_key_hex": ALICE_SK,
            "client_public_key_hex": client_pk.hex(),
            "node_private_key_hex": BOB_SK,
            "node_public_key_hex": node_pk.hex(),
            "node_key_id_hex": key_id.hex(),
            "shared_secret_hex": shared.hex(),
            "source": "RFC 7748 section 6.1 (Alice = client ephemeral key, Bob = node key)",
        },
        "signer": {
            "ed25519_seed_hex": ED25519_SEED,
            "sui_address": sui_address,
            "source": "RFC 8032 section 7.1 TEST 1",
        },
        "cases": cases,
    }


def render() -> str:
    return json.dumps(build(), ensure_ascii=False, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    return write_or_check(render(), OUT, doc=__doc__ or "", script=Path(__file__).name, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
