"""A bounded load generator: many requests from concurrent clients, every answer kept and timed.

    result = run_load(lambda: network.client(), inputs, concurrency=32)
    result.summary()   # requests, failures, p50/p99 latency (ms), throughput (requests/s)

Each worker thread has a client of its own, as separate programs would (a client may also be
shared between threads); request ``i`` sends ``inputs[i]``, and ``result.results[i]`` is its
answer, so a caller can check that nothing was lost or mismatched. The whole run is bounded by
``timeout_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from atoma_lab.client import DEFAULT_MODEL, AtomaLabClient, EmbeddingsResult


@dataclass
class LoadResult:
    """What a load run did: per request, its answer (or error) and its latency."""

    results: list[EmbeddingsResult | None]
    errors: dict[int, BaseException]
    latencies_ms: np.ndarray
    wall_s: float
    concurrency: int
    confidential: bool

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


def run_load(make_client: Callable[[], AtomaLabClient], inputs: Sequence[str | list[str]], *,
             concurrency: int = 32, confidential: bool = True, model: str = DEFAULT_MODEL,
             timeout_s: float = 600.0) -> LoadResult:
    """Send ``inputs[i]`` as request ``i`` from ``concurrency`` threads, each with its own client
    from ``make_client``; raises ``TimeoutError`` if the run outlasts ``timeout_s``."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    local = threading.local()
    clients: list[AtomaLabClient] = []
    clients_lock = threading.Lock()
    results: list[EmbeddingsResult | None] = [None] * len(inputs)
    errors: dict[int, BaseException] = {}
    latencies = np.full(len(inputs), np.nan)

    def one(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = make_client()
            with clients_lock:
                clients.append(client)
        api = client.confidential_embeddings if confidential else client.embeddings
        t0 = time.perf_counter()
        try:
            results[i] = api.create(input=inputs[i], model=model)
        except Exception as exc:  # recorded per request: the caller decides what a failure means
            errors[i] = exc
        latencies[i] = (time.perf_counter() - t0) * 1e3

    start = time.perf_counter()
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="atoma-load")
    try:
        futures = [pool.submit(one, i) for i in range(len(inputs))]
        _, pending = wait(futures, timeout=timeout_s)
        if pending:
            for f in pending:
                f.cancel()
            raise TimeoutError(f"{len(pending)} of {len(inputs)} requests still pending after "
                               f"{timeout_s} s")
        wall = time.perf_counter() - start
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for c in clients:
            c.close()
    return LoadResult(results, errors, latencies[~np.isnan(latencies)], wall, concurrency,
                      confidential)


__all__ = ["LoadResult", "run_load"]
