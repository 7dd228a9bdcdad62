"""Atoma's confidential envelope as pure functions (atoma-protocol.md sections 1.2, 1.4, 1.5, 2).

Client                                   Node
------                                   ----
``seal_request``  -> ConfidentialComputeRequest -> ``open_request``
``open_response`` <- ConfidentialComputeResponse <- ``seal_response``

Key schedule (Atoma's, byte-compatible): ``shared = X25519(client_sk, node_pk)``,
``key = HKDF-SHA256(salt=request salt, IKM=shared, info="", L=32)``, AES-256-GCM with no AAD.
The response is sealed under the *same* key (same salt and shared secret) with a fresh nonce,
exactly as Atoma's node does. Because of that, the contexts below are single-use and refuse any
nonce already used under the key: the public API offers no way to reuse a nonce.

Randomness (ephemeral key, salt, nonces) can be injected through keyword-only arguments so that
golden vectors and notebooks are reproducible; by default it comes from :mod:`secrets`.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atoma_lab.crypto.aead import NONCE_SIZE
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.kdf import SALT_SIZE, derive_key
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.rng import RandomBytes, draw
from atoma_lab.crypto.signing import SuiSignature, SuiSigner, verify_sui_signature
from atoma_lab.errors import (
    DecryptionError,
    HashMismatchError,
    NodeKeyMismatchError,
    PeerProtocolError,
)
from atoma_lab.protocol.atoma.messages import (
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    Usage,
    check_caller_fields,
)

_new_tuple = tuple.__new__


def _decrypt(cipher: AESGCM, nonce: bytes, ciphertext: bytes) -> bytes:
    # The wire models guarantee a 12-byte nonce and a ciphertext at least as long as the tag.
    try:
        return cipher.decrypt(nonce, ciphertext, None)
    except InvalidTag as exc:
        raise DecryptionError("AES-256-GCM authentication failed") from exc


class _KeyState:
    """An AES key and every nonce used under it so far."""

    __slots__ = ("cipher", "used_nonces")

    def __init__(self, cipher: AESGCM, first_nonce: bytes | None = None) -> None:
        self.cipher = cipher  # pyca's, called directly on the hot path (nonce sizes are ours)
        self.used_nonces: set[bytes] = set() if first_nonce is None else {first_nonce}

    def __repr__(self) -> str:
        return f"_KeyState(<key redacted>, {len(self.used_nonces)} nonces used)"

    def take(self, nonce: bytes | None, rng: RandomBytes) -> bytes:
        used = self.used_nonces
        if nonce is None:
            nonce = rng(NONCE_SIZE)
            if len(nonce) != NONCE_SIZE or nonce in used:
                nonce = self._draw_again(rng)
        elif len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
        elif nonce in used:
            raise ValueError("nonce already used under this key")
        used.add(nonce)
        return nonce

    def _draw_again(self, rng: RandomBytes) -> bytes:
        # A 96-bit random nonce colliding is astronomically unlikely; with an injected rng (tests)
        # it is not, so draw again rather than ever reuse one under this key.
        for _ in range(8):
            nonce = rng(NONCE_SIZE)
            if len(nonce) != NONCE_SIZE:
                raise ValueError(f"rng must return {NONCE_SIZE} bytes")
            if nonce not in self.used_nonces:
                return nonce
        raise ValueError("rng keeps returning nonces already used under this key")


@dataclass(slots=True, repr=False)
class ClientContext:
    """What the client keeps to open the response to one sealed request.

    Holds the derived AES key; never printed. Single use: :func:`open_response` accepts one
    response per context.
    """

    _keys: _KeyState
    node_public_key: bytes
    client_public_key: bytes
    salt: bytes
    request_nonce: bytes
    plaintext_body_hash: bytes
    _opened: bool = False

    def __repr__(self) -> str:
        return f"ClientContext(node_public_key={self.node_public_key.hex()[:16]}..., <key redacted>)"


@dataclass(frozen=True, slots=True)
class SealedRequest:
    """A sealed request and the client context needed to open its response."""

    request: ConfidentialComputeRequest
    context: ClientContext
    plaintext: bytes = field(repr=False)


def seal_request(
    plaintext: bytes,
    *,
    node_public_key: bytes,
    stack_small_id: int,
    model_name: str,
    num_compute_units: int | None = None,
    stream: bool | None = None,
    client_key: X25519KeyPair | None = None,
    salt: bytes | None = None,
    nonce: bytes | None = None,
    rng: RandomBytes = secrets.token_bytes,
) -> SealedRequest:
    """Encrypt ``plaintext`` (the exact OpenAI JSON bytes) for a node's X25519 key.

    A fresh ephemeral client key, salt and nonce are drawn unless injected (for vectors).
    ``plaintext_body_hash`` is BLAKE2b-256 over exactly these bytes.
    """
    if not isinstance(plaintext, bytes):
        raise TypeError("plaintext must be bytes")
    client_key = client_key or X25519KeyPair.generate()
    salt = draw(salt, SALT_SIZE, "salt", rng)
    shared = client_key.exchange(node_public_key)  # checks its size and type
    node_public_key = bytes(node_public_key)
    keys = _KeyState(AESGCM(derive_key(shared, salt)))
    nonce = keys.take(nonce, rng)
    body_hash = blake2b_256(plaintext)
    ciphertext = keys.cipher.encrypt(nonce, plaintext, None)
    # The byte fields were made or size-checked just above; check what the caller passed.
    check_caller_fields(stack_small_id, model_name, stream, num_compute_units)
    request = ConfidentialComputeRequest.trusted(  # every field, in wire order
        ciphertext, stack_small_id, nonce, salt, client_key.public_bytes, node_public_key,
        body_hash, stream, model_name, num_compute_units,
    )
    context = ClientContext(
        _keys=keys,
        node_public_key=node_public_key,
        client_public_key=client_key.public_bytes,
        salt=salt,
        request_nonce=nonce,
        plaintext_body_hash=body_hash,
    )
    return SealedRequest(request=request, context=context, plaintext=plaintext)


@dataclass(slots=True, repr=False)
class NodeContext:
    """What the node keeps to seal the response to one opened request. Single use."""

    _keys: _KeyState
    client_public_key: bytes
    salt: bytes
    plaintext_body_hash: bytes
    _sealed: bool = False

    def __repr__(self) -> str:
        return f"NodeContext(client_public_key={self.client_public_key.hex()[:16]}..., <key redacted>)"


class OpenedRequest(NamedTuple):
    """A request the node has decrypted and whose hash matched."""

    plaintext: bytes
    context: NodeContext

    def __repr__(self) -> str:
        return f"OpenedRequest(<{len(self.plaintext)} bytes>, {self.context!r})"


def open_request(request: ConfidentialComputeRequest, node_key: X25519KeyPair) -> OpenedRequest:
    """Decrypt a request on the node, in Atoma's order of checks.

    1. ``node_dh_public_key`` must be this node key (:class:`NodeKeyMismatchError`, 409);
    2. X25519 + HKDF + AES-256-GCM (:class:`InvalidPublicKeyError`, :class:`DecryptionError`);
    3. BLAKE2b-256 of the exact plaintext bytes must equal ``plaintext_body_hash``
       (:class:`HashMismatchError`).
    """
    if not hmac.compare_digest(request.node_dh_public_key, node_key.public_bytes):
        raise NodeKeyMismatchError(
            "node_dh_public_key is not this node's current key; take a new lock and seal again",
            field="node_dh_public_key",
        )
    shared = node_key.exchange(request.client_dh_public_key)
    keys = _KeyState(AESGCM(derive_key(shared, request.salt)), request.nonce)
    plaintext = _decrypt(keys.cipher, request.nonce, request.ciphertext)
    if not hmac.compare_digest(blake2b_256(plaintext), request.plaintext_body_hash):
        raise HashMismatchError("plaintext does not match plaintext_body_hash",
                                field="plaintext_body_hash")
    context = NodeContext(
        _keys=keys,
        client_public_key=request.client_dh_public_key,
        salt=request.salt,
        plaintext_body_hash=request.plaintext_body_hash,
    )
    return OpenedRequest(plaintext=plaintext, context=context)


def seal_response(
    plaintext: bytes,
    context: NodeContext,
    *,
    usage: Usage | None = None,
    signer: SuiSigner | None = None,
    nonce: bytes | None = None,
    rng: RandomBytes = secrets.token_bytes,
) -> ConfidentialComputeResponse:
    """Encrypt the response plaintext under the request's key with a fresh nonce.

    ``response_hash`` = BLAKE2b-256(plaintext); when ``signer`` is given, ``signature`` is its Sui
    signature over the 32 raw hash bytes (Atoma's ``sign_hashed``). ``usage`` travels in clear.
    """
    if not isinstance(plaintext, bytes):
        raise TypeError("plaintext must be bytes")
    if context._sealed:
        raise ValueError("this request's response was already sealed")
    keys = context._keys
    nonce = keys.take(nonce, rng)
    context._sealed = True
    response_hash = blake2b_256(plaintext)
    ciphertext = keys.cipher.encrypt(nonce, plaintext, None)
    signature = signer.sign(response_hash).to_base64() if signer is not None else None
    # Every field was made just above with the right size: skip re-validating it. ``usage`` is the
    # caller's, so its type is checked (a Usage is valid by construction).
    if usage is not None and not isinstance(usage, Usage):
        raise TypeError("usage must be a Usage")
    return ConfidentialComputeResponse.trusted(nonce, ciphertext, response_hash, signature, usage)


class OpenedResponse(NamedTuple):
    """A decrypted, hash-checked response (a named tuple: cheap on the hot path)."""

    plaintext: bytes
    response_hash: bytes
    signer: SuiSignature | None

    def __repr__(self) -> str:
        return f"OpenedResponse(<{len(self.plaintext)} bytes>, response_hash={self.response_hash.hex()})"


def open_response(
    response: ConfidentialComputeResponse,
    context: ClientContext,
    *,
    require_hash: bool = True,
    expected_signer_address: str | None = None,
    require_signature: bool = False,
) -> OpenedResponse:
    """Decrypt a response on the client and check it.

    * a nonce already used under this key (e.g. the request's own) is refused
      (:class:`DecryptionError`): accepting it would mean a nonce was reused;
    * AES-256-GCM (:class:`DecryptionError`);
    * ``response_hash`` must equal BLAKE2b-256(plaintext) (:class:`HashMismatchError`); a missing
      hash is a :class:`PeerProtocolError` unless ``require_hash=False`` (Atoma's Python SDK
      checks only when present);
    * when ``expected_signer_address`` is given or ``require_signature`` is set, ``signature``
      must be a valid Sui signature over the hash (:class:`SignatureError`), by that address if
      given. Atoma's SDKs never check it.
    """
    if context._opened:
        raise ValueError("this context already opened a response")
    keys, nonce = context._keys, response.nonce
    if nonce in keys.used_nonces:
        raise DecryptionError("response nonce was already used under this key", field="nonce")
    plaintext = _decrypt(keys.cipher, nonce, response.ciphertext)
    keys.used_nonces.add(nonce)
    context._opened = True
    digest = blake2b_256(plaintext)
    if response.response_hash is None:
        if require_hash:
            raise PeerProtocolError("response has no response_hash")
    elif not hmac.compare_digest(digest, response.response_hash):
        raise HashMismatchError("decrypted response does not match response_hash",
                                field="response_hash")
    signer: SuiSignature | None = None
    if expected_signer_address is not None or require_signature:
        if response.signature is None:
            raise PeerProtocolError("response has no signature")
        signer = verify_sui_signature(
            response.signature, digest, expected_address=expected_signer_address
        )
    # tuple.__new__ skips the named tuple's keyword-parsing __new__ on this hot path.
    return _new_tuple(OpenedResponse, (plaintext, digest, signer))
