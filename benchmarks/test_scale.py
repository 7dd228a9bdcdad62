"""Scale-out: confidential throughput and latency of 1, 2 and 4 nodes under each node policy,
in-process, over loopback HTTP (the network ``atoma-lab serve`` runs) and on Ray (each node an
actor on a local Ray instance, the proxy in this process), 32 concurrent clients (one user each),
every node a device-like fake engine of ``RATE`` tokens a second. The rate is
chosen so that the nodes are the bottleneck, not this machine's cores: one node then serves
about ``RATE / 11`` requests a second (the inputs average 11 tokens).

Each mode's pair has the one-node run as its baseline (with one node every policy places
alike) and every larger network as ``ours``, so benchreport's speed-up is the throughput ratio
(all runs send the same requests). The issue's target rides on 4 nodes, least-loaded, over HTTP:
at least 3.2x the one-node throughput. ``extra_info`` carries throughput (requests/s), p50/p99
latency (ms), the nodes used and ``concentration``, the share of the busiest node (1.0 under
Atoma's rule, which keeps a user's traffic on one node). The benchmark's time is the load's
wall time; building the network (on Ray: starting its node actors) and the warm-up are not
timed.

The Ray cases need a local Ray instance on 127.0.0.1, so they run only in a network namespace
whose one interface is loopback (``make bench`` runs the benchmarks in one where it can) and
skip elsewhere, saying why; the other cases run anywhere.

    ATOMA_LAB_BENCH_SCALE_RATE=200 ATOMA_LAB_BENCH_SCALE_REQUESTS=200 \\
        .venv/bin/python -m pytest benchmarks/test_scale.py --benchmark-only
    unshare -n bash -c 'ip link set lo up; RAY_AUTH_MODE=disabled \\
        .venv/bin/python -m pytest benchmarks/test_scale.py --benchmark-only -k ray'
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from ray_support import local_ray  # tests/, on the path (conftest.py)

from atoma_lab.lab.load import LoadResult
from atoma_lab.lab.scale import ScaleSetup, ScaleSweep, scale_inputs
from atoma_lab.services.policy import ATOMA, LEAST_LOADED, NODE_POLICIES

RATE = float(os.environ.get("ATOMA_LAB_BENCH_SCALE_RATE", "200"))  # tokens/s per node
REQUESTS = int(os.environ.get("ATOMA_LAB_BENCH_SCALE_REQUESTS", "200"))
CLIENTS = 32
TARGET_SPEEDUP = 3.2  # 4 nodes, least-loaded, over HTTP, against 1 node
MODES = ("inprocess", "http", "ray")
CASES = [(mode, 1, LEAST_LOADED) for mode in MODES]
CASES += [(mode, nodes, policy) for mode in MODES for nodes in (2, 4) for policy in NODE_POLICIES]
CASES.sort(key=lambda c: (c[0], c[1]))  # each mode's one-node baseline first
_SWEEP = ScaleSweep()  # the runs so far: each mode's one-node run is its baseline


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """A local Ray instance on loopback for the Ray cases (skips them where none can run)."""
    with local_ray():
        yield


@pytest.mark.benchmark(group="scale")
@pytest.mark.parametrize(("mode", "nodes", "policy"), CASES,
                         ids=[f"{m}-{n}nodes-{p}" for m, n, p in CASES])
def test_scale(benchmark: Any, request: pytest.FixtureRequest, mode: str, nodes: int,
               policy: str) -> None:
    if mode == "ray":
        request.getfixturevalue("ray_instance")
    texts = scale_inputs(REQUESTS)
    with ScaleSetup(nodes=nodes, node_policy=policy, mode=mode, fake_tokens_per_s=RATE,
                    concurrency=CLIENTS) as setup:
        raylets = None
        if mode == "ray":  # each node actor built its fake engine with the capacity asked for
            assert [n.placement["tokens_per_s"] for n in setup.net.nodes] == [RATE] * nodes
            raylets = len({n.ray_node_id for n in setup.net.nodes})
        loads: list[LoadResult] = []
        benchmark.pedantic(lambda: loads.append(setup.run(texts)), rounds=1, warmup_rounds=0)
        run = setup.result(loads[-1])
    assert run.ledger.exact, run.ledger
    assert sum(run.node_requests.values()) == REQUESTS
    if policy == ATOMA:
        assert run.concentration == 1.0, run.node_requests
    if policy == LEAST_LOADED:
        assert run.nodes_used == nodes, run.node_requests
    info: dict[str, Any] = {
        "pair": f"{mode}, {RATE:g} tokens/s per node, {CLIENTS} clients, {REQUESTS} requests",
        "role": "baseline" if nodes == 1 else "ours",
        "nodes": nodes, "throughput_rps": run.throughput_rps, "p50_ms": run.p50_ms,
        "p99_ms": run.p99_ms, "nodes_used": run.nodes_used, "concentration": run.concentration,
    }
    if raylets is not None:
        info["raylets"] = raylets  # Ray nodes (machines) the node actors were placed on
    _SWEEP.runs.append(run)
    if nodes > 1 and _SWEEP.baseline(run) is not None:
        info["speedup_vs_1_node"] = _SWEEP.speedup(run)
    if (mode, nodes, policy) == ("http", 4, LEAST_LOADED):
        info.update(target=TARGET_SPEEDUP, target_kind="min")
    benchmark.extra_info.update(info)
    print(f"\n{run!r} concentration={run.concentration:.2f} "
          + (f"speedup={info['speedup_vs_1_node']:.2f}x" if "speedup_vs_1_node" in info else ""))
