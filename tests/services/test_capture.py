"""What a curious operator sees: every message the proxy and the nodes exchanged on the
confidential route, searched for the input text and for every representation of the vectors.
And the per-stage trace of a request."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import numpy as np
import orjson
import pytest
from fakes import MODEL, expected_vectors

from atoma_lab.lab.network import PROXY_ADDRESS, Network
from atoma_lab.transport.inprocess import CapturedMessage

CONF = "/v1/confidential/embeddings"
INPUTS = ["my secret diagnosis: benign 5a1e", "wire transfer to account 7781 2231"]


def needles(inputs: list[str], vectors: np.ndarray) -> Iterator[tuple[str, bytes]]:
    """Byte strings that would give the plaintext or the vectors away."""
    for text in inputs:
        yield "input", text.encode()
        yield "input (json)", orjson.dumps(text)
        yield "input word", text.split()[-1].encode()
        yield "input base64", base64.b64encode(text.encode())
    for row in vectors:
        raw = row.astype("<f4").tobytes()
        yield "vector bytes", raw
        yield "vector base64", base64.b64encode(raw)
        yield "vector json", orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
        yield "vector json (float64)", orjson.dumps(row.tolist())[1:-1]
        for x in row[:8]:
            for text in (str(np.float32(x)).encode(), orjson.dumps(float(x))):
                if len(text) >= 6:  # long enough not to turn up by chance
                    yield "vector float", text


def _leaks(messages: list[CapturedMessage], inputs: list[str], vectors: np.ndarray) -> list[str]:
    found = []
    for m in messages:
        blobs = {"request body": m.request.body,
                 "request headers": orjson.dumps(dict(m.request.headers)),
                 "response body": m.response.body if m.response is not None else b"",
                 "response headers": orjson.dumps(dict(m.response.headers)) if m.response else b""}
        for where, blob in blobs.items():
            for what, needle in needles(inputs, vectors):
                if needle in blob:
                    found.append(f"{what} in {m.address} {m.request.path} {where}")
    return found


@pytest.fixture
def captured(make_net: Callable[..., Network]) -> tuple[Network, list[CapturedMessage]]:
    net = make_net(nodes=2)
    client = net.client(verify_attestation=True)
    assert net.transport is not None
    start = len(net.transport.captured)
    result = client.confidential_embeddings.create(input=INPUTS, model=MODEL)
    np.testing.assert_array_equal(result.to_numpy(), expected_vectors(INPUTS))
    b64 = client.confidential_embeddings.create(input=INPUTS, model=MODEL, encoding_format="base64")
    np.testing.assert_array_equal(b64.to_numpy(), expected_vectors(INPUTS))
    return net, net.transport.captured[start:]


Captured = tuple[Network, list[CapturedMessage]]


def test_capture_sees_the_whole_confidential_exchange(captured: Captured) -> None:
    net, messages = captured
    paths = [(m.address, m.request.path) for m in messages]
    node_addresses = set(net.node_urls)
    to_proxy = [p for a, p in paths if a == PROXY_ADDRESS]
    to_nodes = [p for a, p in paths if a in node_addresses]
    assert to_proxy.count(CONF) == 2 and to_proxy.count("/v1/nodes/lock") == 2
    assert to_nodes == [CONF, CONF]
    assert all(m.response is not None and m.response.status == 200 for m in messages)


def test_no_plaintext_or_vector_on_the_confidential_route(captured: Captured) -> None:
    _, messages = captured
    conf = [m for m in messages if m.request.path == CONF]
    assert len(conf) == 4
    assert _leaks(conf, INPUTS, expected_vectors(INPUTS)) == []
    # And nothing else the proxy saw (locks, attestation look-ups) holds them either.
    assert _leaks(messages, INPUTS, expected_vectors(INPUTS)) == []


def test_the_search_would_find_a_leak(make_net: Callable[..., Network]) -> None:
    """The same search on the plain route finds the text and the vectors: it is not blind."""
    net = make_net(nodes=1)
    assert net.transport is not None
    start = len(net.transport.captured)
    net.client().embeddings.create(input=INPUTS, model=MODEL)
    messages = net.transport.captured[start:]
    found = _leaks(messages, INPUTS, expected_vectors(INPUTS))
    assert any(f.startswith("input in " + PROXY_ADDRESS) for f in found)
    assert any(f == "vector float in inproc://node-1 /v1/embeddings response body" for f in found)
    assert any("request body" in f and "node-1" in f for f in found)


def test_the_node_never_sees_the_api_token(captured: Captured) -> None:
    net, messages = captured
    for m in messages:
        if m.address != PROXY_ADDRESS:
            assert "authorization" not in m.request.headers
            assert net.api_key.encode() not in m.request.body
            assert "x-signature" in m.request.headers


STAGES = ["seal", "transport", "open", "proxy_check", "node_open", "node_embed", "node_seal"]


@pytest.mark.parametrize("verify", [False, True])
def test_trace_has_every_stage(net: Network, verify: bool) -> None:
    client = net.client(verify_attestation=verify)
    result = client.confidential_embeddings.create(input=INPUTS, model=MODEL)
    stages = result.trace.stages_ms
    for name in STAGES:
        assert name in stages, name
    assert all(v >= 0 for v in stages.values()), stages
    assert "lock" in stages and "proxy_verify" in stages and "node_check" in stages
    assert ("attest" in stages) == verify
    assert result.trace.total_ms >= max(stages.values())
    assert result.trace.server_ms > 0
    assert str(result.trace).startswith("Trace(total=")
    plain = client.embeddings.create(input=INPUTS, model=MODEL).trace.stages_ms
    assert {"transport", "proxy_check", "node_embed", "node_seal"} <= set(plain)
    assert "node_open" not in plain and "seal" not in plain
    assert all(v >= 0 for v in plain.values()), plain
    client.close()

