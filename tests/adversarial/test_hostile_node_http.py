"""A hostile node at the HTTP level (issue 16, items 2 and 3): a node that answers with an
endless chunked body, a huge ``Content-Length``, a flood of headers, a trickle, or not at all.
Each answer is bounded while it is read (size and time), the connection dropped, the lock
released with nothing charged; a node that never answers holds up only the requests sent to it
(its queue is bounded and refuses at once when full), and health probes go on on connections of
their own. Real sockets on 127.0.0.1: the node's front is a raw asyncio server
(``hostile.HostileFront``) that answers the proxy's probes with the real node's attestation."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fakes import MODEL, error_of, fake_embedder, headers, network, send, settlements

from atoma_lab.errors import ResponseTooLargeError, TransportTimeoutError
from atoma_lab.lab.network import Network
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.atoma.messages import NodesCreateLockResponse
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.services.bounds import STACK_LOOKUP_MAX_BYTES, plain_response_limit
from atoma_lab.services.node import ProxyStackDirectory
from atoma_lab.transport.base import Request, Response
from atoma_lab.transport.http import HttpTransport

from .hostile import (
    MAX_SENT,
    Behaviour,
    HostileFront,
    endless_chunked,
    finite,
    hang,
    header_flood,
    huge_content_length,
    trickle,
)

pytestmark = pytest.mark.integration

OTHER = "fake/hostile-node-model"  # served by node 2 only, so that its traffic goes there
NODE_TIMEOUT_S = 2.0
MEMORY_BOUND = 8 * 1024 * 1024  # bytes the whole process may add while one answer is refused


@pytest.fixture
def net() -> Iterator[Network]:
    net = network(nodes=2, mode="http", embedder=[fake_embedder([MODEL]), fake_embedder([OTHER])],
                  node_timeout_s=NODE_TIMEOUT_S)
    yield net
    net.close()


def _behind(net: Network, behaviour: Behaviour) -> HostileFront:
    """Put a hostile front before node 2: the proxy reaches node 2 there from now on."""
    front = HostileFront(net.nodes[1].handle, behaviour)
    record = net.ledger.node(2)
    assert record is not None
    net.ledger.upsert_node(2, address=front.url, sui_address=record.sui_address,
                           models=record.models, price_per_one_million_compute_units=1)
    return front


def _send(net: Network, path: str, body: bytes) -> Response:
    """A client's request to the proxy (on a transport of its own: the proxy's waits only
    ``NODE_TIMEOUT_S``)."""
    client = HttpTransport(net.base_url, timeout_s=60)
    return asyncio.run(client.handle(Request("POST", path, headers(net.api_key), body)))


def _plain(net: Network, model: str = OTHER) -> Response:
    return _send(net, "/v1/embeddings", orjson.dumps({"input": ["a b c"], "model": model}))


def _confidential(net: Network, model: str = OTHER) -> Response:
    lock = NodesCreateLockResponse.from_json(
        send(net, "POST", "/v1/nodes/lock", {"model": model}).body)
    plaintext = CreateEmbeddingRequest(input=["a b c"], model=model).to_json()
    sealed = seal_request(plaintext, node_public_key=lock.public_key,
                          stack_small_id=lock.stack_small_id, model_name=model)
    return _send(net, "/v1/confidential/embeddings", sealed.request.to_json())


ROUTES = {"plain": _plain, "confidential": _confidential}


def _wait_for(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def _refused_with_nothing_charged(net: Network, resp: Response, n_settled: int,
                                  expected: tuple[int, str]) -> None:
    assert error_of(resp) == expected, resp.body
    new = settlements(net)[n_settled:]
    assert [(r["units_charged"], r["outcome"]) for r in new] == [(0, expected[1])]
    assert all(lk.state == "open" for lk in net.ledger.open_locks())  # nothing left in flight


def _still_serving(net: Network) -> None:
    client = net.client()
    try:
        assert client.confidential_embeddings.create(input=["still here"],
                                                     model=MODEL).usage.total_tokens == 4
    finally:
        client.close()


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("behaviour", [endless_chunked, huge_content_length, header_flood],
                         ids=["endless chunked body", "huge Content-Length", "endless headers"])
def test_an_oversized_answer_is_dropped_unread(net: Network, route: str,
                                               behaviour: Behaviour) -> None:
    """Without the bound, the proxy would read the front's 64 MiB into memory; with it, the
    process adds no more than a few MiB while the answer is refused."""
    front = _behind(net, behaviour)
    try:
        n_settled = len(settlements(net))
        tracemalloc.start()
        try:
            resp = ROUTES[route](net)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        _refused_with_nothing_charged(net, resp, n_settled, (502, "BAD_PEER_RESPONSE"))
        assert "127.0.0.1" not in orjson.loads(resp.body)["error"]["message"]  # in the proxy's words
        assert peak < MEMORY_BOUND, peak
        [exchange] = front.exchanges
        _wait_for(lambda: exchange.dropped, "the proxy dropping the connection")
        assert exchange.sent < MAX_SENT  # it stopped reading long before the front stopped sending
        record = net.ledger.node(2)
        assert record is not None and record.healthy  # a bad answer, not a node out of reach
        _still_serving(net)
    finally:
        front.close()


def test_an_answer_at_its_bound_passes_and_one_byte_more_does_not() -> None:
    """The bound the proxy derives for a plain request, checked byte for byte against a peer
    whose answer has exactly that size, then one byte more."""
    request = CreateEmbeddingRequest(input=["a b c"], model=OTHER)
    limit = plain_response_limit(request, request_bytes=len(request.to_json()))
    for size, ok in ((limit, True), (limit + 1, False)):
        front = HostileFront(None, finite(size))
        t = HttpTransport(timeout_s=30)
        try:
            req = Request("POST", "/v1/embeddings", body=b"{}", address=front.url,
                          max_response_bytes=limit)
            if ok:
                assert len(asyncio.run(t.handle(req)).body) == limit
            else:
                with pytest.raises(ResponseTooLargeError):
                    asyncio.run(t.handle(req))
        finally:
            front.close()


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_trickled_answer_ends_at_the_time_bound(net: Network, route: str) -> None:
    front = _behind(net, trickle)
    try:
        n_settled = len(settlements(net))
        resp = ROUTES[route](net)
        _refused_with_nothing_charged(net, resp, n_settled, (504, "GATEWAY_TIMEOUT"))
        [exchange] = front.exchanges
        _wait_for(lambda: exchange.dropped, "the proxy dropping the connection")
        assert exchange.sent < 1000  # a byte each 50 ms for the 2 s the proxy waits
        record = net.ledger.node(2)
        assert record is not None and not record.healthy  # out of rotation until a probe
        _still_serving(net)
    finally:
        front.close()


def test_a_hung_node_holds_up_only_its_own_requests(net: Network) -> None:
    """100 requests to a node that never answers: 8 go out (its connection limit here), 8 wait
    (its queue), the other 84 are refused at once with 503. Meanwhile the healthy node serves a
    request and both nodes answer their health probes (on connections of their own), while the
    16 are still waiting; then they end at the node timeout. Every lock is released, nothing
    charged."""
    front = _behind(net, hang)
    proxy = net.proxy
    old = proxy.transport
    net.run(old.aclose())
    proxy.transport = HttpTransport(timeout_s=NODE_TIMEOUT_S, max_connections_per_peer=8,
                                    max_queued_per_peer=8)
    token = headers(net.api_key)
    n_settled = len(settlements(net))

    def plain(model: str) -> Request:
        return Request("POST", "/v1/embeddings", token.copy(),
                       orjson.dumps({"input": ["a b"], "model": model}))

    async def scenario() -> dict[str, Any]:
        hung = [asyncio.ensure_future(proxy.handle(plain(OTHER))) for _ in range(100)]
        while sum(t.done() for t in hung) < 84 or len(front.exchanges) < 8:
            await asyncio.sleep(0.01)  # the refusals are immediate; the 8 reach the front
        healthy = await proxy.handle(plain(MODEL))
        probes = await proxy.check_nodes()
        waiting = sum(not t.done() for t in hung)
        answers = await asyncio.gather(*hung)
        return {"healthy": healthy, "probes": probes, "waiting": waiting, "answers": answers}

    try:
        out = net.run(scenario(), timeout_s=60)
        assert out["healthy"].status == 200
        assert out["probes"] == {1: True, 2: True}
        assert out["waiting"] == 16
        codes = [error_of(r) for r in out["answers"]]
        assert codes.count((503, "SERVICE_UNAVAILABLE")) == 84
        assert codes.count((504, "GATEWAY_TIMEOUT")) == 16
        assert 8 <= len(front.exchanges) <= 16
        new = settlements(net)[n_settled:]
        failed = [r for r in new if r["outcome"] != "charged"]
        assert len(new) == 101  # and the healthy node's one request, charged
        assert len(failed) == 100 and all(r["units_charged"] == 0 for r in failed)
        assert all(lk.state == "open" for lk in net.ledger.open_locks())
        _wait_for(lambda: all(ex.dropped for ex in front.exchanges), "the proxy closing them")
    finally:
        net.run(proxy.transport.aclose())
        proxy.transport = old
        front.close()


@pytest.mark.parametrize("behaviour,error", [
    (endless_chunked, ResponseTooLargeError), (finite(STACK_LOOKUP_MAX_BYTES + 1),
                                               ResponseTooLargeError),
    (trickle, TransportTimeoutError)], ids=["endless", "one byte over", "trickle"])
def test_a_node_reads_the_proxys_stack_answer_within_bounds(behaviour: Behaviour,
                                                            error: type[Exception]) -> None:
    """The same bounds for a node reading a (hostile) proxy's ``GET /v1/stacks``."""
    front = HostileFront(None, behaviour)  # no service: GETs get the hostile answer too
    # The time bound ends the trickle; the size bounds must end the others well before it, even
    # on a loaded machine (with 1 s, "one byte over" once timed out first under load).
    timeout_s = 1.0 if error is TransportTimeoutError else 20.0
    directory = ProxyStackDirectory(HttpTransport(), front.url, 1, timeout_s=timeout_s)
    try:
        with pytest.raises(error):
            asyncio.run(directory(7))
        [exchange] = front.exchanges
        _wait_for(lambda: exchange.dropped, "the node dropping the connection")
    finally:
        front.close()
