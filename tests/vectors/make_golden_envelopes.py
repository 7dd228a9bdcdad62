"""Generate ``golden_envelopes.json``: atoma-lab's own known-answer envelopes.

The expected values are computed here *independently of* ``atoma_lab.protocol`` (and of
``atoma_lab`` altogether): only pyca ``cryptography``, :mod:`hashlib`, :mod:`base64` and
:mod:`json`, following docs ``atoma-protocol.md`` sections 1.2 (client encrypts), 1.4 (node
decrypts, hashes, signs and encrypts the answer), 1.5 (client decrypts) and 2 (exact crypto):

* ``shared = X25519(client_sk, node_pk)`` (RFC 7748);
* ``key = HKDF-SHA256(salt=request salt, IKM=shared, info="", L=32)`` (RFC 5869);
* request: ``ciphertext = AES-256-GCM(key, request nonce, plaintext)`` with the tag appended and no
  AAD; ``plaintext_body_hash = BLAKE2b-256(plaintext)``;
* response: same key (same salt, same shared secret), a fresh nonce;
  ``response_hash = BLAKE2b-256(plaintext)``; ``signature`` = Sui form
  ``b64(0x00 ‖ Ed25519(seed, response_hash) ‖ ed25519_pk)`` over the 32 raw hash bytes.

Fixed inputs: RFC 7748 section 6.1 Alice's private key is the client's ephemeral key and Bob's is
the node's key; the node signer is the RFC 8032 section 7.1 TEST 1 seed. Salts and nonces are
fixed byte ranges. Every value is deterministic (Ed25519 signatures are too), so running this again
writes the same file.

Usage (from the repository root)::

    python tests/vectors/make_golden_envelopes.py          # (re)write the JSON file
    python tests/vectors/make_golden_envelopes.py --check  # exit 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OUT = Path(__file__).with_name("golden_envelopes.json")

# RFC 7748 section 6.1.
ALICE_SK = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PK = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB_SK = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
BOB_PK = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
# RFC 8032 section 7.1, TEST 1.
ED25519_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
ED25519_PK = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
SUI_ED25519_FLAG = b"\x00"

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
E5 = "intfloat/multilingual-e5-large-instruct"

# The request cases. ``plaintext`` is the exact UTF-8 text the client encrypts (what the Python
# SDK's ``model_dump_json()`` writes: compact, raw UTF-8, keys input, model, ...).
REQUESTS = [
    {
        "name": "ascii_single_input",
        "plaintext": (
            '{"input":"The quick brown fox jumps over the lazy dog","model":"' + MINILM + '"}'
        ),
        "salt": bytes(range(0x00, 0x10)),
        "nonce": bytes(range(0x20, 0x2C)),
        "stack_small_id": 1,
        "model_name": MINILM,
        "stream": False,
        "num_compute_units": None,
    },
    {
        "name": "multilingual_list_input",
        "plaintext": json.dumps(
            {
                "input": [
                    "Grüß Gott, wie geht's?",
                    "日本語のテキストを埋め込む",
                    "Привет, мир",
                    "مرحبا بالعالم",
                    '🙂 emoji, "quotes", back\\slash, / and a\ttab',
                ],
                "model": E5,
                "encoding_format": "base64",
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ),
        "salt": bytes(range(0x10, 0x20)),
        "nonce": bytes(range(0x30, 0x3C)),
        "stack_small_id": 2**53 + 1,  # beyond a JavaScript double's exact integers
        "model_name": E5,
        "stream": False,
        "num_compute_units": 8192,
    },
]

_B64_VECTOR = base64.b64encode(
    b"".join(
        int(x).to_bytes(4, "little")
        for x in (0x3B17275C, 0xBC18D1A6, 0x3F800000, 0x00000000, 0x80000000, 0x322BCC77)
    )
).decode("ascii")

# The response cases: node answers (serde-compact OpenAI JSON, as TEI writes it) to a request case.
RESPONSES = [
    {
        "name": "float_embeddings_with_usage",
        "request": "ascii_single_input",
        "plaintext": (
            '{"object":"list","data":[{"object":"embedding","embedding":'
            "[0.0023064255,-0.009327292,0.015937408,-0.07311539,1e-8,12345.678,-0.0],"
            '"index":0}],"model":"' + MINILM + '","usage":{"prompt_tokens":11,"total_tokens":11}}'
        ),
        "nonce": bytes(range(0x40, 0x4C)),
        "usage": {"prompt_tokens": 11, "total_tokens": 11},
    },
    {
        "name": "base64_embeddings_with_usage",
        "request": "multilingual_list_input",
        "plaintext": (
            '{"object":"list","data":[{"object":"embedding","embedding":"' + _B64_VECTOR + '",'
            '"index":0}],"model":"' + E5 + '","usage":{"prompt_tokens":58,"total_tokens":58}}'
        ),
        "nonce": bytes(range(0x50, 0x5C)),
        "usage": {"prompt_tokens": 58, "total_tokens": 58},
    },
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def blake2b_256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def hkdf_sha256(shared: bytes, salt: bytes, info: bytes = b"") -> bytes:
    """Atoma's key (empty info); the hardened generator passes its direction labels."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(shared)


