"""Length-sorted micro-batches and the dynamic batcher (threads and asyncio)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoma_lab.errors import InferenceError, InputTooLongError, InvalidFieldError
from atoma_lab.inference import DynamicBatcher, FakeEngine, plan_micro_batches
from atoma_lab.inference.batching import SMALL_REQUEST_CHARS, padded_tokens

# ------------------------------------------------------------------------------ micro-batches


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(min_value=1, max_value=600), max_size=80),
       budget=st.integers(min_value=1, max_value=4096),
       rows=st.one_of(st.none(), st.integers(min_value=1, max_value=40)))
def test_plan_covers_every_index_once_within_budget(lengths: list[int], budget: int,
                                                    rows: int | None) -> None:
    plan = plan_micro_batches(lengths, max_batch_tokens=budget, max_batch_size=rows)
    flat = [i for batch in plan for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(batch for batch in plan)
    for batch in plan:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= budget
        if rows is not None:
            assert len(batch) <= rows
    # Longest first, and every batch is a run of the length-sorted order.
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)


def _greedy(lengths: list[int], budget: int, rows: int | None) -> list[list[int]]:
    """The plain plan: fill each batch to the budget, in sorted order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out, start = [], 0
    while start < len(order):
        k = max(1, budget // max(1, lengths[order[start]]))
        k = min(k, rows) if rows is not None else k
        out.append(order[start:start + k])
        start += k
    return out


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=60),
       budget=st.integers(min_value=1, max_value=2048),
       overhead=st.integers(min_value=0, max_value=200),
       rows=st.one_of(st.none(), st.integers(min_value=1, max_value=40)))
def test_plan_is_no_worse_than_filling_batches(lengths: list[int], budget: int, overhead: int,
                                               rows: int | None) -> None:
    plan = plan_micro_batches(lengths, max_batch_tokens=budget, max_batch_size=rows,
                              batch_overhead_tokens=overhead)
    greedy = _greedy(lengths, budget, rows)

    def objective(p: list[list[int]]) -> int:
        return padded_tokens(lengths, p) + overhead * len(p)

    assert objective(plan) <= objective(greedy)
    if overhead == 0:  # nothing to gain from sharing: no padding at all
        assert padded_tokens(lengths, plan) == sum(lengths)


def test_plan_separates_short_inputs_of_different_lengths() -> None:
    lengths = [30] * 4 + [8] * 40
    plan = plan_micro_batches(lengths, max_batch_tokens=1024, batch_overhead_tokens=64)
    assert [len(b) for b in plan] == [4, 40]  # one forward padding 8s to 30 would cost more
    assert padded_tokens(lengths, plan) == sum(lengths)
    together = plan_micro_batches(lengths, max_batch_tokens=2048, batch_overhead_tokens=10_000)
    assert len(together) == 1


def test_plan_examples() -> None:
    assert plan_micro_batches([], max_batch_tokens=8) == []
    assert plan_micro_batches([3, 9, 3, 1], max_batch_tokens=9) == [[1], [0, 2, 3]]
    assert plan_micro_batches([5, 5, 5], max_batch_tokens=100, max_batch_size=2) == [[0, 1], [2]]
    assert plan_micro_batches([50], max_batch_tokens=10) == [[0]]  # alone when over budget
    with pytest.raises(ValueError):
        plan_micro_batches([1], max_batch_tokens=0)
    with pytest.raises(ValueError):
        plan_micro_batches([1], max_batch_tokens=5, max_batch_size=0)
    with pytest.raises(ValueError):
        plan_micro_batches([1], max_batch_tokens=5, batch_overhead_tokens=-1)


# ------------------------------------------------------------------------------ batcher


