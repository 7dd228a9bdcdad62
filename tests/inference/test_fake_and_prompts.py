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
