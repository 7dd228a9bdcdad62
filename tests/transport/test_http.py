"""The HTTP transports over real loopback sockets: what travels, and how failures surface."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from atoma_lab.errors import TransportError, TransportTimeoutError
from atoma_lab.server import ServerGroup, asgi_app
from atoma_lab.services.http import Headers, Request, Response
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


def test_the_async_client_is_reused_and_closed(server: tuple[str, Mirror, ServerGroup]) -> None:
    url, _, group = server
    t = HttpTransport()
    group.run(t.send(url, Request("GET", "/a")))
    first = t._client
    group.run(t.send(url, Request("GET", "/b")))
    assert t._client is first is not None
    group.run(t.aclose())
    assert t._client is None
