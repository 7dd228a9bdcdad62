"""The HTTP transport over real loopback sockets: what travels, how failures surface, and its
connection pools (per event loop)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from atoma_lab.errors import PeerBusyError, TransportError, TransportTimeoutError
from atoma_lab.server import ServerGroup, asgi_app
from atoma_lab.transport.base import Headers, Request, Response
from atoma_lab.transport.http import HttpTransport

pytestmark = pytest.mark.integration


class Mirror:
    """Answers with what it received, as JSON-ish text; ``/slow`` sleeps first."""

    def __init__(self) -> None:
        self.got: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.got.append(request)
        if request.path == "/slow":
            await asyncio.sleep(1.0)
        return Response(201, b"body:" + request.body, Headers({"x-path": request.path}))


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Mirror, ServerGroup]]:
    mirror = Mirror()
    group = ServerGroup([(asgi_app(mirror), "127.0.0.1", 0)])
    [url] = group.start()
    yield url, mirror, group
    group.stop()


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _idle_sockets(t: HttpTransport, loop: asyncio.AbstractEventLoop) -> list[int]:
    """The descriptors of ``t``'s idle connections in ``loop``'s pool."""
    pool = t._pools[loop]
    return [w.get_extra_info("socket").fileno() for lane in pool.lanes.values()
            for _, w in lane.idle]


def test_carries_method_path_query_headers_and_body(server: tuple[str, Mirror, ServerGroup]) -> None:
    url, mirror, group = server
    t = HttpTransport(timeout_s=5)
    resp = group.run(t.handle(Request("PUT", "/p/q?x=1&y=two", Headers({"X-Custom": "v"}),
                                      b"\x00\xffdata", address=url)))
    group.run(t.aclose())
    assert resp.status == 201
    assert resp.body == b"body:\x00\xffdata"
    assert resp.headers["x-path"] == "/p/q"
    got = mirror.got[-1]
    assert (got.method, got.path, got.query) == ("PUT", "/p/q", {"x": "1", "y": "two"})
    assert got.headers["x-custom"] == "v"


def test_hop_by_hop_headers_are_not_forwarded(server: tuple[str, Mirror, ServerGroup]) -> None:
    url, mirror, group = server
    t = HttpTransport(timeout_s=5)
    req = Request("POST", "/h", Headers({"Host": "evil.example", "Content-Length": "999",
                                         "Connection": "close", "X-Keep": "1"}), b"abc",
                  address=url)
    resp = group.run(t.handle(req))
    group.run(t.aclose())
    assert resp.status == 201 and resp.body == b"body:abc"
    got = mirror.got[-1]
    assert got.headers["x-keep"] == "1"
    assert got.headers["host"] != "evil.example"
    assert got.headers["content-length"] == "3"


def test_a_request_without_an_address_goes_to_the_base_url(
        server: tuple[str, Mirror, ServerGroup]) -> None:
    url, mirror, group = server
    t = HttpTransport(url)
    assert group.run(t.handle(Request("GET", "/default"))).status == 201
    assert mirror.got[-1].path == "/default"
    with pytest.raises(TransportError, match="no address"):
        group.run(HttpTransport().handle(Request("GET", "/")))
    with pytest.raises(TransportError, match="not an http"):
        group.run(t.handle(Request("GET", "/", address="inproc://proxy")))
    with pytest.raises(ValueError, match="not an http"):
        HttpTransport("ftp://127.0.0.1:21")
    group.run(t.aclose())


def test_unreachable_peer_is_a_transport_error() -> None:
    dead = _dead_url()
    with pytest.raises(TransportError) as exc:
        asyncio.run(HttpTransport(timeout_s=2).handle(Request("GET", "/", address=dead)))
    assert exc.value.status == 503 and not isinstance(exc.value, TransportTimeoutError)


def test_slow_peer_is_a_timeout(server: tuple[str, Mirror, ServerGroup]) -> None:
    """The request's own timeout bounds the exchange; without one, the transport's."""
    url, _, group = server
    t = HttpTransport(timeout_s=5)
    with pytest.raises(TransportTimeoutError) as exc:
        group.run(t.handle(Request("GET", "/slow", address=url, timeout_s=0.1)))
    assert exc.value.status == 504
    group.run(t.aclose())
    short = HttpTransport(url, timeout_s=0.1)
    with pytest.raises(TransportTimeoutError):
        group.run(short.handle(Request("GET", "/slow")))
    group.run(short.aclose())


def test_connections_are_kept_alive_and_closed(server: tuple[str, Mirror, ServerGroup]) -> None:
    """Consecutive requests reuse one open connection (the same socket); ``aclose`` drops the
    idle ones."""
    url, _, group = server
    assert group.loop is not None
    t = HttpTransport()
    sockets = []
    for path in ("/a", "/b", "/c"):
        group.run(t.handle(Request("GET", path, address=url)))
        [fd] = _idle_sockets(t, group.loop)
        sockets.append(fd)
    assert len(set(sockets)) == 1
    group.run(t.aclose())
    assert t._pools == {}


def test_each_event_loop_has_its_own_pool(server: tuple[str, Mirror, ServerGroup]) -> None:
    """One transport serves the servers' loop and two loops of ``asyncio.run`` in turn (a
    connection belongs to the loop that opened it); ``aclose`` from one loop closes the idle
    connections of another that still runs, and a loop closed meanwhile is forgotten."""
    url, mirror, group = server
    assert group.loop is not None
    t = HttpTransport(url)

    async def twice() -> list[int]:
        for path in ("/x1", "/x2"):
            assert (await t.handle(Request("GET", path))).status == 201
        return _idle_sockets(t, asyncio.get_running_loop())

    first = asyncio.run(twice())
    second = asyncio.run(twice())
    assert len(first) == len(second) == 1
    assert [r.path for r in mirror.got[-4:]] == ["/x1", "/x2", "/x1", "/x2"]
    assert group.run(t.handle(Request("GET", "/x3"))).status == 201
    assert list(t._pools) == [group.loop]  # the closed loops' pools are gone
    [[(_, writer)]] = [lane.idle for lane in t._pools[group.loop].lanes.values()]
    asyncio.run(t.aclose())  # from another loop: the servers' loop closes its own connection
    group.run(asyncio.sleep(0))  # runs after the close it was handed
    assert t._pools == {}
    assert writer.is_closing()


def test_one_transport_from_many_threads(server: tuple[str, Mirror, ServerGroup]) -> None:
    """Threads each running their own loop share one transport; every answer is its own."""
    from concurrent.futures import ThreadPoolExecutor

    url, _, _ = server
    t = HttpTransport(url)

    def one(i: int) -> bytes:
        return asyncio.run(t.handle(Request("POST", f"/t{i}", body=str(i).encode()))).body

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(40)))
    assert got == [b"body:" + str(i).encode() for i in range(40)]


def test_a_connection_the_server_closed_is_replaced() -> None:
    """The server restarts between two requests: the idle connection is dead, and a new one is
    opened instead of failing."""
    mirror = Mirror()
    first = ServerGroup([(asgi_app(mirror), "127.0.0.1", 0)])
    [url] = first.start()
    t = HttpTransport(url)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(t.handle(Request("GET", "/before"))).status == 201
        first.stop()
        second = ServerGroup([(asgi_app(mirror), "127.0.0.1", int(url.rsplit(":", 1)[1]))])
        second.start()
        try:
            assert loop.run_until_complete(t.handle(Request("GET", "/after"))).status == 201
        finally:
            loop.run_until_complete(t.aclose())
            second.stop()
    finally:
        loop.close()
    assert [r.path for r in mirror.got] == ["/before", "/after"]


def test_keep_alive_holds_for_descriptors_above_1024(server: tuple[str, Mirror, ServerGroup]) -> None:
    """A busy process has sockets numbered above select()'s limit; an idle connection there must
    still be reused (an idle check through select() once declared every such one dropped)."""
    import os
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("the descriptor limit is below 1200 here")
    url, _, group = server
    assert group.loop is not None
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    t = HttpTransport(url)
    try:
        group.run(t.handle(Request("GET", "/high")))
        [first] = _idle_sockets(t, group.loop)
        assert first > 1024
        group.run(t.handle(Request("GET", "/again")))
        assert _idle_sockets(t, group.loop) == [first]
    finally:
        group.run(t.aclose())
        for fd in spare:
            os.close(fd)


def test_each_peer_has_a_bounded_queue_and_lanes_of_its_own(
        server: tuple[str, Mirror, ServerGroup]) -> None:
    """A peer that never answers: 2 requests go out, 3 wait, the next is refused at once
    (``PeerBusyError``, 503); another peer is served meanwhile, and a request on another lane
    to the silent peer is not refused (it waits its own time)."""
    url, _, group = server
    t = HttpTransport(timeout_s=5, max_connections_per_peer=2, max_queued_per_peer=3)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async def scenario() -> tuple[list[bool], list[object]]:
        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        dead = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        try:
            stuck = [asyncio.ensure_future(t.handle(Request("GET", "/", address=dead,
                                                            timeout_s=1.0))) for _ in range(5)]
            await asyncio.sleep(0.05)
            with pytest.raises(PeerBusyError) as busy:
                await t.handle(Request("GET", "/", address=dead))
            assert busy.value.status == 503 and busy.value.code == "SERVICE_UNAVAILABLE"
            assert (await t.handle(Request("GET", "/other-peer", address=url))).status == 201
            with pytest.raises(TransportTimeoutError):
                await t.handle(Request("GET", "/", address=dead, lane="probe", timeout_s=0.1))
            waiting = [not s.done() for s in stuck]
            return waiting, await asyncio.gather(*stuck, return_exceptions=True)
        finally:
            srv.close()
            await t.aclose()

    waiting, results = group.run(scenario())
    assert waiting == [True] * 5
    assert all(isinstance(r, TransportTimeoutError) for r in results)


def test_the_transports_own_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        HttpTransport(max_connections_per_peer=0)
    with pytest.raises(ValueError):
        HttpTransport(max_response_bytes=0)
    with pytest.raises(ValueError):
        HttpTransport(max_queued_per_peer=-1)
