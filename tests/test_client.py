"""The SDK-shaped client: construction, inputs of every OpenAI shape, results, error classes,
the one retry on a rotated key, the attestation cache, and fresh randomness per request."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fakes import (
    MODEL,
    HookChannel,
    expected_units,
    expected_vectors,
    fake_units,
    fake_vector,
    network,
)

from atoma_lab.client import AtomaLabClient, EmbeddingsResult
from atoma_lab.errors import (
    APIError,
    AuthenticationError,
    InvalidFieldError,
    ModelNotFoundError,
    StackUnavailableError,
)
from atoma_lab.lab.network import Network
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.transport.base import Headers, Request, Response

CONF = "/v1/confidential/embeddings"
MODES = ["inprocess", pytest.param("http", marks=pytest.mark.integration)]


@pytest.fixture(scope="module", params=MODES)
def net(request: pytest.FixtureRequest) -> Iterator[Network]:
    n = network(nodes=2, mode=request.param)
    yield n
    n.close()


@pytest.fixture
def client(net: Network) -> Iterator[AtomaLabClient]:
    c = net.client()
    yield c
    c.close()


def test_construction_needs_somewhere_to_go() -> None:
    with pytest.raises(ValueError):
        AtomaLabClient(api_key="k")
    with pytest.raises(ValueError, match="attestation_policy"):
        AtomaLabClient("http://127.0.0.1:9", api_key="k", verify_attestation=True)


def test_a_channel_can_be_given(net: Network) -> None:
    hook = HookChannel(net.channel())
    c = AtomaLabClient(api_key=net.api_key, channel=hook)
    assert c.models.list() == [MODEL]
    assert hook.paths() == ["/v1/models"]
    c.close()


def test_client_as_context_manager_closes_its_channel(net: Network) -> None:
    closed: list[bool] = []

    class Closing(HookChannel):
        def close(self) -> None:
            closed.append(True)
            super().close()

    with AtomaLabClient(api_key=net.api_key, channel=Closing(net.channel())) as c:
        c.models.list()
    assert closed == [True]


@pytest.mark.parametrize("inputs", [
    "a single string",
    ["a", "list", "of strings"],
    ("a", "tuple"),
    [101, 2023, 102],
    [[101, 7592], [101, 2088, 102]],
])
def test_every_input_shape(client: AtomaLabClient, inputs: Any) -> None:
    items = CreateEmbeddingRequest(input=list(inputs) if isinstance(inputs, tuple) else inputs,
                                   model=MODEL).inputs()
    want = np.stack([fake_vector(x) for x in items])
    for create in (client.confidential_embeddings.create, client.embeddings.create):
        result = create(input=inputs, model=MODEL)
        np.testing.assert_array_equal(result.to_numpy(), want)
        assert result.usage.total_tokens == sum(fake_units(x) for x in items)


def test_dimensions_travel_to_the_engine(client: AtomaLabClient) -> None:
    for create in (client.confidential_embeddings.create, client.embeddings.create):
        result = create(input=["a", "b"], model=MODEL, dimensions=8)
        assert result.to_numpy().shape == (2, 8)
        np.testing.assert_array_equal(result.to_numpy(), expected_vectors(["a", "b"])[:, :8])


def test_the_sealed_plaintext_is_the_openai_request(client: AtomaLabClient) -> None:
    result = client.confidential_embeddings.create(input=["x"], model=MODEL, user="u-1",
                                                   encoding_format="float")
    assert orjson.loads(result.raw["plaintext"]) == {
        "input": ["x"], "model": MODEL, "encoding_format": "float", "user": "u-1"}
    assert set(result.raw["request"]) >= {"ciphertext", "stack_small_id", "nonce", "salt",
                                          "client_dh_public_key", "node_dh_public_key",
                                          "plaintext_body_hash", "model_name"}
    assert result.raw["request"]["stream"] is False


def test_every_request_uses_fresh_randomness(client: AtomaLabClient) -> None:
    a = client.confidential_embeddings.create(input="same", model=MODEL).raw["request"]
    b = client.confidential_embeddings.create(input="same", model=MODEL).raw["request"]
    for field in ("nonce", "salt", "client_dh_public_key", "ciphertext"):
        assert a[field] != b[field], field
    assert a["plaintext_body_hash"] == b["plaintext_body_hash"]


def test_result_is_ordered_by_index() -> None:
    from atoma_lab.protocol.openai import CreateEmbeddingResponse
    from atoma_lab.services.trace import Trace

    payload = {"object": "list", "model": MODEL, "usage": {"prompt_tokens": 2, "total_tokens": 2},
               "data": [{"index": 1, "embedding": [1.0, 1.0]}, {"index": 0, "embedding": [0.0, 0.5]}]}
    result = EmbeddingsResult(CreateEmbeddingResponse.from_dict(payload), Trace())
    np.testing.assert_array_equal(result.to_numpy(), np.array([[0.0, 0.5], [1.0, 1.0]], np.float32))
    assert result.model == MODEL and result.object == "list" and len(result.data) == 2


def test_errors_come_back_as_their_classes(net: Network) -> None:
    bad = AtomaLabClient(net.base_url, api_key="not-a-key",
                         network=net if net.mode == "inprocess" else None)
    with pytest.raises(AuthenticationError) as auth:
        bad.confidential_embeddings.create(input="x", model=MODEL)
    assert auth.value.status == 401 and auth.value.code == "AUTH_ERROR"
    with pytest.raises(AuthenticationError):
        bad.models.list()
    bad.close()
    good = net.client()
    with pytest.raises(ModelNotFoundError):
        good.confidential_embeddings.create(input="x", model="no/such-model")
    with pytest.raises(ModelNotFoundError):
        good.embeddings.create(input="x", model="no/such-model")
    with pytest.raises(InvalidFieldError):
        good.embeddings.create(input=["x"] * 2049, model=MODEL)
    good.close()


def test_a_non_json_error_is_an_api_error(net: Network) -> None:
    def after(request: Request, response: Response) -> Response:
        return Response(502, b"<html>Bad Gateway</html>", Headers({"content-type": "text/html"}))

    c = AtomaLabClient(api_key=net.api_key, channel=HookChannel(net.channel(), after=after))
    with pytest.raises(APIError) as exc:
        c.models.list()
    assert exc.value.status == 502 and exc.value.code == "HTTP_ERROR"


def test_an_unknown_error_code_keeps_status_and_code(net: Network) -> None:
    def after(request: Request, response: Response) -> Response:
        return Response.json({"error": {"code": "FIAT_PAYMENTS_ONLY", "message": "fiat"}}, 400)

    c = AtomaLabClient(api_key=net.api_key, channel=HookChannel(net.channel(), after=after))
    with pytest.raises(APIError) as exc:
        c.embeddings.create(input="x", model=MODEL)
    assert (exc.value.status, exc.value.code, exc.value.message) == (400, "FIAT_PAYMENTS_ONLY", "fiat")


def test_only_a_stale_key_is_retried(net: Network) -> None:
    """425 (no lock) is not retried: the client makes exactly one lock and one send."""
    def after(request: Request, response: Response) -> Response | None:
        if request.path == CONF:
            return Response.json({"error": {"code": "UNAVAILABLE_STACK", "message": "no"}}, 425)
        return None

    hook = HookChannel(net.channel(), after=after)
    c = AtomaLabClient(api_key=net.api_key, channel=hook)
    with pytest.raises(StackUnavailableError):
        c.confidential_embeddings.create(input="x", model=MODEL)
    assert hook.paths() == ["/v1/nodes/lock", CONF]
    net.ledger.prune_expired(net.proxy.clock() + 3600)


def test_verified_keys_are_cached(net: Network) -> None:
    hook = HookChannel(net.channel())
    c = AtomaLabClient(api_key=net.api_key, channel=hook, network=net,
                       attestation_policy=net.attestation_policy(), verify_attestation=True)
    for _ in range(4):
        c.confidential_embeddings.create(input="x", model=MODEL)
    fetches = [p for p in hook.paths() if p.startswith("/v1/nodes/attestation")]
    assert 1 <= len(fetches) <= len(net.nodes)
    assert len(c.verified_nodes) == len(fetches)


def test_max_num_tokens_sizes_the_lock(net: Network, client: AtomaLabClient) -> None:
    result = client.confidential_embeddings.create(input="a b c", model=MODEL, max_num_tokens=5)
    assert result.usage.total_tokens == expected_units("a b c") == 5
    last = net.ledger.settlements()[-1]
    assert (last["units_locked"], last["units_charged"]) == (5, 5)
    from atoma_lab.errors import ComputeUnitsExceededError

    with pytest.raises(ComputeUnitsExceededError):
        client.confidential_embeddings.create(input="a b c d", model=MODEL, max_num_tokens=5)


def test_base64_answer_decodes_as_little_endian_float32(client: AtomaLabClient) -> None:
    result = client.confidential_embeddings.create(input="v", model=MODEL, encoding_format="base64")
    wire = orjson.loads(result.raw["response_plaintext"])["data"][0]["embedding"]
    assert np.frombuffer(base64.b64decode(wire), "<f4").tobytes() == fake_vector("v").tobytes()
