"""Hostile peers on loopback: raw asyncio servers that answer at the HTTP level as no honest
service would (an endless chunked body, a huge ``Content-Length``, a trickle, no answer), for the
hostile-node tests. Every loop they run is bounded in bytes and time and stops by itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from atoma_lab.transport.base import Headers, Request, Response
from atoma_lab.transport.loop import LoopThread

CHUNK = b"[" + b"0.125," * 10922 + b"0]"  # 65,535 bytes of a JSON-looking answer, sent again and again
MAX_SENT = 64 * 1024 * 1024  # bytes a hostile answer sends at most (a bound for the test, not the proxy)
TRICKLE_S = 0.05  # seconds between the bytes of a trickled answer
HANG_S = 30.0  # seconds a hung answer waits at most for its client to give up


@dataclass
class Exchange:
    """One hostile answer: what was sent and whether the other side dropped the connection."""

    path: str
    sent: int = 0
    dropped: bool = False


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Exchange], Awaitable[None]]


async def _write(writer: asyncio.StreamWriter, data: bytes, ex: Exchange) -> None:
    writer.write(data)
    await writer.drain()  # the buffer never grows: what is sent is what the peer read (or the kernel holds)
    ex.sent += len(data)


async def endless_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          ex: Exchange) -> None:
    await _write(writer, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"transfer-encoding: chunked\r\n\r\n", ex)
    frame = b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n"
    while ex.sent < MAX_SENT:
        await _write(writer, frame, ex)


async def huge_content_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              ex: Exchange) -> None:
    await _write(writer, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: 1000000000000\r\n\r\n", ex)
    while ex.sent < MAX_SENT:
        await _write(writer, CHUNK, ex)


async def header_flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       ex: Exchange) -> None:
    await _write(writer, b"HTTP/1.1 200 OK\r\n", ex)
    line = b"x-flood: " + b"f" * 100 + b"\r\n"
    while ex.sent < MAX_SENT:
        await _write(writer, line * 500, ex)


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  ex: Exchange) -> None:
    await _write(writer, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: 1000\r\n\r\n", ex)
    for _ in range(int(HANG_S / TRICKLE_S)):
        await _write(writer, b" ", ex)
        await asyncio.sleep(TRICKLE_S)


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ex: Exchange) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(HANG_S):
            await reader.read()  # until the client gives up and closes
    ex.dropped = reader.at_eof()


def finite(size: int) -> Behaviour:
    """An answer of ``size`` bytes, declared and sent whole."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     ex: Exchange) -> None:
        await _write(writer, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % size, ex)
        left = size
        while left > 0:
            piece = CHUNK[:left]
            await _write(writer, piece, ex)
            left -= len(piece)
        with contextlib.suppress(TimeoutError):  # a client that refused it closes at once
            async with asyncio.timeout(2.0):
                await reader.read()
        ex.dropped = reader.at_eof()
    return answer


class HostileFront:
    """A server on 127.0.0.1 in a loop thread of its own. GET requests go to ``service`` (a
    node's ``handle``: its attestation and models, so that a proxy registers and probes it) and
    are answered honestly; every POST gets ``behaviour``. ``exchanges`` records the POSTs."""

    def __init__(self, service: Callable[[Request], Awaitable[Response]] | None,
                 behaviour: Behaviour) -> None:
        self.service = service
        self.behaviour = behaviour
        self.exchanges: list[Exchange] = []
        self.loop = LoopThread("hostile-front")
        self._server = self.loop.run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = Headers(dict(line.split(": ", 1) for line in lines[1:] if ": " in line))
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and self.service is not None:
                    resp = await self.service(Request(method, path, headers, body))
                    out = [f"HTTP/1.1 {resp.status} X\r\ncontent-length: {len(resp.body)}\r\n"]
                    out += [f"{k}: {v}\r\n" for k, v in resp.headers.items()
                            if k != "content-length"]
                    writer.write("".join(out).encode("latin-1") + b"\r\n" + resp.body)
                    await writer.drain()
                    continue
                ex = Exchange(path)
                self.exchanges.append(ex)
                try:
                    await self.behaviour(reader, writer, ex)
                except (ConnectionError, OSError):
                    ex.dropped = True
                return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        finally:
            writer.close()

    def close(self) -> None:
        # On the server's own loop: asyncio.Server is not thread-safe, and closing it from this
        # thread raced with the loop detaching its last connection (a None waiter list).
        async def close_server() -> None:
            self._server.close()

        self.loop.run(close_server())
        self.loop.stop()


__all__ = ["CHUNK", "HostileFront", "endless_chunked", "finite", "hang", "header_flood",
           "huge_content_length", "trickle"]
