"""The hardened profile ``atoma-lab/hardened-v1``: golden vectors, binding, replay, downgrade.

Golden vectors (``tests/vectors/golden_hardened.json``) come from
``tests/vectors/make_golden_hardened.py``, written with pyca ``cryptography`` and :mod:`hashlib`
only; atoma-lab must reproduce and open them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.errors import (
    AtomaLabError,
    DecryptionError,
    InvalidFieldError,
    InvalidLengthError,
    MissingFieldError,
    NodeKeyMismatchError,
    ProfileMismatchError,
    ReplayedRequestError,
    ResponseMismatchError,
    SignatureError,
    StaleRequestError,
)
from atoma_lab.protocol import hardened as h
from atoma_lab.protocol.atoma import envelope
from atoma_lab.protocol.atoma.messages import ConfidentialComputeRequest, Usage

from .golden import assert_generator_writes, load_golden

GOLDEN = load_golden("golden_hardened")
CASES = {case["name"]: case for case in GOLDEN["cases"]}

CLIENT_SK = bytes.fromhex("a8abababababababababababababababababababababababababababababab6b")
NODE = X25519KeyPair.from_private_bytes(
    bytes.fromhex("c8cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd4d"))
OTHER_NODE = X25519KeyPair.from_private_bytes(
    bytes.fromhex("48c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c545"))
SIGNER = SuiSigner.from_ed25519_seed(bytes(range(32)))
NOW = 1_800_000_000.0
CANARY = "zebra-canary-7d2e"
REQUEST = ('{"input":"' + CANARY + ' request","model":"m"}').encode()
RESPONSE = ('{"object":"list","data":[],"model":"m","note":"' + CANARY + ' response"}').encode()
USAGE = Usage(prompt_tokens=3, total_tokens=3)


def _seal(plaintext: bytes = REQUEST, *, now: float = NOW, **kw: Any) -> h.SealedHardenedRequest:
    args: dict[str, Any] = dict(node_public_key=NODE.public_bytes, model_name="m",
                                stack_small_id=42, now=now)
    args.update(kw)
    return h.seal_hardened_request(plaintext, **args)


def _fixed(**kw: Any) -> h.SealedHardenedRequest:
    """A deterministic sealed request (fixed client key, salt, nonce, request id)."""
    args: dict[str, Any] = dict(client_key=X25519KeyPair.from_private_bytes(CLIENT_SK),
                                salt=bytes(range(16)), nonce=bytes(range(12)),
                                request_id=bytes(range(100, 116)))
    args.update(kw)
    return _seal(**args)


def _open(request: h.HardenedRequest, *, guard: h.ReplayGuard | None = None,
          now: float = NOW) -> h.OpenedHardenedRequest:
    return h.open_hardened_request(request, NODE, guard=h.ReplayGuard() if guard is None else guard,
                          now=now)


def _round(**kw: Any) -> tuple[h.SealedHardenedRequest, h.HardenedResponse]:
    sealed = _seal(**kw)
    opened = _open(sealed.request)
    return sealed, h.seal_hardened_response(RESPONSE, opened.context, signer=SIGNER, usage=USAGE)


# ------------------------------------------------------------------------------------------------
# Golden vectors, both directions
# ------------------------------------------------------------------------------------------------


def test_vector_file_is_what_the_generator_writes() -> None:
    assert_generator_writes("golden_hardened")


def _golden_keys() -> tuple[X25519KeyPair, X25519KeyPair, SuiSigner]:
    keys = GOLDEN["keys"]
    client = X25519KeyPair.from_private_bytes(bytes.fromhex(keys["client_private_key_hex"]))
    node = X25519KeyPair.from_private_bytes(bytes.fromhex(keys["node_private_key_hex"]))
    signer = SuiSigner.from_ed25519_seed(bytes.fromhex(GOLDEN["signer"]["ed25519_seed_hex"]))
    assert h.node_key_id(node.public_bytes).hex() == keys["node_key_id_hex"]
    assert signer.address == GOLDEN["signer"]["sui_address"]
    return client, node, signer


def _golden_seal(case: dict[str, Any]) -> h.SealedHardenedRequest:
    client, node, _ = _golden_keys()
    i = case["inputs"]
    return h.seal_hardened_request(
        i["request_plaintext"].encode(), node_public_key=node.public_bytes,
        model_name=i["model_name"], stack_small_id=i["stack_small_id"],
        now=i["timestamp"] + 0.75, num_compute_units=i["num_compute_units"], client_key=client,
        salt=bytes.fromhex(i["salt_hex"]), nonce=bytes.fromhex(i["nonce_hex"]),
        request_id=bytes.fromhex(i["request_id_hex"]),
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_keys_aad_and_request_bytes(name: str) -> None:
    case = CASES[name]
    expected = case["expected"]
    client, node, _ = _golden_keys()
    shared = client.exchange(node.public_bytes)
    k_c2n, k_n2c = h.derive_direction_keys(shared, bytes.fromhex(case["inputs"]["salt_hex"]),
                                           client.public_bytes, node.public_bytes)
    assert (k_c2n.hex(), k_n2c.hex()) == (expected["k_c2n_hex"], expected["k_n2c_hex"])
    sealed = _golden_seal(case)
    request = sealed.request
    assert request.aad().hex() == expected["request_aad_hex"]
    assert request.request_hash().hex() == expected["request_hash_hex"]
    assert sealed.context.request_hash.hex() == expected["request_hash_hex"]
    assert request.to_json() == expected["request_wire_json"].encode()
    assert h.HardenedRequest.from_json(request.to_json()) == request  # the trusted build checks


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_request_opens_and_response_reproduces(name: str) -> None:
    case = CASES[name]
    i, expected = case["inputs"], case["expected"]
    _, node, signer = _golden_keys()
    wire = expected["request_wire_json"].encode()
    request = h.HardenedRequest.from_json(wire)
    assert request.to_json() == wire
    opened = h.open_hardened_request(request, node, guard=h.ReplayGuard(), now=i["timestamp"])
    assert opened.plaintext == i["request_plaintext"].encode()
    usage = None if i["usage"] is None else Usage(**i["usage"])
    response = h.seal_hardened_response(i["response_plaintext"].encode(), opened.context, signer=signer,
                               usage=usage, nonce=bytes.fromhex(i["response_nonce_hex"]))
    assert response.aad().hex() == expected["response_aad_hex"]
    assert response.response_hash().hex() == expected["response_hash_hex"]
    assert h.receipt_digest(request.request_hash(),
                            response.response_hash()).hex() == expected["receipt_hex"]
    assert response.to_json() == expected["response_wire_json"].encode()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_response_opens(name: str) -> None:
    case = CASES[name]
    wire = case["expected"]["response_wire_json"].encode()
    response = h.HardenedResponse.from_json(wire)
    assert response.to_json() == wire
    sealed = _golden_seal(case)
    address = GOLDEN["signer"]["sui_address"]
    assert h.verify_receipt(sealed.context.request_hash, response,
                            expected_signer_address=address).address == address
    opened = h.open_hardened_response(response, sealed.context, expected_signer_address=address)
    assert opened.plaintext == case["inputs"]["response_plaintext"].encode()
    assert opened.response_hash.hex() == case["expected"]["response_hash_hex"]


# ------------------------------------------------------------------------------------------------
# Round trips and single use
# ------------------------------------------------------------------------------------------------


def test_round_trip() -> None:
    sealed, response = _round(num_compute_units=100)
    assert sealed.request.timestamp == int(NOW)
    assert sealed.request.node_key_id == h.node_key_id(NODE.public_bytes)
    opened = h.open_hardened_response(h.HardenedResponse.from_json(response.to_json()), sealed.context,
                             expected_signer_address=SIGNER.address)
    assert opened.plaintext == RESPONSE
    assert opened.usage == USAGE
    assert opened.signer.address == SIGNER.address


def test_directions_use_different_keys() -> None:
    sealed = _fixed()
    shared = X25519KeyPair.from_private_bytes(CLIENT_SK).exchange(NODE.public_bytes)
    k_c2n, k_n2c = h.derive_direction_keys(shared, sealed.request.salt,
                                           sealed.request.client_dh_public_key, NODE.public_bytes)
    assert k_c2n != k_n2c
    # The node->client key cannot open the request even with its AAD.
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    with pytest.raises(InvalidTag):
        AESGCM(k_n2c).decrypt(sealed.request.nonce, sealed.request.ciphertext, sealed.request.aad())
    assert AESGCM(k_c2n).decrypt(sealed.request.nonce, sealed.request.ciphertext,
                                 sealed.request.aad()) == REQUEST


def test_contexts_are_single_use() -> None:
    sealed = _seal()
    opened = _open(sealed.request)
    response = h.seal_hardened_response(RESPONSE, opened.context, signer=SIGNER)
    with pytest.raises(ValueError):
        h.seal_hardened_response(RESPONSE, opened.context, signer=SIGNER)
    h.open_hardened_response(response, sealed.context)
    with pytest.raises(ValueError):
        h.open_hardened_response(response, sealed.context)


def test_fresh_randomness_per_request() -> None:
    a, b = _seal(), _seal()
    assert a.request.client_dh_public_key != b.request.client_dh_public_key
    assert a.request.salt != b.request.salt and a.request.request_id != b.request.request_id


def test_no_secrets_in_reprs_or_messages() -> None:
    sealed, response = _round()
    opened = _open(_seal().request)
    texts = [repr(sealed), repr(sealed.context), repr(response), repr(opened), repr(opened.context)]
    for text in texts:
        assert CANARY not in text
        assert base64.b64encode(sealed.request.ciphertext).decode() not in text
    flipped = bytes([sealed.request.ciphertext[0] ^ 0x01]) + sealed.request.ciphertext[1:]
    bad = sealed.request.replace(ciphertext=flipped)  # always a different byte
    with pytest.raises(DecryptionError) as excinfo:
        _open(bad)
    assert CANARY not in str(excinfo.value)


# ------------------------------------------------------------------------------------------------
# Every bound field; splicing; response swaps
# ------------------------------------------------------------------------------------------------


BOUND_CHANGES: dict[str, tuple[dict[str, Any], type[AtomaLabError]]] = {
    "model_name": ({"model_name": "other-model"}, DecryptionError),
    "stack_small_id": ({"stack_small_id": 43}, DecryptionError),
    "node_key_id": ({"node_key_id": h.node_key_id(OTHER_NODE.public_bytes)}, NodeKeyMismatchError),
    "client_dh_public_key": (
        {"client_dh_public_key": X25519KeyPair.from_private_bytes(bytes(range(3, 35))).public_bytes},
        DecryptionError),
    "salt": ({"salt": bytes(range(1, 17))}, DecryptionError),
    "nonce": ({"nonce": bytes(range(1, 13))}, DecryptionError),
    "timestamp": ({"timestamp": int(NOW) + 1}, DecryptionError),
    "request_id": ({"request_id": bytes(16)}, DecryptionError),
    "num_compute_units": ({"num_compute_units": 1}, DecryptionError),
    "ciphertext": ({"ciphertext": None}, DecryptionError),
}


@pytest.mark.parametrize("name", sorted(BOUND_CHANGES))
def test_every_bound_field_changed_is_rejected(name: str) -> None:
    change, error = BOUND_CHANGES[name]
    request = _fixed().request
    if name == "ciphertext":
        change = {"ciphertext": request.ciphertext[:-1] + bytes([request.ciphertext[-1] ^ 1])}
    tampered = h.HardenedRequest.from_json(request.replace(**change).to_json())
    guard = h.ReplayGuard()
    with pytest.raises(error):
        _open(tampered, guard=guard)
    assert guard.entries == 0  # nothing unauthenticated is recorded
    _open(request, guard=guard)  # the untouched request still opens


def test_key_id_of_another_known_key_fails_to_decrypt() -> None:
    ring = h.NodeKeyRing(OTHER_NODE).rotate(NODE, now=NOW)
    request = _fixed().request.replace(node_key_id=h.node_key_id(OTHER_NODE.public_bytes))
    with pytest.raises(DecryptionError):
        h.open_hardened_request(request, ring, guard=h.ReplayGuard(), now=NOW)


def test_fields_spliced_across_two_requests_are_rejected() -> None:
    a = _fixed().request
    b = _seal(model_name="m2", stack_small_id=99, num_compute_units=5, now=NOW + 5).request
    assert all(getattr(a, f) != getattr(b, f) for f in ("model_name", "timestamp", "salt"))
    for name in ("model_name", "stack_small_id", "client_dh_public_key", "salt", "nonce",
                 "timestamp", "request_id", "num_compute_units", "ciphertext"):
        spliced = a.replace(**{name: getattr(b, name)})
        with pytest.raises(DecryptionError):
            _open(spliced)


def test_response_swapped_between_requests_is_rejected() -> None:
    sealed_a, response_a = _round()
    _sealed_b, response_b = _round()
    with pytest.raises(ResponseMismatchError):
        h.open_hardened_response(response_b, sealed_a.context)
    # Even with A's request id and hash pasted in, B's response fails A's receipt and key.
    relabelled = response_b.replace(request_id=sealed_a.context.request_id,
                                    request_hash=sealed_a.context.request_hash)
    with pytest.raises(SignatureError):
        h.open_hardened_response(relabelled, sealed_a.context)
    # ... and a re-signed one (a malicious proxy with its own key) fails decryption.
    resigned = relabelled.replace(
        signature=SIGNER.sign(h.receipt_digest(sealed_a.context.request_hash,
                                               relabelled.response_hash())).to_base64(),
    )
    with pytest.raises(DecryptionError):
        h.open_hardened_response(resigned, sealed_a.context)
    assert h.open_hardened_response(response_a, sealed_a.context).plaintext == RESPONSE


@pytest.mark.parametrize("name", ["request_id", "request_hash", "nonce", "ciphertext", "usage",
                                  "signature"])
def test_response_field_changed_is_rejected(name: str) -> None:
    sealed, response = _round()
    changes: dict[str, Any] = {
        "request_id": bytes(16),
        "request_hash": bytes(32),
        "nonce": bytes(12),
        "ciphertext": bytes([response.ciphertext[0] ^ 1]) + response.ciphertext[1:],
        "usage": Usage(prompt_tokens=1, total_tokens=1),
        "signature": SuiSigner.from_ed25519_seed(bytes(32)).sign(bytes(32)).to_base64(),
    }
    with pytest.raises((ResponseMismatchError, SignatureError, DecryptionError)):
        h.open_hardened_response(response.replace(**{name: changes[name]}), sealed.context)


def test_usage_removed_is_rejected_and_signer_pinned() -> None:
    sealed, response = _round()
    with pytest.raises(SignatureError):
        h.open_hardened_response(response.replace(usage=None), sealed.context)
    sealed, response = _round()
    with pytest.raises(SignatureError):
        h.open_hardened_response(response, sealed.context, expected_signer_address="0x" + "00" * 32)


def test_forged_signature_by_the_right_key_on_other_content_is_rejected() -> None:
    sealed, response = _round()
    forged = response.replace(signature=SIGNER.sign(bytes(32)).to_base64())
    with pytest.raises(SignatureError):
        h.open_hardened_response(forged, sealed.context)


# ------------------------------------------------------------------------------------------------
# Replay guard
# ------------------------------------------------------------------------------------------------


def test_replay_within_window_is_rejected() -> None:
    guard = h.ReplayGuard(window_s=300)
    request = _seal().request
    _open(request, guard=guard)
    with pytest.raises(ReplayedRequestError) as excinfo:
        _open(request, guard=guard, now=NOW + 10)
    assert not isinstance(excinfo.value, StaleRequestError)
    assert excinfo.value.status == 409


def test_replay_outside_window_is_rejected() -> None:
    guard = h.ReplayGuard(window_s=300)
    request = _seal().request
    _open(request, guard=guard)
    with pytest.raises(StaleRequestError):
        _open(request, guard=guard, now=NOW + 301)
    _open(_seal(now=NOW + 301).request, guard=guard, now=NOW + 301)  # evicts the first entry
    assert guard.entries == 1
    with pytest.raises(StaleRequestError):  # evicted, yet its replay still fails
        _open(request, guard=guard, now=NOW + 301)


def test_guard_keys_on_client_key_and_request_id() -> None:
    """A proxy that copies a request id into its own request cannot block the real one."""
    guard = h.ReplayGuard()
    real = _fixed().request
    attacker = _fixed(client_key=X25519KeyPair.from_private_bytes(bytes(range(5, 37)))).request
    assert attacker.request_id == real.request_id
    _open(attacker, guard=guard)
    assert _open(real, guard=guard).plaintext == REQUEST


# ------------------------------------------------------------------------------------------------
# Stale keys and the grace window
# ------------------------------------------------------------------------------------------------


def test_stale_key_and_grace_window() -> None:
    request = _seal().request  # sealed to NODE
    ring = h.NodeKeyRing(NODE, grace_s=60).rotate(OTHER_NODE, now=NOW)
    assert ring.current is OTHER_NODE
    assert ring.current_key_id == h.node_key_id(OTHER_NODE.public_bytes)
    assert h.open_hardened_request(request, ring, guard=h.ReplayGuard(), now=NOW + 60).plaintext == REQUEST
    with pytest.raises(NodeKeyMismatchError) as excinfo:
        h.open_hardened_request(request, ring, guard=h.ReplayGuard(), now=NOW + 61)
    assert excinfo.value.status == 409 and excinfo.value.field == "node_key_id"
    # A later rotation drops keys past their grace.
    newest = X25519KeyPair.from_private_bytes(bytes(range(9, 41)))
    ring2 = ring.rotate(newest, now=NOW + 120)
    with pytest.raises(NodeKeyMismatchError):
        ring2.lookup(h.node_key_id(NODE.public_bytes), now=NOW + 60)
    assert ring2.lookup(h.node_key_id(OTHER_NODE.public_bytes), now=NOW + 150) is OTHER_NODE
    with pytest.raises(NodeKeyMismatchError):
        ring2.lookup(bytes(32), now=NOW)
    assert "redacted" not in repr(ring2) and newest.private_bytes().hex() not in repr(ring2)


# ------------------------------------------------------------------------------------------------
# Wire format and downgrades
# ------------------------------------------------------------------------------------------------


def test_parse_request_dispatches_and_refuses_downgrades() -> None:
    hardened = _seal().request
    assert h.parse_request(json.loads(hardened.to_json())) == hardened
    atoma = envelope.seal_request(REQUEST, node_public_key=NODE.public_bytes, stack_small_id=1,
                                  model_name="m").request
    atoma_body = json.loads(atoma.to_json())
    with pytest.raises(ProfileMismatchError) as excinfo:
        h.parse_request(atoma_body)
    assert excinfo.value.field == "profile"
    assert isinstance(h.parse_request(atoma_body, accept_atoma=True), ConfidentialComputeRequest)
    # Claims hardened but is Atoma-shaped.
    with pytest.raises(ProfileMismatchError):
        h.parse_request({**atoma_body, "profile": h.PROFILE})
    # A hardened body with an Atoma-only field spliced in.
    with pytest.raises(ProfileMismatchError) as excinfo:
        h.parse_request({**json.loads(hardened.to_json()), "plaintext_body_hash": "AAAA"})
    assert excinfo.value.field == "plaintext_body_hash"
    # A hardened body with its profile stripped (vice versa), even where Atoma is accepted.
    stripped = json.loads(hardened.to_json())
    del stripped["profile"]
    for accept in (False, True):
        with pytest.raises(ProfileMismatchError):
            h.parse_request(stripped, accept_atoma=accept)
    with pytest.raises(ProfileMismatchError):
        h.parse_request({**json.loads(hardened.to_json()), "profile": "atoma-lab/hardened-v0"})


def test_parse_response_refuses_atoma_shaped_responses() -> None:
    _sealed, response = _round()
    assert h.parse_response(json.loads(response.to_json())) == response
    atoma_like = {"nonce": "AAAAAAAAAAAAAAAA", "ciphertext": base64.b64encode(bytes(16)).decode(),
                  "response_hash": base64.b64encode(bytes(32)).decode(), "signature": "x"}
    with pytest.raises(ProfileMismatchError):
        h.parse_response(atoma_like)
    with pytest.raises(ProfileMismatchError):
        h.parse_response({**json.loads(response.to_json()), "response_hash": "AAAA"})
    stripped = json.loads(response.to_json())
    del stripped["profile"]
    with pytest.raises(ProfileMismatchError):
        h.parse_response(stripped)


@pytest.mark.parametrize(("name", "value", "error"), [
    ("node_key_id", base64.b64encode(bytes(31)).decode(), InvalidLengthError),
    ("client_dh_public_key", base64.b64encode(bytes(33)).decode(), InvalidLengthError),
    ("salt", base64.b64encode(bytes(15)).decode(), InvalidLengthError),
    ("nonce", base64.b64encode(bytes(16)).decode(), InvalidLengthError),
    ("request_id", base64.b64encode(bytes(8)).decode(), InvalidLengthError),
    ("ciphertext", base64.b64encode(bytes(15)).decode(), InvalidLengthError),
    ("salt", base64.urlsafe_b64encode(bytes([0xFB] * 16)).decode(), InvalidFieldError),
    ("timestamp", -1, InvalidFieldError),
    ("timestamp", 1.5, InvalidFieldError),
    ("stack_small_id", True, InvalidFieldError),
    ("model_name", "", InvalidFieldError),
    ("model_name", None, MissingFieldError),
    ("extra", 1, InvalidFieldError),
])
def test_strict_request_parsing_names_the_field(name: str, value: Any,
                                                error: type[AtomaLabError]) -> None:
    body = json.loads(_seal().request.to_json())
    body[name] = value
    with pytest.raises(error) as excinfo:
        h.HardenedRequest.from_dict(body)
    assert excinfo.value.field == name


@pytest.mark.parametrize("name", ["request_id", "request_hash", "nonce", "ciphertext", "signature"])
def test_strict_response_parsing_requires_every_field(name: str) -> None:
    _, response = _round()
    body = json.loads(response.to_json())
    del body[name]
    with pytest.raises(MissingFieldError) as excinfo:
        h.HardenedResponse.from_dict(body)
    assert excinfo.value.field == name


def test_seal_request_argument_checks() -> None:
    with pytest.raises(TypeError):
        _seal("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _seal(now=-1)
    with pytest.raises(ValueError):
        _seal(salt=bytes(15))
    with pytest.raises(InvalidFieldError):
        _seal(model_name="")


# ------------------------------------------------------------------------------------------------
# Any single-bit flip of the wire bytes is rejected
# ------------------------------------------------------------------------------------------------


_FIXED_WIRE = _fixed(num_compute_units=9).request.to_json()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bit=st.integers(min_value=0, max_value=len(_FIXED_WIRE) * 8 - 1))
def test_any_bit_flip_of_a_request_is_rejected(bit: int) -> None:
    wire = bytearray(_FIXED_WIRE)
    wire[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AtomaLabError):
        _open(h.HardenedRequest.from_json(bytes(wire)), guard=h.ReplayGuard())


def _fixed_round() -> tuple[h.HardenedClientContext, bytes]:
    sealed = _fixed()
    opened = _open(sealed.request)
    response = h.seal_hardened_response(RESPONSE, opened.context, signer=SIGNER, usage=USAGE,
                               nonce=bytes(range(50, 62)))
    return sealed.context, response.to_json()


_RESPONSE_WIRE = _fixed_round()[1]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bit=st.integers(min_value=0, max_value=len(_RESPONSE_WIRE) * 8 - 1))
def test_any_bit_flip_of_a_response_is_rejected(bit: int) -> None:
    context, wire_bytes = _fixed_round()
    assert wire_bytes == _RESPONSE_WIRE
    wire = bytearray(wire_bytes)
    wire[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AtomaLabError):
        h.open_hardened_response(h.HardenedResponse.from_json(bytes(wire)), context)