def compact(obj: dict) -> str:
    """Compact JSON with keys in insertion order (valid here: ints, bools, ASCII strings)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def rfc7748_parties() -> tuple[bytes, bytes, bytes]:
    """Alice's (the client's) and Bob's (the node's) public keys and their shared secret, RFC
    7748 section 6.1, checked against the RFC's own values before anything is derived from them."""
    alice = X25519PrivateKey.from_private_bytes(bytes.fromhex(ALICE_SK))
    bob = X25519PrivateKey.from_private_bytes(bytes.fromhex(BOB_SK))
    alice_pk = alice.public_key().public_bytes_raw()
    bob_pk = bob.public_key().public_bytes_raw()
    shared = alice.exchange(X25519PublicKey.from_public_bytes(bob_pk))
    assert alice_pk.hex() == ALICE_PK, "RFC 7748 Alice public key"
    assert bob_pk.hex() == BOB_PK, "RFC 7748 Bob public key"
    assert shared.hex() == SHARED, "RFC 7748 shared secret"
    assert bob.exchange(X25519PublicKey.from_public_bytes(alice_pk)) == shared
    return alice_pk, bob_pk, shared


def rfc8032_signer() -> tuple[Ed25519PrivateKey, str]:
    """The RFC 8032 TEST 1 key and its Sui address (flag 0x00 for Ed25519)."""
    signer = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(ED25519_SEED))
    signer_pk = signer.public_key().public_bytes_raw()
    assert signer_pk.hex() == ED25519_PK, "RFC 8032 TEST 1 public key"
    return signer, "0x" + blake2b_256(SUI_ED25519_FLAG + signer_pk).hex()


def build() -> dict:
    alice_pk, bob_pk, shared = rfc7748_parties()
    signer, sui_address = rfc8032_signer()
    signer_pk = signer.public_key().public_bytes_raw()

    requests = []
    keys_by_request = {}
    for case in REQUESTS:
        plaintext = case["plaintext"].encode("utf-8")
        key = hkdf_sha256(shared, case["salt"])
        keys_by_request[case["name"]] = (key, case["nonce"])
        ciphertext = AESGCM(key).encrypt(case["nonce"], plaintext, None)
        body_hash = blake2b_256(plaintext)
        # ConfidentialComputeRequest, keys in the Rust struct's order (atoma-node
        # atoma-service/src/types.rs; atoma-protocol.md section 1.2); None optionals left out.
        wire = {
            "ciphertext": b64(ciphertext),
            "stack_small_id": case["stack_small_id"],
            "nonce": b64(case["nonce"]),
            "salt": b64(case["salt"]),
            "client_dh_public_key": b64(alice_pk),
            "node_dh_public_key": b64(bob_pk),
            "plaintext_body_hash": b64(body_hash),
        }
        if case["stream"] is not None:
            wire["stream"] = case["stream"]
        wire["model_name"] = case["model_name"]
        if case["num_compute_units"] is not None:
            wire["num_compute_units"] = case["num_compute_units"]
        requests.append(
            {
                "name": case["name"],
                "inputs": {
                    "plaintext": case["plaintext"],
                    "salt_hex": case["salt"].hex(),
                    "nonce_hex": case["nonce"].hex(),
                    "stack_small_id": case["stack_small_id"],
                    "model_name": case["model_name"],
                    "stream": case["stream"],
                    "num_compute_units": case["num_compute_units"],
                },
                "expected": {
                    "derived_key_hex": key.hex(),
                    "ciphertext_b64": b64(ciphertext),
                    "plaintext_body_hash_b64": b64(body_hash),
                    "wire_json": compact(wire),
                },
            }
        )

    responses = []
    for case in RESPONSES:
        key, request_nonce = keys_by_request[case["request"]]
        assert case["nonce"] != request_nonce
        plaintext = case["plaintext"].encode("utf-8")
        json.loads(plaintext)  # the node only ever encrypts JSON
        ciphertext = AESGCM(key).encrypt(case["nonce"], plaintext, None)
        response_hash = blake2b_256(plaintext)
        raw_signature = signer.sign(response_hash)
        signature = b64(SUI_ED25519_FLAG + raw_signature + signer_pk)
        # Node output order (atoma-protocol.md section 1.4, step 5).
        wire = {
            "nonce": b64(case["nonce"]),
            "ciphertext": b64(ciphertext),
            "response_hash": b64(response_hash),
            "signature": signature,
            "usage": case["usage"],
        }
        responses.append(
            {
                "name": case["name"],
                "inputs": {
                    "request": case["request"],
                    "plaintext": case["plaintext"],
                    "nonce_hex": case["nonce"].hex(),
                    "usage": case["usage"],
                },
                "expected": {
                    "ciphertext_b64": b64(ciphertext),
                    "response_hash_b64": b64(response_hash),
                    "signature_b64": signature,
                    "wire_json": compact(wire),
                },
            }
        )

    return {
        "description": (
            "atoma-lab golden confidential envelopes (atoma-protocol.md sections 1.2, 1.4, 1.5, "
            "2). Generated by tests/vectors/make_golden_envelopes.py with pyca cryptography and "
            "hashlib only; do not edit by hand."
        ),
        "keys": {
            "client_private_key_hex": ALICE_SK,
            "client_public_key_hex": ALICE_PK,
            "node_private_key_hex": BOB_SK,
            "node_public_key_hex": BOB_PK,
            "shared_secret_hex": SHARED,
            "source": "RFC 7748 section 6.1 (Alice = client ephemeral key, Bob = node key)",
        },
        "signer": {
            "ed25519_seed_hex": ED25519_SEED,
            "ed25519_public_key_hex": ED25519_PK,
            "sui_address": sui_address,
            "source": "RFC 8032 section 7.1 TEST 1",
        },
        "requests": requests,
        "responses": responses,
    }


def render() -> str:
    return json.dumps(build(), ensure_ascii=False, indent=2) + "\n"


def write_or_check(text: str, out: Path, *, doc: str, script: str,
                   argv: list[str] | None = None) -> int:
    """The generators' command line: write ``text`` to ``out``, or with ``--check`` exit 1 when
    the file differs from it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args(argv)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date; run {script}", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return write_or_check(render(), OUT, doc=__doc__ or "", script=Path(__file__).name, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
