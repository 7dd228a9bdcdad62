"""Negative tests for atoma_lab.crypto: misuse raises TypeError/ValueError, bad peer data raises
the exact atoma-lab error, and nothing secret leaks into a repr or an error message."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from atoma_lab.crypto import (
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
from atoma_lab.errors import (
    CryptoError,
    DecryptionError,
    InvalidPublicKeyError,
    SignatureError,
)

from .vectors import load_vectors, vector_id

DH = load_vectors("x25519_rfc7748", kind="dh")[0]
ALICE_PRIVATE = DH["alice_private"]
BOB_PUBLIC = DH["bob_public"]

NOT_BYTES = ["a" * 32, 32, None, [0] * 32, 3.0]
WRONG_KEY_SIZES = [0, 1, 16, 31, 33, 64]

# ----------------------------------------------------------------------------------------------
# X25519
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", WRONG_KEY_SIZES)
def test_x25519_private_key_of_wrong_size(size):
    with pytest.raises(ValueError):
        X25519KeyPair.from_private_bytes(bytes(size))
    with pytest.raises(ValueError):
        x25519_shared_secret(bytes(size), BOB_PUBLIC)


@pytest.mark.parametrize("size", WRONG_KEY_SIZES)
def test_x25519_public_key_of_wrong_size(size):
    with pytest.raises(ValueError):
        X25519KeyPair.from_private_bytes(ALICE_PRIVATE).exchange(b"\x09" * size)
    with pytest.raises(ValueError):
        x25519_shared_secret(ALICE_PRIVATE, b"\x09" * size)


@pytest.mark.parametrize("value", NOT_BYTES, ids=lambda v: type(v).__name__)
def test_x25519_keys_of_wrong_type(value):
    with pytest.raises(TypeError):
        X25519KeyPair.from_private_bytes(value)
    with pytest.raises(TypeError):
        X25519KeyPair.from_private_bytes(ALICE_PRIVATE).exchange(value)


def test_x25519_key_pair_wants_a_pyca_private_key():
    with pytest.raises(TypeError):
        X25519KeyPair(ALICE_PRIVATE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "v", load_vectors("x25519_rfc7748", kind="low_order"), ids=vector_id
)
def test_x25519_low_order_public_key_is_rejected(v):
    with pytest.raises(InvalidPublicKeyError) as info:
        X25519KeyPair.from_private_bytes(v["private"]).exchange(v["public"])
    assert isinstance(info.value, CryptoError) and info.value.status == 400
    with pytest.raises(InvalidPublicKeyError):
        x25519_shared_secret(v["private"], v["public"])
    # Not special to the vector's private key: every clamped scalar is a multiple of 8.
    with pytest.raises(InvalidPublicKeyError):
        X25519KeyPair.from_private_bytes(ALICE_PRIVATE).exchange(v["public"])


# ----------------------------------------------------------------------------------------------
# HKDF
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 8, 15, 17, 32])
def test_derive_key_wants_a_16_byte_salt(size):
    with pytest.raises(ValueError):
        derive_key(DH["shared"], bytes(size))


@pytest.mark.parametrize("length", [0, -1, 255 * 32 + 1])
def test_hkdf_length_out_of_range(length):
    with pytest.raises(ValueError):
        hkdf_sha256(b"ikm", salt=b"salt", length=length)


def test_hkdf_ikm_of_wrong_type():
    with pytest.raises(TypeError):
        hkdf_sha256("not bytes", salt=b"salt")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# AES-256-GCM
# ----------------------------------------------------------------------------------------------

TC16 = next(v for v in load_vectors("aes256gcm") if v["name"] == "gcm-spec-tc16")
KEY, NONCE, AAD = TC16["key"], TC16["nonce"], TC16["aad"]
PLAINTEXT, CIPHERTEXT, TAG = TC16["plaintext"], TC16["ciphertext"], TC16["tag"]


def test_tc16_is_a_good_base_for_tampering():
    assert AesGcmKey(KEY).decrypt(NONCE, CIPHERTEXT + TAG, AAD) == PLAINTEXT
    assert AAD and CIPHERTEXT


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33, 64])
def test_aes_key_of_wrong_size(size):
    """Only AES-256: 16- and 24-byte keys (AES-128/192) are refused too."""
    with pytest.raises(ValueError):
        AesGcmKey(bytes(size))
    with pytest.raises(ValueError):
        encrypt(bytes(size), NONCE, b"x")
    with pytest.raises(ValueError):
        decrypt(bytes(size), NONCE, CIPHERTEXT + TAG)


@pytest.mark.parametrize("value", ["k" * 32, 32, None], ids=lambda v: type(v).__name__)
def test_aes_key_of_wrong_type(value):
    with pytest.raises(TypeError):
        AesGcmKey(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 8, 11, 13, 16])
def test_nonce_of_wrong_size(size):
    key = AesGcmKey(KEY)
    with pytest.raises(ValueError):
        key.encrypt(bytes(size), PLAINTEXT)
    with pytest.raises(ValueError):
        key.decrypt(bytes(size), CIPHERTEXT + TAG)


def test_plaintext_and_aad_of_wrong_type():
    key = AesGcmKey(KEY)
    with pytest.raises(TypeError):
        key.encrypt(NONCE, "plaintext")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        key.encrypt(NONCE, b"plaintext", "aad")  # type: ignore[arg-type]


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


@pytest.mark.parametrize("field", ["key", "nonce", "ciphertext", "tag", "aad"])
def test_flipping_any_byte_fails_authentication(field):
    parts = {"key": KEY, "nonce": NONCE, "ciphertext": CIPHERTEXT, "tag": TAG, "aad": AAD}
    for i in range(len(parts[field])):
        p = dict(parts, **{field: _flip(parts[field], i)})
        with pytest.raises(DecryptionError):
            AesGcmKey(p["key"]).decrypt(p["nonce"], p["ciphertext"] + p["tag"], p["aad"])


@pytest.mark.parametrize(
    "sealed",
    [
        pytest.param(CIPHERTEXT + TAG[:-1], id="tag-truncated"),
        pytest.param(CIPHERTEXT[1:] + TAG, id="ciphertext-truncated"),
        pytest.param(CIPHERTEXT + TAG + b"\x00", id="byte-appended"),
        pytest.param(TAG + CIPHERTEXT, id="tag-first"),
        pytest.param(CIPHERTEXT, id="tag-missing"),
    ],
)
def test_reshaped_ciphertext_fails_authentication(sealed):
    with pytest.raises(DecryptionError):
        AesGcmKey(KEY).decrypt(NONCE, sealed, AAD)


@pytest.mark.parametrize("size", [0, 1, 15])
def test_ciphertext_shorter_than_the_tag(size):
    with pytest.raises(DecryptionError) as info:
        AesGcmKey(KEY).decrypt(NONCE, TAG[:size], AAD)
    assert info.value.field == "ciphertext"


@pytest.mark.parametrize("aad", [None, b"", AAD + b"\x00", AAD[:-1]], ids=repr)
def test_wrong_or_missing_aad_fails_authentication(aad):
    with pytest.raises(DecryptionError):
        AesGcmKey(KEY).decrypt(NONCE, CIPHERTEXT + TAG, aad)


def test_aad_that_was_not_there_fails_authentication():
    sealed = AesGcmKey(KEY).encrypt(NONCE, PLAINTEXT)
    with pytest.raises(DecryptionError):
        AesGcmKey(KEY).decrypt(NONCE, sealed, b"\x00")


def test_decryption_error_names_no_secret():
    with pytest.raises(DecryptionError) as info:
        AesGcmKey(KEY).decrypt(NONCE, CIPHERTEXT + _flip(TAG, 0), AAD)
    text = str(info.value) + repr(info.value) + str(info.value.to_dict())
    for secret in (KEY, PLAINTEXT, CIPHERTEXT, TAG):
        assert secret.hex() not in text
        assert base64.b64encode(secret).decode() not in text
    assert info.value.__cause__ is not None  # raised from pyca's InvalidTag, not swallowed


# ----------------------------------------------------------------------------------------------
# Sui signatures
# ----------------------------------------------------------------------------------------------

SUI = {v["name"]: v for v in load_vectors("sui_signatures", kind="signature")}
ED_SIG = SUI["sui-sdk-ed25519-personal-message"]
ECDSA_SIGS = [SUI["sui-sdk-secp256k1-transaction"], SUI["sui-sdk-secp256r1-transaction"]]
_ORDER = {
    SignatureScheme.SECP256K1: 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    SignatureScheme.SECP256R1: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}
_CURVES = {SignatureScheme.SECP256K1: ec.SECP256K1(), SignatureScheme.SECP256R1: ec.SECP256R1()}


def _digest(v) -> bytes:
    return blake2b_256(v["intent"] + v["payload"])


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_sui_vectors_are_valid_before_we_tamper_with_them():
    for v in [ED_SIG, *ECDSA_SIGS]:
        verify_sui_signature(v["signature_b64"], _digest(v), expected_address=v["address"])


@pytest.mark.parametrize("flag", [0x03, 0x04, 0x05, 0x06, 0x80, 0xFF])
def test_unknown_scheme_flag_is_rejected(flag):
    raw = base64.b64decode(ED_SIG["signature_b64"])
    for body in (raw[1:], raw[1:] + b"\x00"):  # 97- and 98-byte forms
        with pytest.raises(SignatureError):
            SuiSignature.parse(_b64(bytes([flag]) + body))
        with pytest.raises(SignatureError):
            verify_sui_signature(_b64(bytes([flag]) + body), _digest(ED_SIG))


@pytest.mark.parametrize(
    ("flag", "size"),
    [(0, 0), (0, 1), (0, 96), (0, 98), (0, 130), (1, 97), (1, 99), (2, 97), (2, 99)],
)
def test_wrong_length_is_rejected(flag, size):
    raw = (bytes([flag]) + bytes(range(256)))[:size]
    with pytest.raises(SignatureError) as info:
        SuiSignature.parse(_b64(raw), field="signature")
    assert info.value.field == "signature"


def _non_canonical_forms(text: str) -> list[str]:
    forms = [
        text.rstrip("="),  # unpadded
        text + "\n",
        " " + text,
        text[:40] + "\n" + text[40:],
        text[:-1] + "!",
        text + "====",
        "",
        "!!!!",
    ]
    assert "+" in text or "/" in text
    forms.append(text.replace("+", "-").replace("/", "_"))  # URL-safe alphabet
    return forms


@pytest.mark.parametrize("form", _non_canonical_forms(ED_SIG["signature_b64"]))
def test_non_standard_base64_is_rejected(form):
    with pytest.raises(SignatureError):
        SuiSignature.parse(form)
    with pytest.raises(SignatureError):
        verify_sui_signature(form, _digest(ED_SIG))


@pytest.mark.parametrize(
    "value", [None, 97, base64.b64decode(ED_SIG["signature_b64"]), ["AA=="]],
    ids=lambda v: type(v).__name__,
)
def test_non_string_signature_is_rejected(value):
    with pytest.raises(SignatureError):
        SuiSignature.parse(value)


@pytest.mark.parametrize("v", [ED_SIG, *ECDSA_SIGS], ids=vector_id)
def test_signature_over_another_message_is_rejected(v):
    other = blake2b_256(b"another message")
    with pytest.raises(SignatureError):
        SuiSignature.parse(v["signature_b64"]).verify(other)
    with pytest.raises(SignatureError):
        verify_sui_signature(v["signature_b64"], other)
    with pytest.raises(SignatureError):
        verify_sui_signature(v["signature_b64"], _digest(v)[:-1])  # truncated message


@pytest.mark.parametrize("v", [ED_SIG, *ECDSA_SIGS], ids=vector_id)
def test_flipped_signature_or_key_byte_is_rejected(v):
    raw = base64.b64decode(v["signature_b64"])
    for i in range(1, len(raw)):  # every byte but the flag
        tampered = _b64(raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :])
        with pytest.raises(SignatureError):
            verify_sui_signature(tampered, _digest(v))


def test_invalid_ecdsa_public_key_is_a_signature_error():
    raw = base64.b64decode(ECDSA_SIGS[0]["signature_b64"])
    for prefix in (b"\x04", b"\x05", b"\x00"):
        bad = raw[:65] + prefix + raw[66:]
        with pytest.raises(SignatureError):
            verify_sui_signature(_b64(bad), _digest(ECDSA_SIGS[0]))


@pytest.mark.parametrize("v", ECDSA_SIGS, ids=vector_id)
def test_ecdsa_high_s_is_rejected(v):
    sig = SuiSignature.parse(v["signature_b64"])
    n = _ORDER[sig.scheme]
    r = int.from_bytes(sig.signature[:32], "big")
    s = int.from_bytes(sig.signature[32:], "big")
    assert s <= n // 2
    high = SuiSignature(sig.scheme, sig.signature[:32] + (n - s).to_bytes(32, "big"), sig.public_key)
    # The malleated signature is mathematically valid (pyca accepts it) ...
    pub = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[sig.scheme], sig.public_key)
    pub.verify(encode_dss_signature(r, n - s), _digest(v), ec.ECDSA(hashes.SHA256()))
    # ... and atoma-lab refuses it, as Sui/fastcrypto does.
    with pytest.raises(SignatureError):
        high.verify(_digest(v))
    with pytest.raises(SignatureError):
        verify_sui_signature(high.to_base64(), _digest(v))


@pytest.mark.parametrize("v", ECDSA_SIGS, ids=vector_id)
@pytest.mark.parametrize("part", ["r=0", "s=0", "r=n", "s=n"])
def test_ecdsa_out_of_range_scalars_are_rejected(v, part):
    sig = SuiSignature.parse(v["signature_b64"])
    n = _ORDER[sig.scheme].to_bytes(32, "big")
    r, s = sig.signature[:32], sig.signature[32:]
    r, s = {"r=0": (bytes(32), s), "s=0": (r, bytes(32)), "r=n": (n, s), "s=n": (r, n)}[part]
    with pytest.raises(SignatureError):
        SuiSignature(sig.scheme, r + s, sig.public_key).verify(_digest(v))


@pytest.mark.parametrize("scheme", [SignatureScheme.SECP256K1, SignatureScheme.SECP256R1])
def test_our_ecdsa_signatures_are_always_low_s(scheme):
    """pyca picks a random k, so about half the raw signatures are high-s; all must come out low."""
    signer = SuiSigner.generate(scheme)
    n = _ORDER[scheme]
    for i in range(32):
        message = blake2b_256(i.to_bytes(4, "big"))
        sig = signer.sign(message)
        assert int.from_bytes(sig.signature[32:], "big") <= n // 2
        sig.verify(message)


@pytest.mark.parametrize("v", [ED_SIG, *ECDSA_SIGS], ids=vector_id)
def test_expected_address_mismatch_is_rejected(v):
    other = SuiSigner.from_ed25519_seed(bytes(32)).address
    with pytest.raises(SignatureError) as info:
        verify_sui_signature(v["signature_b64"], _digest(v), expected_address=other, field="sig")
    assert info.value.field == "sig"
    with pytest.raises(SignatureError):
        verify_sui_signature(v["signature_b64"], _digest(v), expected_address="")
    # The right address still passes: the failure above is the address check, not the signature.
    verify_sui_signature(v["signature_b64"], _digest(v), expected_address=v["address"])


def test_signer_misuse():
    with pytest.raises(TypeError):
        SuiSigner(b"\x00" * 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SuiSigner(ec.generate_private_key(ec.SECP384R1()))
    for size in (0, 31, 33, 64):
        with pytest.raises(ValueError):
            SuiSigner.from_ed25519_seed(bytes(size))


@pytest.mark.parametrize(
    ("scheme", "size"),
    [(0, 31), (0, 33), (1, 32), (1, 65), (2, 32), (2, 34)],
)
def test_sui_address_of_wrong_key_size(scheme, size):
    with pytest.raises(ValueError):
        sui_address(scheme, bytes(size))


@pytest.mark.parametrize("scheme", [3, 5, 255])
def test_sui_address_of_unknown_scheme(scheme):
    with pytest.raises(ValueError):
        sui_address(scheme, bytes(32))


# ----------------------------------------------------------------------------------------------
# No key material in repr / str
# ----------------------------------------------------------------------------------------------


def _renderings(secret: bytes) -> list[str]:
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
        repr(secret)[2:-1],
        # any 8-byte window of the key, in hex and in base64 (catches partial leaks)
        *(secret[i : i + 8].hex() for i in range(0, len(secret) - 7, 4)),
        *(base64.b64encode(secret[i : i + 9]).decode() for i in range(0, len(secret) - 8, 3)),
    ]


def _assert_hidden(obj: object, secret: bytes) -> None:
    shown = [repr(obj), str(obj), f"{obj}", f"{obj!r}", repr([obj]), repr({"k": obj})]
    for text in shown:
        for form in _renderings(secret):
            assert form not in text, f"{type(obj).__name__} shows key material: {text!r}"


@pytest.mark.parametrize(
    "private",
    [ALICE_PRIVATE, load_vectors("x25519_rfc7748", kind="dh")[0]["bob_private"]],
    ids=["alice", "bob"],
)
def test_x25519_key_pair_repr_hides_the_private_key(private):
    _assert_hidden(X25519KeyPair.from_private_bytes(private), private)


def test_aes_gcm_key_repr_hides_the_key():
    for v in load_vectors("aes256gcm")[2:6]:
        _assert_hidden(AesGcmKey(v["key"]), v["key"])


@pytest.mark.parametrize("v", load_vectors("ed25519_rfc8032"), ids=vector_id)
def test_ed25519_signer_repr_hides_the_seed(v):
    _assert_hidden(SuiSigner.from_ed25519_seed(v["seed"]), v["seed"])


@pytest.mark.parametrize("v", [SUI["sui-sdk-secp256k1-transaction"], SUI["sui-sdk-secp256r1-transaction"]],
                         ids=vector_id)
def test_ecdsa_signer_repr_hides_the_scalar(v):
    curve = _CURVES[SignatureScheme[v["scheme"]]]
    signer = SuiSigner(ec.derive_private_key(int.from_bytes(v["secret_key"], "big"), curve))
    _assert_hidden(signer, v["secret_key"])


def test_repr_check_would_catch_a_leak():
    """The helper above is not vacuous: an object that prints its key fails it."""

    class Leaky:
        def __init__(self, key: bytes) -> None:
            self.key = key

        def __repr__(self) -> str:
            return f"Leaky(key={self.key[:12].hex()}...)"

    with pytest.raises(AssertionError):
        _assert_hidden(Leaky(ALICE_PRIVATE), ALICE_PRIVATE)
