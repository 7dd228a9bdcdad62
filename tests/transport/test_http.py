"""The HTTP transports over real loopback sockets: what travels, and how failures surface."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from atoma_lab.errors import TransportError, TransportTimeoutError
from atoma_lab.server import ServerGroup, asgi_app
from atoma_lab.transport.base import Headers, Request, Response
from atoma_lab.transport.http import HttpChannel, HttpTransport

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


def test_channel_carries_method_path_query_headers_and_body(server: tuple[str, Mirror, ServerGroup]) -> None:
    url, mirror, _ = server
    ch = HttpChannel(url)
    try:
        resp = ch.request(Request("PUT", "/p/q?x=1&y=two", Headers({"X-Custom": "v"}), b"\x00\xffdata"))
    finally:
        ch.close()
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
                                         "Connection": "close", "X-Keep": "1"}), b"abc")
    resp = group.run(t.send(url, req))
    group.run(t.aclose())
    assert resp.status == 201 and resp.body == b"body:abc"
    got = mirror.got[-1]
    assert got.headers["x-keep"] == "1"
    assert got.headers["host"] != "evil.example"
    assert got.headers["content-length"] == "3"


def test_unreachable_peer_is_a_transport_error() -> None:
    dead = _dead_url()
    with pytest.raises(TransportError) as exc:
        asyncio.run(HttpTransport(timeout_s=2).send(dead, Request("GET", "/")))
    assert exc.value.status == 503 and not isinstance(exc.value, TransportTimeoutError)
    ch = HttpChannel(dead, timeout_s=2)
    with pytest.raises(TransportError):
        ch.request(Request("GET", "/"))
    ch.close()


def test_slow_peer_is_a_timeout(server: tuple[str, Mirror, ServerGroup]) -> None:
    url, _, group = server
    t = HttpTransport(timeout_s=5)
    with pytest.raises(TransportTimeoutError) as exc:
        group.run(t.send(url, Request("GET", "/slow"), 0.1))
    assert exc.value.status == 504
    group.run(t.aclose())
    ch = HttpChannel(url, timeout_s=0.1)
    with pytest.raises(TransportTimeoutError):
        ch.request(Request("GET", "/slow"))
    ch.close()


def test_connections_are_kept_alive_and_closed(server: tuple[str, Mirror, ServerGroup]) -> None:
    """Consecutive requests reuse one open connection (the same socket), both for the async
    transport and the sync channel; ``aclose``/``close`` drop the idle ones."""
    url, _, group = server
    t = HttpTransport()
    sockets = []
    for path in ("/a", "/b", "/c"):
        group.run(t.send(url, Request("GET", path)))
        [[(_, writer)]] = t._idle.values()
        sockets.append(writer.get_extra_info("socket").fileno())
    assert len(set(sockets)) == 1
    group.run(t.aclose())
    assert t._idle == {}
    ch = HttpChannel(url)
    socks = []
    for path in ("/a", "/b", "/c"):
        ch.request(Request("GET", path))
        [conn] = ch._idle
        socks.append(conn.sock)
    assert socks[0] is socks[1] is socks[2] is not None
    ch.close()
    assert ch._idle == []


def test_a_connection_the_server_closed_is_replaced() -> None:
    """The server restarts between two requests: the idle connection is dead, and a new one is
    opened instead of failing."""
    mirror = Mirror()
    first = ServerGroup([(asgi_app(mirror), "127.0.0.1", 0)])
    [url] = first.start()
    t = HttpTransport()
    ch = HttpChannel(url)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(t.send(url, Request("GET", "/before"))).status == 201
        assert ch.request(Request("GET", "/before")).status == 201
        first.stop()
        second = ServerGroup([(asgi_app(mirror), "127.0.0.1", int(url.rsplit(":", 1)[1]))])
        second.start()
        try:
            assert loop.run_until_complete(t.send(url, Request("GET", "/after"))).status == 201
            assert ch.request(Request("GET", "/after")).status == 201
        finally:
            loop.run_until_complete(t.aclose())
            second.stop()
    finally:
        ch.close()
        loop.close()
    assert [r.path for r in mirror.got] == ["/before", "/before", "/after", "/after"]


def test_the_sync_channel_is_safe_to_share_between_threads(
        server: tuple[str, Mirror, ServerGroup]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url, _, _ = server
    ch = HttpChannel(url)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: ch.request(Request("POST", f"/t{i}", body=str(i).encode())),
                            range(40)))
    assert [r.body for r in got] == [b"body:" + str(i).encode() for i in range(40)]
    assert 1 <= len(ch._idle) <= 8
    ch.close()


def test_keep_alive_holds_for_descriptors_above_1024(server: tuple[str, Mirror, ServerGroup]) -> None:
    """A busy process has sockets numbered above select()'s limit; the idle-connection check
    must still see them as alive (it once declared every such connection dropped)."""
    import os
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("the descriptor limit is below 1200 here")
    url, _, _ = server
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    ch = HttpChannel(url)
    try:
        ch.request(Request("GET", "/high"))
        [conn] = ch._idle
        assert conn.sock is not None and conn.sock.fileno() > 1024
        first = conn.sock
        ch.request(Request("GET", "/again"))
        assert ch._idle[0].sock is first
    finally:
        ch.close()
        for fd in spare:
            os.close(fd)
