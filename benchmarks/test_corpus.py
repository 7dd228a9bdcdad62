"""``client.embed_corpus`` against a plain loop of single confidential requests, same texts, same
network, interleaved round by round (group ``corpus``).

* on the deterministic fake engine: what chunking and concurrency save in protocol work per
  text (lock, seal, transport, open) when the engine costs nothing;
* on the shipped model (all-MiniLM-L6-v2): what they save end to end, the engine included.

Every member is checked once before timing (vectors equal to 1e-6). Timing is reported, never
asserted.

    .venv/bin/python -m pytest benchmarks/test_corpus.py --benchmark-only
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from bench_support import interleaved, paired_speedup, pool_rounds

from atoma_lab.client import DEFAULT_MODEL, AtomaLabClient
from atoma_lab.inference import FAKE_MODEL
from atoma_lab.lab.network import Network, build_network

CASES = {  # engine -> (model, number of texts, rounds)
    "fake engine": (FAKE_MODEL, 1000, 5),
    "MiniLM": (DEFAULT_MODEL, 256, 3),
}


def corpus(n: int) -> list[str]:
    return [f"Document {i} on private retrieval" + " with more words" * (i % 9) for i in range(n)]


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> Iterator[tuple[str, Network, AtomaLabClient]]:
    model = CASES[request.param][0]
    net = build_network(nodes=1, model=model)
    client = net.client()
    yield request.param, net, client
    client.close()
    net.close()


def loop_of_singles(client: AtomaLabClient, texts: list[str], model: str) -> np.ndarray:
    return np.stack([client.confidential_embeddings.create(input=[t], model=model).to_numpy()[0]
                     for t in texts])


@pytest.mark.benchmark(group="corpus")
@pytest.mark.parametrize("how", ["loop", "embed_corpus"])
def test_embed_corpus_vs_a_loop_of_single_requests(
        benchmark: Any, case: tuple[str, Network, AtomaLabClient], how: str) -> None:
    name, _, client = case
    model, n, rounds = CASES[name]
    texts = corpus(n)

    def ours() -> np.ndarray:
        return client.embed_corpus(texts, model=model, show_progress=False).vectors

    def loop() -> np.ndarray:
        return loop_of_singles(client, texts, model)

    assert float(np.abs(ours() - loop()).max()) <= 1e-6
    pair = f"embed_corpus vs a loop of single requests, {n} texts, {name}"
    benchmark.extra_info.update(pair=pair, role="ours" if how == "embed_corpus" else "baseline")
    fn, other = (ours, loop) if how == "embed_corpus" else (loop, ours)
    other_s = interleaved(benchmark, fn, other, rounds=rounds)
    pool_rounds(benchmark, ("corpus", pair), "ours" if how == "embed_corpus" else "baseline",
                other_s, name="paired_speedup", figure=paired_speedup)
