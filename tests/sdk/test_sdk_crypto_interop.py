"""Interoperability of atoma-lab's envelope with the official Atoma Python client (atoma-sdk 0.1.3).

The SDK runs in its own interpreter (``sdk_runner.py``); its ephemeral private keys stay there.

* A: the SDK seals (``crypto_utils.encrypt_message``, its lock answered with *our* node key);
  atoma-lab's node side opens the exact bytes the SDK puts on the wire.
* B: atoma-lab's node side seals the answer; the SDK's ``decrypt_message`` (hash checked) reads it,
  and refuses it once ``response_hash`` or the ciphertext is changed.
* The whole ``client.confidential_embeddings.create(...)`` against an atoma-lab node over a mocked
  HTTP transport.
* The plaintext bytes (``CreateEmbeddingRequest``) are identical on both sides.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import numpy as np
import pytest

from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.encoding import serde_compact
from atoma_lab.errors import NodeKeyMismatchError
from atoma_lab.protocol import (
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    CreateEmbeddingRequest,
    NodesCreateLockResponse,
    Usage,
    open_request,
    seal_response,
)

from .sdk_runner import SDK_VERSION, SdkClient

pytestmark = [pytest.mark.sdk, pytest.mark.integration]

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
STACK_SMALL_ID = 4242
NODE_SMALL_ID = 3

# The SDK's ``EmbeddingInput`` is ``str | list[str]`` only: it cannot send token ids.
REQUEST_VARIANTS = {
    "string": {"input": "The quick brown fox", "model": MODEL},
    "strings-unicode": {"input": ["héllo wörld", "日本語", "🙂 \"q\" \\ / \t\n\x01", "\u2028"],
                        "model": MODEL},
    "format-and-user": {"input": ["a", "b"], "model": MODEL, "encoding_format": "float",
                        "user": "user-17"},
}


@pytest.fixture
def node_key() -> X25519KeyPair:
    return X25519KeyPair.generate()


@pytest.fixture(scope="module")
def signer() -> SuiSigner:
    return SuiSigner.from_ed25519_seed(bytes(range(32)))


def _lock_response(node_key: X25519KeyPair) -> bytes:
    return NodesCreateLockResponse(
        public_key=node_key.public_bytes, node_small_id=NODE_SMALL_ID,
        stack_small_id=STACK_SMALL_ID,
    ).to_json()


def _embeddings_plaintext(n: int, dims: int = 16, seed: int = 7) -> tuple[bytes, np.ndarray]:
    """A TEI-style answer (serde-compact) and its float32 vectors."""
    vectors = np.random.default_rng(seed).standard_normal((n, dims)).astype(np.float32)
    body = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": [float(x) for x in vec], "index": i}
                 for i, vec in enumerate(vectors)],
        "model": MODEL,
        "usage": {"prompt_tokens": 5 * n, "total_tokens": 5 * n},
    }
    return serde_compact(body), vectors


def _tamper_b64(text: str, byte: int = 0) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[byte] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_sdk_is_the_pinned_version(sdk: SdkClient) -> None:
    assert sdk.version() == SDK_VERSION


# ------------------------------------------------------------------------------------------------
# A: the SDK seals, atoma-lab opens
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(REQUEST_VARIANTS))
def test_sdk_sealed_request_opens_with_atoma_lab(
    sdk: SdkClient, node_key: X25519KeyPair, variant: str
) -> None:
    request_kwargs = REQUEST_VARIANTS[variant]
    out = sdk.encrypt(_lock_response(node_key), request_kwargs, MODEL)
    assert out["lock_calls"] == [MODEL]

    wire = out["wire"].encode("utf-8")
    # What the SDK sends: sorted keys, num_compute_units null, stream false.
    assert list(json.loads(wire)) == sorted(json.loads(wire))
    request = ConfidentialComputeRequest.from_json(wire)
    assert request.node_dh_public_key == node_key.public_bytes
    assert request.stack_small_id == STACK_SMALL_ID
    assert request.model_name == MODEL
    assert request.num_compute_units is None
    assert request.stream is False

    opened = open_request(request, node_key)
    sdk_plaintext = out["plaintext"].encode("utf-8")
    assert opened.plaintext == sdk_plaintext
    # atoma-lab writes the same request to the same bytes, and reads them back unchanged.
    assert CreateEmbeddingRequest(**request_kwargs).to_json() == sdk_plaintext
    assert CreateEmbeddingRequest.from_json(opened.plaintext).to_json() == sdk_plaintext


def test_sdk_request_to_another_node_key_is_refused(sdk: SdkClient,
                                                    node_key: X25519KeyPair) -> None:
    out = sdk.encrypt(_lock_response(node_key), REQUEST_VARIANTS["string"], MODEL)
    request = ConfidentialComputeRequest.from_json(out["wire"])
    with pytest.raises(NodeKeyMismatchError):
        open_request(request, X25519KeyPair.generate())


# ------------------------------------------------------------------------------------------------
# B: atoma-lab seals the answer, the SDK opens it
# ------------------------------------------------------------------------------------------------


def test_atoma_lab_response_decrypts_in_the_sdk(
    sdk: SdkClient, node_key: X25519KeyPair, signer: SuiSigner
) -> None:
    out = sdk.encrypt(_lock_response(node_key), REQUEST_VARIANTS["strings-unicode"], MODEL)
    opened = open_request(ConfidentialComputeRequest.from_json(out["wire"]), node_key)
    plaintext, vectors = _embeddings_plaintext(4)
    response = seal_response(plaintext, opened.context, usage=Usage(20, 20), signer=signer)
    wire = json.loads(response.to_json())

    # The SDK checks response_hash when present: one flipped bit and it refuses.
    tampered_hash = {**wire, "response_hash": _tamper_b64(wire["response_hash"], 31)}
    refused = sdk.decrypt(out["handle"], json.dumps(tampered_hash).encode())
    assert refused["ok"] is False
    assert "hash verification failed" in refused["error"]

    tampered_ct = {**wire, "ciphertext": _tamper_b64(wire["ciphertext"], 3)}
    assert sdk.decrypt(out["handle"], json.dumps(tampered_ct).encode())["ok"] is False

    result = sdk.decrypt(out["handle"], response.to_json())
    assert result["ok"] is True, result
    assert result["plaintext"].encode("utf-8") == plaintext
    assert result["indices"] == [0, 1, 2, 3]
    assert np.array_equal(np.asarray(result["embeddings"], dtype=np.float32), vectors)
    assert result["usage"] == {"prompt_tokens": 20, "total_tokens": 20}
    assert result["model"] == MODEL


def test_sdk_accepts_a_response_without_hash(sdk: SdkClient, node_key: X25519KeyPair) -> None:
    """The SDK checks the hash only when present (atoma-protocol.md 1.5); atoma-lab's
    ``open_response`` requires it by default. This pins the SDK side of that difference."""
    out = sdk.encrypt(_lock_response(node_key), REQUEST_VARIANTS["string"], MODEL)
    opened = open_request(ConfidentialComputeRequest.from_json(out["wire"]), node_key)
    plaintext, _ = _embeddings_plaintext(1)
    response = seal_response(plaintext, opened.context)
    wire = json.loads(response.to_json())
    del wire["response_hash"]
    result = sdk.decrypt(out["handle"], json.dumps(wire).encode())
    assert result["ok"] is True
    assert result["plaintext"].encode("utf-8") == plaintext


# ------------------------------------------------------------------------------------------------
# The whole SDK call against an atoma-lab node
# ------------------------------------------------------------------------------------------------


def test_sdk_confidential_embeddings_create_against_atoma_lab(
    sdk: SdkClient, node_key: X25519KeyPair, signer: SuiSigner
) -> None:
    plaintext, vectors = _embeddings_plaintext(2, dims=32, seed=11)
    seen: list[dict[str, Any]] = []

    def node(event: dict[str, Any]) -> tuple[int, bytes]:
        seen.append(event)
        assert event["authorization"] == "Bearer test-token"
        assert event["content_type"] == "application/json"
        if event["path"] == "/v1/nodes/lock":
            assert json.loads(event["body"]) == {"model": MODEL}
            return 200, _lock_response(node_key)
        assert event["path"] == "/v1/confidential/embeddings"
        opened = open_request(ConfidentialComputeRequest.from_json(event["body"]), node_key)
        embedding_request = CreateEmbeddingRequest.from_json(opened.plaintext)
        assert embedding_request.inputs() == ["first", "second"]
        response = seal_response(plaintext, opened.context, usage=Usage(10, 10), signer=signer)
        return 200, response.to_json()

    result = sdk.create({"input": ["first", "second"], "model": MODEL}, node)
    assert [e["path"] for e in seen] == ["/v1/nodes/lock", "/v1/confidential/embeddings"]
    assert result["ok"] is True, result
    assert np.array_equal(np.asarray(result["embeddings"], dtype=np.float32), vectors)
    assert result["usage"] == {"prompt_tokens": 10, "total_tokens": 10}


def test_sdk_create_refuses_a_tampered_atoma_lab_response(
    sdk: SdkClient, node_key: X25519KeyPair
) -> None:
    plaintext, _ = _embeddings_plaintext(1)

    def node(event: dict[str, Any]) -> tuple[int, bytes]:
        if event["path"] == "/v1/nodes/lock":
            return 200, _lock_response(node_key)
        opened = open_request(ConfidentialComputeRequest.from_json(event["body"]), node_key)
        response = seal_response(plaintext, opened.context, usage=Usage(5, 5))
        assert response.response_hash is not None
        wrong_hash = bytes([response.response_hash[0] ^ 0x80]) + response.response_hash[1:]
        forged = ConfidentialComputeResponse(
            nonce=response.nonce, ciphertext=response.ciphertext, response_hash=wrong_hash,
            usage=response.usage,
        )
        return 200, forged.to_json()

    result = sdk.create({"input": "x", "model": MODEL}, node)
    assert result["ok"] is False
    assert "Failed to decrypt response" in result["error"]


# ------------------------------------------------------------------------------------------------
# The plaintext: the same bytes on both sides
# ------------------------------------------------------------------------------------------------


def _request_corpus() -> list[dict[str, Any]]:
    rng = random.Random(20250826)
    alphabet = ("abcXYZ 0189 \"\\/\t\n\r\b\f\x00\x01\x1f\x7f é ß ø Ж 中 日本 🙂 👩‍💻 "
                "\u2028\u2029\ufeff\U0010ffff")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
             for _ in range(40)]
    corpus: list[dict[str, Any]] = [{"input": t, "model": MODEL} for t in texts]
    corpus.append({"input": texts, "model": MODEL})
    for extra in ({"dimensions": 384}, {"encoding_format": "base64"}, {"user": "ü/\"x\""},
                  {"user": "u", "encoding_format": "float", "dimensions": 1}):
        corpus.append({"input": "x", "model": "m/ö", **extra})
    return corpus


def test_embedding_request_bytes_match_the_sdk(sdk: SdkClient) -> None:
    corpus = _request_corpus()
    sdk_bytes = sdk.dump_requests(corpus)
    ours = [CreateEmbeddingRequest(**kwargs).to_json() for kwargs in corpus]
    mismatches = [(kw, theirs, mine) for kw, theirs, mine in zip(corpus, sdk_bytes, ours,
                                                                   strict=True)
                  if theirs != mine]
    assert not mismatches, mismatches[:3]
