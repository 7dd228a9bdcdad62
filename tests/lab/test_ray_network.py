"""``build_network(mode="ray")``: each node a Ray actor, the proxy in this process.

The simulator's own round-trip, rotation, fault and ledger tests run here unchanged on a Ray
network (imported from ``tests/services``), beside what only Ray has: a node actor killed is a
node down (503, a retry on another node, nothing charged), nodes placed by Ray with their own
keys, and the proxy served over HTTP for other processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fakes import (
    MODEL,
    error_of,
    expected_units,
    expected_vectors,
    fake_embed,
    money,
    network,
    networks,
    send,
    settlements,
)
from services import test_accounting, test_faults, test_rotation, test_roundtrip

from atoma_lab.client import AtomaLabClient
from atoma_lab.errors import ServiceUnavailableError, TransportTimeoutError
from atoma_lab.lab.network import Network
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.openai import CreateEmbeddingRequest, EmbeddingUsage
from atoma_lab.services.embedders import CallableEmbedder

pytestmark = pytest.mark.ray

CONF = "/v1/confidential/embeddings"


@pytest.fixture
def make_ray_net(ray_local: Any) -> Iterator[Callable[..., Network]]:
    """Ray networks of the fake embedder (``fakes.network`` options); closed after the test."""
    with networks(mode="ray") as make:  # what the borrowed tests ask for, on Ray
        yield make


@pytest.fixture(scope="module")
def shared(ray_local: Any) -> Iterator[Network]:
    """One two-node Ray network for the read-only round trips."""
    net = network(nodes=2, mode="ray")
    yield net
    net.close()


# ------------------------------------------------------------------------ the simulator's tests


@pytest.mark.parametrize("test", [
    test_roundtrip.test_confidential_plain_and_direct_vectors_are_equal,
    test_roundtrip.test_base64_encoding_format_gives_the_same_vectors,
    test_roundtrip.test_result_metadata,
    test_roundtrip.test_models_list,
    test_roundtrip.test_proxy_health,
    test_roundtrip.test_node_health,
], ids=lambda t: t.__name__)
def test_round_trips(shared: Network, test: Callable[[Network], None]) -> None:
    test(shared)


@pytest.mark.parametrize("test", [
    test_rotation.test_lock_never_hands_out_the_old_key,
    test_rotation.test_request_sealed_to_the_old_key_is_409,
    test_rotation.test_client_retries_once_after_a_rotation,
    test_rotation.test_the_proxy_learns_an_unannounced_key_from_the_409,
    test_accounting.test_mixed_run_is_exact,
], ids=lambda t: t.__name__)
def test_rotation_and_ledger(make_ray_net: Callable[..., Network],
                             test: Callable[[Callable[..., Network], str], None]) -> None:
    test(make_ray_net, "ray")


@pytest.mark.parametrize("test", [
    test_faults.test_a_fault_on_one_node_fails_over_to_the_other,
    test_accounting.test_concurrent_requests_are_exact,
], ids=lambda t: t.__name__)
def test_faults_and_concurrency(make_ray_net: Callable[..., Network],
                                test: Callable[[Callable[..., Network]], None]) -> None:
    test(make_ray_net)


def slow_embed(request: CreateEmbeddingRequest) -> tuple[bytes, EmbeddingUsage]:
    """The fake engine, slower than the proxy waits for inputs saying "slow" (in the actor)."""
    if "slow" in request.inputs():
        time.sleep(3)
    return fake_embed(request)


def test_a_node_actor_that_does_not_answer_is_504(make_ray_net: Callable[..., Network]) -> None:
    net = make_ray_net(nodes=1, node_timeout_s=0.5,
                       embedder=CallableEmbedder([MODEL], slow_embed))
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    before, n = money(net), len(settlements(net))
    with pytest.raises(TransportTimeoutError):
        client.embeddings.create(input="slow", model=MODEL)
    assert money(net) == before
    assert net.ledger.open_locks() == []
    assert [(r["units_charged"], r["outcome"]) for r in settlements(net)[n:]] == [
        (0, "GATEWAY_TIMEOUT")]
    # Marked down, probed back up (the actor lives), it serves again.
    assert net.run(net.proxy.check_nodes()) == {1: True}
    assert client.confidential_embeddings.create(input="fast", model=MODEL).attempts == 1
    client.close()


# ------------------------------------------------------------------------------- Ray's own


def test_the_network_its_nodes_and_its_proxy_over_http(make_ray_net: Callable[..., Network]) -> None:
    net = make_ray_net(nodes=2, prices=[3, 1])
    assert net.mode == "ray" and repr(net) == f"Network(ray, nodes=2, models={[MODEL]})"
    html = net._repr_html_()
    assert "actor://node-1" in html and net.nodes[0].public_key.hex() not in html
    assert net.node_urls == ["actor://node-1", "actor://node-2"]
    records = net.ledger.nodes()
    assert [r.sui_address for r in records] == [n.sui_address for n in net.nodes]
    assert [r.public_key for r in records] == [n.public_key for n in net.nodes]
    assert all(r.attestation_valid and r.models == (MODEL,) for r in records)
    # Each node has keys of its own, attested by the network's vendor, in its own process.
    assert len({n.public_key for n in net.nodes}) == 2
    assert len({n.placement["pid"] for n in net.nodes}) == 2
    assert all(n.evidence.report.signer_address == n.sui_address for n in net.nodes)
    client = net.client()
    r = client.confidential_embeddings.create(input=["a b", "c"], model=MODEL)
    assert r.node_small_id == 2  # the cheaper node
    np.testing.assert_array_equal(r.to_numpy(), expected_vectors(["a b", "c"]))
    # The node looked the stack's owner up at the proxy (signed), through the relay.
    lookups = [m for m in net.captured if m.request.path == "/v1/stacks"]
    assert [m.response.status for m in lookups if m.response is not None] == [200]
    assert lookups[0].request.headers["x-node-small-id"] == "2"
    client.close()
    # What ``atoma-lab serve --mode ray`` does: the proxy on a loopback port, for clients in
    # other processes (httpx on the plain route, an HTTP client for the sealed one).
    url = net.serve_http()
    assert url.startswith("http://127.0.0.1:")
    assert httpx.get(url + "/health").json() == {"message": "ok"}
    plain = httpx.post(url + "/v1/embeddings", json={"input": ["a", "b c"], "model": MODEL},
                       headers={"authorization": f"Bearer {net.api_key}"})
    assert plain.status_code == 200
    assert plain.json()["usage"]["total_tokens"] == expected_units(["a", "b c"])
    with AtomaLabClient(url, api_key=net.api_key) as remote:
        sealed = remote.confidential_embeddings.create(input=["sealed over http"], model=MODEL)
        np.testing.assert_array_equal(sealed.to_numpy(), expected_vectors(["sealed over http"]))
    with pytest.raises(ValueError, match="already serving"):
        net.serve_http()
    net.close()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


def test_a_killed_node_actor_is_a_node_down(make_ray_net: Callable[..., Network]) -> None:
    """The proxy finds the actor gone: 503, the lock given back, the node out of rotation; the
    client's one retry takes a new lock on the other node. Only the served request is charged."""
    net = make_ray_net(nodes=2, prices=[1, 2])
    client = net.client()
    warm = client.confidential_embeddings.create(input="warm up", model=MODEL)
    assert warm.node_small_id == 1
    net.nodes[0].kill()
    before = len(settlements(net))
    result = client.confidential_embeddings.create(input="after the kill", model=MODEL)
    assert (result.node_small_id, result.attempts) == (2, 2)
    np.testing.assert_array_equal(result.to_numpy(), expected_vectors("after the kill"))
    assert [(r["units_charged"], r["outcome"]) for r in settlements(net)[before:]] == [
        (0, "SERVICE_UNAVAILABLE"), (expected_units("after the kill"), "charged")]
    assert net.ledger.node(1).healthy is False  # type: ignore[union-attr]
    assert net.ledger.open_locks() == []
    assert all(s.locked_compute_units == 0 for s in net.ledger.stacks())
    # A probe finds it still gone; the plain route goes to node 2 as well.
    assert net.run(net.proxy.check_nodes()) == {1: False, 2: True}
    assert client.embeddings.create(input="plain", model=MODEL).usage.total_tokens == \
        expected_units("plain")
    client.close()


