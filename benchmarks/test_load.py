"""Load over loopback HTTP: many requests from 32 concurrent clients, confidential against plain
``/v1/embeddings`` in the same run (the baseline), each run checked for lost or mismatched
answers before it counts.

Two places for the services:

* ``in-process``: the proxy and nodes serve from this process (``build_network(mode="http")``),
  beside the 32 clients: everything shares one interpreter, so the figure is the clients' work
  plus the services';
* ``serve``: the proxy and nodes are an ``atoma-lab serve`` process of their own, as deployed,
  and the clients load it from this one: the figure is the services' cost per request, the
  proxy's included (what issue 13 item 6 is about).

The 32 clients are coroutines on one event loop, each with an
:class:`~atoma_lab.client.AsyncAtomaLabClient` of its own (``run_load`` with an asynchronous
client factory), as a load generator should be: cheap beside what it loads. With a thread and a
loop per client, the generator's GIL hand-overs, paid at every step of every exchange, cost this
process more than the protocol work does, and a confidential request has two exchanges to a
plain request's one.

The members of a pair run interleaved, round by round (``ROUNDS`` rounds of ``REQUESTS``
requests each), so both see the same machine load; ``paired_ratio`` (median over rounds of
confidential time over plain time, the inverse of the throughput ratio) decides the target,
confidential at least 0.8x the plain throughput. The target rides on the ``serve`` pair, which
measures the services' cost per request; the ``in-process`` pair is reported beside it without
a target: there the clients' own work (a key agreement, a seal, a signature check and an open per
confidential request, against a JSON parse per plain one) and two event-loop threads taking
turns at one interpreter's lock are counted as well. ``extra_info`` carries each member's p50/p99
latency (ms) and throughput (requests/s) over its rounds, and ``cpu_ms_per_request``: the CPU
time (user + system) per request of the ``serve`` process (the services alone), or of this
whole process for ``in-process``; on a machine shared with other work, the CPU per request
moves much less than the throughput does.
``ATOMA_LAB_BENCH_LOAD_MODEL`` picks the model (default: the weightless fake engine, which
measures the services and the envelope, not inference; the shipped model measures both);
``ATOMA_LAB_BENCH_LOAD_REQUESTS`` the requests per round (default 200), ``..._ROUNDS`` the
rounds (default 5).

    .venv/bin/python -m pytest benchmarks/test_load.py --benchmark-only
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_support import interleaved, paired_ratio, pool_rounds
from cluster import Service

from atoma_lab.client import AsyncAtomaLabClient
from atoma_lab.inference import FAKE_MODEL
from atoma_lab.lab.load import LoadResult, run_load
from atoma_lab.lab.network import Network, build_network, default_embedder

MODEL = os.environ.get("ATOMA_LAB_BENCH_LOAD_MODEL") or FAKE_MODEL
REQUESTS = int(os.environ.get("ATOMA_LAB_BENCH_LOAD_REQUESTS", "200"))
ROUNDS = int(os.environ.get("ATOMA_LAB_BENCH_LOAD_ROUNDS", "5"))
CLIENTS = 32
TARGET = 1.25  # confidential time over plain time: at least 0.8x the plain throughput
API_KEY = "atl-bench-load"
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


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of process ``pid``, or of this process."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, int]]:
    """``atoma-lab serve --nodes 2`` in a process of its own; its base URL and pid."""
    serve = Service("serve", "--port", "0", "--nodes", "2", "--model", MODEL,
                    "--api-key", API_KEY)
    try:
        yield serve.value("ATOMA_LAB_BASE_URL", timeout_s=300), serve.proc.pid
    finally:
        serve.stop()


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The direct engine's vectors for every input (one call, no services)."""
    embedder = default_embedder(MODEL)
    try:
        engine = embedder.engine  # type: ignore[attr-defined]
        return engine.embed([t if isinstance(t, str) else t[0] for t in INPUTS]).vectors
    finally:
        close = getattr(embedder, "close", None)
        if close is not None:
            close()


def _runner(make_client: Callable[[], AsyncAtomaLabClient], reference: np.ndarray,
            confidential: bool, runs: list[LoadResult], cpu: list[float],
            pid: int | None) -> Callable[[], None]:
    def once() -> None:
        before = _cpu_s(pid)
        result = run_load(make_client, INPUTS, concurrency=CLIENTS, model=MODEL,
                          confidential=confidential, timeout_s=900, show_progress=False)
        cpu.append(_cpu_s(pid) - before)
        assert result.errors == {}, list(result.errors.items())[:3]
        got = np.concatenate([r.to_numpy() for r in result.results if r is not None])
        np.testing.assert_allclose(got, reference, atol=1e-5, rtol=0)
        runs.append(result)
    return once


def _summary(runs: list[LoadResult], cpu: list[float]) -> dict[str, float]:
    latencies = np.concatenate([r.latencies_ms for r in runs])
    requests = sum(r.requests for r in runs)
    return {"p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
            "throughput_rps": requests / sum(r.wall_s for r in runs),
            "cpu_ms_per_request": 1e3 * sum(cpu) / requests}


@pytest.mark.benchmark(group="load")
@pytest.mark.parametrize("where", ["in-process", "serve"])
@pytest.mark.parametrize("route", ["plain", "confidential"])
def test_load(benchmark: Any, request: pytest.FixtureRequest, reference: np.ndarray,
              where: str, route: str) -> None:
    pid: int | None = None
    if where == "serve":
        url, pid = request.getfixturevalue("served")

        def make_client() -> AsyncAtomaLabClient:
            return AsyncAtomaLabClient(url, api_key=API_KEY)
    else:
        network = request.getfixturevalue("net")
        make_client = network.async_client
    ours = route == "confidential"
    mine: list[LoadResult] = []
    theirs: list[LoadResult] = []
    cpu: list[float] = []
    run_mine = _runner(make_client, reference, ours, mine, cpu, pid)
    run_theirs = _runner(make_client, reference, not ours, theirs, [], pid)
    run_mine()  # warm-up of both routes: connections, stacks, caches
    run_theirs()
    mine.clear()
    cpu.clear()
    pair = (f"{REQUESTS} requests x {ROUNDS} rounds, {CLIENTS} clients, HTTP, services "
            f"{'in their own process' if where == 'serve' else 'in this process'}, {MODEL}")
    benchmark.extra_info.update({"pair": pair, "role": "ours" if ours else "baseline"})
    if ours and where == "serve":
        benchmark.extra_info.update(target=TARGET, target_kind="max")
    other_s = interleaved(benchmark, run_mine, run_theirs, rounds=ROUNDS)
    figure = pool_rounds(benchmark, ("load", pair), "ours" if ours else "baseline", other_s,
                         name="paired_ratio", figure=paired_ratio)
    summary = _summary(mine, cpu)
    benchmark.extra_info.update(summary)
    print(f"\nload {where} {route}: " + ", ".join(f"{k}={v:.4g}" for k, v in summary.items())
          + (f"; paired time ratio so far {figure:.3f}" if figure is not None else ""))
