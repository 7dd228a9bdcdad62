"""Known-answer tests for atoma_lab.crypto, from the vector files in tests/vectors/.

Every vector goes through atoma-lab's API, never through pyca/cryptography directly (pyca only
builds ECDSA private keys from the SDK's raw scalars, which SuiSigner then wraps).
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from atoma_lab.crypto import (
    HASH_SIZE,
    AesGcmKey,
    SuiSignature,
    SuiSigner,
    X25519KeyPair,
    blake2b_256,
    decrypt,
    derive_key,
    encrypt,
    hkdf_sha256,
    sui_address,
    verify_sui_signature,
    x25519_shared_secret,
)
from atoma_lab.crypto.signing import SignatureScheme
from atoma_lab.errors import DecryptionError

from .vectors import load_vectors, vector_id

# ----------------------------------------------------------------------------------------------
# X25519 (RFC 7748)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "v", load_vectors("x25519_rfc7748", kind="scalar_mult"), ids=vector_id
)
def test_x25519_scalar_mult(v):
    assert x25519_shared_secret(v["scalar"], v["u"]) == v["output"]
    assert X25519KeyPair.from_private_bytes(v["scalar"]).exchange(v["u"]) == v["output"]


@pytest.mark.parametrize("v", load_vectors("x25519_rfc7748", kind="iterated"), ids=vector_id)
def test_x25519_iterated(v):
    k = u = v["start"]
    for _ in range(v["iterations"]):
        k, u = x25519_shared_secret(k, u), k
    assert k == v["output"]


@pytest.mark.parametrize("v", load_vectors("x25519_rfc7748", kind="dh"), ids=vector_id)
def test_x25519_alice_and_bob(v):
    alice = X25519KeyPair.from_private_bytes(v["alice_private"])
    bob = X25519KeyPair.from_private_bytes(v["bob_private"])
    assert alice.public_bytes == v["alice_public"]
    assert bob.public_bytes == v["bob_public"]
    assert alice.private_bytes() == v["alice_private"]
    assert bob.private_bytes() == v["bob_private"]
    # Both directions, through the key pair and through the raw-bytes helper.
    assert alice.exchange(v["bob_public"]) == v["shared"]
    assert bob.exchange(v["alice_public"]) == v["shared"]
    assert x25519_shared_secret(v["alice_private"], v["bob_public"]) == v["shared"]
    assert x25519_shared_secret(v["bob_private"], v["alice_public"]) == v["shared"]


@pytest.mark.parametrize("v", load_vectors("x25519_rfc7748", kind="dh"), ids=vector_id)
def test_x25519_accepts_bytearray_and_memoryview(v):
    alice = X25519KeyPair.from_private_bytes(bytearray(v["alice_private"]))
    assert alice.exchange(memoryview(v["bob_public"])) == v["shared"]


def test_x25519_key_pair_equality_follows_the_private_key():
    v = load_vectors("x25519_rfc7748", kind="dh")[0]
    a1 = X25519KeyPair.from_private_bytes(v["alice_private"])
    a2 = X25519KeyPair.from_private_bytes(v["alice_private"])
    b = X25519KeyPair.from_private_bytes(v["bob_private"])
    assert a1 == a2 and hash(a1) == hash(a2)
    assert a1 != b


def test_x25519_generate_agrees_with_itself():
    a, b = X25519KeyPair.generate(), X25519KeyPair.generate()
    shared = a.exchange(b.public_bytes)
    assert shared == b.exchange(a.public_bytes)
    assert len(shared) == 32 and shared != bytes(32)


# ----------------------------------------------------------------------------------------------
# HKDF-SHA256 (RFC 5869) and Atoma's derive_key
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", load_vectors("hkdf_rfc5869"), ids=vector_id)
def test_hkdf_sha256(v):
    okm = hkdf_sha256(v["ikm"], salt=v["salt"], info=v["info"], length=v["length"])
    assert okm == v["okm"]


@pytest.mark.parametrize("v", load_vectors("hkdf_rfc5869"), ids=vector_id)
def test_hkdf_vector_file_is_self_consistent(v):
    """PRK and the first OKM block recomputed with the standard library's HMAC (guards typos)."""
    prk = hmac.new(v["salt"] or bytes(32), v["ikm"], hashlib.sha256).digest()
    assert prk == v["prk"]
    t1 = hmac.new(prk, v["info"] + b"\x01", hashlib.sha256).digest()
    assert v["okm"][:32] == t1


def test_hkdf_absent_salt_is_the_rfc_zero_salt():
    v = next(v for v in load_vectors("hkdf_rfc5869") if v["name"] == "rfc5869-A.3")
    assert v["salt"] == b""
    okm = v["okm"]
    assert hkdf_sha256(v["ikm"], salt=None, info=v["info"], length=v["length"]) == okm
    assert hkdf_sha256(v["ikm"], salt=bytes(32), info=v["info"], length=v["length"]) == okm


