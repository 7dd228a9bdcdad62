"""Seal and open a hardened request and its response (client and node sides). Pure."""


from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atoma_lab.crypto.aead import NONCE_SIZE, TAG_SIZE
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.kdf import SALT_SIZE
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.rng import RandomBytes, draw
from atoma_lab.crypto.signing import SuiSignature, SuiSigner, verify_sui_signature
from atoma_lab.errors import (
    NodeKeyMismatchError,
    ProfileMismatchError,
    ResponseMismatchError,
)
from atoma_lab.protocol.atoma.messages import (  # the strict JSON helpers are shared
    Usage,
)
from atoma_lab.protocol.hardened.cipher import CIPHERS, cipher_for, decrypt
from atoma_lab.protocol.hardened.layout import (
    PROFILE,
    REQUEST_ID_SIZE,
    _response_aad,
    receipt_digest,
)
from atoma_lab.protocol.hardened.messages import HardenedRequest, HardenedResponse
from atoma_lab.protocol.keyring import NodeKeyRing, node_key_id
from atoma_lab.protocol.replay import ReplayGuard


@dataclass(slots=True, repr=False)
class HardenedClientContext:
    """What the client keeps to open the one response to a sealed request. Single use."""

    _n2c: AESGCM
    request_id: bytes
    request_hash: bytes
    node_public_key: bytes
    _opened: bool = False
    profile: str = PROFILE

    def __repr__(self) -> str:
        return f"HardenedClientContext(request_id={self.request_id.hex()}, <key redacted>)"


@dataclass(frozen=True, slots=True)
class SealedHardenedRequest:
    """A sealed request and the client context needed to open its response."""

    request: HardenedRequest
    context: HardenedClientContext


def seal_hardened_request(
    plaintext: bytes,
    *,
    node_public_key: bytes,
    model_name: str,
    stack_small_id: int,
    now: float,
    num_compute_units: int | None = None,
    client_key: X25519KeyPair | None = None,
    salt: bytes | None = None,
    nonce: bytes | None = None,
    request_id: bytes | None = None,
    rng: RandomBytes = secrets.token_bytes,
    profile: str = PROFILE,
) -> SealedHardenedRequest:
    """Encrypt ``plaintext`` (the exact OpenAI JSON bytes) for a node key, hardened profile.

    ``now`` (Unix seconds) becomes the request's ``timestamp`` (rounded down). A fresh client key,
    salt, nonce and request id are drawn unless injected (for vectors). The profile's cipher
    (:mod:`.cipher`) seals the body: with ``profile=PROFILE_HPKE`` ``client_key`` is the HPKE
    ephemeral key (``client_dh_public_key`` is ``enc``), and ``nonce`` is bound in the AAD but
    HPKE derives the AEAD nonce itself.
    """
    cipher = cipher_for(profile)
    if not isinstance(plaintext, bytes):
        raise TypeError("plaintext must be bytes")
    if now < 0:
        raise ValueError("now must be a Unix time in seconds")
    client_key = client_key or X25519KeyPair.generate()
    salt = draw(salt, SALT_SIZE, "salt", rng)
    nonce = draw(nonce, NONCE_SIZE, "nonce", rng)
    request_id = draw(request_id, REQUEST_ID_SIZE, "request_id", rng)
    node_public_key = bytes(node_public_key)
    key_id = node_key_id(node_public_key)
    # Every field but the ciphertext, checked by the model; the AAD does not cover the
    # ciphertext, which takes the place of the tag-sized stand-in below.
    header = HardenedRequest(
        model_name=model_name,
        stack_small_id=stack_small_id,
        node_key_id=key_id,
        client_dh_public_key=client_key.public_bytes,
        salt=salt,
        nonce=nonce,
        timestamp=int(now),
        request_id=request_id,
        ciphertext=bytes(TAG_SIZE),
        num_compute_units=num_compute_units,
        profile=profile,
    )
    aad = header.aad()
    ciphertext, k_n2c = cipher.seal_request(plaintext, aad, client_key=client_key,
                                            node_public_key=node_public_key, key_id=key_id,
                                            salt=salt, nonce=nonce)
    # The header's fields were checked just above and the cipher made the ciphertext.
    request = HardenedRequest.trusted(  # every field, in wire order
        header.profile, header.model_name, header.stack_small_id, header.node_key_id,
        header.client_dh_public_key, header.salt, header.nonce, header.timestamp,
        header.request_id, header.num_compute_units, ciphertext,
    )
    context = HardenedClientContext(
        _n2c=AESGCM(k_n2c), request_id=request_id, request_hash=blake2b_256(aad + ciphertext),
        node_public_key=node_public_key, profile=profile,
    )
    return SealedHardenedRequest(request=request, context=context)


@dataclass(slots=True, repr=False)
class HardenedNodeContext:
    """What the node keeps to seal the one response to an opened request. Single use."""

    _n2c: AESGCM
    request_id: bytes
    request_hash: bytes
    _sealed: bool = False
    profile: str = PROFILE

    def __repr__(self) -> str:
        return f"HardenedNodeContext(request_id={self.request_id.hex()}, <key redacted>)"


class OpenedHardenedRequest(NamedTuple):
    """A request the node has authenticated, decrypted and recorded in its replay guard."""

    plaintext: bytes
    request: HardenedRequest
    context: HardenedNodeContext

    def __repr__(self) -> str:
        return f"OpenedHardenedRequest(<{len(self.plaintext)} bytes>, {self.context!r})"


