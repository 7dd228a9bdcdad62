"""The Ray transport: messages as checked tuples; actor calls with Ray's failures mapped to ours
(gone: 503, silent: 504, a bug inside: a JSON 500); the relay through which actors reach the
driver, bounded in what waits."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from atoma_lab.errors import InvalidFieldError, TransportError, TransportTimeoutError
from atoma_lab.transport.base import MAX_BODY_BYTES, Headers, Request, Response
from atoma_lab.transport.inprocess import InProcessTransport
from atoma_lab.transport.ray import (
    MAX_HEADERS,
    RayTransport,
    RelayTransport,
    call_actor,
    request_from_message,
    request_to_message,
    response_from_reply,
    response_to_reply,
    serve_relay,
    start_relay,
)

# ------------------------------------------------------------------- messages (no Ray needed)


def test_a_request_crosses_as_a_tuple_and_back() -> None:
    req = Request("POST", "/v1/x?a=1", Headers({"X-Signature": "s", "content-type": "j"}),
                  b"\x00body", address="actor://node-1", timeout_s=2.5)
    message = request_to_message(req)
    assert message == ("POST", "/v1/x", [("x-signature", "s"), ("content-type", "j")],
                       b"\x00body", {"a": "1"}, 2.5)
    back = request_from_message(message, address="here")
    assert (back.method, back.path, back.body, back.query, back.address, back.timeout_s) == \
        ("POST", "/v1/x", b"\x00body", {"a": "1"}, "here", 2.5)
    assert back.headers["X-SIGNATURE"] == "s"
    resp = Response(409, b'{"error":1}', Headers({"server-timing": "a;dur=1"}))
    again = response_from_reply(response_to_reply(resp), peer="p")
    assert (again.status, again.body, dict(again.headers)) == (409, b'{"error":1}',
                                                               {"server-timing": "a;dur=1"})


GOOD = ("GET", "/health", [], b"", {}, None)


@pytest.mark.parametrize("message", [
    None, [], ("GET", "/health"), ("GET", "/health", [], b"", {}, None, "extra"),
    ("", "/h", [], b"", {}, None), ("G E T", "/h", [], b"", {}, None), (1, "/h", [], b"", {}, None),
    ("GET", "h", [], b"", {}, None), ("GET", "/h?x=1", [], b"", {}, None),
    ("GET", "/" + "a" * 9000, [], b"", {}, None),
    ("GET", "/h", {"a": "b"}, b"", {}, None), ("GET", "/h", [("a",)], b"", {}, None),
    ("GET", "/h", [("a", 1)], b"", {}, None), ("GET", "/h", [("a", "b")] * (MAX_HEADERS + 1), b"", {}, None),
    ("GET", "/h", [("a", "b" * 70_000)], b"", {}, None),
    ("GET", "/h", [], "text", {}, None), ("GET", "/h", [], bytearray(b"x"), {}, None),
    ("GET", "/h", [], b"", {"a": 1}, None), ("GET", "/h", [], b"", [("a", "b")], None),
    ("GET", "/h", [], b"", {str(i): "v" for i in range(40)}, None),
    ("GET", "/h", [], b"", {}, 0), ("GET", "/h", [], b"", {}, -1.0), ("GET", "/h", [], b"", {}, True),
    ("GET", "/h", [], b"", {}, "5"),
], ids=repr)
def test_a_malformed_message_is_400(message: object) -> None:
    with pytest.raises(InvalidFieldError) as exc:
        request_from_message(message)
    assert exc.value.status == 400 and exc.value.field == "message"
    request_from_message(GOOD)  # the well-formed one passes


def test_a_body_over_the_limit_is_refused() -> None:
    with pytest.raises(InvalidFieldError, match="limit"):
        request_from_message(("POST", "/h", [], b"x" * (MAX_BODY_BYTES + 1), {}, None))


@pytest.mark.parametrize("reply", [
    None, (200, [], b"", 1), (99, [], b""), (600, [], b""), (True, [], b""),
    (200.0, [], b""), (200, [("a", 1)], b""), (200, [], "text"),
], ids=repr)
def test_a_malformed_reply_is_a_transport_error(reply: object) -> None:
    assert response_from_reply((200, [], b""), peer="p").status == 200
    with pytest.raises(TransportError, match="malformed reply"):
        response_from_reply(reply, peer="p")


def test_importing_the_ray_modules_does_not_import_ray_or_pandas() -> None:
    probe = ("import json, sys, atoma_lab, atoma_lab.lab, atoma_lab.lab.batch, "
             "atoma_lab.lab.ray_network, atoma_lab.transport.ray; "
             "print(json.dumps(sorted(m for m in ('ray', 'pandas', 'pyarrow', 'tqdm') "
             "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ------------------------------------------------------------------------ with Ray (namespace)


class Echo:
    """A service actor: answers a message with its path and body, or misbehaves on request."""

    async def handle(self, message: Any) -> Any:
        request = request_from_message(message)
        if request.path == "/slow":
            await asyncio.sleep(30)
        if request.path == "/bug":
            raise RuntimeError("a bug in the actor")
        if request.path == "/garbage":
            return {"status": 200}
        return response_to_reply(Response.json({"path": request.path, "body": request.body.decode()}))

    async def ping(self) -> str:
        return "pong"


class Caller:
    """An actor that reaches the driver through a relay."""

    def __init__(self, relay: Any) -> None:
        self.transport = RelayTransport(relay, timeout_s=3.0)

    async def get(self, path: str, timeout_s: float | None = None) -> tuple[int, bytes]:
        resp = await self.transport.handle(Request("GET", path, address="inproc://elsewhere",
                                                   timeout_s=timeout_s))
        return resp.status, resp.body

    async def many(self, n: int) -> list[int]:
        answers = await asyncio.gather(*(self.transport.handle(Request("GET", f"/n/{i}"))
                                         for i in range(n)))
        return [r.status for r in answers]


@pytest.fixture(scope="module")
def echo(ray_local: Any) -> Iterator[Any]:
    actor = ray_local.remote(Echo).options(num_cpus=0).remote()
    ray_local.get(actor.ping.remote())
    yield actor
    ray_local.kill(actor)


@pytest.mark.ray
def test_actor_calls_and_their_failures(ray_local: Any, echo: Any) -> None:
    transport = RayTransport({"actor://echo": echo}, timeout_s=5.0)

    async def run() -> None:
        resp = await transport.handle(Request("POST", "/x", body=b"hi", address="actor://echo"))
        assert resp.status == 200 and json.loads(resp.body) == {"path": "/x", "body": "hi"}
        with pytest.raises(TransportError, match="no actor"):
            await transport.handle(Request("GET", "/x", address="actor://nobody"))
        bug = await transport.handle(Request("GET", "/bug", address="actor://echo"))
        assert bug.status == 500 and bug.error_code() == "INTERNAL_ERROR"
        with pytest.raises(TransportError, match="malformed reply"):
            await transport.handle(Request("GET", "/garbage", address="actor://echo"))
        t0 = time.monotonic()
        with pytest.raises(TransportTimeoutError):
            await transport.handle(Request("GET", "/slow", address="actor://echo", timeout_s=0.5))
        assert time.monotonic() - t0 < 10
        # The actor still serves (the slow call was cancelled, not the actor).
        assert (await transport.handle(Request("GET", "/y", address="actor://echo"))).ok

    asyncio.run(run())


@pytest.mark.ray
def test_a_killed_actor_is_a_transport_error(ray_local: Any) -> None:
    actor = ray_local.remote(Echo).options(num_cpus=0).remote()
    ray_local.get(actor.ping.remote())
    ray_local.kill(actor, no_restart=True)

    async def run() -> None:
        with pytest.raises(TransportError, match="gone") as exc:
            await call_actor(actor.handle, ("GET", "/x", [], b"", {}, None), peer="actor://dead",
                             timeout_s=30)
        assert exc.value.status == 503 and not isinstance(exc.value, TransportTimeoutError)

    asyncio.run(run())


@pytest.mark.ray
def test_the_relay_serves_actors_from_the_driver(ray_local: Any) -> None:
    served: list[str] = []

    async def service(request: Request) -> Response:
        served.append(request.path)
        if request.path == "/never":
            await asyncio.sleep(60)
        if request.path.startswith("/n/"):
            await asyncio.sleep(1.0)  # a slow driver: its calls stay pending at the relay
        return Response.json({"path": request.path})

    inner = InProcessTransport()
    inner.register("inproc://driver", service)
    relay = start_relay(max_pending=64)
    caller = ray_local.remote(Caller).options(num_cpus=0).remote(relay)

    async def run() -> None:
        pump = asyncio.create_task(serve_relay(relay, inner, "inproc://driver"))
        try:
            status, body = await caller.get.remote("/v1/stacks")
            # Whatever address the actor names, the driver serves it at its own.
            assert status == 200 and json.loads(body) == {"path": "/v1/stacks"}
            statuses = await caller.many.remote(200)
            assert statuses.count(200) + statuses.count(503) == 200
            # At most 64 wait at the relay at once and a call beyond them is turned away (503):
            # the driver holds each for a second, so the 200 cannot all be waiting.
            assert statuses.count(200) >= 64 and statuses.count(503) >= 1
            # No answer within the request's time: the relay answers 504 itself.
            status, body = await caller.get.remote("/never", 0.5)
            assert status == 504
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        # With nobody serving, a call times out at the relay (504), bounded.
        t0 = time.monotonic()
        status, _ = await caller.get.remote("/unserved", 0.5)
        assert status == 504 and time.monotonic() - t0 < 10

    try:
        asyncio.run(run())
    finally:
        ray_local.kill(caller)
        ray_local.kill(relay)
    assert "/v1/stacks" in served
