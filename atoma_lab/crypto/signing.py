"""Signatures in Sui's serialised form, as Atoma's proxy and node use them.

A Sui signature string is standard base64 of ``flag ‖ signature ‖ public key``
(atoma-protocol.md section 2.4):

* ``0x00`` Ed25519: 64-byte RFC 8032 signature, 32-byte public key (97 bytes);
* ``0x01`` secp256k1 and ``0x02`` secp256r1: 64-byte compact ``r ‖ s`` (low-s) ECDSA over
  SHA-256 of the message, 33-byte compressed public key (98 bytes).

Atoma signs hashes "pre-hashed": the 32 raw BLAKE2b bytes are the message, with no intent prefix.
A Sui address is ``0x`` + hex(BLAKE2b-256(flag ‖ public key)).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.encoding import b64decode, b64encode
from atoma_lab.errors import InvalidFieldError, SignatureError


class SignatureScheme(IntEnum):
    """Sui signature scheme flags (the first byte of a serialised signature)."""

    ED25519 = 0x00
    SECP256K1 = 0x01
    SECP256R1 = 0x02


ED25519_SIGNATURE_SIZE = 64  # bytes, RFC 8032
ED25519_PUBLIC_KEY_SIZE = 32  # bytes
ECDSA_SIGNATURE_SIZE = 64  # bytes, compact r ‖ s
ECDSA_PUBLIC_KEY_SIZE = 33  # bytes, SEC1 compressed
_PUBLIC_KEY_SIZE = {
    SignatureScheme.ED25519: ED25519_PUBLIC_KEY_SIZE,
    SignatureScheme.SECP256K1: ECDSA_PUBLIC_KEY_SIZE,
    SignatureScheme.SECP256R1: ECDSA_PUBLIC_KEY_SIZE,
}
_CURVE: dict[SignatureScheme, ec.EllipticCurve] = {
    SignatureScheme.SECP256K1: ec.SECP256K1(),
    SignatureScheme.SECP256R1: ec.SECP256R1(),
}
_ORDER = {
    SignatureScheme.SECP256K1: 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    SignatureScheme.SECP256R1: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def sui_address(scheme: SignatureScheme | int, public_key: bytes) -> str:
    """The Sui address of a public key: ``0x`` + hex(BLAKE2b-256(flag ‖ public key))."""
    scheme = SignatureScheme(scheme)
    if len(public_key) != _PUBLIC_KEY_SIZE[scheme]:
        raise ValueError(f"{scheme.name} public key must be {_PUBLIC_KEY_SIZE[scheme]} bytes")
    return "0x" + blake2b_256(bytes([scheme]) + bytes(public_key)).hex()


@dataclass(frozen=True, slots=True)
class SuiSignature:
    """A parsed Sui signature: scheme, raw signature bytes and the signer's public key."""

    scheme: SignatureScheme
    signature: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: object, *, field: str = "signature") -> SuiSignature:
        """Parse the base64 wire form; :class:`SignatureError` if it is not a supported one."""
        try:
            raw = b64decode(text, field=field)
        except InvalidFieldError as exc:
            raise SignatureError(f"{field}: not a base64 Sui signature", field=field) from exc
        if not raw:
            raise SignatureError(f"{field}: empty signature", field=field)
        try:
            scheme = SignatureScheme(raw[0])
        except ValueError as exc:
            raise SignatureError(
                f"{field}: unsupported signature scheme flag 0x{raw[0]:02x}", field=field
            ) from exc
        sig_size = ED25519_SIGNATURE_SIZE if scheme is SignatureScheme.ED25519 else ECDSA_SIGNATURE_SIZE
        expected = 1 + sig_size + _PUBLIC_KEY_SIZE[scheme]
        if len(raw) != expected:
            raise SignatureError(
                f"{field}: {scheme.name} signature must be {expected} bytes, got {len(raw)}",
                field=field,
            )
        return cls(scheme, raw[1 : 1 + sig_size], raw[1 + sig_size :])

    def to_bytes(self) -> bytes:
        """``flag ‖ signature ‖ public key``."""
        return bytes([self.scheme]) + self.signature + self.public_key

    def to_base64(self) -> str:
        """The wire form."""
        return b64encode(self.to_bytes())

    @property
    def address(self) -> str:
        """The signer's Sui address."""
        return sui_address(self.scheme, self.public_key)

    def verify(self, message: bytes) -> None:
        """Check the signature over ``message``; :class:`SignatureError` if it does not verify."""
        try:
            if self.scheme is SignatureScheme.ED25519:
                Ed25519PublicKey.from_public_bytes(self.public_key).verify(self.signature, message)
                return
            curve = _CURVE[self.scheme]
            pub = ec.EllipticCurvePublicKey.from_encoded_point(curve, self.public_key)
            r = int.from_bytes(self.signature[:32], "big")
            s = int.from_bytes(self.signature[32:], "big")
            if not (0 < r < _ORDER[self.scheme] and 0 < s <= _ORDER[self.scheme] // 2):
                raise SignatureError("ECDSA signature is not in low-s canonical form")
            pub.verify(encode_dss_signature(r, s), message, _ECDSA_SHA256)
        except InvalidSignature as exc:
            raise SignatureError(f"{self.scheme.name} signature does not verify") from exc
        except ValueError as exc:  # malformed public key point
            raise SignatureError(f"{self.scheme.name} public key is invalid") from exc


def verify_sui_signature(text: object, message: bytes, *, expected_address: str | None = None,
                         field: str = "signature") -> SuiSignature:
    """Parse and verify a Sui signature over ``message``; optionally pin the signer's address.

    Atoma's proxy checks a node's signature only against the key embedded in it. Passing
    ``expected_address`` binds the signature to a known signer, which atoma-lab's client does.
    """
    sig = SuiSignature.parse(text, field=field)
    sig.verify(message)
    if expected_address is not None and sig.address != expected_address.strip().lower():
        raise SignatureError(f"{field}: signed by an unexpected key", field=field)
    return sig


class SuiSigner:
    """A signing key that produces Sui-serialised signatures (Ed25519 by default)."""

    __slots__ = ("_ec", "_ed", "address", "public_key", "scheme")

    def __init__(self, private_key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> None:
        self._ed: Ed25519PrivateKey | None = None
        self._ec: ec.EllipticCurvePrivateKey | None = None
        if isinstance(private_key, Ed25519PrivateKey):
            self.scheme = SignatureScheme.ED25519
            self._ed = private_key
            self.public_key = private_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        elif isinstance(private_key, ec.EllipticCurvePrivateKey):
            names = {"secp256k1": SignatureScheme.SECP256K1, "secp256r1": SignatureScheme.SECP256R1}
            if private_key.curve.name not in names:
                raise ValueError(f"unsupported curve {private_key.curve.name}")
            self.scheme = names[private_key.curve.name]
            self._ec = private_key
            self.public_key = private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
            )
        else:
            raise TypeError("private_key must be an Ed25519 or secp256k1/r1 private key")
        self.address = sui_address(self.scheme, self.public_key)  #: the signer's Sui address

    @classmethod
    def generate(cls, scheme: SignatureScheme = SignatureScheme.ED25519) -> SuiSigner:
        """A fresh key of ``scheme`` from the OS CSPRNG."""
        if scheme is SignatureScheme.ED25519:
            return cls(Ed25519PrivateKey.generate())
        return cls(ec.generate_private_key(_CURVE[SignatureScheme(scheme)]))

    @classmethod
    def from_ed25519_seed(cls, seed: bytes) -> SuiSigner:
        """An Ed25519 signer from its 32-byte RFC 8032 secret seed."""
        if len(seed) != 32:
            raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    def sign_raw(self, message: bytes) -> bytes:
        """The raw 64-byte signature (Ed25519, or compact low-s ECDSA over SHA-256)."""
        if self._ed is not None:
            return self._ed.sign(message)
        assert self._ec is not None
        r, s = decode_dss_signature(self._ec.sign(message, _ECDSA_SHA256))
        order = _ORDER[self.scheme]
        if s > order // 2:
            s = order - s
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def sign(self, message: bytes) -> SuiSignature:
        """Sign ``message`` as given (Atoma passes the 32 raw hash bytes)."""
        return SuiSignature(self.scheme, self.sign_raw(message), self.public_key)

    def __repr__(self) -> str:
        return f"SuiSigner({self.scheme.name}, address={self.address})"
