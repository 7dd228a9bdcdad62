"""The transport seam: every implementation satisfies the one ``Transport`` protocol and delivers
a request alike; the request carries its destination and timeout."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from atoma_lab.errors import TransportError, TransportTimeoutError
from atoma_lab.server import ServerGroup, asgi_app
from atoma_lab.transport import (
    HttpTransport,
    InProcessTransport,
    InterceptTransport,
    LoopTransport,
    Transport,
)
from atoma_lab.transport.base import Headers, Request, Response
from atoma_lab.transport.loop import LoopThread


class Service:
    """Answers with what it got: method, path, query, one header and the body."""

    def __init__(self) -> None:
        self.got: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.got.append(request)
        summary = f"{request.method} {request.path} {sorted(request.query.items())} " \
                  f"{request.headers.get('x-thing')} "
        return Response(207, summary.encode() + request.body, Headers({"x-answer": "yes"}))


@dataclass
class Setup:
    transport: Transport
    address: str  # where the service is
    nowhere: str  # where nothing is
    service: Service


def _in_process() -> tuple[Setup, Callable[[], None]]:
    service = Service()
    t = InProcessTransport()
    t.register("inproc://svc", service)
    return Setup(t, "inproc://svc", "inproc://nobody", service), lambda: None


def _intercepted() -> tuple[Setup, Callable[[], None]]:
    setup, stop = _in_process()
    return Setup(InterceptTransport(setup.transport), setup.address, setup.nowhere,
                 setup.service), stop


def _other_loop() -> tuple[Setup, Callable[[], None]]:
    setup, _ = _in_process()
    thread = LoopThread("test-transport-loop")
    assert thread.loop is not None
    return Setup(LoopTransport(setup.transport, thread.loop), setup.address, setup.nowhere,
                 setup.service), thread.stop


def _http() -> tuple[Setup, Callable[[], None]]:
    service = Service()
    group = ServerGroup([(asgi_app(service), "127.0.0.1", 0)])
    [url] = group.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    return Setup(HttpTransport(timeout_s=5), url, dead, service), group.stop


IMPLEMENTATIONS = [
    pytest.param(_in_process, id="inprocess"),
    pytest.param(_intercepted, id="intercept"),
    pytest.param(_other_loop, id="loop"),
    pytest.param(_http, id="http", marks=pytest.mark.integration),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    built, stop = request.param()
    yield built
    stop()


def test_each_implementation_is_a_transport(setup: Setup) -> None:
    t = setup.transport
    assert isinstance(t, Transport)
    assert inspect.iscoroutinefunction(type(t).handle)
    assert inspect.iscoroutinefunction(type(t).aclose)
    assert list(inspect.signature(type(t).handle).parameters) == ["self", "request"]


def test_objects_without_the_seam_are_not_transports() -> None:
    class SendOnly:
        async def send(self, address: str, request: Request) -> Response:
            return Response(200)

    assert not isinstance(SendOnly(), Transport)
    assert not isinstance(object(), Transport)


def test_each_implementation_delivers_alike(setup: Setup) -> None:
    async def exchange() -> Response:
        return await setup.transport.handle(
            Request("POST", "/p?q=1&r=two", Headers({"X-Thing": "v"}), b"\x00body",
                    address=setup.address, timeout_s=5))

    resp = asyncio.run(exchange())
    assert resp.status == 207
    assert resp.body == b"POST /p [('q', '1'), ('r', 'two')] v \x00body"
    assert resp.headers["x-answer"] == "yes"
    [got] = setup.service.got
    assert got.body == b"\x00body" and got.headers["x-thing"] == "v"


def test_nothing_at_the_address_is_a_transport_error(setup: Setup) -> None:
    with pytest.raises(TransportError) as exc:
        asyncio.run(setup.transport.handle(Request("GET", "/", address=setup.nowhere,
                                                   timeout_s=5)))
    assert exc.value.status == 503 and not isinstance(exc.value, TransportTimeoutError)
    assert setup.service.got == []


def test_a_transport_can_be_used_after_aclose(setup: Setup) -> None:
    async def twice() -> list[int]:
        statuses = []
        for _ in range(2):
            resp = await setup.transport.handle(Request("GET", "/", address=setup.address))
            statuses.append(resp.status)
            await setup.transport.aclose()
        return statuses

    assert asyncio.run(twice()) == [207, 207]


def test_the_request_carries_destination_and_timeout() -> None:
    plain = Request("GET", "/v1/models?x=1", Headers({"a": "b"}), b"")
    assert (plain.address, plain.timeout_s, plain.query) == ("", None, {"x": "1"})
    sent = Request("POST", "/v1/nodes/lock", Headers(), b"{}", {"y": "2"},
                   address="http://127.0.0.1:8080", timeout_s=2.5)
    assert (sent.address, sent.timeout_s, sent.query) == ("http://127.0.0.1:8080", 2.5, {"y": "2"})


def test_reprs_show_sizes_never_bodies() -> None:
    secret = b'{"input": "my salary is 4711"}'
    req = Request("POST", "/v1/embeddings", Headers(), secret, address="inproc://proxy")
    resp = Response(200, secret)
    assert repr(req) == "<Request POST /v1/embeddings to inproc://proxy, 30 bytes>"
    assert repr(resp) == "<Response 200, 30 bytes>"
    spy = InterceptTransport(InProcessTransport())
    spy.seen.append((req, resp))
    assert b"4711" not in repr(spy).encode()
