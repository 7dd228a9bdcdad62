"""Load over loopback HTTP: many requests from 32 concurrent clients, confidential against plain
``/v1/embeddings`` in the same run (the baseline), each run checked for lost or mismatched
answers before it counts.

``extra_info`` carries p50/p99 latency (ms) and throughput (requests/s) of each run; the
benchmark's time is the run's wall time, so benchreport's ratio is the throughput ratio.
``ATOMA_LAB_BENCH_LOAD_MODEL`` picks the model (default: the weightless fake engine, which
measures the services and the envelope, not inference; the shipped model measures both);
``ATOMA_LAB_BENCH_LOAD_REQUESTS`` the requests per run (default 1000).

    .venv/bin/python -m pytest benchmarks/test_load.py --benchmark-only
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from atoma_lab.inference import FAKE_MODEL
from atoma_lab.lab.load import LoadResult, run_load
from atoma_lab.lab.network import Network, build_network, default_embedder

MODEL = os.environ.get("ATOMA_LAB_BENCH_LOAD_MODEL") or FAKE_MODEL
REQUESTS = int(os.environ.get("ATOMA_LAB_BENCH_LOAD_REQUESTS", "1000"))
CLIENTS = 32
PAIR = f"{REQUESTS} requests, {CLIENTS} clients, HTTP, {MODEL}"
INPUTS: list[str | list[str]] = [f"load request {i} " + "word " * (i % 13) for i in range(REQUESTS)]


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    embedder = default_embedder(MODEL)
    network = build_network(nodes=2, mode="http", model=MODEL, embedder=embedder)
    yield network
    network.close()
    close = getattr(embedder, "close", None)
    if close is not None:
        close()


@pytest.fixture(scope="module")
def reference(net: Network) -> np.ndarray:
    """The direct engine's vectors for every input (one call, no services)."""
    engine = net.nodes[0].embedder.engine  # type: ignore[attr-defined]
    return engine.embed([t if isinstance(t, str) else t[0] for t in INPUTS]).vectors


def _run(net: Network, reference: np.ndarray, confidential: bool) -> LoadResult:
    result = run_load(lambda: net.client(), INPUTS, concurrency=CLIENTS, model=MODEL,
                      confidential=confidential, timeout_s=900)
    assert result.errors == {}, list(result.errors.items())[:3]
    got = np.concatenate([r.to_numpy() for r in result.results if r is not None])
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=0)
    return result


@pytest.mark.benchmark(group="load")
@pytest.mark.parametrize("route", ["plain", "confidential"])
def test_load(benchmark: Any, net: Network, reference: np.ndarray, route: str) -> None:
    runs: list[LoadResult] = []

    def once() -> None:
        runs.append(_run(net, reference, route == "confidential"))

    benchmark.pedantic(once, rounds=1, warmup_rounds=0)
    summary = runs[-1].summary()
    benchmark.extra_info.update({"pair": PAIR, "role": "ours" if route == "confidential"
                                 else "baseline", **{k: v for k, v in summary.items()
                                                     if isinstance(v, float)}})
    print(f"\nload {route}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in summary.items()))
