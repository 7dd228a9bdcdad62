"""The deterministic fake engine and the e5-instruct query helper."""

from __future__ import annotations

import numpy as np
import pytest

from atoma_lab.errors import InputTooLongError, InvalidFieldError
from atoma_lab.inference import (
    E5_DEFAULT_TASK,
    FAKE_MODEL,
    FakeEngine,
    e5_instruct_queries,
    e5_instruct_query,
)


def test_fake_is_deterministic_and_counts_words() -> None:
    a, b = FakeEngine(), FakeEngine()
    texts = ["one two three", "", "one two three", "four"]
    ra, rb = a.embed(texts), b.embed(list(reversed(texts)))
    assert a.model_name == FAKE_MODEL and a.dimensions == 32
    assert ra.token_counts == [5, 2, 5, 3]
    assert np.array_equal(ra.vectors, rb.vectors[::-1])
    assert np.array_equal(ra.vectors[0], ra.vectors[2])
    assert not np.array_equal(ra.vectors[0], ra.vectors[3])
    assert np.allclose(np.linalg.norm(ra.vectors, axis=1), 1.0, atol=1e-6)
    ids = [a.word_id(w) for w in ["one", "two", "three"]]
    assert np.array_equal(a.embed([ids]).vectors[0], ra.vectors[0])


def test_fake_errors_and_options() -> None:
    fake = FakeEngine(dimensions=8, max_seq_length=5, prompts={"q": "query: "})
    assert fake.embed(["a b c d e f"]).token_counts == [5]
    with pytest.raises(InputTooLongError):
        fake.embed(["a b c d"], truncate=False)
    with pytest.raises(InvalidFieldError):
        fake.embed([[fake.vocab_size]])
    with pytest.raises(InvalidFieldError):
        fake.embed(["x"], prompt_name="nope")
    assert fake.embed(["x"], prompt_name="q").token_counts == [4]
    assert fake.embed(["a", "b"], dimensions=4).vectors.shape == (2, 4)
    with pytest.raises(ValueError):
        FakeEngine(dimensions=0)


def test_e5_instruct_format() -> None:
    q = e5_instruct_query("how much protein should a female eat")
    assert q == f"Instruct: {E5_DEFAULT_TASK}\nQuery: how much protein should a female eat"
    assert e5_instruct_query("q", task="  Retrieve parallel sentences  ") == (
        "Instruct: Retrieve parallel sentences\nQuery: q")
    assert e5_instruct_queries(["a", "b"], task="t") == ["Instruct: t\nQuery: a",
                                                          "Instruct: t\nQuery: b"]
    for bad in ("", "   ", "two\nlines"):
        with pytest.raises(ValueError):
            e5_instruct_query("q", task=bad)
    with pytest.raises(TypeError):
        e5_instruct_query(3)  # type: ignore[arg-type]


class _Clock:
    """A clock that only moves when the engine sleeps (and by ``work_s`` per reading)."""

    def __init__(self, work_s: float = 0.0) -> None:
        self.now = 0.0
        self.work_s = work_s
        self.slept: list[float] = []

    def __call__(self) -> float:
        self.now += self.work_s
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_fake_with_a_capacity_takes_its_tokens_over_the_rate() -> None:
    clock = _Clock()
    engine = FakeEngine(tokens_per_s=100.0, clock=clock, sleep=clock.sleep)
    tok = engine.tokenize(["one two three", "four"])  # 5 and 3 tokens with [CLS] and [SEP]
    vectors = engine.embed_tokens(tok.sequences)
    assert clock.slept == [pytest.approx(0.08)]
    assert engine.busy_s == pytest.approx(0.08)
    # The vectors are the capacity-free engine's: capacity changes time, not results.
    assert np.array_equal(vectors, FakeEngine().embed_tokens(tok.sequences))
    # Work the host already spent counts towards the modelled time; only the rest is slept.
    slow_host = _Clock(work_s=0.01)
    engine = FakeEngine(tokens_per_s=100.0, clock=slow_host, sleep=slow_host.sleep)
    engine.embed_tokens(tok.sequences)
    assert slow_host.slept == [pytest.approx(0.07)]
    # A host slower than the modelled device sleeps not at all.
    engine = FakeEngine(tokens_per_s=1e9, clock=_Clock(work_s=1.0), sleep=clock.sleep)
    before = len(clock.slept)
    engine.embed_tokens(tok.sequences)
    assert len(clock.slept) == before


def test_fake_without_a_capacity_never_sleeps_and_bad_rates_are_refused() -> None:
    clock = _Clock()
    engine = FakeEngine(clock=clock, sleep=clock.sleep)
    engine.embed_tokens(engine.tokenize(["a b c"] * 50).sequences)
    assert clock.slept == [] and engine.busy_s == 0.0
    for rate in (0, -5.0):
        with pytest.raises(ValueError, match="tokens_per_s"):
            FakeEngine(tokens_per_s=rate)
