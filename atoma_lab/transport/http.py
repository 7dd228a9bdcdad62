"""HTTP/1.1 over asyncio streams: how the proxy reaches its nodes and a client its proxy.

:class:`HttpTransport` is deliberately lean, because a confidential request crosses three HTTP
exchanges that in-process mode does not have (lock, request, proxy to node): it writes requests
by hand, parses answers with httptools (the C parser uvicorn uses), and keeps a pool of
kept-alive connections per peer (``benchmarks/test_e2e.py`` measures what loopback HTTP adds
against in-process, and ``benchmarks/test_transport.py`` this client against aiohttp's).

Connections belong to the event loop that opened them, so the pool is kept per loop: one
transport may serve a client's private loop thread and a notebook's loop alike.
A connection found closed by the peer while idle is replaced before use; one that fails after the
request went out is an error, never silently retried (the request may have been served).
Connection failures raise :class:`TransportError` (503), timeouts :class:`TransportTimeoutError`
(504).

Against a hostile peer, every answer is bounded while it is read (the connection is dropped at
the first byte over a bound, and nothing more is read from it):

* its body by ``request.max_response_bytes`` (default ``max_response_bytes``), a declared
  ``Content-Length`` over it refused before any body byte is read, a chunked body cut where it
  crosses it: :class:`ResponseTooLargeError` (502 ``BAD_PEER_RESPONSE``);
* its head by ``max_response_headers`` headers and ``max_response_header_bytes`` bytes (the
  same error);
* its time by ``request.timeout_s`` (default ``timeout_s``), waiting for a connection included:
  an answer trickled byte by byte ends there as :class:`TransportTimeoutError`.

Each peer has a lane of its own in each loop's pool: at most ``max_connections_per_peer``
exchanges at once and ``max_queued_per_peer`` more waiting for one; a request beyond that is
:class:`PeerBusyError` (503) at once, so one node that never answers holds up only the requests
sent to it. A request's ``lane`` (``"probe"`` for the proxy's health checks) gets connections of
its own beside the peer's usual ones.

``https://`` peers are reached with ``tls`` (an :class:`ssl.SSLContext`; default: the system's
trust store); :func:`client_tls_context` builds one from a CA bundle and, for mutual TLS, a
client certificate.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httptools

from atoma_lab.errors import (
    PeerBusyError,
    ResponseTooLargeError,
    TransportError,
    TransportTimeoutError,
)
from atoma_lab.transport.base import DEFAULT_MAX_RESPONSE_BYTES, Headers, Request, Response

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "proxy-connection", "te", "trailer", "upgrade"}
READ_SIZE = 1 << 16  # bytes asked of the socket per read: the most one read adds past a bound
DEFAULT_MAX_RESPONSE_HEADERS = 100  # headers in an answer
DEFAULT_MAX_RESPONSE_HEADER_BYTES = 64 * 1024  # bytes of an answer's status line and headers
DEFAULT_MAX_CONNECTIONS = 1024  # exchanges at once per event loop, all peers together
DEFAULT_MAX_CONNECTIONS_PER_PEER = 100  # exchanges at once with one peer (per lane)
DEFAULT_MAX_QUEUED_PER_PEER = 1000  # requests waiting for one peer's connection (per lane)


def client_tls_context(ca_file: str | None = None, *, certfile: str | None = None,
                       keyfile: str | None = None) -> ssl.SSLContext:
    """A TLS context for reaching ``https://`` peers: their certificates checked against
    ``ca_file`` (a PEM bundle; ``None``: the system's trust store) and their host names; with
    ``certfile`` (and ``keyfile`` unless the key is in it), this side's certificate for mutual
    TLS."""
    context = ssl.create_default_context(cafile=ca_file)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    elif keyfile is not None:
        raise ValueError("keyfile needs a certfile")
    return context


def _target(request: Request) -> str:
    return request.path + (f"?{urlencode(request.query)}" if request.query else "")


def _forwarded_headers(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.headers.items() if k not in _HOP_BY_HOP]


@dataclass(frozen=True, slots=True)
class _Peer:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, address: str) -> _Peer:
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"not an http(s) URL: {address!r}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class _Answer:
    """httptools callbacks collect one response, within its bounds: past one, ``refused`` says
    why and nothing more is kept."""

    max_body: int
    max_headers: int
    max_header_bytes: int
    parser: httptools.HttpResponseParser | None = None
    headers: Headers = field(default_factory=Headers)
    body: list[bytes] = field(default_factory=list)
    body_bytes: int = 0
    header_count: int = 0
    header_bytes: int = 0
    head_complete: bool = False
    complete: bool = False
    keep_alive: bool = False  # read when the message completes (the parser resets after)
    refused: str | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.header_bytes += len(name) + len(value)
        if self.header_count > self.max_headers:
            self.refused = f"more than {self.max_headers} headers"
        elif self.header_bytes > self.max_header_bytes:
            self.refused = f"more than {self.max_header_bytes} bytes of headers"
        if self.refused is None:
            self.headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_complete = True
        declared = self.headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and (
                len(declared) > 19 or int(declared) > self.max_body):
            self.refused = f"a declared body of {declared[:20]} bytes is over {self.max_body}"

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.max_body:
            self.refused = f"the body is over {self.max_body} bytes"
        elif self.refused is None:
            self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Lane:
    """One peer's connections for one kind of traffic in one event loop: the idle kept-alive
    ones, the slots that bound how many exchanges run at once, and how many wait for one."""

    def __init__(self, max_connections: int, max_queued: int) -> None:
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(max_connections)
        self.max_queued = max_queued
        self.queued = 0


class _Pool:
    """One event loop's share of a transport: a lane per ``(peer, lane name)``, and the slots
    that bound the exchanges of all of them together."""

    def __init__(self, max_connections: int) -> None:
        self.lanes: dict[tuple[_Peer, str], _Lane] = {}
        self.slots = asyncio.Semaphore(max_connections)

    def close(self) -> None:
        lanes, self.lanes = self.lanes, {}
        for lane in lanes.values():
            idle, lane.idle = lane.idle, []
            for _, writer in idle:
                writer.close()


class HttpTransport:
    """A :class:`~atoma_lab.transport.base.Transport` over pooled HTTP/1.1 connections.

    ``request.address`` is the peer's base URL (``http://host:port``); a request without one
    goes to ``base_url``. ``request.timeout_s`` bounds the whole exchange (default
    ``timeout_s``), and ``request.max_response_bytes`` the answer's body (default
    ``max_response_bytes``). Each event loop using the transport has its own pool: at most
    ``max_connections`` exchanges at once, all peers together, and per peer (and lane) at most
    ``max_connections_per_peer`` with ``max_queued_per_peer`` more waiting (see the module
    docstring). ``tls`` is the context for ``https://`` peers.
    """

    def __init__(self, base_url: str | None = None, *, timeout_s: float = 60.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER,
                 max_queued_per_peer: int = DEFAULT_MAX_QUEUED_PER_PEER,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 max_response_headers: int = DEFAULT_MAX_RESPONSE_HEADERS,
                 max_response_header_bytes: int = DEFAULT_MAX_RESPONSE_HEADER_BYTES,
                 tls: ssl.SSLContext | None = None) -> None:
        if base_url is not None:
            try:  # a malformed base URL is the caller's mistake, found here
                _Peer.parse(base_url)
            except TransportError as exc:
                raise ValueError(exc.message) from None
        for name, value in (("max_connections", max_connections),
                            ("max_connections_per_peer", max_connections_per_peer),
                            ("max_response_bytes", max_response_bytes),
                            ("max_response_headers", max_response_headers),
                            ("max_response_header_bytes", max_response_header_bytes)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        if max_queued_per_peer < 0:
            raise ValueError("max_queued_per_peer must not be negative")
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self.max_queued_per_peer = max_queued_per_peer
        self.max_response_bytes = max_response_bytes
        self.max_response_headers = max_response_headers
        self.max_response_header_bytes = max_response_header_bytes
        self._pools: dict[asyncio.AbstractEventLoop, _Pool] = {}
        self._tls = tls

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            for other in [lp for lp in list(self._pools) if lp.is_closed()]:
                self._pools.pop(other, None)  # its connections went with their loop
            pool = self._pools[loop] = _Pool(self.max_connections)
        return pool

    async def handle(self, request: Request) -> Response:
        address = request.address or self.base_url
        if not address:
            raise TransportError("the request has no address and the transport no base_url")
        peer = _Peer.parse(address)
        pool = self._pool()
        lane = pool.lanes.get((peer, request.lane))
        if lane is None:
            lane = pool.lanes[peer, request.lane] = _Lane(self.max_connections_per_peer,
                                                          self.max_queued_per_peer)
        if lane.slots.locked() and lane.queued >= lane.max_queued:
            raise PeerBusyError(f"{address}: {lane.max_queued} requests already wait for a "
                                "connection; try again")
        timeout_s = request.timeout_s if request.timeout_s is not None else self.timeout_s
        limit = self.max_response_bytes if request.max_response_bytes is None \
            else request.max_response_bytes
        try:
            async with asyncio.timeout(timeout_s):
                lane.queued += 1
                try:
                    await lane.slots.acquire()
                finally:
                    lane.queued -= 1
                try:
                    async with pool.slots:
                        return await self._exchange(lane, peer, request, limit)
                finally:
                    lane.slots.release()
        except TimeoutError as exc:
            raise TransportTimeoutError(f"{address} did not answer in time") from exc
        except (OSError, EOFError, httptools.HttpParserError) as exc:
            raise TransportError(f"cannot reach {address}: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Close every idle connection, each in the event loop it belongs to (the sockets of a
        loop closed meanwhile can only be dropped)."""
        pools, self._pools = self._pools, {}
        running = asyncio.get_running_loop()
        for loop, pool in pools.items():
            if loop is running:
                pool.close()
            elif loop.is_running() and not loop.is_closed():
                loop.call_soon_threadsafe(pool.close)

    async def _connect(self, peer: _Peer) -> _Connection:
        tls = None
        if peer.tls:
            tls = self._tls = self._tls or ssl.create_default_context()
        return await asyncio.open_connection(peer.host, peer.port, ssl=tls,
                                             server_hostname=peer.host if tls else None,
                                             limit=READ_SIZE)

    async def _exchange(self, lane: _Lane, peer: _Peer, request: Request,
                        limit: int) -> Response:
        idle = lane.idle
        conn = None
        if idle:
            await asyncio.sleep(0)  # let the loop see a close the peer sent while we were idle
        while idle:  # a kept-alive connection the peer has not closed meanwhile
            reader, writer = idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            conn = reader, writer
            break
        reader, writer = conn or await self._connect(peer)
        body = request.body
        head = [f"{request.method} {_target(request)} HTTP/1.1\r\nhost: {peer.authority}\r\n"
                f"content-length: {len(body)}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in _forwarded_headers(request)]
        head.append("\r\n")
        head_limit = self.max_response_header_bytes
        try:
            writer.write("".join(head).encode("latin-1") + body)
            answer = _Answer(limit, self.max_response_headers, head_limit)
            parser = answer.parser = httptools.HttpResponseParser(answer)
            head_read = 0
            while not answer.complete:
                data = await reader.read(READ_SIZE)
                if not data:
                    raise EOFError("the peer closed the connection before answering")
                if not answer.head_complete:  # the parser keeps a partial header whole
                    head_read += len(data)
                    if head_read > head_limit + READ_SIZE:
                        answer.refused = f"a head of more than {head_limit} bytes"
                if answer.refused is None:
                    parser.feed_data(data)
                if answer.refused is not None:
                    raise ResponseTooLargeError(f"{peer.authority} answered {request.method} "
                                                f"{request.path} with {answer.refused}")
        except BaseException:
            writer.close()  # half-used (or refused): never back to the pool
            raise
        if answer.keep_alive and not reader.at_eof():
            idle.append((reader, writer))
        else:
            writer.close()
        return Response(parser.get_status_code(), b"".join(answer.body), answer.headers)


__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_PEER",
    "DEFAULT_MAX_QUEUED_PER_PEER",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_RESPONSE_HEADERS",
    "DEFAULT_MAX_RESPONSE_HEADER_BYTES",
    "HttpTransport",
    "client_tls_context",
]
