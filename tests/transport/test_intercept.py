"""The intercepting transport: hooks that replace (or keep) requests and responses, what it
records, and what it passes through."""

from __future__ import annotations

import asyncio

import pytest

from atoma_lab.errors import TransportError
from atoma_lab.transport.base import Headers, Request, Response
from atoma_lab.transport.inprocess import Fault, InProcessTransport
from atoma_lab.transport.intercept import InterceptTransport

ADDR = "inproc://svc"


class Counter:
    """Answers with the body it received, upper-cased."""

    def __init__(self) -> None:
        self.got: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.got.append(request)
        return Response(200, request.body.upper(), Headers({"x-n": str(len(self.got))}))


def make() -> tuple[InProcessTransport, Counter]:
    inner = InProcessTransport()
    service = Counter()
    inner.register(ADDR, service)
    return inner, service


def test_without_hooks_it_passes_through_and_records() -> None:
    inner, service = make()
    spy = InterceptTransport(inner)
    for body in (b"one", b"two"):
        resp = asyncio.run(spy.handle(Request("POST", f"/{body.decode()}", body=body,
                                              address=ADDR)))
        assert resp.body == body.upper()
    assert spy.paths() == ["/one", "/two"]
    assert [(r.body, resp.body) for r, resp in spy.seen] == [(b"one", b"ONE"), (b"two", b"TWO")]
    assert [r.body for r in service.got] == [b"one", b"two"]


def test_before_replaces_the_request_and_none_keeps_it() -> None:
    inner, service = make()

    def before(request: Request) -> Request | None:
        if request.path == "/swap":
            return Request(request.method, request.path, request.headers, b"replaced",
                           address=request.address)
        return None

    spy = InterceptTransport(inner, before=before)
    asyncio.run(spy.handle(Request("POST", "/swap", body=b"original", address=ADDR)))
    asyncio.run(spy.handle(Request("POST", "/keep", body=b"original", address=ADDR)))
    assert [r.body for r in service.got] == [b"replaced", b"original"]
    assert [r.body for r, _ in spy.seen] == [b"replaced", b"original"]  # as delivered


def test_after_replaces_the_response_and_sees_the_delivered_request() -> None:
    inner, _ = make()
    saw: list[bytes] = []

    def before(request: Request) -> Request:
        return Request(request.method, request.path, request.headers, b"rewritten",
                       address=request.address)

    def after(request: Request, response: Response) -> Response | None:
        saw.append(request.body)
        return Response(418, b"forged") if request.path == "/forge" else None

    spy = InterceptTransport(inner, before=before, after=after)
    forged = asyncio.run(spy.handle(Request("POST", "/forge", body=b"x", address=ADDR)))
    kept = asyncio.run(spy.handle(Request("POST", "/keep", body=b"x", address=ADDR)))
    assert (forged.status, forged.body) == (418, b"forged")
    assert (kept.status, kept.body) == (200, b"REWRITTEN")
    assert saw == [b"rewritten", b"rewritten"]
    assert [resp.status for _, resp in spy.seen] == [418, 200]  # as returned


def test_an_error_of_the_inner_transport_passes_through_unrecorded() -> None:
    inner, service = make()
    inner.inject(ADDR, Fault(drop=True))
    called: list[str] = []
    spy = InterceptTransport(inner, after=lambda req, resp: called.append(req.path) or None)
    with pytest.raises(TransportError):
        asyncio.run(spy.handle(Request("GET", "/lost", address=ADDR)))
    assert spy.seen == [] and called == [] and service.got == []


def test_a_hook_error_reaches_the_caller() -> None:
    inner, service = make()

    def before(request: Request) -> Request:
        raise RuntimeError("the attacker's bug")

    spy = InterceptTransport(inner, before=before)
    with pytest.raises(RuntimeError, match="attacker's bug"):
        asyncio.run(spy.handle(Request("GET", "/", address=ADDR)))
    assert service.got == [] and spy.seen == []


def test_aclose_closes_the_inner_transport() -> None:
    closed: list[bool] = []

    class Inner(InProcessTransport):
        async def aclose(self) -> None:
            closed.append(True)

    asyncio.run(InterceptTransport(InterceptTransport(Inner())).aclose())
    assert closed == [True]
