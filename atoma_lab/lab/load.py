"""A bounded load generator: many requests from concurrent clients, every answer kept and timed.

    result = run_load(lambda: network.client(), inputs, concurrency=32)
    result.summary()   # requests, failures, p50/p99 latency (ms), throughput (requests/s)

Each worker has a client of its own, as separate programs would (a client may also be
shared between workers); request ``i`` sends ``inputs[i]``, and ``result.results[i]`` is its
answer, so a caller can check that nothing was lost or mismatched. The whole run is bounded by
``timeout_s``.

Two kinds of worker, chosen by what ``make_client`` returns:

* an :class:`~atoma_lab.client.AtomaLabClient`: one thread per worker, as synchronous programs
  would call;
* an :class:`~atoma_lab.client.AsyncAtomaLabClient`: one coroutine per worker, all on one event
  loop thread of the run's own (so it also runs from a notebook cell). This generator costs the
  host far less per request than threads do: ``concurrency`` threads with a loop each pay for a
  GIL hand-over at every step of every exchange, which on a small machine can outweigh the
  protocol work being measured (see ``benchmarks/test_load.py``).

    result = run_load(network.async_client, inputs, concurrency=32)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atoma_lab.client import (
    DEFAULT_MODEL,
    AsyncAtomaLabClient,
    AtomaLabClient,
    EmbeddingsResult,
)
from atoma_lab.display.frames import to_frame
from atoma_lab.display.html import bars, kv_table, section, table
from atoma_lab.display.progressbar import progress
from atoma_lab.transport.loop import LoopThread

REQUEST_COLUMNS = ("request", "ok", "error", "latency_ms", "node", "attempts", "total_tokens")


@dataclass
class LoadResult:
    """What a load run did: per request, its answer (or error) and its latency."""

    results: list[EmbeddingsResult | None]
    errors: dict[int, BaseException]
    latencies_ms: np.ndarray
    wall_s: float
    concurrency: int
    confidential: bool
    #: Per request, in request order (NaN for one that never ran); ``latencies_ms`` holds the
    #: same values without the gaps.
    request_latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def requests(self) -> int:
        return len(self.results)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else float("nan")

    def summary(self) -> dict[str, float | int | bool]:
        return {"requests": self.requests, "failures": len(self.errors),
                "concurrency": self.concurrency, "confidential": self.confidential,
                "p50_ms": self.percentile_ms(50), "p99_ms": self.percentile_ms(99),
                "throughput_rps": self.throughput_rps, "wall_s": self.wall_s}

    def rows(self) -> list[dict[str, Any]]:
        """One row per request: its index, whether it succeeded, the error's code (or type),
        its latency, and for an answer the node, attempts and tokens."""
        lat = self.request_latencies_ms
        out = []
        for i, result in enumerate(self.results):
            error = self.errors.get(i)
            out.append({
                "request": i, "ok": result is not None and error is None,
                "error": None if error is None else getattr(error, "code", type(error).__name__),
                "latency_ms": float(lat[i]) if i < len(lat) else float("nan"),
                "node": None if result is None else result.node_small_id,
                "attempts": None if result is None else result.attempts,
                "total_tokens": None if result is None else result.usage.total_tokens})
        return out

    def to_frame(self) -> Any:
        """:meth:`rows` as a :class:`pandas.DataFrame` indexed by request."""
        return to_frame(self.rows(), REQUEST_COLUMNS, index="request")

    def __repr__(self) -> str:
        return (f"LoadResult(requests={self.requests}, failures={len(self.errors)}, "
                f"concurrency={self.concurrency}, confidential={self.confidential}, "
                f"p50_ms={self.percentile_ms(50):.3f}, throughput_rps={self.throughput_rps:.1f})")

    def _repr_html_(self) -> str:
        latency = {f"p{q}": self.percentile_ms(q) for q in (50, 90, 99)}
        latency["max"] = float(self.latencies_ms.max()) if len(self.latencies_ms) else float("nan")
        errors: dict[str, int] = {}
        for exc in self.errors.values():
            code = getattr(exc, "code", type(exc).__name__)
            errors[code] = errors.get(code, 0) + 1
        parts = [kv_table(self.summary()),
                 bars(latency, unit="ms", title="latency", colour_by_side=False)]
        if errors:
            parts.append(table([{"error": k, "requests": v} for k, v in errors.items()],
                               title="failures"))
        return section("Load run", *parts)


def run_load(make_client: Callable[[], AtomaLabClient] | Callable[[], AsyncAtomaLabClient],
             inputs: Sequence[str | list[str]], *, concurrency: int = 32,
             confidential: bool = True, model: str = DEFAULT_MODEL, timeout_s: float = 600.0,
             show_progress: bool = True) -> LoadResult:
    """Send ``inputs[i]`` as request ``i`` from ``concurrency`` workers, each with its own client
    from ``make_client``: threads for a synchronous client, coroutines on one event loop for an
    asynchronous one (see the module's docstring). Raises ``TimeoutError`` if the run outlasts
    ``timeout_s``. ``show_progress``: a bar of finished requests
    (:func:`~atoma_lab.display.progressbar.progress`)."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    results: list[EmbeddingsResult | None] = [None] * len(inputs)
    errors: dict[int, BaseException] = {}
    latencies = np.full(len(inputs), np.nan)
    bar = progress(total=len(inputs), desc="requests", unit="req", show=show_progress)

    def record(i: int, t0: float, result: EmbeddingsResult | None,
               error: BaseException | None) -> None:
        latencies[i] = (time.perf_counter() - t0) * 1e3
        if error is not None:  # recorded per request: the caller decides what a failure means
            errors[i] = error
        results[i] = result
        bar.update(1)

    start = time.perf_counter()
    try:
        first = make_client()
        if isinstance(first, AsyncAtomaLabClient):
            _run_coroutines(first, make_client, inputs, concurrency, confidential, model,
                            timeout_s, record)
        else:
            _run_threads(first, make_client, inputs, concurrency, confidential, model,
                         timeout_s, record)
        wall = time.perf_counter() - start
    finally:
        bar.close()
    return LoadResult(results, errors, latencies[~np.isnan(latencies)], wall, concurrency,
                      confidential, request_latencies_ms=latencies)


_Record = Callable[[int, float, "EmbeddingsResult | None", "BaseException | None"], None]


def _same_kind(client: Any, first: Any) -> Any:
    """``client``, if it is the kind ``first`` is (a worker drives one kind of client)."""
    if isinstance(client, AsyncAtomaLabClient) != isinstance(first, AsyncAtomaLabClient):
        raise TypeError("make_client must return one kind of client")
    return client


def _run_threads(first: AtomaLabClient, make_client: Callable[[], Any],
                 inputs: Sequence[str | list[str]], concurrency: int, confidential: bool,
                 model: str, timeout_s: float, record: _Record) -> None:
    local = threading.local()
    spare = [first]
    clients: list[AtomaLabClient] = [first]
    clients_lock = threading.Lock()

    def one(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            with clients_lock:
                client = spare.pop() if spare else None
            if client is None:
                client = _same_kind(make_client(), first)
                with clients_lock:
                    clients.append(client)
            local.client = client
        api = client.confidential_embeddings if confidential else client.embeddings
        t0 = time.perf_counter()
        try:
            result = api.create(input=inputs[i], model=model)
        except Exception as exc:
            record(i, t0, None, exc)
        else:
            record(i, t0, result, None)

    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="atoma-load")
    try:
        futures = [pool.submit(one, i) for i in range(len(inputs))]
        _, pending = wait(futures, timeout=timeout_s)
        if pending:
            for f in pending:
                f.cancel()
            raise TimeoutError(f"{len(pending)} of {len(inputs)} requests still pending after "
                               f"{timeout_s} s")
        for f in futures:
            f.result()  # a worker that could not make its client: the run's own failure
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for c in clients:
            c.close()


def _run_coroutines(first: AsyncAtomaLabClient, make_client: Callable[[], Any],
                    inputs: Sequence[str | list[str]], concurrency: int, confidential: bool,
                    model: str, timeout_s: float, record: _Record) -> None:
    n = len(inputs)
    clients = [first] + [_same_kind(make_client(), first)
                         for _ in range(min(concurrency, n) - 1)]
    queue = iter(range(n))  # one iterator: each worker takes the next request
    done = 0

    async def worker(client: AsyncAtomaLabClient) -> None:
        nonlocal done
        api = client.confidential_embeddings if confidential else client.embeddings
        for i in queue:
            t0 = time.perf_counter()
            try:
                result = await api.create(input=inputs[i], model=model)
            except Exception as exc:
                record(i, t0, None, exc)
            else:
                record(i, t0, result, None)
            done += 1

    async def main() -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(worker(c) for c in clients))
        except TimeoutError:
            raise TimeoutError(f"{n - done} of {n} requests still pending after "
                               f"{timeout_s} s") from None
        finally:
            await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)

    thread = LoopThread("atoma-load", fast=True)
    try:
        thread.run(main())
    finally:
        thread.stop()


__all__ = ["LoadResult", "run_load"]
