"""The confidential envelope: round trips, tampering, nonce reuse, and no secrets in messages.

atoma-protocol.md sections 1.2 (client seals), 1.4 (node opens, checks the hash, seals the
answer), 1.5 (client opens) and 2 (exact cryptography).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.errors import (
    AtomaLabError,
    DecryptionError,
    HashMismatchError,
    InvalidFieldError,
    InvalidPublicKeyError,
    NodeKeyMismatchError,
    PeerProtocolError,
    SignatureError,
)
from atoma_lab.protocol import (
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    OpenedRequest,
    SealedRequest,
    Usage,
    open_request,
    open_response,
    seal_request,
    seal_response,
)
from atoma_lab.protocol.wire import wire_names

# Fixed keys, so that every bit-flip outcome below is deterministic.
CLIENT_SK = bytes.fromhex("a8abababababababababababababababababababababababababababababab6b")
NODE_SK = bytes.fromhex("c8cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd4d")
OTHER_NODE_SK = bytes.fromhex("48c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c545")
SALT = bytes(range(100, 116))
REQUEST_NONCE = bytes(range(200, 212))
RESPONSE_NONCE = bytes(range(220, 232))
# A plaintext whose every rendering can be searched for in messages and reprs.
CANARY = "zebra-canary-4f1c"
REQUEST_PLAINTEXT = ('{"input":"' + CANARY + ' request","model":"m"}').encode()
RESPONSE_PLAINTEXT = (
    '{"object":"list","data":[{"object":"embedding","embedding":[0.5,-0.25],"index":0}],'
    '"model":"m","usage":{"prompt_tokens":3,"total_tokens":3},"note":"' + CANARY + ' response"}'
).encode()
USAGE = Usage(prompt_tokens=3, total_tokens=3)

# The X25519 u-coordinates of small order (RFC 7748 section 6.1; libsodium's blocklist), and the
# same with the most significant bit set, which RFC 7748 section 5 says to mask.
P25519 = 2**255 - 19
_LOW_ORDER_U = [
    0,
    1,
    P25519 - 1,
    P25519,
    P25519 + 1,
    int.from_bytes(
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), "little"
    ),
    int.from_bytes(
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), "little"
    ),
]
LOW_ORDER_KEYS = [u.to_bytes(32, "little") for u in _LOW_ORDER_U] + [
    (u | 1 << 255).to_bytes(32, "little") for u in _LOW_ORDER_U
]

KEY_BYTES = st.binary(min_size=32, max_size=32)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _raw_key(client_sk: bytes, node_sk: bytes, salt: bytes) -> bytes:
    """The AES key of an exchange, computed with pyca directly (not with atoma_lab)."""
    node_pk = X25519PrivateKey.from_private_bytes(node_sk).public_key()
    shared = X25519PrivateKey.from_private_bytes(client_sk).exchange(node_pk)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"").derive(shared)


@pytest.fixture(scope="module")
def client_key() -> X25519KeyPair:
    return X25519KeyPair.from_private_bytes(CLIENT_SK)


@pytest.fixture(scope="module")
def node_key() -> X25519KeyPair:
    return X25519KeyPair.from_private_bytes(NODE_SK)


@pytest.fixture(scope="module")
def signer() -> SuiSigner:
    return SuiSigner.from_ed25519_seed(bytes(range(32)))


def _seal(client_key: X25519KeyPair, node_key: X25519KeyPair, **overrides: Any) -> SealedRequest:
    kwargs: dict[str, Any] = {
        "node_public_key": node_key.public_bytes,
        "stack_small_id": 7,
        "model_name": "m",
        "client_key": client_key,
        "salt": SALT,
        "nonce": REQUEST_NONCE,
    }
    kwargs.update(overrides)
    return seal_request(REQUEST_PLAINTEXT, **kwargs)


@pytest.fixture
def opened(client_key: X25519KeyPair, node_key: X25519KeyPair) -> OpenedRequest:
    """A request sealed to ``node_key`` and opened by the node (its context is single use)."""
    return open_request(_seal(client_key, node_key).request, node_key)


Exchange = tuple[SealedRequest, ConfidentialComputeResponse]


@pytest.fixture
def make_exchange(
    client_key: X25519KeyPair, node_key: X25519KeyPair, signer: SuiSigner
) -> Callable[[], Exchange]:
    """A fresh sealed request (with its unused client context) and the node's sealed answer."""

    def make() -> Exchange:
        sealed = _seal(client_key, node_key)
        opened = open_request(sealed.request, node_key)
        response = seal_response(
            RESPONSE_PLAINTEXT, opened.context, usage=USAGE, signer=signer, nonce=RESPONSE_NONCE
        )
        return sealed, response

    return make


