"""Scale-out in quick mode: four nodes over loopback HTTP, each with a device-like fake engine,
and a small sweep on Ray (marker ``ray``: node actors on the session's local Ray instance).
Least-loaded spreads the work over every node, Atoma's rule keeps it on one; the ledger is exact
under every policy. (How much faster more nodes are is measured in benchmarks/test_scale.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from atoma_lab.lab.scale import ScaleSweep, measure_scale, scale_inputs, scale_sweep
from atoma_lab.services.policy import NODE_POLICIES

# Slow enough per node that 16 concurrent clients keep several requests in flight at once.
RATE = 400.0  # tokens/s per node
QUICK = {"fake_tokens_per_s": RATE, "requests": 48, "concurrency": 16}


@pytest.mark.integration
@pytest.mark.parametrize("policy", NODE_POLICIES)
def test_four_nodes_over_http_under_each_policy(policy: str) -> None:
    run = measure_scale(nodes=4, node_policy=policy, mode="http", **QUICK)  # type: ignore[arg-type]
    assert run.load.requests == 48 and run.load.errors == {}
    assert sum(run.node_requests.values()) == 48
    assert sorted(run.node_requests) == [1, 2, 3, 4]
    assert run.ledger.exact, run.ledger
    assert run.ledger.usage_tokens > 0
    if policy == "least-loaded":
        assert run.nodes_used == 4, run.node_requests
        assert run.concentration < 1.0
    elif policy == "atoma":  # one cheapest node: every user's stack is bought there
        assert run.node_requests == {1: 48, 2: 0, 3: 0, 4: 0}
        assert run.concentration == 1.0


def test_a_sweep_in_process_lists_each_run_against_one_node() -> None:
    sweep = scale_sweep(node_counts=(1, 2), policies=("least-loaded", "atoma"),
                        modes=("inprocess",), fake_tokens_per_s=2000.0, requests=16,
                        concurrency=8)
    assert [(r.nodes, r.policy) for r in sweep.runs] == [
        (1, "least-loaded"), (2, "least-loaded"), (2, "atoma")]
    rows = sweep.rows()
    assert rows[0]["speedup"] == 1.0 and rows[1]["ideal"] == 2.0
    assert all(r["ledger_exact"] for r in rows)
    assert sweep.baseline(sweep.runs[2]) is sweep.runs[0]
    assert sweep.runs[2].nodes_used == 1
    html = sweep._repr_html_()
    assert html.startswith("<table") and html.count("<tr>") == 1 + 3 and "least-loaded" in html
    assert list(sweep.to_frame()["nodes"]) == [1, 2, 2]
    assert "scale run" in sweep.runs[2]._repr_html_() and "node 2" in sweep.runs[2]._repr_html_()
    assert ScaleSweep().rows() == []


@pytest.mark.ray
def test_a_sweep_on_ray_places_and_books_as_the_other_modes(ray_local: Any) -> None:
    sweep = scale_sweep(node_counts=(1, 2), policies=("least-loaded", "atoma"), modes=("ray",),
                        fake_tokens_per_s=RATE, requests=24, concurrency=8, show_progress=False)
    assert [(r.mode, r.nodes, r.policy) for r in sweep.runs] == [
        ("ray", 1, "least-loaded"), ("ray", 2, "least-loaded"), ("ray", 2, "atoma")]
    for run in sweep.runs:
        assert run.load.requests == 24 and run.load.errors == {}
        assert sorted(run.node_requests) == list(range(1, run.nodes + 1))
        assert sum(run.node_requests.values()) == 24
        assert run.ledger.exact, run.ledger
        assert run.ledger.usage_tokens > 0
    one, least, atoma = sweep.runs
    assert one.node_requests == {1: 24} and one.concentration == 1.0
    assert least.nodes_used == 2 and least.concentration < 1.0, least.node_requests
    assert atoma.node_requests == {1: 24, 2: 0} and atoma.concentration == 1.0
    assert sweep.baseline(atoma) is one and sweep.rows()[0]["speedup"] == 1.0
    assert list(sweep.to_frame()["mode"]) == ["ray"] * 3


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        measure_scale(nodes=1, requests=0)
    with pytest.raises(ValueError, match="one input per request"):
        measure_scale(nodes=1, requests=2, inputs=["a"])
    with pytest.raises(ValueError, match="node_policy must be one of"):
        measure_scale(nodes=1, node_policy="round-robin", requests=1)
    assert len(scale_inputs(5)) == 5
