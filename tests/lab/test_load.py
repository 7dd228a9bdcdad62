"""Load: 1,000 confidential requests from 32 concurrent clients over loopback HTTP, from threads
(synchronous clients) and from coroutines (asynchronous clients on one loop). Nothing is lost or
mismatched (each answer decrypts to the direct engine's vectors for its own input) and the
ledger is exact (the units charged equal the usage the clients saw, request by request)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
from fakes import MODEL, expected_units, expected_vectors, network

from atoma_lab.client import AsyncAtomaLabClient, AtomaLabClient
from atoma_lab.lab.load import run_load
from atoma_lab.lab.network import Network

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


def _factory(net: Network, kind: str) -> Any:
    return net.client if kind == "threads" else net.async_client


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["threads", "coroutines"])
def test_a_thousand_confidential_requests_from_32_clients(kind: str) -> None:
    inputs = _inputs(REQUESTS)
    def load_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate()
                if t.name.startswith(("atoma-load", "atoma-lab-client"))}

    with network(nodes=2, mode="http") as net:
        before = load_threads()  # other tests' clients, left to the garbage collector
        result = run_load(_factory(net, kind), inputs, concurrency=CLIENTS, model=MODEL,
                          timeout_s=500)
        # Every worker thread and every client's (or the run's) loop thread has ended.
        assert load_threads() - before == set()
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


@pytest.mark.parametrize("kind", ["threads", "coroutines"])
def test_run_load_reports_failures_per_request(kind: str) -> None:
    with network(nodes=1) as net:
        inputs: list[str | list[str]] = ["fine", [], "also fine"]  # an empty list is refused
        result = run_load(_factory(net, kind), inputs, concurrency=2, model=MODEL)
        assert set(result.errors) == {1}
        assert result.results[0] is not None and result.results[1] is None
        assert result.results[2] is not None
        np.testing.assert_array_equal(result.results[2].to_numpy(), expected_vectors("also fine"))
        assert result.summary()["failures"] == 1
        assert len(result.latencies_ms) == 3
        with pytest.raises(ValueError):
            run_load(_factory(net, kind), inputs, concurrency=0)


@pytest.mark.parametrize("kind", ["threads", "coroutines"])
def test_run_load_makes_one_client_per_worker_and_closes_them(kind: str) -> None:
    made: list[Any] = []
    closed: list[Any] = []
    with network(nodes=1) as net:
        def make() -> Any:
            client = _factory(net, kind)()
            if isinstance(client, AsyncAtomaLabClient):
                aclose = client.aclose

                async def recorded_aclose() -> None:
                    closed.append(client)
                    await aclose()

                client.aclose = recorded_aclose  # type: ignore[method-assign]
            else:
                close = client.close

                def recorded_close() -> None:
                    closed.append(client)
                    close()

                client.close = recorded_close
            made.append(client)
            return client

        result = run_load(make, [f"text {i}" for i in range(12)], concurrency=3, model=MODEL,
                          show_progress=False)
        assert result.errors == {}
        assert len(made) <= 3
        if kind == "coroutines":
            assert len(made) == 3  # one per worker, made up front
            assert all(isinstance(c, AsyncAtomaLabClient) for c in made)
        else:
            assert all(isinstance(c, AtomaLabClient) for c in made)
        assert sorted(map(id, closed)) == sorted(map(id, made))  # each closed, once


def test_run_load_from_a_running_event_loop() -> None:
    """A notebook cell runs inside an event loop: the coroutine workers take a loop of their
    own, so run_load works there too."""
    with network(nodes=1) as net:
        async def cell() -> Any:
            return run_load(net.async_client, ["a", "b", "c"], concurrency=2, model=MODEL,
                            show_progress=False)

        result = asyncio.run(cell())
    assert result.errors == {} and result.requests == 3


@pytest.mark.parametrize("first", ["threads", "coroutines"])
def test_run_load_refuses_a_mix_of_client_kinds(first: str) -> None:
    with network(nodes=1) as net:
        other = "coroutines" if first == "threads" else "threads"
        kinds = iter([_factory(net, first), _factory(net, other), _factory(net, first)])
        made: list[Any] = []

        def make() -> Any:
            made.append(next(kinds)())
            return made[-1]

        try:
            with pytest.raises(TypeError, match="one kind of client"):
                run_load(make, ["a", "b", "c"], concurrency=3, model=MODEL,
                         show_progress=False)
        finally:  # the odd one out is not the run's to close
            for c in made:
                if isinstance(c, AsyncAtomaLabClient):
                    asyncio.run(c.aclose())
                else:
                    c.close()


@pytest.mark.parametrize("kind", ["threads", "coroutines"])
def test_run_load_is_bounded_in_time(kind: str) -> None:
    # A node that processes 20 tokens a second: 40 requests of a few tokens take seconds.
    with network(nodes=1, model="atoma-lab/fake-embedder", embedder=None,
                 fake_tokens_per_s=20.0) as net, pytest.raises(TimeoutError, match="still pending"):
        run_load(_factory(net, kind), [f"slow text {i}" for i in range(40)], concurrency=2,
                 model="atoma-lab/fake-embedder", timeout_s=0.5, show_progress=False)