class GatedEngine(FakeEngine):
    """A fake whose forward waits for ``gate`` (so that requests pile up behind it)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def embed_tokens(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(10)
        return super().embed_tokens(sequences)


def test_results_match_the_engine_and_keep_order() -> None:
    engine = FakeEngine()
    texts = [f"text number {i} " + "pad " * (i % 7) for i in range(40)]
    with DynamicBatcher(engine, max_wait_ms=5) as batcher:
        futures = [batcher.submit(texts[i:i + 3], dimensions=16 if i % 2 else None)
                   for i in range(0, 40, 3)]
        results = [f.result(10) for f in futures]
    for k, (i, res) in enumerate(zip(range(0, 40, 3), results, strict=True)):
        direct = engine.embed(texts[i:i + 3], dimensions=16 if k % 2 else None)
        assert np.array_equal(res.vectors, direct.vectors)
        assert res.token_counts == direct.token_counts


def test_concurrent_requests_are_merged() -> None:
    engine = GatedEngine()
    batcher = DynamicBatcher(engine, max_wait_ms=50)
    try:
        first = batcher.submit(["first"])
        assert engine.entered.wait(10)  # the worker holds the first request in its forward
        rest = [batcher.submit([f"queued {i}", "second input"]) for i in range(10)]
        engine.gate.set()
        first.result(10)
        for i, f in enumerate(rest):
            res = f.result(10)
            assert np.array_equal(res.vectors, engine.embed([f"queued {i}", "second input"]).vectors)
        # One forward for the first request, one for the ten that queued behind it.
        assert engine.forward_sizes[:2] == [1, 20]
        assert batcher.stats.batches == 2 and batcher.stats.requests == 11
        assert batcher.stats.largest_batch_requests == 10
    finally:
        engine.gate.set()
        batcher.close()


def test_token_budget_splits_batches() -> None:
    engine = GatedEngine()
    batcher = DynamicBatcher(engine, max_batch_tokens=12, max_wait_ms=50)
    try:
        first = batcher.submit(["first"])
        assert engine.entered.wait(10)
        rest = [batcher.submit(["one two three four"]) for _ in range(6)]  # 6 tokens each
        engine.gate.set()
        for f in [first, *rest]:
            f.result(10)
        assert engine.forward_sizes == [1, 2, 2, 2]
    finally:
        engine.gate.set()
        batcher.close()


def test_a_bad_request_fails_alone() -> None:
    engine = GatedEngine(max_seq_length=8)
    batcher = DynamicBatcher(engine, max_wait_ms=50)
    try:
        first = batcher.submit(["first"])
        assert engine.entered.wait(10)
        good = batcher.submit(["fine"])
        too_long = batcher.submit(["fine", "w " * 20], truncate=False)
        bad_ids = batcher.submit([[1, 2], [10**9]])
        bad_dims = batcher.submit(["x"], dimensions=10_000)
        engine.gate.set()
        assert first.result(10).vectors.shape == (1, 32)
        assert good.result(10).token_counts == [3]
        with pytest.raises(InputTooLongError) as err:
            too_long.result(10)
        assert err.value.field == "input[1]"
        with pytest.raises(InvalidFieldError):
            bad_ids.result(10)
        with pytest.raises(InvalidFieldError):
            bad_dims.result(10)
    finally:
        engine.gate.set()
        batcher.close()


class BrokenEngine(FakeEngine):
    def embed_tokens(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        raise RuntimeError("device lost")


def test_engine_failure_reaches_every_waiter() -> None:
    with DynamicBatcher(BrokenEngine(), max_wait_ms=20) as batcher:
        futures = [batcher.submit([f"t{i}"]) for i in range(5)]
        for f in futures:
            with pytest.raises(InferenceError) as err:
                f.result(10)
            assert isinstance(err.value.__cause__, RuntimeError)


def test_threads_and_asyncio_share_one_batcher() -> None:
    engine = FakeEngine()
    texts = [f"concurrent request {i}" for i in range(64)]
    with DynamicBatcher(engine, max_wait_ms=5) as batcher:
        with ThreadPoolExecutor(16) as pool:
            threaded = list(pool.map(lambda t: batcher.embed([t]), texts))

        async def many() -> list[Any]:
            return await asyncio.gather(*(batcher.aembed([t]) for t in texts))

        awaited = asyncio.run(many())
    want = engine.embed(texts).vectors
    for i in range(64):
        assert np.array_equal(threaded[i].vectors[0], want[i])
        assert np.array_equal(awaited[i].vectors[0], want[i])
    assert batcher.stats.requests == 128
    assert batcher.stats.batches < 128  # some requests shared a forward


def test_aembed_small_and_large_requests() -> None:
    engine = FakeEngine()
    small = ["a few words"]
    large = ["word " * (SMALL_REQUEST_CHARS // 5 + 1)] + [f"t{i}" for i in range(20)]
    with DynamicBatcher(engine, max_wait_ms=1) as batcher:

        async def both() -> list[Any]:
            return await asyncio.gather(batcher.aembed(small), batcher.aembed(large),
                                        batcher.aembed("one string"),
                                        batcher.aembed(small, dimensions=10_000),
                                        return_exceptions=True)

        res = asyncio.run(both())
    assert np.array_equal(res[0].vectors, engine.embed(small).vectors)
    assert np.array_equal(res[1].vectors, engine.embed(large).vectors)
    assert res[2].vectors.shape == (1, 32)
    assert isinstance(res[3], InvalidFieldError)


def test_empty_request_and_close() -> None:
    batcher = DynamicBatcher(FakeEngine(), max_wait_ms=1)
    res = batcher.submit([]).result(1)
    assert res.vectors.shape == (0, 32) and res.token_counts == []
    assert batcher.submit([], dimensions=8).result(1).vectors.shape == (0, 8)
    queued = [batcher.submit([f"x{i}"]) for i in range(20)]
    batcher.close()
    batcher.close()  # idempotent
    assert all(f.result(1).vectors.shape == (1, 32) for f in queued)  # queued work finishes
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(["late"])
    assert batcher.closed


def test_batcher_arguments() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(FakeEngine(), max_batch_tokens=0)
    with pytest.raises(ValueError):
        DynamicBatcher(FakeEngine(), max_wait_ms=-1)
    with pytest.raises(ValueError):
        DynamicBatcher(FakeEngine(), gap_ms=-1)


def test_real_model_through_the_batcher(engine: Any) -> None:
    texts = [f"request {i}: " + "words " * (i % 13) for i in range(24)]
    with DynamicBatcher(engine, max_wait_ms=20) as batcher, ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: batcher.embed([t]).vectors[0], texts))
    want = engine.embed(texts).vectors
    assert float(np.abs(np.stack(got) - want).max()) <= 1e-5
