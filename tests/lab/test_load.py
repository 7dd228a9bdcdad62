"""Load: 1,000 confidential requests from 32 concurrent clients over loopback HTTP. Nothing is
lost or mismatched (each answer decrypts to the direct engine's vectors for its own input) and
the ledger is exact (the units charged equal the usage the clients saw, request by request)."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import MODEL, expected_units, expected_vectors, network

from atoma_lab.lab.load import run_load

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS = 1000
CLIENTS = 32


def _inputs(n: int) -> list[str | list[str]]:
    """Distinct inputs of one to three texts, so a mismatch cannot hide."""
    out: list[str | list[str]] = []
    for i in range(n):
        texts = [f"load request {i} part {j} " + "word " * (i % 7) for j in range(1 + i % 3)]
        out.append(texts[0] if len(texts) == 1 else texts)
    return out


@pytest.mark.timeout(600)
def test_a_thousand_confidential_requests_from_32_clients() -> None:
    inputs = _inputs(REQUESTS)
    with network(nodes=2, mode="http") as net:
        result = run_load(lambda: net.client(), inputs, concurrency=CLIENTS, model=MODEL,
                          timeout_s=500)
        assert result.errors == {}, list(result.errors.items())[:3]
        used = 0
        for i, got in enumerate(result.results):
            assert got is not None
            np.testing.assert_array_equal(got.to_numpy(), expected_vectors(inputs[i]))
            assert got.usage.total_tokens == expected_units(inputs[i])
            used += got.usage.total_tokens
        settled = list(net.ledger.settlements())
        assert len(settled) == REQUESTS
        assert {s["outcome"] for s in settled} == {"charged"}
        assert sum(s["units_charged"] for s in settled) == used
        stacks = net.ledger.stacks()
        assert sum(s.already_computed_units for s in stacks) == used
        assert all(s.locked_compute_units == 0 for s in stacks)
        assert net.ledger.open_locks() == []
    summary = result.summary()
    assert summary["requests"] == REQUESTS and summary["failures"] == 0
    print(f"\nload: {summary}")


def test_run_load_reports_failures_per_request() -> None:
    with network(nodes=1) as net:
        inputs: list[str | list[str]] = ["fine", [], "also fine"]  # an empty list is refused
        result = run_load(lambda: net.client(), inputs, concurrency=2, model=MODEL)
    assert set(result.errors) == {1}
    assert result.results[0] is not None and result.results[1] is None
    assert result.summary()["failures"] == 1
    with pytest.raises(ValueError):
        run_load(lambda: net.client(), inputs, concurrency=0)