def _node_key(keys: NodeKeyRing | X25519KeyPair, key_id: bytes, now: float) -> X25519KeyPair:
    if isinstance(keys, NodeKeyRing):
        return keys.lookup(key_id, now=now)
    if node_key_id(keys.public_bytes) != key_id:
        raise NodeKeyMismatchError(
            "node_key_id names no key of this node; take a new lock and seal again",
            field="node_key_id")
    return keys


def open_hardened_request(
    request: HardenedRequest,
    keys: NodeKeyRing | X25519KeyPair,
    *,
    guard: ReplayGuard | None = None,
    now: float,
) -> OpenedHardenedRequest:
    """Open a hardened request on the node, checks in this order:

    1. ``node_key_id`` names a key of the ring, current or within grace (or the one key
       given) (:class:`NodeKeyMismatchError`);
    2. ``timestamp`` within the guard's window (:class:`StaleRequestError`);
    3. the profile's cipher (:mod:`.cipher`) with the request AAD
       (:class:`InvalidPublicKeyError`, :class:`DecryptionError`);
    4. not seen before (:class:`ReplayedRequestError`); recorded only now that it authenticated.

    ``guard`` defaults to the ring's; with a bare key pair it must be given.
    """
    if guard is None:
        if not isinstance(keys, NodeKeyRing):
            raise TypeError("open_hardened_request needs a guard when given a bare key pair")
        guard = keys.guard
    node_key = _node_key(keys, request.node_key_id, now)
    guard.check_window(request.timestamp, now)
    aad = request.aad()
    plaintext, k_n2c = CIPHERS[request.profile].open_request(request, aad, node_key)
    guard.check(request.replay_key, request.timestamp, now)
    context = HardenedNodeContext(
        _n2c=AESGCM(k_n2c), request_id=request.request_id,
        request_hash=blake2b_256(aad + request.ciphertext), profile=request.profile,
    )
    return OpenedHardenedRequest(plaintext=plaintext, request=request, context=context)


def seal_hardened_response(
    plaintext: bytes,
    context: HardenedNodeContext,
    *,
    signer: SuiSigner,
    usage: Usage | None = None,
    nonce: bytes | None = None,
    rng: RandomBytes = secrets.token_bytes,
) -> HardenedResponse:
    """Encrypt the response under the node->client key, bound to the request, and sign the receipt.

    ``usage`` travels in clear for the proxy and is bound into the AAD, so the client sees what
    the node reported.
    """
    if not isinstance(plaintext, bytes):
        raise TypeError("plaintext must be bytes")
    if context._sealed:
        raise ValueError("this request's response was already sealed")
    nonce = draw(nonce, NONCE_SIZE, "nonce", rng)
    context._sealed = True
    if usage is not None and not isinstance(usage, Usage):
        raise TypeError("usage must be a Usage")
    aad = _response_aad(context.profile, context.request_id, context.request_hash, nonce, usage)
    ciphertext = context._n2c.encrypt(nonce, plaintext, aad)
    digest = receipt_digest(context.request_hash, blake2b_256(aad + ciphertext))
    return HardenedResponse(
        request_id=context.request_id, request_hash=context.request_hash, nonce=nonce,
        ciphertext=ciphertext, signature=signer.sign(digest).to_base64(), usage=usage,
        profile=context.profile,
    )


class OpenedHardenedResponse(NamedTuple):
    """A decrypted response whose binding and signature were checked."""

    plaintext: bytes
    request_hash: bytes
    response_hash: bytes
    signer: SuiSignature
    usage: Usage | None

    def __repr__(self) -> str:
        return (f"OpenedHardenedResponse(<{len(self.plaintext)} bytes>, "
                f"response_hash={self.response_hash.hex()})")


def verify_receipt(request_hash: bytes, response: HardenedResponse, *,
                   expected_signer_address: str | None = None) -> SuiSignature:
    """Check the node's signature over the receipt of ``response`` to the request with
    ``request_hash``; needs no key, so a proxy can run it. :class:`SignatureError` if it fails."""
    digest = receipt_digest(request_hash, response.response_hash())
    return verify_sui_signature(response.signature, digest,
                                expected_address=expected_signer_address)


def open_hardened_response(
    response: HardenedResponse,
    context: HardenedClientContext,
    *,
    expected_signer_address: str | None = None,
) -> OpenedHardenedResponse:
    """Open a hardened response on the client:

    1. it must name this context's request id and request hash (:class:`ResponseMismatchError`);
    2. the node's signature over the receipt must verify, by ``expected_signer_address`` if given
       (:class:`SignatureError`);
    3. AES-256-GCM under the node->client key with the response AAD (:class:`DecryptionError`).

    The context opens one response; a second call is a ``ValueError``.
    """
    if context._opened:
        raise ValueError("this context already opened a response")
    if response.profile != context.profile:
        raise ProfileMismatchError(f"a {response.profile} response to a {context.profile} "
                                   "request", field="profile")
    if not hmac.compare_digest(response.request_id, context.request_id):
        raise ResponseMismatchError("response answers another request_id", field="request_id")
    if not hmac.compare_digest(response.request_hash, context.request_hash):
        raise ResponseMismatchError("response answers another request", field="request_hash")
    aad = response.aad()
    response_hash = blake2b_256(aad + response.ciphertext)
    signer = verify_sui_signature(
        response.signature, receipt_digest(context.request_hash, response_hash),
        expected_address=expected_signer_address,
    )
    plaintext = decrypt(context._n2c, response.nonce, response.ciphertext, aad)
    context._opened = True
    return OpenedHardenedResponse(plaintext=plaintext, request_hash=context.request_hash,
                                  response_hash=response_hash, signer=signer, usage=response.usage)
