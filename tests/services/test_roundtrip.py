"""Round trips through proxy and nodes, in-process and over loopback HTTP: the same vectors and
usage whichever way they travel, and the services' health and metrics endpoints."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from fakes import MODEL, error_of, expected_units, expected_vectors, fake_embed, fake_embedder, send
from prometheus_client.parser import text_string_to_metric_families

from atoma_lab.encoding import loads
from atoma_lab.lab.network import Network
from atoma_lab.protocol.openai import CreateEmbeddingRequest, CreateEmbeddingResponse
from atoma_lab.transport.base import Headers, Request

INPUTS = ["hello world", "the quick brown fox jumps", "x"]


def prometheus_samples(text: bytes) -> dict[tuple[str, str | None], float]:
    """``(sample name, its model or code label)`` -> value, from the text exposition format."""
    out: dict[tuple[str, str | None], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, s.labels.get("model", s.labels.get("code")))] = s.value
    return out


def test_confidential_plain_and_direct_vectors_are_equal(net: Network) -> None:
    client = net.client()
    conf = client.confidential_embeddings.create(input=INPUTS, model=MODEL)
    plain = client.embeddings.create(input=INPUTS, model=MODEL)
    body, usage = fake_embed(CreateEmbeddingRequest(input=INPUTS, model=MODEL))
    direct = CreateEmbeddingResponse.from_json(body)

    assert conf.to_numpy().shape == (len(INPUTS), 32)
    assert conf.to_numpy().dtype == np.float32
    np.testing.assert_array_equal(conf.to_numpy(), plain.to_numpy())
    np.testing.assert_array_equal(conf.to_numpy(), direct.to_numpy())
    np.testing.assert_array_equal(conf.to_numpy(), expected_vectors(INPUTS))
    assert conf.usage == plain.usage == usage
    assert conf.usage.total_tokens == expected_units(INPUTS)
    assert conf.model == plain.model == MODEL
    assert [d.index for d in conf.data] == list(range(len(INPUTS)))
    client.close()


@pytest.mark.parametrize("inputs", ["one single string", ["a"], ["a b", "c d e", "f"]])
def test_to_numpy_shape(net: Network, inputs: str | list[str]) -> None:
    client = net.client()
    n = 1 if isinstance(inputs, str) else len(inputs)
    for create in (client.confidential_embeddings.create, client.embeddings.create):
        result = create(input=inputs, model=MODEL)
        assert result.to_numpy().shape == (n, 32)
        assert result.usage.total_tokens == expected_units(inputs)
    client.close()


def test_base64_encoding_format_gives_the_same_vectors(net: Network) -> None:
    client = net.client()
    floats = client.confidential_embeddings.create(input=INPUTS, model=MODEL)
    conf_b64 = client.confidential_embeddings.create(input=INPUTS, model=MODEL,
                                                     encoding_format="base64")
    plain_b64 = client.embeddings.create(input=INPUTS, model=MODEL, encoding_format="base64")
    # The base64 answer really is base64 on the wire (inside the envelope for confidential).
    assert isinstance(loads(conf_b64.raw["response_plaintext"])["data"][0]["embedding"], str)
    np.testing.assert_array_equal(conf_b64.to_numpy(), floats.to_numpy())
    np.testing.assert_array_equal(plain_b64.to_numpy(), floats.to_numpy())
    client.close()


def test_result_metadata(net: Network) -> None:
    client = net.client()
    result = client.confidential_embeddings.create(input=INPUTS, model=MODEL)
    assert result.attempts == 1
    assert result.node_small_id in {n.node_small_id for n in net.nodes}
    assert result.stack_small_id is not None
    stack = net.ledger.stack(result.stack_small_id)
    assert stack.node_small_id == result.node_small_id
    assert result.object == "list"
    # The sealed request the client sent never holds the text.
    assert b"hello world" not in str(result.raw["request"]).encode()
    assert result.raw["plaintext"] == CreateEmbeddingRequest(input=INPUTS, model=MODEL).to_json()
    client.close()


def test_models_list(net: Network) -> None:
    client = net.client()
    assert client.models.list() == [MODEL]
    resp = send(net, "GET", "/v1/models")
    body = loads(resp.body)
    assert resp.status == 200
    assert body["object"] == "list"
    assert body["data"] == [{"id": MODEL, "object": "model", "created": body["data"][0]["created"],
                             "owned_by": "atoma"}]
    client.close()


def test_models_list_of_several_models(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=2, mode=mode,
                   embedder=[fake_embedder(["b-model", MODEL]), fake_embedder(["a-model"])])
    client = net.client()
    assert client.models.list() == ["a-model", "b-model", MODEL]
    vec = client.confidential_embeddings.create(input="hi", model="a-model").to_numpy()
    np.testing.assert_array_equal(vec, expected_vectors("hi"))
    client.close()


def test_proxy_health(net: Network) -> None:
    resp = send(net, "GET", "/health", token=None)
    assert resp.status == 200
    assert loads(resp.body) == {"message": "ok"}


def test_node_health(net: Network) -> None:
    for node, address in zip(net.nodes, net.node_urls, strict=True):
        resp = net.run(net.proxy.transport.handle(
            Request("GET", "/health", address=address, timeout_s=5.0)))
        assert resp.status == 200, node
        assert loads(resp.body) == {"status": "ok"}


def test_proxy_metrics_after_a_request(net: Network) -> None:
    client = net.client()
    client.confidential_embeddings.create(input=INPUTS, model=MODEL)
    client.embeddings.create(input=INPUTS, model=MODEL)
    assert error_of(send(net, "GET", "/metrics", token=None)) == (401, "AUTH_ERROR")
    assert error_of(send(net, "GET", "/metrics")) == (401, "AUTH_ERROR")  # a user's token
    resp = send(net, "GET", "/metrics", token=net.metrics_token)
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples = prometheus_samples(resp.body)
    assert samples[("atoma_text_embeddings_confidential_num_requests_total", MODEL)] == 1.0
    assert samples[("atoma_text_embs_num_requests_total", MODEL)] == 1.0
    assert samples[("atoma_total_completed_requests_total", None)] == 2.0
    assert samples[("atoma_lab_compute_units_charged_total", None)] == 2 * expected_units(INPUTS)
    client.close()


def test_node_metrics_after_a_request(net: Network) -> None:
    client = net.client()
    result = client.confidential_embeddings.create(input=INPUTS, model=MODEL)
    address = net.node_urls[net.nodes.index(
        next(n for n in net.nodes if n.node_small_id == result.node_small_id))]
    assert net.run(net.proxy.transport.handle(
        Request("GET", "/metrics", address=address, timeout_s=5.0))).status == 401
    resp = net.run(net.proxy.transport.handle(Request(
        "GET", "/metrics", Headers({"authorization": f"Bearer {net.metrics_token}"}),
        address=address, timeout_s=5.0)))
    assert resp.status == 200
    samples = prometheus_samples(resp.body)
    assert samples[("atoma_text_embeddings_confidential_num_requests_total", MODEL)] == 1.0
    assert samples[("atoma_embedding_total_tokens_total", MODEL)] == expected_units(INPUTS)
    client.close()


def test_failed_requests_are_counted_in_metrics(net: Network) -> None:
    client = net.client()
    lock = client.nodes.lock(MODEL)
    from atoma_lab.protocol.atoma.envelope import seal_request

    sealed = seal_request(b'{"input":"a","model":"' + MODEL.encode() + b'"}',
                          node_public_key=bytes(32 * [9]), stack_small_id=lock.stack_small_id,
                          model_name=MODEL)
    resp = send(net, "POST", "/v1/confidential/embeddings", sealed.request.to_json())
    assert resp.status == 409
    samples = prometheus_samples(send(net, "GET", "/metrics", token=net.metrics_token).body)
    assert samples[("atoma_total_failed_requests_total", "STALE_NODE_KEY")] == 1.0
    client.close()
