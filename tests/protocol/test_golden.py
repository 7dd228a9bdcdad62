"""atoma-lab's golden envelopes, checked in both directions.

``tests/vectors/golden_envelopes.json`` was computed by ``tests/vectors/make_golden_envelopes.py``
with pyca ``cryptography`` and :mod:`hashlib` only, never with ``atoma_lab.protocol``. Here
atoma-lab must (a) reproduce every stored byte when its randomness is injected, and (b) open the
stored bytes to the stored plaintext.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from atoma_lab.crypto.kdf import derive_key
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner, verify_sui_signature
from atoma_lab.protocol import (
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    CreateEmbeddingRequest,
    CreateEmbeddingResponse,
    Usage,
    open_request,
    open_response,
    seal_request,
    seal_response,
)

from .golden import assert_generator_writes, load_golden

GOLDEN = load_golden("golden_envelopes")
REQUESTS = {case["name"]: case for case in GOLDEN["requests"]}
RESPONSES = {case["name"]: case for case in GOLDEN["responses"]}


def test_vector_file_is_what_the_generator_writes() -> None:
    """The JSON file and ``make_golden_envelopes.py`` agree (neither was edited alone)."""
    assert_generator_writes("golden_envelopes")


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


@pytest.fixture(scope="module")
def client_key() -> X25519KeyPair:
    return X25519KeyPair.from_private_bytes(bytes.fromhex(GOLDEN["keys"]["client_private_key_hex"]))


@pytest.fixture(scope="module")
def node_key() -> X25519KeyPair:
    return X25519KeyPair.from_private_bytes(bytes.fromhex(GOLDEN["keys"]["node_private_key_hex"]))


@pytest.fixture(scope="module")
def signer() -> SuiSigner:
    return SuiSigner.from_ed25519_seed(bytes.fromhex(GOLDEN["signer"]["ed25519_seed_hex"]))


@pytest.fixture(params=sorted(REQUESTS))
def request_case(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each golden request case, by name."""
    return REQUESTS[request.param]


@pytest.fixture(params=sorted(RESPONSES))
def response_case(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each golden response case, by name."""
    return RESPONSES[request.param]


def _seal(case: dict[str, Any], client_key: X25519KeyPair, node_key: X25519KeyPair):
    inputs = case["inputs"]
    return seal_request(
        inputs["plaintext"].encode("utf-8"),
        node_public_key=node_key.public_bytes,
        stack_small_id=inputs["stack_small_id"],
        model_name=inputs["model_name"],
        num_compute_units=inputs["num_compute_units"],
        stream=inputs["stream"],
        client_key=client_key,
        salt=bytes.fromhex(inputs["salt_hex"]),
        nonce=bytes.fromhex(inputs["nonce_hex"]),
    )


# ------------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------------


def test_rfc7748_keys_and_shared_secret(client_key: X25519KeyPair, node_key: X25519KeyPair) -> None:
    keys = GOLDEN["keys"]
    assert client_key.public_bytes.hex() == keys["client_public_key_hex"]
    assert node_key.public_bytes.hex() == keys["node_public_key_hex"]
    shared = keys["shared_secret_hex"]
    assert shared == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert client_key.exchange(node_key.public_bytes).hex() == shared
    assert node_key.exchange(client_key.public_bytes).hex() == shared


def test_rfc8032_signer(signer: SuiSigner) -> None:
    assert signer.public_key.hex() == GOLDEN["signer"]["ed25519_public_key_hex"]
    assert signer.address == GOLDEN["signer"]["sui_address"]


# ------------------------------------------------------------------------------------------------
# Requests
# ------------------------------------------------------------------------------------------------


def test_derived_key(request_case: dict[str, Any]) -> None:
    shared = bytes.fromhex(GOLDEN["keys"]["shared_secret_hex"])
    salt = bytes.fromhex(request_case["inputs"]["salt_hex"])
    assert derive_key(shared, salt).hex() == request_case["expected"]["derived_key_hex"]


def test_seal_request_reproduces_golden_bytes(
    request_case: dict[str, Any], client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    expected = request_case["expected"]
    sealed = _seal(request_case, client_key, node_key)
    request = sealed.request
    assert request.ciphertext == _b64(expected["ciphertext_b64"])
    assert request.plaintext_body_hash == _b64(expected["plaintext_body_hash_b64"])
    assert request.to_json() == expected["wire_json"].encode("utf-8")
    assert sealed.plaintext == request_case["inputs"]["plaintext"].encode("utf-8")


def test_open_golden_request(request_case: dict[str, Any], node_key: X25519KeyPair) -> None:
    wire = request_case["expected"]["wire_json"].encode("utf-8")
    request = ConfidentialComputeRequest.from_json(wire)
    assert request.to_json() == wire  # parse and write back byte for byte
    assert request.stack_small_id == request_case["inputs"]["stack_small_id"]
    assert request.model_name == request_case["inputs"]["model_name"]
    assert request.num_compute_units == request_case["inputs"]["num_compute_units"]
    assert request.stream is request_case["inputs"]["stream"]
    opened = open_request(request, node_key)
    assert opened.plaintext == request_case["inputs"]["plaintext"].encode("utf-8")
    # The plaintext is a valid embeddings request that atoma-lab writes back to the same bytes.
    assert CreateEmbeddingRequest.from_json(opened.plaintext).to_json() == opened.plaintext


# ------------------------------------------------------------------------------------------------
# Responses
# ------------------------------------------------------------------------------------------------


def test_seal_response_reproduces_golden_bytes(
    response_case: dict[str, Any], node_key: X25519KeyPair, signer: SuiSigner
) -> None:
    inputs, expected = response_case["inputs"], response_case["expected"]
    request_wire = REQUESTS[inputs["request"]]["expected"]["wire_json"]
    opened = open_request(ConfidentialComputeRequest.from_json(request_wire), node_key)
    response = seal_response(
        inputs["plaintext"].encode("utf-8"),
        opened.context,
        usage=Usage(**inputs["usage"]),
        signer=signer,
        nonce=bytes.fromhex(inputs["nonce_hex"]),
    )
    assert response.ciphertext == _b64(expected["ciphertext_b64"])
    assert response.response_hash == _b64(expected["response_hash_b64"])
    assert response.signature == expected["signature_b64"]
    assert response.to_json() == expected["wire_json"].encode("utf-8")


def test_open_golden_response(
    response_case: dict[str, Any], client_key: X25519KeyPair, node_key: X25519KeyPair
) -> None:
    inputs, expected = response_case["inputs"], response_case["expected"]
    # The client context of the request this response answers, rebuilt from the fixed inputs.
    sealed = _seal(REQUESTS[inputs["request"]], client_key, node_key)
    wire = expected["wire_json"].encode("utf-8")
    response = ConfidentialComputeResponse.from_json(wire)
    assert response.to_json() == wire
    assert response.usage == Usage(**inputs["usage"])
    opened = open_response(
        response, sealed.context, expected_signer_address=GOLDEN["signer"]["sui_address"]
    )
    plaintext = inputs["plaintext"].encode("utf-8")
    assert opened.plaintext == plaintext
    assert opened.response_hash == _b64(expected["response_hash_b64"])
    assert opened.signer is not None
    assert opened.signer.address == GOLDEN["signer"]["sui_address"]
    # The signature is Sui-style Ed25519 over the 32 raw hash bytes, nothing else.
    verify_sui_signature(expected["signature_b64"], opened.response_hash)
    parsed = CreateEmbeddingResponse.from_json(opened.plaintext)
    assert parsed.usage.total_tokens == inputs["usage"]["total_tokens"]
    assert parsed.to_numpy().shape[0] == 1
