"""How a hardened profile seals its request: one small object per cipher variant, looked up by
the profile name. Pure.

Both variants take the request AAD as it stands (every field but the ciphertext) and give,
besides the ciphertext or plaintext, the 32-byte node->client key that seals the response, as a
plain pair the caller unpacks at once (no object per request; the key never reaches a repr).
The response, the hashes, the receipt and the replay rules are the same for both (:mod:`.seal`,
docs/hardened-profile.md).

* :data:`HAND_MADE` (``atoma-lab/hardened-v1``): X25519, then HKDF-SHA256 with one label per
  direction (:func:`.layout.derive_direction_keys`), then AES-256-GCM with the request's nonce.
* :data:`HPKE_BASE` (``atoma-lab/hardened-hpke-v1``): RFC 9180 HPKE base mode with
  :data:`.layout.HPKE_SUITE`, info ``HPKE_INFO ‖ node_key_id ‖ salt``; the client key is the
  ephemeral key (its public key is ``enc``), HPKE derives the AEAD nonce itself (the request's
  ``nonce`` is bound in the AAD only), and the node->client key is an HPKE export.
"""


from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atoma_lab.crypto import hpke
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.errors import DecryptionError
from atoma_lab.protocol.hardened.layout import (
    HPKE_EXPORT_N2C,
    HPKE_INFO,
    HPKE_SUITE,
    PROFILE,
    PROFILE_HPKE,
    derive_direction_keys,
)
from atoma_lab.protocol.hardened.messages import HardenedRequest

N2C_KEY_SIZE = 32  # bytes, AES-256-GCM key of the response


def decrypt(cipher: AESGCM, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM decryption; a failed tag is :class:`DecryptionError`."""
    try:
        return cipher.decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise DecryptionError("AES-256-GCM authentication failed") from exc


class Cipher(ABC):
    """The request cipher of one hardened profile."""

    __slots__ = ()

    #: The profile this cipher seals for (the wire's ``profile``).
    profile: str

    @abstractmethod
    def seal_request(self, plaintext: bytes, aad: bytes, *, client_key: X25519KeyPair,
                     node_public_key: bytes, key_id: bytes, salt: bytes,
                     nonce: bytes) -> tuple[bytes, bytes]:
        """``(ciphertext, k_n2c)``: a request body encrypted to ``node_public_key`` under
        ``aad`` (client side), and the key the client opens the response with."""

    @abstractmethod
    def open_request(self, request: HardenedRequest, aad: bytes,
                     node_key: X25519KeyPair) -> tuple[bytes, bytes]:
        """``(plaintext, k_n2c)``: ``request`` decrypted with the node key it names (node
        side), and the key the node seals the response with. A forgery is
        :class:`DecryptionError`, a bad client key :class:`InvalidPublicKeyError`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.profile!r})"


class HandMadeCipher(Cipher):
    """X25519 + HKDF-SHA256 (one key per direction) + AES-256-GCM."""

    __slots__ = ()
    profile = PROFILE

    def seal_request(self, plaintext: bytes, aad: bytes, *, client_key: X25519KeyPair,
                     node_public_key: bytes, key_id: bytes, salt: bytes,
                     nonce: bytes) -> tuple[bytes, bytes]:
        shared = client_key.exchange(node_public_key)
        k_c2n, k_n2c = derive_direction_keys(shared, salt, client_key.public_bytes,
                                             node_public_key)
        return AESGCM(k_c2n).encrypt(nonce, plaintext, aad), k_n2c

    def open_request(self, request: HardenedRequest, aad: bytes,
                     node_key: X25519KeyPair) -> tuple[bytes, bytes]:
        shared = node_key.exchange(request.client_dh_public_key)
        k_c2n, k_n2c = derive_direction_keys(shared, request.salt, request.client_dh_public_key,
                                             node_key.public_bytes)
        return decrypt(AESGCM(k_c2n), request.nonce, request.ciphertext, aad), k_n2c


class HpkeBaseCipher(Cipher):
    """RFC 9180 HPKE base mode; the response key is an export of the HPKE context."""

    __slots__ = ()
    profile = PROFILE_HPKE

    def seal_request(self, plaintext: bytes, aad: bytes, *, client_key: X25519KeyPair,
                     node_public_key: bytes, key_id: bytes, salt: bytes,
                     nonce: bytes) -> tuple[bytes, bytes]:
        # enc is the ephemeral key's public bytes (DHKEM(X25519)), which the AAD already holds
        # as client_dh_public_key.
        _, context = hpke.setup_base_sender(HPKE_SUITE, node_public_key, HPKE_INFO + key_id + salt,
                                            ephemeral_key=client_key)
        ciphertext = context.seal(plaintext, aad)
        return ciphertext, context.export(HPKE_EXPORT_N2C, N2C_KEY_SIZE)

    def open_request(self, request: HardenedRequest, aad: bytes,
                     node_key: X25519KeyPair) -> tuple[bytes, bytes]:
        context = hpke.setup_base_recipient(HPKE_SUITE, request.client_dh_public_key, node_key,
                                            HPKE_INFO + request.node_key_id + request.salt)
        plaintext = context.open(request.ciphertext, aad)
        return plaintext, context.export(HPKE_EXPORT_N2C, N2C_KEY_SIZE)


HAND_MADE = HandMadeCipher()
HPKE_BASE = HpkeBaseCipher()
#: The cipher of each hardened profile, by profile name.
CIPHERS: Mapping[str, Cipher] = MappingProxyType({c.profile: c for c in (HAND_MADE, HPKE_BASE)})


def cipher_for(profile: str) -> Cipher:
    """The cipher of ``profile``; ``ValueError`` for a name that is not a hardened profile."""
    try:
        return CIPHERS[profile]
    except KeyError:
        raise ValueError(f"profile must be one of {tuple(CIPHERS)}") from None
