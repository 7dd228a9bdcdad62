"""The HTTP client: atoma-lab's :class:`~atoma_lab.transport.http.HttpTransport` against aiohttp's
``ClientSession`` (issue 16 asked whether a well-kept client is as fast as the hand-written one),
both holding to the same bounds (an answer read in chunks up to a limit, a whole-exchange
timeout, connections per host), on loopback, interleaved round by round.

Groups:

* ``transport``: 50 sequential POSTs and their answers (2 KiB and 256 KiB bodies) to an atoma-lab
  server, kept-alive connections, both clients on one event loop thread (time ratio
  atoma-lab / aiohttp; the baseline is aiohttp);
* ``e2e-http-client``: the confidential request of ``test_e2e.py``'s ``e2e-http`` group (MiniLM,
  one short input, over loopback HTTP), with the client->proxy and proxy->node transports ours
  in one network and aiohttp's in another, both networks on one embedder.

Every path is checked once before timing (same answers). Timing is reported, never asserted.

    .venv/bin/python -m pytest benchmarks/test_transport.py --benchmark-only
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from bench_support import interleaved, paired_ratio, pool_rounds

from atoma_lab.client import DEFAULT_MODEL
from atoma_lab.errors import ResponseTooLargeError, TransportError, TransportTimeoutError
from atoma_lab.lab.network import Network, build_network, default_embedder
from atoma_lab.server import ServerGroup, asgi_app
from atoma_lab.transport.base import DEFAULT_MAX_RESPONSE_BYTES, Headers, Request, Response
from atoma_lab.transport.http import HttpTransport
from atoma_lab.transport.loop import LoopThread

aiohttp = pytest.importorskip("aiohttp")

SIZES = {"2KiB": 2 << 10, "256KiB": 256 << 10}
EXCHANGES = 50  # sequential requests per timed round
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class AiohttpTransport:
    """The Transport protocol on aiohttp: one ``ClientSession`` per event loop, its connector
    bounded per host, each answer read in chunks up to ``request.max_response_bytes``."""

    def __init__(self, base_url: str | None = None, *, timeout_s: float = 60.0,
                 limit_per_host: int = 100) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.limit_per_host = limit_per_host
        self._sessions: dict[asyncio.AbstractEventLoop, Any] = {}

    def _session(self) -> Any:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=1024, limit_per_host=self.limit_per_host)
            session = self._sessions[loop] = aiohttp.ClientSession(
                connector=connector, auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"))
        return session

    async def handle(self, request: Request) -> Response:
        base = request.address or self.base_url
        assert base is not None
        limit = request.max_response_bytes or DEFAULT_MAX_RESPONSE_BYTES
        timeout = aiohttp.ClientTimeout(total=request.timeout_s or self.timeout_s)
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
        try:
            async with self._session().request(request.method, base + request.path,
                                               params=request.query or None,
                                               data=request.body, headers=headers,
                                               timeout=timeout) as answer:
                if answer.content_length is not None and answer.content_length > limit:
                    answer.close()
                    raise ResponseTooLargeError("declared body over the limit")
                chunks, size = [], 0
                async for chunk in answer.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        answer.close()
                        raise ResponseTooLargeError("body over the limit")
                    chunks.append(chunk)
                return Response(answer.status, b"".join(chunks),
                                Headers({k.lower(): v for k, v in answer.headers.items()}))
        except TimeoutError as exc:
            raise TransportTimeoutError(f"{base} did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"cannot reach {base}: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        sessions, self._sessions = self._sessions, {}
        running = asyncio.get_running_loop()
        for loop, session in sessions.items():
            if loop is running:
                await session.close()
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(5)


# ------------------------------------------------------------------------------------- transport


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, LoopThread]]:
    async def answer(request: Request) -> Response:
        size = int(request.query.get("size", "0"))
        return Response(200, b"x" * size, Headers({"content-type": "application/octet-stream"}))

    group = ServerGroup([(asgi_app(answer), "127.0.0.1", 0)])
    [url] = group.start()
    loop = LoopThread("bench-clients")
    yield url, loop
    loop.stop()
    group.stop()


def _exchanges(transport: Any, url: str, size: int) -> Any:
    async def run() -> bytes:
        body = b""
        for _ in range(EXCHANGES):
            resp = await transport.handle(Request("POST", f"/answer?size={size}", Headers(),
                                                  b"q" * 256, address=url,
                                                  max_response_bytes=size + 1024))
            body = resp.body
        return body
    return run


@pytest.mark.benchmark(group="transport")
@pytest.mark.parametrize("client", ["aiohttp", "atoma-lab"])
@pytest.mark.parametrize("size", list(SIZES))
def test_transport(benchmark: Any, server: tuple[str, LoopThread], client: str,
                   size: str) -> None:
    url, loop = server
    n = SIZES[size]
    clients = {"atoma-lab": HttpTransport(), "aiohttp": AiohttpTransport()}
    runs = {name: _exchanges(t, url, n) for name, t in clients.items()}
    for run in runs.values():
        assert loop.run(run()) == b"x" * n
    other = "aiohttp" if client == "atoma-lab" else "atoma-lab"
    pair = f"{EXCHANGES} loopback POSTs, {size} answers: atoma-lab vs aiohttp"
    role = "ours" if client == "atoma-lab" else "baseline"
    benchmark.extra_info.update(pair=pair, role=role)
    other_s = interleaved(benchmark, lambda: loop.run(runs[client]()),
                          lambda: loop.run(runs[other]()), rounds=30, warmup_rounds=2)
    pool_rounds(benchmark, ("transport", pair), role, other_s, name="paired_ratio",
                figure=paired_ratio)
    for t in clients.values():
        loop.run(t.aclose())


# ------------------------------------------------------------------------------------------ e2e

SHORT = ["Confidential embeddings keep the text away from the proxy."]
E2E_PAIR = "confidential over HTTP, 1 short input: atoma-lab's transport vs aiohttp's"


@pytest.fixture(scope="module")
def networks() -> Iterator[dict[str, Network]]:
    embedder = default_embedder(DEFAULT_MODEL)
    nets = {"atoma-lab": build_network(nodes=1, mode="http", embedder=embedder),
            "aiohttp": build_network(nodes=1, mode="http", embedder=embedder)}
    aio = nets["aiohttp"]
    aio.run(aio.proxy.transport.aclose())
    aio.proxy.transport = AiohttpTransport(timeout_s=60.0)
    yield nets
    aio.run(aio.proxy.transport.aclose())
    for net in nets.values():
        net.close()
    embedder.close()  # type: ignore[attr-defined]


@pytest.mark.benchmark(group="e2e-http-client")
@pytest.mark.parametrize("client", ["aiohttp", "atoma-lab"])
def test_e2e_transport(benchmark: Any, networks: dict[str, Network], client: str) -> None:
    clients = {"atoma-lab": networks["atoma-lab"].client(),
               "aiohttp": networks["aiohttp"].client(
                   transport=AiohttpTransport(networks["aiohttp"].base_url))}
    reference = clients["atoma-lab"].embeddings.create(input=SHORT).to_numpy()
    for c in clients.values():
        assert np.array_equal(c.confidential_embeddings.create(input=SHORT).to_numpy(), reference)
        for _ in range(5):
            c.confidential_embeddings.create(input=SHORT)
    other = "aiohttp" if client == "atoma-lab" else "atoma-lab"
    role = "ours" if client == "atoma-lab" else "baseline"
    benchmark.extra_info.update(pair=E2E_PAIR, role=role)
    other_s = interleaved(benchmark,
                          lambda: clients[client].confidential_embeddings.create(input=SHORT),
                          lambda: clients[other].confidential_embeddings.create(input=SHORT),
                          rounds=100)
    pool_rounds(benchmark, ("e2e-http-client", E2E_PAIR), role, other_s, name="paired_ratio",
                figure=paired_ratio)
    for c in clients.values():
        c.close()
