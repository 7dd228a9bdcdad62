"""Event loops on threads, and the transport that crosses into one: requests run on the target
loop without blocking the caller's, directly when already there; cancellation crosses too."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from atoma_lab.errors import TransportError
from atoma_lab.transport.base import Request, Response
from atoma_lab.transport.inprocess import InProcessTransport
from atoma_lab.transport.loop import LoopThread, LoopTransport, run_on

ADDR = "inproc://svc"


async def sleep_until_cancelled(cancelled: threading.Event) -> None:
    """Sleep for an hour; if cancelled first, set ``cancelled`` and let the cancellation through."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.set()
        raise


class Where:
    """Records the loop, thread and task each request ran in; ``/wait`` waits for ``go``,
    ``/forever`` until cancelled."""

    def __init__(self) -> None:
        self.seen: list[tuple[asyncio.AbstractEventLoop, threading.Thread, object, str]] = []
        self.go: asyncio.Event | None = None
        self.cancelled = threading.Event()

    async def __call__(self, request: Request) -> Response:
        self.seen.append((asyncio.get_running_loop(), threading.current_thread(),
                          asyncio.current_task(), request.path))
        if request.path == "/wait":
            assert self.go is not None
            await self.go.wait()
        if request.path == "/forever":
            await sleep_until_cancelled(self.cancelled)
        return Response(200, request.path.encode())


@pytest.fixture
def thread() -> Iterator[LoopThread]:
    t = LoopThread("test-loop")
    yield t
    t.stop()


def make(thread: LoopThread, address: str = "") -> tuple[LoopTransport, Where]:
    inner = InProcessTransport()
    where = Where()
    inner.register(ADDR, where)
    assert thread.loop is not None
    return LoopTransport(inner, thread.loop, address=address), where


def test_from_another_loop_the_request_runs_on_the_target_loop(thread: LoopThread) -> None:
    t, where = make(thread)
    resp = asyncio.run(t.handle(Request("GET", "/x", address=ADDR)))
    assert resp.body == b"/x"
    [(loop, ran_in, _, _)] = where.seen
    assert loop is thread.loop and ran_in is not threading.current_thread()


def test_the_caller_loop_is_not_blocked_while_it_waits(thread: LoopThread) -> None:
    """The request waits for an event that only the caller's loop sets: were the caller's loop
    blocked while waiting, it would never be set (and the bounded wait would fail)."""
    t, where = make(thread)
    assert thread.loop is not None
    where.go = thread.run(_new_event())

    async def release_soon() -> None:
        while not where.seen:  # the request arrived over there
            await asyncio.sleep(0.001)
        assert where.go is not None and thread.loop is not None
        thread.loop.call_soon_threadsafe(where.go.set)

    async def both() -> Response:
        resp, _ = await asyncio.wait_for(
            asyncio.gather(t.handle(Request("GET", "/wait", address=ADDR)), release_soon()), 10)
        return resp

    assert asyncio.run(both()).body == b"/wait"


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


def test_on_the_target_loop_it_calls_directly(thread: LoopThread) -> None:
    t, where = make(thread)

    async def here() -> tuple[object, Response]:
        return asyncio.current_task(), await t.handle(Request("GET", "/here", address=ADDR))

    task, resp = thread.run(here())
    assert resp.body == b"/here"
    [(_, _, ran_in_task, _)] = where.seen
    assert ran_in_task is task  # no hop: the caller's own task ran the service


def test_a_request_without_an_address_goes_to_the_default(thread: LoopThread) -> None:
    t, where = make(thread, address=ADDR)
    assert asyncio.run(t.handle(Request("GET", "/default"))).body == b"/default"
    with pytest.raises(TransportError, match="no service"):
        asyncio.run(t.handle(Request("GET", "/x", address="inproc://elsewhere")))
    assert [path for *_, path in where.seen] == ["/default"]
    bare, _ = make(thread)
    with pytest.raises(TransportError, match="no service"):
        asyncio.run(bare.handle(Request("GET", "/nowhere")))


def test_a_stopped_loop_is_a_transport_error() -> None:
    thread = LoopThread("test-loop-stopped")
    t, where = make(thread, address=ADDR)
    thread.stop()
    with pytest.raises(TransportError) as exc:
        asyncio.run(t.handle(Request("GET", "/late")))
    assert exc.value.status == 503 and where.seen == []


def test_cancelling_the_caller_cancels_the_request_over_there(thread: LoopThread) -> None:
    t, where = make(thread, address=ADDR)
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(t.handle(Request("GET", "/forever")), 0.05))
    assert where.cancelled.wait(10)


def test_aclose_leaves_the_inner_transport_usable(thread: LoopThread) -> None:
    t, _ = make(thread, address=ADDR)
    asyncio.run(t.aclose())
    other = LoopTransport(t.inner, t.loop, address=ADDR)
    assert asyncio.run(other.handle(Request("GET", "/still"))).body == b"/still"


def test_run_from_its_own_loop_refuses_instead_of_hanging(thread: LoopThread) -> None:
    async def nested() -> str:
        inner = asyncio.sleep(0, "never")
        with pytest.raises(RuntimeError, match="await it there"):
            thread.run(inner)
        return "refused"

    assert thread.run(nested()) == "refused"


def test_a_timeout_while_waiting_cancels_the_coroutine(thread: LoopThread) -> None:
    cancelled = threading.Event()
    with pytest.raises(TimeoutError):
        thread.run(sleep_until_cancelled(cancelled), timeout_s=0.05)
    assert cancelled.wait(10)


def test_stop_cancels_what_is_left_and_closes_the_loop() -> None:
    thread = LoopThread("test-loop-stop")
    loop = thread.loop
    assert loop is not None
    cancelled = threading.Event()
    asyncio.run_coroutine_threadsafe(sleep_until_cancelled(cancelled), loop)
    thread.run(asyncio.sleep(0))
    thread.stop()
    assert cancelled.is_set() and loop.is_closed() and thread.stopped
    with pytest.raises(RuntimeError, match="stopped"):
        run_on(loop, asyncio.sleep(0))
    thread.stop()  # twice is fine
