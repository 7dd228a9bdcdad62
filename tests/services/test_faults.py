"""Faults between the proxy and a node: dropped, hung and crashed connections, a node that
fails on its side, a node that is unreachable over HTTP. Each is a specific 5xx with a JSON
body, nothing is charged, and the network keeps serving afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fakes import MODEL, FakeClock, error_of, expected_units, fake_embed, money, send, settlements

from atoma_lab.errors import InferenceError, ServiceUnavailableError, TransportTimeoutError
from atoma_lab.lab.network import Network
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.openai import CreateEmbeddingRequest, EmbeddingUsage
from atoma_lab.services.embedders import CallableEmbedder
from atoma_lab.transport.base import Response
from atoma_lab.transport.inprocess import Fault

CONF = "/v1/confidential/embeddings"
PLAINTEXT = CreateEmbeddingRequest(input="fault me", model=MODEL).to_json()


def _confidential(net: Network) -> Response:
    lock = net.client().nodes.lock(MODEL)
    body = seal_request(PLAINTEXT, node_public_key=lock.public_key,
                        stack_small_id=lock.stack_small_id, model_name=MODEL).request.to_json()
    return send(net, "POST", CONF, body)


def _plain(net: Network) -> Response:
    return send(net, "POST", "/v1/embeddings", {"input": "fault me", "model": MODEL})


ROUTES = {"confidential": _confidential, "plain": _plain}


def _check_fault(net: Network, fault: Fault, route: str, status: int, code: str) -> None:
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    before, n = money(net), len(settlements(net))
    assert net.transport is not None
    net.transport.inject(net.node_urls[0], fault)
    resp = ROUTES[route](net)
    assert error_of(resp) == (status, code)
    assert money(net) == before
    assert net.ledger.open_locks() == []
    assert all(s.locked_compute_units == 0 for s in net.ledger.stacks())
    new = settlements(net)[n:]
    assert [(r["units_charged"], r["outcome"]) for r in new] == [(0, code)]
    # Cleared, the same node serves again.
    net.transport.inject(net.node_urls[0], None)
    assert ROUTES[route](net).status == 200
    result = client.confidential_embeddings.create(input="after the fault", model=MODEL)
    assert result.usage.total_tokens == expected_units("after the fault")
    client.close()


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_dropped_connection_is_503(make_net: Callable[..., Network], route: str) -> None:
    net = make_net(nodes=1)
    _check_fault(net, Fault(drop=True), route, 503, "SERVICE_UNAVAILABLE")


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_hung_node_is_504(make_net: Callable[..., Network], route: str) -> None:
    net = make_net(nodes=1, node_timeout_s=0.5)  # the warm-up must fit in it on a loaded machine
    t0 = time.monotonic()
    _check_fault(net, Fault(hang=True), route, 504, "GATEWAY_TIMEOUT")
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_crash_mid_request_is_503(make_net: Callable[..., Network], route: str) -> None:
    net = make_net(nodes=1)
    _check_fault(net, Fault(fail_after_ms=1), route, 503, "SERVICE_UNAVAILABLE")


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_slow_node_past_the_timeout_is_504(make_net: Callable[..., Network], route: str) -> None:
    net = make_net(nodes=1, node_timeout_s=0.5)
    _check_fault(net, Fault(latency_ms=3000), route, 504, "GATEWAY_TIMEOUT")


def test_slow_node_within_the_timeout_is_served(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, node_timeout_s=5)
    assert net.transport is not None
    net.transport.inject(net.node_urls[0], Fault(latency_ms=30))
    result = net.client().confidential_embeddings.create(input="slow", model=MODEL)
    assert result.trace.stages_ms["proxy_forward"] >= 25


# What a failing node answers: its own JSON error, or a body that is not JSON at all.
NODE_FAILURES = {
    "json-error": (500, b'{"error":{"code":"INTERNAL_ERROR","message":"boom"}}'),
    "not-json": (503, b"<html>bad gateway</html>"),
}


@pytest.mark.parametrize("failure", sorted(NODE_FAILURES))
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_node_failing_on_its_side_is_502(make_net: Callable[..., Network], route: str,
                                         failure: str) -> None:
    net = make_net(nodes=1)
    status, body = NODE_FAILURES[failure]

    def crash(resp: Response) -> Response:
        return Response(status, body, resp.headers)
    _check_fault(net, Fault(tamper_response=crash), route, 502, "NODE_ERROR")


@pytest.mark.parametrize("exc", [InferenceError("engine fell over"), RuntimeError("CUDA OOM")],
                         ids=["InferenceError", "RuntimeError"])
def test_an_engine_failure_is_502_and_not_charged(make_net: Callable[..., Network], mode: str,
                                                  exc: Exception) -> None:
    """The engine raises: the node answers 500, the proxy 502, nothing is charged; in-process
    exactly as over HTTP."""
    broken = {"on": False}

    def flaky(request: CreateEmbeddingRequest) -> tuple[bytes, EmbeddingUsage]:
        if broken["on"]:
            raise exc
        return fake_embed(request)

    net = make_net(nodes=1, mode=mode, embedder=CallableEmbedder([MODEL], flaky))
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    before = money(net)
    broken["on"] = True
    for route in ROUTES.values():
        assert error_of(route(net)) == (502, "NODE_ERROR")
    assert money(net) == before
    assert net.ledger.open_locks() == []
    broken["on"] = False
    assert client.confidential_embeddings.create(input="ok", model=MODEL).attempts == 1
    client.close()


def test_a_fault_on_one_node_fails_over_to_the_other(make_net: Callable[..., Network]) -> None:
    """The proxy answers 503 and marks node 1 down; the client's one retry takes a new lock,
    which goes to node 2. Only the served request is charged."""
    net = make_net(nodes=2, prices=[1, 2])
    assert net.transport is not None
    net.transport.inject(net.node_urls[0], Fault(drop=True))
    client = net.client()
    result = client.confidential_embeddings.create(input="x", model=MODEL)
    assert (result.node_small_id, result.attempts) == (2, 2)
    assert [(r["units_charged"], r["outcome"]) for r in settlements(net)] == [
        (0, "SERVICE_UNAVAILABLE"), (expected_units("x"), "charged")]
    assert net.ledger.node(1).healthy is False  # type: ignore[union-attr]
    assert net.ledger.open_locks() == []
    # Locks go to node 2 until a probe finds node 1 back.
    assert client.nodes.lock(MODEL).node_small_id == 2
    net.transport.inject(net.node_urls[0], None)
    assert net.run(net.proxy.check_nodes()) == {1: True, 2: True}


def test_a_node_down_at_send_time_gives_the_units_back(make_net: Callable[..., Network]) -> None:
    """A request sealed for a node the proxy now knows is down: 503 at once, lock released."""
    net = make_net(nodes=2)
    lock = net.client().nodes.lock(MODEL)
    body = seal_request(PLAINTEXT, node_public_key=lock.public_key,
                        stack_small_id=lock.stack_small_id, model_name=MODEL).request.to_json()
    net.ledger.set_node_health(lock.node_small_id, False)
    before = money(net)
    assert error_of(send(net, "POST", CONF, body)) == (503, "SERVICE_UNAVAILABLE")
    assert money(net) == before
    assert net.ledger.open_locks() == []
    assert net.ledger.stack(lock.stack_small_id).locked_compute_units == 0


def test_a_node_that_is_back_is_probed_when_none_is_up(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    assert net.transport is not None
    net.transport.inject(net.node_urls[0], Fault(drop=True))
    with pytest.raises(ServiceUnavailableError):  # both attempts: the only node is down
        net.client().confidential_embeddings.create(input="x", model=MODEL)
    assert net.ledger.node(1).healthy is False  # type: ignore[union-attr]
    net.transport.inject(net.node_urls[0], None)
    # No health loop runs here: the lock itself probes the node, finds it up, and serves.
    assert net.client().confidential_embeddings.create(input="x", model=MODEL).attempts == 1


def test_client_errors_for_faults_have_the_right_class(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, node_timeout_s=0.5)
    client = net.client()
    assert net.transport is not None
    net.transport.inject(net.node_urls[0], Fault(hang=True))
    with pytest.raises(TransportTimeoutError) as timeout:
        client.embeddings.create(input="x", model=MODEL)
    assert timeout.value.status == 504
    net.transport.inject(net.node_urls[0], Fault(drop=True))
    with pytest.raises(ServiceUnavailableError) as down:
        client.embeddings.create(input="x", model=MODEL)
    assert down.value.status == 503


@pytest.mark.integration
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_unreachable_node_over_http_is_503(make_net: Callable[..., Network], route: str) -> None:
    import socket

    net = make_net(nodes=1, mode="http", node_timeout_s=2)
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    before = money(net)
    # A port nothing listens on: bind one, note it, close it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    node = net.nodes[0]
    net.proxy.register_node(1, address=dead, sui_address=node.sui_address, models=[MODEL])
    assert error_of(ROUTES[route](net)) == (503, "SERVICE_UNAVAILABLE")
    assert money(net) == before
    assert net.ledger.open_locks() == []
    net.proxy.register_node(1, address=net.node_urls[0], sui_address=node.sui_address,
                            models=[MODEL])
    assert ROUTES[route](net).status == 200
    client.close()


def test_lock_timeout_is_independent_of_node_faults(make_net: Callable[..., Network]) -> None:
    """A request whose node hangs holds its lock in flight; once answered (504) the lock is
    released, and an expired clock does not resurrect it."""
    clock = FakeClock()
    net = make_net(nodes=1, clock=clock, node_timeout_s=0.5)
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    assert net.transport is not None
    net.transport.inject(net.node_urls[0], Fault(hang=True))
    assert error_of(_confidential(net)) == (504, "GATEWAY_TIMEOUT")
    clock.advance(3600)
    assert net.ledger.prune_expired(clock()) == 0
    assert all(s.locked_compute_units == 0 for s in net.ledger.stacks())