@pytest.mark.parametrize("v", load_vectors("hkdf_rfc5869"), ids=vector_id)
def test_hkdf_shorter_output_is_a_prefix(v):
    assert hkdf_sha256(v["ikm"], salt=v["salt"], info=v["info"], length=32) == v["okm"][:32]


def test_derive_key_is_atoma_hkdf():
    """derive_key = HKDF-SHA256(salt, IKM=shared, info="", L=32) = HMAC(PRK, 0x01), as the TS SDK."""
    shared = load_vectors("x25519_rfc7748", kind="dh")[0]["shared"]
    salt = bytes(range(16))
    key = derive_key(shared, salt)
    prk = hmac.new(salt, shared, hashlib.sha256).digest()
    assert key == hmac.new(prk, b"\x01", hashlib.sha256).digest()
    assert key == hkdf_sha256(shared, salt=salt, info=b"", length=32)
    labelled = derive_key(shared, salt, info=b"atoma-lab request")
    assert labelled == hmac.new(prk, b"atoma-lab request\x01", hashlib.sha256).digest()
    assert labelled != key


# ----------------------------------------------------------------------------------------------
# AES-256-GCM
# ----------------------------------------------------------------------------------------------

GCM = load_vectors("aes256gcm")
GCM_VALID = [v for v in GCM if v["result"] == "valid"]
GCM_INVALID = [v for v in GCM if v["result"] == "invalid"]


def _aad_forms(aad: bytes) -> list[bytes | None]:
    """An empty AAD may be passed as b"" or None; both must mean "no AAD"."""
    return [aad] if aad else [b"", None]


def test_gcm_vectors_cover_the_required_cases():
    assert {v["name"] for v in GCM_VALID} >= {f"gcm-spec-tc{n}" for n in (13, 14, 15, 16)}
    assert any(v["aad"] and v["plaintext"] for v in GCM_VALID)
    assert any(not v["plaintext"] for v in GCM_VALID)
    assert len(GCM_INVALID) >= 2


@pytest.mark.parametrize("v", GCM_VALID, ids=vector_id)
def test_aes_gcm_encrypt(v):
    for aad in _aad_forms(v["aad"]):
        sealed = AesGcmKey(v["key"]).encrypt(v["nonce"], v["plaintext"], aad)
        assert sealed == v["ciphertext"] + v["tag"]
        assert encrypt(v["key"], v["nonce"], v["plaintext"], aad) == sealed


@pytest.mark.parametrize("v", GCM_VALID, ids=vector_id)
def test_aes_gcm_decrypt(v):
    sealed = v["ciphertext"] + v["tag"]
    for aad in _aad_forms(v["aad"]):
        assert AesGcmKey(v["key"]).decrypt(v["nonce"], sealed, aad) == v["plaintext"]
        assert decrypt(v["key"], v["nonce"], sealed, aad) == v["plaintext"]


@pytest.mark.parametrize("v", GCM_INVALID, ids=vector_id)
def test_aes_gcm_invalid_tag_is_rejected(v):
    sealed = v["ciphertext"] + v["tag"]
    for aad in _aad_forms(v["aad"]):
        with pytest.raises(DecryptionError):
            AesGcmKey(v["key"]).decrypt(v["nonce"], sealed, aad)
        with pytest.raises(DecryptionError):
            decrypt(v["key"], v["nonce"], sealed, aad)


def test_aes_gcm_key_is_reusable_across_messages():
    by_name = {v["name"]: v for v in GCM_VALID}
    v, w = by_name["gcm-spec-tc15"], by_name["gcm-spec-tc16"]  # same key and nonce
    assert v["key"] == w["key"]
    key = AesGcmKey(v["key"])
    assert key.encrypt(v["nonce"], v["plaintext"]) == v["ciphertext"] + v["tag"]
    assert key.encrypt(w["nonce"], w["plaintext"], w["aad"]) == w["ciphertext"] + w["tag"]
    assert key.decrypt(v["nonce"], v["ciphertext"] + v["tag"]) == v["plaintext"]


# ----------------------------------------------------------------------------------------------
# BLAKE2b-256
# ----------------------------------------------------------------------------------------------

BLAKE = load_vectors("blake2b_256")


def test_blake2b_anchors_from_the_protocol_notes_are_present():
    published = {v["name"]: v["digest"].hex() for v in BLAKE if v["origin"] == "published"}
    # atoma-protocol.md section 2.4
    assert published["empty"] == "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
    assert published["abc"] == "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"


@pytest.mark.parametrize("v", BLAKE, ids=vector_id)
def test_blake2b_256(v):
    digest = blake2b_256(v["message"])
    assert digest == v["digest"]
    assert len(digest) == HASH_SIZE == 32


def test_blake2b_256_is_not_truncated_blake2b_512():
    """A true 32-byte digest (parameter block), not the first half of BLAKE2b-512."""
    assert blake2b_256(b"abc") != hashlib.blake2b(b"abc").digest()[:32]


# ----------------------------------------------------------------------------------------------
# Ed25519 (RFC 8032) through SuiSigner / SuiSignature, and Sui addresses
# ----------------------------------------------------------------------------------------------

