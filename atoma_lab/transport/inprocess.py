"""Direct calls between services in one process, with injectable latency, drops, hangs and
tampering, and a capture of every message each service saw (what a curious operator sees).

The services run in the event loop that awaits :meth:`InProcessTransport.handle`; a caller on
another loop (a notebook cell, a client's own thread) reaches them through
:class:`~atoma_lab.transport.loop.LoopTransport`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, SupportsIndex, overload

from atoma_lab.display.frames import to_frame
from atoma_lab.display.html import MAX_ROWS, table
from atoma_lab.errors import AtomaLabError, TransportError, TransportTimeoutError
from atoma_lab.transport.base import Handler, Headers, Request, Response, bounded, error_response

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


def _forms(secret: str) -> list[bytes]:
    """How a string can appear inside a JSON body: raw UTF-8 and ASCII-escaped."""
    raw = secret.encode("utf-8")
    escaped = json.dumps(secret)[1:-1].encode("ascii")
    return list(dict.fromkeys([raw, escaped]))


def reveals(body: bytes, secrets: Iterable[str]) -> bool:
    """Whether ``body`` contains any of ``secrets`` (raw or JSON-escaped)."""
    return any(form in body for s in secrets if s for form in _forms(s))


CAPTURED_COLUMNS = ("address", "method", "path", "status", "request bytes", "response bytes",
                    "error", "plaintext visible")


class Captured(list[CapturedMessage]):
    """The messages a transport captured, in order: a list, shown as a table in a notebook, with
    :meth:`rows` and :meth:`to_frame` saying for each message who received it, what it was,
    its sizes and whether any of the given ``secrets`` appears in it in clear."""

    @overload
    def __getitem__(self, index: SupportsIndex) -> CapturedMessage: ...

    @overload
    def __getitem__(self, index: slice) -> Captured: ...

    def __getitem__(self, index: SupportsIndex | slice) -> CapturedMessage | Captured:
        if isinstance(index, slice):  # a slice (``net.captured[n:]``) is a Captured too
            return Captured(list.__getitem__(self, index))
        return list.__getitem__(self, index)

    def rows(self, secrets: Iterable[str] = ()) -> list[dict[str, Any]]:
        secrets = list(secrets)
        out = []
        for m in self:
            resp = m.response
            out.append({
                "address": m.address, "method": m.request.method, "path": m.request.path,
                "status": None if resp is None else resp.status,
                "request bytes": len(m.request.body),
                "response bytes": None if resp is None else len(resp.body), "error": m.error,
                "plaintext visible": reveals(m.request.body, secrets)
                or (resp is not None and reveals(resp.body, secrets)),
            })
        return out

    def to_frame(self, secrets: Iterable[str] = ()) -> Any:
        """:meth:`rows` as a :class:`pandas.DataFrame`."""
        return to_frame(self.rows(secrets), CAPTURED_COLUMNS)

    def _repr_html_(self) -> str:
        rows = self.rows()
        shown = rows[-MAX_ROWS:]
        title = (f"{len(rows)} captured messages" if len(rows) <= MAX_ROWS
                 else f"{len(rows)} captured messages (the last {MAX_ROWS})")
        return table(shown, CAPTURED_COLUMNS[:-1], title=title)


@dataclass
class InProcessTransport:
    """A :class:`~atoma_lab.transport.base.Transport` calling the handler registered at
    ``request.address``."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict, repr=False)
    captured: Captured = field(default_factory=Captured, repr=False)
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
        """The answer of the service at ``request.address``, within ``request.timeout_s`` (the
        faults' latency included; ``None``: no limit) and ``request.max_response_bytes`` (the
        tampered answer, as it would arrive; ``None``: no limit)."""
        address = request.address
        handler = self.handlers.get(address)
        if handler is None:
            raise TransportError(f"no service at {address}")
        try:
            async with asyncio.timeout(request.timeout_s):
                response = await self._deliver(handler, request)
        except TimeoutError as exc:
            raise TransportTimeoutError(f"{address} did not answer in time") from exc
        return bounded(request, response, peer=address)

    async def _deliver(self, handler: Handler, request: Request) -> Response:
        address = request.address
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
                await asyncio.sleep(3600)  # until the request's timeout_s, if it has one
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
