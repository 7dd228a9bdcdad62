"""Event loops on threads of their own, and the transport that crosses into one.

* :class:`LoopThread` runs an event loop on a daemon thread, so that synchronous code (and a
  notebook, whose own loop is already running) can drive coroutines: the simulator's network
  lives on one, and a synchronous client without a network drives its requests on one.
* :class:`LoopTransport` hands each request to a transport living on such a loop (an in-process
  network's), from whatever loop awaits it.
* :class:`BackgroundTasks` keeps long-running coroutines (health checks, key rotation timers)
  on a loop run by another thread; :class:`LoopThread` and
  :class:`~atoma_lab.server.ServerGroup` mix it in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from atoma_lab.errors import TransportError
from atoma_lab.transport.base import Request, Response, Transport

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (``uvicorn[standard]``), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T],
           timeout_s: float | None = None) -> T:
    """Run ``coro`` on ``loop``, which another thread runs, and wait for its result.

    Raises :class:`RuntimeError` when called from ``loop`` itself (waiting there could never
    end: await the coroutine instead) or when ``loop`` is not running. A timeout or an
    interrupt (Ctrl-C in a notebook) while waiting cancels the coroutine too.
    """
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:  # no loop runs in this thread: the usual case
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("cannot wait for a coroutine on the event loop running this thread: "
                           "await it there (the async client) instead")
    if loop.is_closed() or not loop.is_running():
        coro.close()
        raise RuntimeError("the event loop to run on has stopped")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout_s)
    except BaseException:
        future.cancel()
        raise


class BackgroundTasks:
    """``spawn`` a coroutine on ``self.loop``; ``cancel_background`` ends them all. The class
    mixing it in provides ``loop`` and ``run`` and calls ``BackgroundTasks.__init__``."""

    loop: asyncio.AbstractEventLoop | None
    run: Callable[..., Any]

    def __init__(self) -> None:
        self._spawned: list[concurrent.futures.Future[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the loop until :meth:`cancel_background` (or the loop stops)."""
        assert self.loop is not None, "the loop is not running"
        self._spawned.append(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def cancel_background(self) -> None:
        """Cancel every spawned coroutine and let the loop process the cancellations."""
        spawned, self._spawned = self._spawned, []
        for task in spawned:
            task.cancel()
        if spawned and self.loop is not None:
            with contextlib.suppress(Exception):  # best effort while shutting down
                self.run(asyncio.sleep(0.01), 2)


class LoopThread(BackgroundTasks):
    """An event loop running on a daemon thread until :meth:`stop`; then the tasks still on it
    are cancelled and the loop is closed. ``fast=True`` takes uvloop where it is installed."""

    def __init__(self, name: str, *, fast: bool = False) -> None:
        super().__init__()
        self.loop = new_event_loop() if fast else asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        running = threading.Event()
        self.loop.call_soon(running.set)
        self._thread.start()
        running.wait()

    def _main(self) -> None:
        loop = self.loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    @property
    def stopped(self) -> bool:
        assert self.loop is not None
        return self.loop.is_closed() or not self._thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (see :func:`run_on`)."""
        assert self.loop is not None
        return run_on(self.loop, coro, timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel background tasks, stop the loop and wait (unless called from the loop's own
        thread) for the thread to finish and the loop to close."""
        loop = self.loop
        assert loop is not None
        if loop.is_closed():
            return
        if not self.in_loop_thread:
            self.cancel_background()
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            loop.call_soon_threadsafe(loop.stop)
        if not self.in_loop_thread:
            self._thread.join(timeout_s)


class LoopTransport:
    """A :class:`~atoma_lab.transport.base.Transport` that runs ``inner`` on ``loop``.

    The services of an in-process network live on the network's loop; a client awaiting from
    another loop (a notebook cell, a user's ``asyncio`` program, a synchronous client's thread)
    reaches them through this, without blocking its own loop. Awaited on ``loop`` itself, it
    calls ``inner`` directly. A request without an address goes to ``address``.

    ``aclose`` releases nothing: ``inner`` belongs to whoever runs ``loop`` (the network), which
    closes it.
    """

    def __init__(self, inner: Transport, loop: asyncio.AbstractEventLoop, *,
                 address: str = "") -> None:
        self.inner = inner
        self.loop = loop
        self.address = address

    async def handle(self, request: Request) -> Response:
        if not request.address and self.address:
            request = dataclasses.replace(request, address=self.address)
        if asyncio.get_running_loop() is self.loop:
            return await self.inner.handle(request)
        if self.loop.is_closed() or not self.loop.is_running():
            raise TransportError("the event loop serving this transport has stopped")
        coro = self.inner.handle(request)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError as exc:  # closed between the check and the call
            coro.close()
            raise TransportError("the event loop serving this transport has stopped") from exc
        return await asyncio.wrap_future(future)

    async def aclose(self) -> None:
        """Nothing to release (see the class)."""

    def __repr__(self) -> str:
        return f"LoopTransport({type(self.inner).__name__}, address={self.address!r})"


__all__ = ["BackgroundTasks", "LoopThread", "LoopTransport", "new_event_loop", "run_on"]