def test_the_last_node_killed_is_503_and_the_books_unchanged(
        make_ray_net: Callable[..., Network]) -> None:
    net = make_ray_net(nodes=1)
    client = net.client()
    lock = client.nodes.lock(MODEL)
    body = seal_request(CreateEmbeddingRequest(input="x", model=MODEL).to_json(),
                        node_public_key=lock.public_key, stack_small_id=lock.stack_small_id,
                        model_name=MODEL).request.to_json()
    net.nodes[0].kill()
    before = money(net)
    assert error_of(send(net, "POST", CONF, body)) == (503, "SERVICE_UNAVAILABLE")
    assert money(net) == before
    assert net.ledger.open_locks() == []
    with pytest.raises(ServiceUnavailableError):
        client.confidential_embeddings.create(input="x", model=MODEL)
    assert money(net) == before
    client.close()


def test_an_engine_built_in_each_actor(make_ray_net: Callable[..., Network]) -> None:
    """An embedder that does not pickle is refused with what to do instead; without one, each
    actor builds the model's engine where it runs (here the fake engine with a device's
    capacity), and the network's node policy is the proxy's as in every mode."""
    from atoma_lab.inference import FAKE_MODEL, FakeEngine, NodeEmbedder

    with pytest.raises(TypeError, match="does not pickle"):
        make_ray_net(nodes=1, model=FAKE_MODEL, embedder=NodeEmbedder(FakeEngine()))
    net = make_ray_net(nodes=2, model=FAKE_MODEL, embedder=None, fake_tokens_per_s=1e6,
                       node_policy="atoma")
    assert [n.placement["tokens_per_s"] for n in net.nodes] == [1e6, 1e6]
    assert net.proxy.node_policy.name == "atoma"
    texts = ["built", "where the node runs"]
    with net.client() as client:
        r = client.confidential_embeddings.create(input=texts, model=FAKE_MODEL)
    np.testing.assert_array_equal(r.to_numpy(), FakeEngine().embed(texts).vectors)


def test_ray_mode_refuses_a_test_clock(ray_local: Any) -> None:
    from fakes import FakeClock

    with pytest.raises(ValueError, match="own clock"):
        network(mode="ray", clock=FakeClock())
