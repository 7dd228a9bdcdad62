"""The in-process transport: routing, copies like a wire, capture, and every kind of fault."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from atoma_lab.errors import (
    AtomaLabError,
    ResponseTooLargeError,
    TransportError,
    TransportTimeoutError,
)
from atoma_lab.transport.base import Headers, Request, Response
from atoma_lab.transport.inprocess import CapturedMessage, Fault, InProcessTransport

ADDR = "inproc://echo"
T = TypeVar("T")


class Echo:
    """A service that records what it got and answers with the body reversed."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.got: list[Request] = []
        self.bodies: list[bytes] = []
        self.finished = 0

    async def __call__(self, request: Request) -> Response:
        self.got.append(request)
        self.bodies.append(request.body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.finished += 1
        request.body = b"mutated by the service"
        return Response(200, b"echo:" + bytes(reversed(request.body)), Headers({"x-served": "1"}))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make(delay_s: float = 0.0) -> tuple[InProcessTransport, Echo]:
    t = InProcessTransport()
    echo = Echo(delay_s)
    t.register(ADDR, echo)
    return t, echo


def test_routes_and_captures() -> None:
    t, echo = make()
    req = Request("POST", "/x?a=1", Headers({"X-Thing": "v"}), b"abc", address=ADDR)
    resp = run(t.handle(req))
    assert resp.status == 200 and resp.headers["x-served"] == "1"
    assert echo.got[0].query == {"a": "1"} and echo.got[0].headers["x-thing"] == "v"
    [m] = t.captured
    assert isinstance(m, CapturedMessage)
    assert (m.address, m.request.path, m.error) == (ADDR, "/x", None)
    assert m.response is not None and m.response.status == 200
    assert t.messages_to(ADDR) == [m] and t.messages_to("inproc://other") == []


def test_the_receiver_gets_a_copy() -> None:
    t, echo = make()
    req = Request("POST", "/x", Headers({"a": "1"}), b"abc", address=ADDR)
    run(t.handle(req))
    assert echo.got[0] is not req
    assert req.body == b"abc"  # the service changed its copy, not the sender's
    echo.got[0].headers["a"] = "changed"
    assert req.headers["a"] == "1"


def test_unknown_address_is_a_transport_error() -> None:
    t, _ = make()
    with pytest.raises(TransportError) as exc:
        run(t.handle(Request("GET", "/", address="inproc://nobody")))
    assert exc.value.status == 503
    t.unregister(ADDR)
    with pytest.raises(TransportError):
        run(t.handle(Request("GET", "/", address=ADDR)))


def test_capture_can_be_switched_off() -> None:
    t, _ = make()
    t.capture = False
    run(t.handle(Request("GET", "/", address=ADDR)))
    assert t.captured == []


def test_drop() -> None:
    t, echo = make()
    t.inject(ADDR, Fault(drop=True))
    with pytest.raises(TransportError) as exc:
        run(t.handle(Request("GET", "/", address=ADDR)))
    assert not isinstance(exc.value, TransportTimeoutError)
    assert echo.got == []  # never delivered
    assert t.captured[-1].error == "dropped" and t.captured[-1].response is None
    t.inject(ADDR, None)
    assert run(t.handle(Request("GET", "/", address=ADDR))).status == 200


def test_hang_waits_for_the_timeout() -> None:
    t, echo = make()
    t.inject(ADDR, Fault(hang=True))
    t0 = time.monotonic()
    with pytest.raises(TransportTimeoutError) as exc:
        run(t.handle(Request("GET", "/", address=ADDR, timeout_s=0.05)))
    assert time.monotonic() - t0 >= 0.04
    assert exc.value.status == 504
    assert echo.got == []
    assert t.captured[-1].error == "hung"


def test_a_slow_service_or_latency_past_the_timeout_is_a_504() -> None:
    """``request.timeout_s`` bounds the whole delivery, as over HTTP: a slow service is cut off."""
    t, echo = make(delay_s=5.0)
    with pytest.raises(TransportTimeoutError) as exc:
        run(t.handle(Request("GET", "/", address=ADDR, timeout_s=0.05)))
    assert exc.value.status == 504 and len(echo.got) == 1 and echo.finished == 0
    t, echo = make()
    t.inject(ADDR, Fault(latency_ms=5000))
    with pytest.raises(TransportTimeoutError):
        run(t.handle(Request("GET", "/", address=ADDR, timeout_s=0.05)))
    assert echo.got == []


def test_an_answer_over_max_response_bytes_is_a_502() -> None:
    t, _ = make()
    size = len(run(t.handle(Request("POST", "/", address=ADDR))).body)
    resp = run(t.handle(Request("POST", "/", address=ADDR, max_response_bytes=size)))
    assert len(resp.body) == size
    with pytest.raises(ResponseTooLargeError) as exc:
        run(t.handle(Request("POST", "/", address=ADDR, max_response_bytes=size - 1)))
    assert exc.value.status == 502
    # A tampered answer is measured as it would arrive.
    t.inject(ADDR, Fault(tamper_response=lambda r: Response(200, b"x" * 100)))
    with pytest.raises(ResponseTooLargeError):
        run(t.handle(Request("POST", "/", body=b"", address=ADDR, max_response_bytes=50)))


def test_latency_delays_delivery() -> None:
    t, _ = make()
    t.inject(ADDR, Fault(latency_ms=50))
    t0 = time.monotonic()
    run(t.handle(Request("GET", "/", address=ADDR)))
    assert time.monotonic() - t0 >= 0.045


def test_fail_after_starts_the_work_then_breaks_the_connection() -> None:
    t, echo = make(delay_s=0.5)
    t.inject(ADDR, Fault(fail_after_ms=20))
    with pytest.raises(TransportError):
        run(t.handle(Request("POST", "/", body=b"x", address=ADDR)))
    assert len(echo.got) == 1  # the service saw the request
    assert echo.finished == 0  # and was cut off
    assert t.captured[-1].error == "crashed"


def test_tamper_request_and_response() -> None:
    t, echo = make()

    def req_hook(r: Request) -> Request:
        return Request(r.method, r.path, r.headers, b"tampered")

    def resp_hook(r: Response) -> Response:
        return Response(299, r.body + b"!", r.headers)

    t.inject(ADDR, Fault(tamper_request=req_hook, tamper_response=resp_hook))
    resp = run(t.handle(Request("POST", "/", body=b"orig", address=ADDR)))
    assert echo.bodies == [b"tampered"]
    assert resp.status == 299 and resp.body.endswith(b"!")
    # The capture shows what the service received, as a copy it cannot change afterwards.
    captured = t.captured[-1].request
    assert captured is not echo.got[0]
    assert (captured.body, dict(captured.headers)) == (echo.got[0].body, dict(echo.got[0].headers))
    echo.got[0].headers["x-changed-later"] = "1"
    assert "x-changed-later" not in captured.headers


def test_a_service_bug_is_a_json_500_as_over_http() -> None:
    t = InProcessTransport()

    async def broken(request: Request) -> Response:
        raise RuntimeError("bug")

    t.register(ADDR, broken)
    resp = run(t.handle(Request("GET", "/", address=ADDR)))
    assert resp.status == 500
    assert resp.error_code() == AtomaLabError.code


def test_the_answer_is_a_copy() -> None:
    t = InProcessTransport()
    shared = Response(200, b"same", Headers({"a": "1"}))

    async def service(request: Request) -> Response:
        return shared

    t.register(ADDR, service)
    resp = run(t.handle(Request("GET", "/", address=ADDR)))
    assert resp is not shared
    resp.headers["a"] = "2"
    assert shared.headers["a"] == "1"