# ------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request_body=st.binary(max_size=3000),
    response_body=st.binary(max_size=3000),
    client_sk=KEY_BYTES,
    node_sk=KEY_BYTES,
    stack_small_id=st.integers(0, 2**64 - 1),
    num_compute_units=st.none() | st.integers(0, 2**64 - 1),
    stream=st.none() | st.booleans(),
    model_name=st.text(max_size=40),
)
def test_round_trip_both_directions_through_the_wire(
    request_body: bytes,
    response_body: bytes,
    client_sk: bytes,
    node_sk: bytes,
    stack_small_id: int,
    num_compute_units: int | None,
    stream: bool | None,
    model_name: str,
) -> None:
    client = X25519KeyPair.from_private_bytes(client_sk)
    node = X25519KeyPair.from_private_bytes(node_sk)
    sealed = seal_request(
        request_body,
        node_public_key=node.public_bytes,
        stack_small_id=stack_small_id,
        model_name=model_name,
        num_compute_units=num_compute_units,
        stream=stream,
        client_key=client,
    )
    request = ConfidentialComputeRequest.from_json(sealed.request.to_json())
    assert request == sealed.request
    assert request.plaintext_body_hash == hashlib.blake2b(request_body, digest_size=32).digest()
    assert len(request.ciphertext) == len(request_body) + 16
    opened = open_request(request, node)
    assert opened.plaintext == request_body
    assert opened.context.client_public_key == client.public_bytes

    response = seal_response(response_body, opened.context, usage=USAGE)
    assert response.nonce != request.nonce
    response = ConfidentialComputeResponse.from_json(response.to_json())
    result = open_response(response, sealed.context)
    assert result.plaintext == response_body
    assert result.response_hash == hashlib.blake2b(response_body, digest_size=32).digest()
    assert result.signer is None


@settings(max_examples=30, deadline=None)
@given(
    request_body=st.binary(max_size=512),
    response_body=st.binary(max_size=512),
    salt=st.binary(min_size=16, max_size=16),
    request_nonce=st.binary(min_size=12, max_size=12),
    response_nonce=st.binary(min_size=12, max_size=12),
)
def test_injected_randomness_matches_raw_pyca(
    request_body: bytes,
    response_body: bytes,
    salt: bytes,
    request_nonce: bytes,
    response_nonce: bytes,
) -> None:
    """With every random input injected, both directions equal a by-hand pyca computation."""
    client = X25519KeyPair.from_private_bytes(CLIENT_SK)
    node = X25519KeyPair.from_private_bytes(NODE_SK)
    key = AESGCM(_raw_key(CLIENT_SK, NODE_SK, salt))
    sealed = seal_request(
        request_body, node_public_key=node.public_bytes, stack_small_id=1, model_name="m",
        client_key=client, salt=salt, nonce=request_nonce,
    )
    assert sealed.request.ciphertext == key.encrypt(request_nonce, request_body, None)
    opened = open_request(sealed.request, node)
    if response_nonce == request_nonce:
        with pytest.raises(ValueError):
            seal_response(response_body, opened.context, nonce=response_nonce)
        return
    response = seal_response(response_body, opened.context, nonce=response_nonce)
    assert response.ciphertext == key.encrypt(response_nonce, response_body, None)
    assert open_response(response, sealed.context).plaintext == response_body


def test_round_trip_with_signature_bound_to_the_signer(
    make_exchange: Callable[[], Exchange], signer: SuiSigner
) -> None:
    sealed, response = make_exchange()
    result = open_response(response, sealed.context, expected_signer_address=signer.address)
    assert result.plaintext == RESPONSE_PLAINTEXT
    assert result.signer is not None and result.signer.address == signer.address


