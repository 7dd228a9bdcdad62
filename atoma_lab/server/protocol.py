"""uvicorn's httptools protocol with the limits uvicorn lacks, enforced while bytes arrive.

uvicorn keeps a connection that never finishes its headers open for ever (its keep-alive timer
runs only between requests), buffers headers without bound, and counts open connections only
once a request is complete. :func:`guarded_protocol` returns a subclass that, per connection:

* answers 503 and closes a connection beyond ``max_connections`` as soon as it opens;
* counts the request target and headers as the parser reports them (431 at the first header
  over ``max_header_count`` or ``max_header_bytes``), and the raw bytes of a head that is not
  complete yet (so a single endless header is cut too);
* gives a request ``header_timeout_s`` from its first byte (a new connection: from its opening)
  to its last header (408, or a silent close when no byte came);
* closes an idle keep-alive connection after ``idle_timeout_s``;
* when an answer that closes the connection (a refusal: 401, 413, 408) is sent before the
  request's body is all in, reads and drops the rest of the body for at most
  :data:`LINGER_S` seconds (``body_timeout_s`` if shorter) before closing, so that a client still
  sending can read the answer rather than meet a reset (nginx's lingering close). Nothing of
  the dropped body is kept.

The body's limits (size, ``body_timeout_s``) are the ASGI app's (:mod:`atoma_lab.server.app`),
which also re-checks the header caps for servers without this protocol.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from atoma_lab.errors import (
    AtomaLabError,
    HeadersTooLargeError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from atoma_lab.server.limits import ServerLimits
from atoma_lab.transport.base import error_response

log = logging.getLogger("atoma_lab.server")

LINGER_S = 5.0  # seconds a refused request's remaining body is read and dropped before closing


def _raw_response(exc: AtomaLabError) -> bytes:
    resp = error_response(exc)
    reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large",
              503: b"Service Unavailable"}.get(exc.status, b"Error")
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (exc.status, reason),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(resp.body),
        b"connection: close\r\n\r\n",
        resp.body,
    ])


class _LingeringTransport:
    """The transport as one request's uvicorn cycle sees it: its ``close`` lets the protocol
    drain a body still arriving first; everything else is the real transport's."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.write = transport.write  # what every answer calls, without __getattr__
        self.is_closing = transport.is_closing

    def close(self) -> None:
        self._protocol._close_after_body()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` within :attr:`limits` (see the module docstring)."""

    limits: ClassVar[ServerLimits] = ServerLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.idle_timeout_s  # type: ignore[assignment]
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # a request began and its headers are not complete
        self._head_count = 0
        self._head_bytes = 0  # request target and headers, as the parser reported them
        self._head_raw = 0  # bytes of reads that lay wholly inside an incomplete head
        self._refused = False
        self._draining: asyncio.TimerHandle | None = None  # set while a refused body is dropped

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(ServiceUnavailableError(
                f"this listener has {self.limits.max_connections} open connections; try again"))
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        was_in_head = self._in_head
        super().data_received(data)
        if self._refused or not self._in_head:
            return
        if was_in_head:  # this whole read belongs to a head that is still not complete
            self._head_raw += len(data)
            if self._head_raw > 2 * self.limits.max_header_bytes:
                self._refuse(HeadersTooLargeError(
                    f"more than {self.limits.max_header_bytes} bytes of headers"))

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_count = self._head_bytes = self._head_raw = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse(HeadersTooLargeError(
                f"the request target and headers exceed {self.limits.max_header_bytes} bytes"))
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._head_count += 1
        self._head_bytes += len(name) + len(value)
        if self._head_count > self.limits.max_header_count:
            self._refuse(HeadersTooLargeError(
                f"more than {self.limits.max_header_count} headers"))
            return
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse(HeadersTooLargeError(
                f"the request target and headers exceed {self.limits.max_header_bytes} bytes"))
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = _LingeringTransport(self.transport, self)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._draining is not None:  # the refused body is all in: the answer was read
            self._end_drain()
        elif not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._draining is not None:  # closing: no keep-alive, no pipelined request
            self.server_state.total_requests += 1
            return
        super().on_response_complete()

    # ------------------------------------------------------------------ lingering close
    def _close_after_body(self) -> None:
        """Close now, or, while the request's body is still coming, once it is in (dropped
        unread) or after the linger time, whichever is first."""
        if self.transport.is_closing() or self._draining is not None:
            return
        if self.cycle is None or not self.cycle.more_body:
            self.transport.close()
            return
        linger_s = min(LINGER_S, self.limits.body_timeout_s)
        self._draining = self.loop.call_later(linger_s, self._end_drain)
        self.flow.resume_reading()

    def _end_drain(self) -> None:
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        self._refused = True  # nothing more is parsed on this connection
        if not self.transport.is_closing():
            self.transport.close()

    # ------------------------------------------------------------------ refusals
    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(RequestTimeoutError(
                f"the headers did not arrive within {self.limits.header_timeout_s} s"))
        elif self.cycle is None:  # opened, and not one byte since: nothing to answer
            log.info("closed a connection from %s that sent nothing for %s s", self.client,
                     self.limits.header_timeout_s)
            self._refused = True
            self.transport.close()

    def _refuse(self, exc: AtomaLabError) -> None:
        """Answer ``exc`` (431, 408, 503), close the connection, ignore whatever still comes."""
        self._refused = True
        self._cancel_head_timer()
        log.info("refused a connection from %s: %s", self.client, exc.message)
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # never inside another answer
            self.transport.write(_raw_response(exc))
        self.transport.close()


def guarded_protocol(limits: ServerLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class (uvicorn's ``Config(http=...)``) of one listener's ``limits``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


__all__ = ["GuardedHttpToolsProtocol", "guarded_protocol"]
