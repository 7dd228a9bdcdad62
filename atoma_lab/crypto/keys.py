"""X25519 key pairs (RFC 7748) for the node's static key and the client's ephemeral keys."""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from atoma_lab.errors import InvalidPublicKeyError

X25519_KEY_SIZE = 32  # bytes, private and public (RFC 7748 section 5)
_ALL_ZERO = bytes(X25519_KEY_SIZE)
_RAW = serialization.Encoding.Raw


def _check_size(data: bytes, what: str) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):  # a tuple: cheaper than a union
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    if len(data) != X25519_KEY_SIZE:
        raise ValueError(f"{what} must be {X25519_KEY_SIZE} bytes, got {len(data)}")


def load_public_key(public: bytes) -> X25519PublicKey:
    """A pyca public key from 32 raw bytes (``ValueError`` on any other size)."""
    _check_size(public, "X25519 public key")
    return X25519PublicKey.from_public_bytes(bytes(public))


class X25519KeyPair:
    """An X25519 private key and its public key.

    The private key never appears in ``repr`` or ``str``; :meth:`private_bytes` hands it out only
    when asked by name.
    """

    __slots__ = ("_private", "_public_bytes")

    def __init__(self, private_key: X25519PrivateKey) -> None:
        if not isinstance(private_key, X25519PrivateKey):
            raise TypeError("private_key must be a cryptography X25519PrivateKey")
        self._private = private_key
        self._public_bytes = private_key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)

    @classmethod
    def generate(cls) -> X25519KeyPair:
        """A fresh key pair from the operating system's CSPRNG."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, private: bytes) -> X25519KeyPair:
        """The key pair for 32 raw private bytes (clamped on use, as RFC 7748 says)."""
        _check_size(private, "X25519 private key")
        return cls(X25519PrivateKey.from_private_bytes(bytes(private)))

    def private_bytes(self) -> bytes:
        """The 32 raw private bytes. Handle with care."""
        return self._private.private_bytes(
            _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte public u-coordinate."""
        return self._public_bytes

    def exchange(self, peer_public: bytes) -> bytes:
        """The 32-byte shared secret with ``peer_public``.

        Raises :class:`InvalidPublicKeyError` when the peer key is a low-order point, which makes
        the shared secret all zeros (RFC 7748 section 6.1); Atoma's node does not check this.
        """
        peer = load_public_key(peer_public)
        try:
            shared = self._private.exchange(peer)
        except ValueError as exc:  # pyca refuses the all-zero output itself
            raise InvalidPublicKeyError("X25519 public key is a low-order point") from exc
        if hmac.compare_digest(shared, _ALL_ZERO):
            raise InvalidPublicKeyError("X25519 public key is a low-order point")
        return shared

    def __repr__(self) -> str:
        return f"X25519KeyPair(public={self._public_bytes.hex()[:16]}...)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, X25519KeyPair):
            return NotImplemented
        return hmac.compare_digest(self.private_bytes(), other.private_bytes())

    def __hash__(self) -> int:
        return hash(self._public_bytes)


def x25519_shared_secret(private: bytes, public: bytes) -> bytes:
    """X25519(private, public) from raw bytes; see :meth:`X25519KeyPair.exchange`."""
    return X25519KeyPair.from_private_bytes(private).exchange(public)