def test_seal_request_draws_fresh_randomness(
    client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    first = seal_request(REQUEST_PLAINTEXT, node_public_key=node_key.public_bytes,
                         stack_small_id=1, model_name="m")
    second = seal_request(REQUEST_PLAINTEXT, node_public_key=node_key.public_bytes,
                          stack_small_id=1, model_name="m")
    assert first.request.client_dh_public_key != second.request.client_dh_public_key
    assert first.request.salt != second.request.salt
    assert first.request.nonce != second.request.nonce
    assert first.request.ciphertext != second.request.ciphertext
    assert first.request.plaintext_body_hash == second.request.plaintext_body_hash


# ------------------------------------------------------------------------------------------------
# Request tampering: every single-bit flip is caught, by the specific error
# ------------------------------------------------------------------------------------------------


def _outcome(open_: Callable[..., object], *args: Any, **kwargs: Any) -> str:
    """``"accepted"`` where ``open_(*args, **kwargs)`` succeeds, else the name of the atoma-lab
    error it raised."""
    try:
        open_(*args, **kwargs)
    except AtomaLabError as exc:
        return type(exc).__name__
    return "accepted"


def _request_flip_outcomes(
    request: ConfidentialComputeRequest, node_key: X25519KeyPair, field: str,
    bits: Iterator[int] | range,
) -> dict[int, str]:
    outcomes: dict[int, str] = {}
    for bit in bits:
        tampered = request.replace(**{field: _flip(getattr(request, field), bit)})
        outcomes[bit] = _outcome(open_request, tampered, node_key)
    return outcomes


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("ciphertext", DecryptionError),  # the encrypted bytes and the 16-byte tag
        ("nonce", DecryptionError),
        ("salt", DecryptionError),
        ("plaintext_body_hash", HashMismatchError),
        ("node_dh_public_key", NodeKeyMismatchError),
    ],
)
def test_every_bit_flip_in_a_request_field_is_rejected(
    client_key: X25519KeyPair, node_key: X25519KeyPair, field: str, expected: type[Exception]
) -> None:
    request = _seal(client_key, node_key).request
    bits = range(8 * len(getattr(request, field)))
    outcomes = _request_flip_outcomes(request, node_key, field, bits)
    wrong = {bit: got for bit, got in outcomes.items() if got != expected.__name__}
    assert not wrong, f"{field}: bits with another outcome than {expected.__name__}: {wrong}"


