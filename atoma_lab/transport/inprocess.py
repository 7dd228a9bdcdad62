"""Direct calls between services in one process, with injectable latency, drops, hangs and
tampering, and a capture of every message each service saw (what a curious operator sees).

The services run in the event loop that awaits :meth:`InProcessTransport.handle`; a caller on
another loop (a notebook cell, a client's own thread) reaches them through
:class:`~atoma_lab.transport.loop.LoopTransport`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from atoma_lab.errors import AtomaLabError, TransportError, TransportTimeoutError
from atoma_lab.transport.base import Handler, Headers, Request, Response, error_response

log = logging.getLogger("atoma_lab.transport")


@dataclass(slots=True)
class Fault:
    """What goes wrong on the way to one address. All fields default to 'nothing'."""

    latency_ms: float = 0.0
    drop: bool = False
    hang: bool = False
    fail_after_ms: float | None = None
    tamper_request: Callable[[Request], Request] | None = None
    tamper_response: Callable[[Response], Response] | None = None


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    """One exchange as the receiving service saw it."""

    address: str
    request: Request
    response: Response | None
    error: str | None = None


@dataclass
class InProcessTransport:
    """A :class:`~atoma_lab.transport.base.Transport` calling the handler registered at
    ``request.address``."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict, repr=False)
    captured: list[CapturedMessage] = field(default_factory=list, repr=False)
    capture: bool = True

    def register(self, address: str, handler: Handler) -> None:
        self.handlers[address] = handler

    def unregister(self, address: str) -> None:
        self.handlers.pop(address, None)

    def inject(self, address: str, fault: Fault | None) -> None:
        """Set (or with ``None`` clear) the fault on ``address``."""
        if fault is None:
            self.faults.pop(address, None)
        else:
            self.faults[address] = fault

    def messages_to(self, address: str) -> list[CapturedMessage]:
        return [m for m in self.captured if m.address == address]

    def _record(self, address: str, request: Request, response: Response | None,
                error: str | None = None) -> None:
        if self.capture:  # copies: what the service does to its objects later is not captured
            req = Request(request.method, request.path, Headers(request.headers), request.body,
                          dict(request.query))
            resp = None if response is None else Response(response.status, response.body,
                                                          Headers(response.headers))
            self.captured.append(CapturedMessage(address, req, resp, error))

    async def aclose(self) -> None:
        """Nothing to release: no connections, and the handlers belong to their services."""

    async def handle(self, request: Request) -> Response:
        address, timeout_s = request.address, request.timeout_s
        handler = self.handlers.get(address)
        if handler is None:
            raise TransportError(f"no service at {address}")
        # The receiver gets its own copy, as over a wire.
        request = Request(request.method, request.path, Headers(request.headers), bytes(request.body),
                          dict(request.query))
        fault = self.faults.get(address)
        if fault is not None:
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault.drop:
                self._record(address, request, None, "dropped")
                raise TransportError(f"connection to {address} was dropped")
            if fault.hang:
                self._record(address, request, None, "hung")
                await asyncio.sleep(timeout_s if timeout_s is not None else 3600)
                raise TransportTimeoutError(f"{address} did not answer")
            if fault.tamper_request is not None:
                request = fault.tamper_request(request)
        coro = handler(request)
        try:
            if fault is not None and fault.fail_after_ms is not None:
                # The service starts the work, then the connection dies (a crash mid-request).
                task = asyncio.ensure_future(coro)
                await asyncio.sleep(fault.fail_after_ms / 1000)
                task.cancel()
                self._record(address, request, None, "crashed")
                raise TransportError(f"{address} closed the connection mid-request")
            response = await coro
        except TransportError:
            raise
        except Exception:  # as the ASGI server does: a bug in a service is a JSON 500
            log.exception("unhandled error serving %s %s at %s", request.method, request.path,
                          address)
            response = error_response(AtomaLabError("internal server error"))
        if fault is not None and fault.tamper_response is not None:
            response = fault.tamper_response(response)
        self._record(address, request, response)
        return Response(response.status, bytes(response.body), Headers(response.headers))