ED25519 = load_vectors("ed25519_rfc8032")


@pytest.mark.parametrize("v", ED25519, ids=vector_id)
def test_ed25519_sign_is_deterministic_and_matches(v):
    signer = SuiSigner.from_ed25519_seed(v["seed"])
    assert signer.scheme is SignatureScheme.ED25519
    assert signer.public_key == v["public"]
    sig = signer.sign(v["message"])
    assert sig.scheme is SignatureScheme.ED25519
    assert sig.signature == v["signature"]
    assert sig.public_key == v["public"]
    assert signer.sign_raw(v["message"]) == v["signature"]
    assert signer.sign(v["message"]) == sig  # deterministic


@pytest.mark.parametrize("v", ED25519, ids=vector_id)
def test_ed25519_verify(v):
    SuiSignature(SignatureScheme.ED25519, v["signature"], v["public"]).verify(v["message"])
    wire = SuiSignature(SignatureScheme.ED25519, v["signature"], v["public"]).to_base64()
    parsed = verify_sui_signature(wire, v["message"], expected_address=sui_address(0, v["public"]))
    assert parsed.signature == v["signature"] and parsed.public_key == v["public"]


@pytest.mark.parametrize("v", ED25519, ids=vector_id)
def test_sui_wire_form_of_an_ed25519_signature(v):
    sig = SuiSigner.from_ed25519_seed(v["seed"]).sign(v["message"])
    raw = sig.to_bytes()
    assert raw == b"\x00" + v["signature"] + v["public"]
    assert len(raw) == 97
    text = sig.to_base64()
    assert len(text) == 132
    assert SuiSignature.parse(text) == sig


@pytest.mark.parametrize("v", ED25519, ids=vector_id)
def test_sui_address_of_an_ed25519_key(v):
    expected = "0x" + blake2b_256(b"\x00" + v["public"]).hex()
    assert sui_address(SignatureScheme.ED25519, v["public"]) == expected
    assert sui_address(0, v["public"]) == expected
    assert SuiSigner.from_ed25519_seed(v["seed"]).address == expected
    assert SuiSignature(SignatureScheme.ED25519, v["signature"], v["public"]).address == expected
    assert len(expected) == 66 and expected == expected.lower()


# ----------------------------------------------------------------------------------------------
# Signatures made by the Sui TypeScript SDK (interop, all three schemes)
# ----------------------------------------------------------------------------------------------

SUI_SIGS = load_vectors("sui_signatures", kind="signature")
_CURVES = {"SECP256K1": ec.SECP256K1(), "SECP256R1": ec.SECP256R1()}


def _signer_from_secret(scheme: str, secret: bytes) -> SuiSigner:
    if scheme == "ED25519":
        return SuiSigner.from_ed25519_seed(secret)
    return SuiSigner(ec.derive_private_key(int.from_bytes(secret, "big"), _CURVES[scheme]))


def _digest(v) -> bytes:
    """What Sui signs: BLAKE2b-256(intent || payload); atoma signs the hash bytes the same way."""
    return blake2b_256(v["intent"] + v["payload"])


@pytest.mark.parametrize("v", SUI_SIGS, ids=vector_id)
def test_sui_sdk_signature_verifies(v):
    sig = SuiSignature.parse(v["signature_b64"])
    assert sig.scheme is SignatureScheme[v["scheme"]]
    assert sig.address == v["address"]
    sig.verify(_digest(v))
    verify_sui_signature(v["signature_b64"], _digest(v), expected_address=v["address"])
    assert sig.to_base64() == v["signature_b64"]


@pytest.mark.parametrize("v", SUI_SIGS, ids=vector_id)
def test_sui_sdk_key_gives_the_same_public_key_and_address(v):
    signer = _signer_from_secret(v["scheme"], v["secret_key"])
    assert signer.scheme is SignatureScheme[v["scheme"]]
    assert signer.public_key == SuiSignature.parse(v["signature_b64"]).public_key
    assert signer.address == v["address"]
    flag = bytes([SignatureScheme[v["scheme"]]])
    assert sui_address(signer.scheme, signer.public_key) == "0x" + blake2b_256(
        flag + signer.public_key
    ).hex()


@pytest.mark.parametrize("v", SUI_SIGS, ids=vector_id)
def test_our_signature_verifies_where_sui_does(v):
    signer = _signer_from_secret(v["scheme"], v["secret_key"])
    sig = signer.sign(_digest(v))
    if v["scheme"] == "ED25519":
        assert sig.to_base64() == v["signature_b64"]  # deterministic: byte for byte
    verify_sui_signature(sig.to_base64(), _digest(v), expected_address=v["address"])
    assert len(sig.to_bytes()) == (97 if v["scheme"] == "ED25519" else 98)
    assert len(sig.to_base64()) == 132


@pytest.mark.parametrize(
    "v", load_vectors("sui_signatures", kind="ed25519_address"), ids=vector_id
)
def test_sui_keytool_ed25519_address(v):
    assert SuiSigner.from_ed25519_seed(v["seed"]).address == v["address"]
