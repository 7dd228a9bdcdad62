"""HTTP/1.1 over asyncio streams: how the proxy reaches its nodes and a client its proxy.

:class:`HttpTransport` is deliberately lean, because a confidential request crosses three HTTP
exchanges that in-process mode does not have (lock, request, proxy to node): it writes requests
by hand, parses answers with httptools (the C parser uvicorn uses), and keeps a pool of
kept-alive connections per peer (``benchmarks/test_e2e.py`` measures what loopback HTTP adds
against in-process).

Connections belong to the event loop that opened them, so the pool is kept per loop: one
transport may serve a client's private loop thread and a notebook's loop alike.
A connection found closed by the peer while idle is replaced before use; one that fails after the
request went out is an error, never silently retried (the request may have been served).
Connection failures raise :class:`TransportError` (503), timeouts :class:`TransportTimeoutError`
(504).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httptools

from atoma_lab.errors import TransportError, TransportTimeoutError
from atoma_lab.transport.base import Headers, Request, Response

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "proxy-connection", "te", "trailer", "upgrade"}


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
    """httptools callbacks collect one response."""

    parser: httptools.HttpResponseParser | None = None
    headers: Headers = field(default_factory=Headers)
    body: list[bytes] = field(default_factory=list)
    complete: bool = False
    keep_alive: bool = False  # read when the message completes (the parser resets after)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Pool:
    """One event loop's share of a transport: idle kept-alive connections per peer, and the
    slots that bound how many are open at once."""

    def __init__(self, max_connections: int) -> None:
        self.idle: dict[_Peer, list[_Connection]] = {}
        self.slots = asyncio.Semaphore(max_connections)

    def close(self) -> None:
        idle, self.idle = self.idle, {}
        for conns in idle.values():
            for _, writer in conns:
                writer.close()


class HttpTransport:
    """A :class:`~atoma_lab.transport.base.Transport` over pooled HTTP/1.1 connections.

    ``request.address`` is the peer's base URL (``http://host:port``); a request without one
    goes to ``base_url``. ``request.timeout_s`` bounds the whole exchange (default
    ``timeout_s``). Each event loop using the transport has its own pool of at most
    ``max_connections`` open connections, all peers together.
    """

    def __init__(self, base_url: str | None = None, *, timeout_s: float = 60.0,
                 max_connections: int = 100) -> None:
        if base_url is not None:
            try:  # a malformed base URL is the caller's mistake, found here
                _Peer.parse(base_url)
            except TransportError as exc:
                raise ValueError(exc.message) from None
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._pools: dict[asyncio.AbstractEventLoop, _Pool] = {}
        self._tls: ssl.SSLContext | None = None

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
        timeout_s = request.timeout_s if request.timeout_s is not None else self.timeout_s
        try:
            async with asyncio.timeout(timeout_s), pool.slots:
                return await self._exchange(pool, peer, request)
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
                                             server_hostname=peer.host if tls else None)

    async def _exchange(self, pool: _Pool, peer: _Peer, request: Request) -> Response:
        idle = pool.idle.setdefault(peer, [])
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
        try:
            writer.write("".join(head).encode("latin-1") + body)
            answer = _Answer()
            parser = answer.parser = httptools.HttpResponseParser(answer)
            while not answer.complete:
                data = await reader.read(1 << 16)
                if not data:
                    raise EOFError("the peer closed the connection before answering")
                parser.feed_data(data)
        except BaseException:
            writer.close()  # half-used: never back to the pool
            raise
        if answer.keep_alive and not reader.at_eof():
            idle.append((reader, writer))
        else:
            writer.close()
        return Response(parser.get_status_code(), b"".join(answer.body), answer.headers)
