"""A node's embedder backed by infinity-emb (over loopback HTTP) against the in-process engine,
same model, same corpus, measured in one run.

Group ``backends`` (``extra_info`` carries ``pair`` and ``role`` for ``atoma_lab.tools.benchreport``):
the baseline is what a node serves by default (:func:`~atoma_lab.inference.node_embedder`: the
transformers engine behind its dynamic batcher), ours a
:class:`~atoma_lab.inference.RemoteEmbedder` forwarding to ``infinity_emb v2`` (torch, CPU,
batch 32) started from ``.venv-infinity``. Each timed call is one OpenAI request with the 512
seeded texts of 4-120 words of ``test_embed.py`` (``make_corpus``), answered as the node would
(JSON bytes and usage). Rounds are interleaved, so both see the same machine load; texts/s and
the speed-up of ours over the baseline are printed (a speed-up below 1 means infinity is
slower). Skips when infinity-emb is not installed (``make infinity-setup``).
``ATOMA_LAB_BENCH_BACKEND_ROUNDS`` (default 3) sets the rounds.

    .venv/bin/python -m pytest benchmarks/test_backends.py --benchmark-only -s
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("httpx")

from backends.infinity_server import InfinityServer, infinity_python
from bench_support import interleaved, show
from test_embed import CORPUS_SIZE, make_corpus

from atoma_lab.inference import (
    DEFAULT_MODEL,
    NodeEmbedder,
    RemoteEmbedder,
    node_embedder,
    remote_embedder,
    resolve_model,
)
from atoma_lab.protocol.openai import CreateEmbeddingRequest, CreateEmbeddingResponse

ROUNDS = int(os.environ.get("ATOMA_LAB_BENCH_BACKEND_ROUNDS", "3"))
TOL = 1e-5
CORPUS = make_corpus()
PAIR = f"{CORPUS_SIZE} texts, in-process engine vs infinity node"
REQUEST = CreateEmbeddingRequest(input=CORPUS, model=DEFAULT_MODEL)
_TIMES: dict[str, list[float]] = {}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def in_process() -> Iterator[NodeEmbedder]:
    embedder = node_embedder(DEFAULT_MODEL, device="cpu")
    yield embedder
    embedder.close()


@pytest.fixture(scope="module")
def infinity_node(loop: asyncio.AbstractEventLoop, in_process: NodeEmbedder,
                  ) -> Iterator[RemoteEmbedder]:
    python, why = infinity_python()
    if python is None:
        pytest.skip(why)
    engine = in_process.engine
    with InfinityServer(python, resolve_model(DEFAULT_MODEL), DEFAULT_MODEL) as server:
        embedder = remote_embedder(server.url, api="infinity", model=DEFAULT_MODEL, timeout_s=600,
                                   token_counter=lambda inputs: engine.count_tokens(inputs))
        yield embedder
        loop.run_until_complete(embedder.aclose())


def _call(loop: asyncio.AbstractEventLoop, embedder: Any) -> Callable[[], Any]:
    return lambda: loop.run_until_complete(embedder.embed(REQUEST))


def _report(role: str, benchmark: Any) -> None:
    benchmark.extra_info.update({"pair": PAIR, "role": role})
    if benchmark.stats is None:  # --benchmark-disable
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info["texts_per_s"] = CORPUS_SIZE / median
    _TIMES[role] = list(benchmark.stats.stats.data)


@pytest.fixture(scope="module", autouse=True)
def _ratio_report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if set(_TIMES) != {"baseline", "ours"}:
        return
    base, ours = (float(np.median(_TIMES[r])) for r in ("baseline", "ours"))
    lines = ["", f"backends, same run ({os.cpu_count()} cpus): {PAIR}",
             f"  in-process engine {CORPUS_SIZE / base:8.1f} texts/s  (median {base:.2f} s)",
             f"  infinity node     {CORPUS_SIZE / ours:8.1f} texts/s  (median {ours:.2f} s)",
             f"  speed-up of the infinity node: {base / ours:.2f}x (time ratio {ours / base:.2f})"]
    show(request, lines)


def _vectors(out: Any) -> np.ndarray:
    return CreateEmbeddingResponse.from_json(out.body).to_numpy()


@pytest.mark.benchmark(group="backends")
def test_in_process_engine(benchmark: Any, loop: asyncio.AbstractEventLoop,
                           in_process: NodeEmbedder, infinity_node: RemoteEmbedder) -> None:
    mine, theirs = _call(loop, in_process), _call(loop, infinity_node)
    assert _vectors(mine()).shape == (CORPUS_SIZE, in_process.engine.dimensions)
    interleaved(benchmark, mine, theirs, rounds=ROUNDS)
    _report("baseline", benchmark)


@pytest.mark.benchmark(group="backends")
def test_infinity_node(benchmark: Any, loop: asyncio.AbstractEventLoop,
                       in_process: NodeEmbedder, infinity_node: RemoteEmbedder) -> None:
    mine, theirs = _call(loop, infinity_node), _call(loop, in_process)
    got, want = mine(), theirs()
    max_abs = float(np.abs(_vectors(got) - _vectors(want)).max())
    assert max_abs <= TOL
    assert got.usage == want.usage
    interleaved(benchmark, mine, theirs, rounds=ROUNDS)
    _report("ours", benchmark)
    benchmark.extra_info["max_abs_diff"] = max_abs