def test_bit_flips_in_the_tag_and_in_the_body_both_fail(
    client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    request = _seal(client_key, node_key).request
    n = len(request.ciphertext)
    assert n == len(REQUEST_PLAINTEXT) + 16
    body_bits = range(0, 8 * (n - 16))
    tag_bits = range(8 * (n - 16), 8 * n)
    for bits in (body_bits, tag_bits):
        outcomes = _request_flip_outcomes(request, node_key, "ciphertext", bits)
        assert set(outcomes.values()) == {"DecryptionError"}


def test_every_bit_flip_of_the_client_key_is_rejected_except_the_masked_top_bit(
    client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    """Bits 0..254 change the key: DecryptionError. Bit 255 is masked by X25519 (RFC 7748 §5).

    Flipping the top bit of ``client_dh_public_key`` yields the *same* shared secret, so that
    request opens to the same plaintext, as it does on Atoma's node (x25519-dalek masks it too).
    The wire form is therefore malleable in that one bit; anything keyed on the raw key bytes
    (a replay cache, a log) must not assume one encoding per key. This test pins that behaviour:
    if atoma-lab starts refusing non-canonical keys, change it deliberately.
    """
    request = _seal(client_key, node_key).request
    outcomes = _request_flip_outcomes(request, node_key, "client_dh_public_key", range(255))
    wrong = {bit: got for bit, got in outcomes.items() if got != "DecryptionError"}
    assert not wrong
    flipped = _flip(request.client_dh_public_key, 255)
    top = request.replace(client_dh_public_key=flipped)
    assert top.client_dh_public_key != request.client_dh_public_key
    assert open_request(top, node_key).plaintext == REQUEST_PLAINTEXT


@pytest.mark.parametrize("low_order", LOW_ORDER_KEYS,
                         ids=lambda b: b.hex()[:8] + ".." + b.hex()[-2:])
def test_low_order_client_key_is_rejected(
    client_key: X25519KeyPair, node_key: X25519KeyPair, low_order: bytes
) -> None:
    request = _seal(client_key, node_key).request.replace(client_dh_public_key=low_order)
    with pytest.raises(InvalidPublicKeyError) as info:
        open_request(request, node_key)
    assert info.value.status == 400


@pytest.mark.parametrize("low_order", LOW_ORDER_KEYS[:3])
def test_sealing_to_a_low_order_node_key_is_refused(low_order: bytes) -> None:
    with pytest.raises(InvalidPublicKeyError):
        seal_request(REQUEST_PLAINTEXT, node_public_key=low_order, stack_small_id=1,
                     model_name="m")


def test_wrong_node_key_is_a_node_key_mismatch(
    client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    request = _seal(client_key, node_key).request
    other = X25519KeyPair.from_private_bytes(OTHER_NODE_SK)
    with pytest.raises(NodeKeyMismatchError) as info:
        open_request(request, other)
    assert info.value.status == 409
    assert info.value.field == "node_dh_public_key"


def test_request_relabelled_to_another_node_fails_to_decrypt(
    client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    """Sealed to one node, the key field rewritten to another node's key: the AEAD catches it."""
    other = X25519KeyPair.from_private_bytes(OTHER_NODE_SK)
    request = _seal(client_key, node_key).request.replace(node_dh_public_key=other.public_bytes)
    with pytest.raises(DecryptionError):
        open_request(request, other)


def test_wrong_plaintext_hash_is_a_hash_mismatch(
    client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    other_hash = hashlib.blake2b(b'{"input":"other","model":"m"}', digest_size=32).digest()
    request = _seal(client_key, node_key).request.replace(plaintext_body_hash=other_hash)
    with pytest.raises(HashMismatchError) as info:
        open_request(request, node_key)
    assert info.value.field == "plaintext_body_hash"


@pytest.mark.parametrize("swapped", ["ciphertext", "nonce", "salt", "client_dh_public_key"])
def test_fields_swapped_between_two_requests_fail_to_decrypt(
    node_key: X25519KeyPair, swapped: str
) -> None:
    a = _seal(X25519KeyPair.generate(), node_key, salt=None, nonce=None).request
    b = _seal(X25519KeyPair.generate(), node_key, salt=None, nonce=None).request
    with pytest.raises(DecryptionError):
        open_request(a.replace(**{swapped: getattr(b, swapped)}), node_key)


def test_truncated_ciphertext_fails_to_decrypt(
    client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    request = _seal(client_key, node_key).request
    for cut in (1, 16):
        with pytest.raises(DecryptionError):
            open_request(request.replace(ciphertext=request.ciphertext[:-cut]), node_key)


# ------------------------------------------------------------------------------------------------
# Response tampering
# ------------------------------------------------------------------------------------------------


def _response_flip_outcomes(
    make_exchange: Callable[[], Exchange], field: str, bits: range, **open_kwargs: Any
) -> dict[int, str]:
    outcomes: dict[int, str] = {}
    for bit in bits:
        sealed, response = make_exchange()
        value = getattr(response, field)
        if field == "signature":
            raw = base64.b64decode(value)
            tampered = base64.b64encode(_flip(raw, bit)).decode()
        else:
            tampered = _flip(value, bit)
        outcomes[bit] = _outcome(open_response, response.replace(**{field: tampered}),
                                 sealed.context, **open_kwargs)
    return outcomes


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("ciphertext", DecryptionError),
        ("nonce", DecryptionError),
        ("response_hash", HashMismatchError),
    ],
)
def test_every_bit_flip_in_a_response_field_is_rejected(
    make_exchange: Callable[[], Exchange], field: str, expected: type[Exception]
) -> None:
    _, response = make_exchange()
    bits = range(8 * len(getattr(response, field)))
    outcomes = _response_flip_outcomes(make_exchange, field, bits)
    wrong = {bit: got for bit, got in outcomes.items() if got != expected.__name__}
    assert not wrong, f"{field}: {wrong}"


def test_every_bit_flip_in_the_signature_is_rejected_when_checked(
    make_exchange: Callable[[], Exchange], signer: SuiSigner
) -> None:
    """flag ‖ 64-byte signature ‖ 32-byte public key: every bit matters to a pinned signer."""
    bits = range(8 * 97)
    outcomes = _response_flip_outcomes(
        make_exchange, "signature", bits, expected_signer_address=signer.address
    )
    wrong = {bit: got for bit, got in outcomes.items() if got != "SignatureError"}
    assert not wrong


def test_signature_by_another_key_is_rejected_when_the_signer_is_pinned(
    client_key: X25519KeyPair, node_key: X25519KeyPair, signer: SuiSigner
) -> None:
    impostor = SuiSigner.from_ed25519_seed(bytes(range(1, 33)))
    sealed = _seal(client_key, node_key)
    opened = open_request(sealed.request, node_key)
    response = seal_response(RESPONSE_PLAINTEXT, opened.context, signer=impostor)
    with pytest.raises(SignatureError) as info:
        open_response(response, sealed.context, expected_signer_address=signer.address)
    assert info.value.field == "signature"


def test_valid_signature_by_anyone_passes_without_a_pinned_address(
    client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    """``require_signature`` alone checks validity, like Atoma's proxy, not who signed."""
    impostor = SuiSigner.from_ed25519_seed(bytes(range(1, 33)))
    sealed = _seal(client_key, node_key)
    opened = open_request(sealed.request, node_key)
    response = seal_response(RESPONSE_PLAINTEXT, opened.context, signer=impostor)
    result = open_response(response, sealed.context, require_signature=True)
    assert result.signer is not None and result.signer.address == impostor.address


@pytest.mark.parametrize(
    "bad", ["", "not base64!", "AAAA", base64.b64encode(b"\x05" * 97).decode()]
)
def test_malformed_signature_is_a_signature_error(
    make_exchange: Callable[[], Exchange], bad: str
) -> None:
    sealed, response = make_exchange()
    with pytest.raises(SignatureError):
        open_response(response.replace(signature=bad), sealed.context,
                      require_signature=True)


def test_signature_swapped_from_another_response_is_rejected(
    make_exchange: Callable[[], Exchange], signer: SuiSigner
) -> None:
    sealed, response = make_exchange()
    # A genuine signature by the same signer, over another hash.
    other = signer.sign(hashlib.blake2b(b"other", digest_size=32).digest()).to_base64()
    with pytest.raises(SignatureError):
        open_response(response.replace(signature=other), sealed.context,
                      expected_signer_address=signer.address)


def test_signature_is_not_checked_by_default(make_exchange: Callable[[], Exchange]) -> None:
    """The default matches Atoma's Python SDK: hash checked, signature ignored."""
    sealed, response = make_exchange()
    result = open_response(response.replace(signature="garbage"), sealed.context)
    assert result.plaintext == RESPONSE_PLAINTEXT
    assert result.signer is None


def test_missing_response_hash(make_exchange: Callable[[], Exchange]) -> None:
    sealed, response = make_exchange()
    with pytest.raises(PeerProtocolError):
        open_response(response.replace(response_hash=None), sealed.context)
    sealed, response = make_exchange()
    result = open_response(response.replace(response_hash=None), sealed.context,
                           require_hash=False)
    assert result.plaintext == RESPONSE_PLAINTEXT


def test_missing_signature_when_required(make_exchange: Callable[[], Exchange]) -> None:
    sealed, response = make_exchange()
    with pytest.raises(PeerProtocolError):
        open_response(response.replace(signature=None), sealed.context,
                      require_signature=True)


def test_response_to_another_request_fails_to_decrypt(
    client_key: X25519KeyPair, node_key: X25519KeyPair, make_exchange: Callable[[], Exchange]
) -> None:
    _, response = make_exchange()
    other = _seal(client_key, node_key, salt=bytes(16))
    with pytest.raises(DecryptionError):
        open_response(response, other.context)


# ------------------------------------------------------------------------------------------------
# Nonce reuse and single use
# ------------------------------------------------------------------------------------------------


def test_seal_response_refuses_the_request_nonce(opened: OpenedRequest) -> None:
    with pytest.raises(ValueError, match="nonce"):
        seal_response(RESPONSE_PLAINTEXT, opened.context, nonce=REQUEST_NONCE)


def test_seal_response_is_single_use(opened: OpenedRequest) -> None:
    seal_response(RESPONSE_PLAINTEXT, opened.context, nonce=RESPONSE_NONCE)
    with pytest.raises(ValueError):
        seal_response(RESPONSE_PLAINTEXT, opened.context, nonce=bytes(12))
    with pytest.raises(ValueError):
        seal_response(RESPONSE_PLAINTEXT, opened.context)


def test_seal_response_draws_again_when_the_rng_repeats_the_request_nonce(opened: OpenedRequest) -> None:
    draws = iter([REQUEST_NONCE, REQUEST_NONCE, RESPONSE_NONCE])
    response = seal_response(RESPONSE_PLAINTEXT, opened.context, rng=lambda n: next(draws))
    assert response.nonce == RESPONSE_NONCE


def test_seal_response_gives_up_on_an_rng_stuck_on_the_request_nonce(opened: OpenedRequest) -> None:
    with pytest.raises(ValueError):
        seal_response(RESPONSE_PLAINTEXT, opened.context, rng=lambda n: REQUEST_NONCE)


def test_open_response_refuses_a_response_under_the_request_nonce(
    client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    """Even a correctly encrypted and hashed answer is refused if it reuses the request nonce."""
    sealed = _seal(client_key, node_key)
    key = AESGCM(_raw_key(CLIENT_SK, NODE_SK, SALT))
    forged = ConfidentialComputeResponse(
        nonce=REQUEST_NONCE,
        ciphertext=key.encrypt(REQUEST_NONCE, RESPONSE_PLAINTEXT, None),
        response_hash=hashlib.blake2b(RESPONSE_PLAINTEXT, digest_size=32).digest(),
    )
    with pytest.raises(DecryptionError) as info:
        open_response(forged, sealed.context)
    assert info.value.field == "nonce"
    # The same bytes under a fresh nonce are accepted: the refusal is about the nonce alone.
    genuine = forged.replace(nonce=RESPONSE_NONCE,
                             ciphertext=key.encrypt(RESPONSE_NONCE, RESPONSE_PLAINTEXT, None))
    assert open_response(genuine, sealed.context).plaintext == RESPONSE_PLAINTEXT


def test_open_response_is_single_use(make_exchange: Callable[[], Exchange]) -> None:
    sealed, response = make_exchange()
    open_response(response, sealed.context)
    with pytest.raises(ValueError):
        open_response(response, sealed.context)


def test_seal_request_argument_misuse() -> None:
    node = X25519KeyPair.from_private_bytes(NODE_SK)
    common: dict[str, Any] = {"node_public_key": node.public_bytes, "stack_small_id": 1,
                              "model_name": "m"}
    with pytest.raises(TypeError):
        seal_request(REQUEST_PLAINTEXT.decode(), **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        seal_request(REQUEST_PLAINTEXT, salt=bytes(15), **common)
    with pytest.raises(ValueError):
        seal_request(REQUEST_PLAINTEXT, nonce=bytes(13), **common)
    with pytest.raises(ValueError):
        seal_request(REQUEST_PLAINTEXT, rng=lambda n: bytes(n - 1), **common)
    with pytest.raises(ValueError):
        seal_request(REQUEST_PLAINTEXT, **{**common, "node_public_key": bytes(31)})
    with pytest.raises(TypeError):
        seal_request(REQUEST_PLAINTEXT, **{**common, "node_public_key": "ab" * 16})
    # The request is built without re-checking the fields seal_request made itself, so the
    # caller's own fields are checked on the way in, as the wire model would check them.
    for name, bad in [("stack_small_id", -1), ("stack_small_id", True), ("stack_small_id", "1"),
                      ("model_name", 7), ("stream", "yes"), ("num_compute_units", -5),
                      ("num_compute_units", 2**64)]:
        with pytest.raises(InvalidFieldError) as caught:
            seal_request(REQUEST_PLAINTEXT, **{**common, name: bad})
        assert caught.value.field == name


def test_seal_response_checks_the_usage_it_is_given(opened: OpenedRequest) -> None:
    """The response is built without re-checking the fields seal_response made; the caller's
    ``usage`` is checked on the way in."""
    with pytest.raises(TypeError):
        seal_response(RESPONSE_PLAINTEXT, opened.context,
                      usage={"prompt_tokens": 3, "total_tokens": 3})  # type: ignore[arg-type]


def test_seal_request_takes_a_bytearray_key_and_keeps_bytes() -> None:
    node = X25519KeyPair.from_private_bytes(NODE_SK)
    sealed = seal_request(REQUEST_PLAINTEXT, node_public_key=bytearray(node.public_bytes),
                          stack_small_id=1, model_name="m", stream=False, num_compute_units=9)
    request = sealed.request
    assert type(request.node_dh_public_key) is bytes and type(sealed.context.node_public_key) is bytes
    # Equal to the same request built through the checked constructor, and through the wire.
    fields_ = {name: getattr(request, name) for name in wire_names(request)}
    assert ConfidentialComputeRequest(**fields_) == request
    assert ConfidentialComputeRequest.from_json(request.to_json()) == request
    assert open_request(request, node).plaintext == REQUEST_PLAINTEXT


# ------------------------------------------------------------------------------------------------
# No key material or plaintext in messages and reprs
# ------------------------------------------------------------------------------------------------


def _renderings(data: bytes) -> list[str]:
    return [data.hex(), data.hex()[:16], base64.b64encode(data).decode(), repr(data)]


def _forbidden(*ciphertexts: bytes) -> dict[str, str]:
    client_pk = X25519PrivateKey.from_private_bytes(CLIENT_SK).public_key()
    node_pk = X25519PublicKey.from_public_bytes(
        X25519PrivateKey.from_private_bytes(NODE_SK).public_key().public_bytes_raw()
    )
    shared = X25519PrivateKey.from_private_bytes(NODE_SK).exchange(client_pk)
    secrets_: dict[str, bytes] = {
        "client private key": CLIENT_SK,
        "node private key": NODE_SK,
        "shared secret": X25519PrivateKey.from_private_bytes(CLIENT_SK).exchange(node_pk),
        "derived key": _raw_key(CLIENT_SK, NODE_SK, SALT),
        "request plaintext": REQUEST_PLAINTEXT,
        "response plaintext": RESPONSE_PLAINTEXT,
    }
    assert secrets_["shared secret"] == shared
    out = {f"{name} ({i})": text for name, data in secrets_.items()
           for i, text in enumerate(_renderings(data))}
    for i, ciphertext in enumerate(ciphertexts):  # whole ciphertexts are not printed either
        out[f"ciphertext {i} hex"] = ciphertext.hex()
        out[f"ciphertext {i} b64"] = base64.b64encode(ciphertext).decode()
    out["plaintext canary"] = CANARY
    out["plaintext canary hex"] = CANARY.encode().hex()
    return out


def _texts_of(exc: BaseException) -> list[str]:
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return texts


def test_no_secret_in_error_messages_or_reprs(
    client_key: X25519KeyPair, node_key: X25519KeyPair, signer: SuiSigner,
    make_exchange: Callable[[], Exchange],
) -> None:
    texts: list[str] = []

    def expect_failure(fn: Callable[[], object]) -> None:
        with pytest.raises((AtomaLabError, ValueError)) as info:
            fn()
        texts.extend(_texts_of(info.value))

    sealed = _seal(client_key, node_key)
    request = sealed.request
    other = X25519KeyPair.from_private_bytes(OTHER_NODE_SK)
    for field in ("ciphertext", "nonce", "salt", "client_dh_public_key", "plaintext_body_hash"):
        tampered = request.replace(**{field: _flip(getattr(request, field), 3)})
        expect_failure(lambda t=tampered: open_request(t, node_key))
    expect_failure(lambda: open_request(request, other))
    expect_failure(lambda: open_request(
        request.replace(client_dh_public_key=LOW_ORDER_KEYS[0]), node_key))

    opened = open_request(request, node_key)
    expect_failure(lambda: seal_response(RESPONSE_PLAINTEXT, opened.context, nonce=REQUEST_NONCE))
    response = seal_response(RESPONSE_PLAINTEXT, opened.context, signer=signer,
                             nonce=RESPONSE_NONCE)
    expect_failure(lambda: seal_response(RESPONSE_PLAINTEXT, opened.context))
    for field in ("ciphertext", "nonce", "response_hash"):
        s, r = make_exchange()
        tampered_r = r.replace(**{field: _flip(getattr(r, field), 5)})
        expect_failure(lambda t=tampered_r, c=s.context: open_response(t, c))
    s, r = make_exchange()
    expect_failure(lambda: open_response(r.replace(signature="AAAA"), s.context,
                                         require_signature=True))
    s, r = make_exchange()
    expect_failure(lambda: open_response(r, s.context, expected_signer_address="0x" + "0" * 64))

    result = open_response(response, sealed.context)
    expect_failure(lambda: open_response(response, sealed.context))

    objects = [sealed, sealed.context, sealed.context._keys, sealed.context._keys.cipher, request,
               opened, opened.context, response, result, client_key, node_key, signer]
    texts += [repr(o) for o in objects] + [str(o) for o in objects]

    assert len(texts) > 40
    forbidden = _forbidden(request.ciphertext, response.ciphertext)
    leaks = {name: i for name, needle in forbidden.items()
             for i, text in enumerate(texts) if needle in text}
    assert not leaks, f"secret renderings found in messages/reprs: {leaks}"
