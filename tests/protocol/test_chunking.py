"""A corpus split into requests: every limit of the route holds, every text is in exactly one
chunk, and bad input is refused before anything is planned."""

from __future__ import annotations

import random

import pytest

from atoma_lab.errors import InputTooLongError
from atoma_lab.protocol.atoma.messages import DEFAULT_MAX_NUM_TOKENS
from atoma_lab.protocol.chunking import MAX_UNITS_PER_INPUT, Chunk, plan_chunks, units_bound
from atoma_lab.protocol.openai import MAX_INPUT_CHARS, MAX_INPUTS, MAX_REQUEST_CHARS, CreateEmbeddingRequest
from atoma_lab.services.proxy import estimate_plain_units


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["a", "bb", "ccc", "déjà", "日本語", "🙂", "x" * 40]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 30))) for _ in range(n)]


def check_plan(texts: list[str], chunks: list[Chunk], batch_tokens: int, max_inputs: int,
               max_chars: int) -> None:
    positions = [p for c in chunks for p in c.positions]
    assert sorted(positions) == list(range(len(texts)))  # each text exactly once
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert 1 <= len(c) <= max_inputs
        assert c.units == sum(units_bound(texts[p]) for p in c.positions)
        assert c.chars == sum(len(texts[p]) for p in c.positions)
        assert c.units <= batch_tokens or len(c) == 1
        assert c.chars <= max_chars or len(c) == 1
    # Shortest first, across and within chunks.
    bounds = [units_bound(texts[p]) for p in positions]
    assert bounds == sorted(bounds)


@pytest.mark.parametrize(("batch_tokens", "max_inputs", "max_chars"), [
    (DEFAULT_MAX_NUM_TOKENS, MAX_INPUTS, MAX_REQUEST_CHARS),
    (100, MAX_INPUTS, MAX_REQUEST_CHARS),
    (10**9, 7, MAX_REQUEST_CHARS),
    (10**9, MAX_INPUTS, 300),
    (1, MAX_INPUTS, MAX_REQUEST_CHARS),  # every text alone
])
def test_every_limit_holds(batch_tokens: int, max_inputs: int, max_chars: int) -> None:
    texts = corpus(3000)
    chunks = plan_chunks(texts, batch_tokens=batch_tokens, max_inputs=max_inputs,
                         max_request_chars=max_chars)
    check_plan(texts, chunks, batch_tokens, max_inputs, max_chars)
    if batch_tokens == 1:
        assert len(chunks) == len(texts)


def test_many_short_texts_fill_requests_to_the_input_limit() -> None:
    texts = ["x"] * 5000
    chunks = plan_chunks(texts, batch_tokens=10**9)
    assert [len(c) for c in chunks] == [MAX_INPUTS, MAX_INPUTS, 5000 - 2 * MAX_INPUTS]


def test_a_text_over_the_budget_travels_alone_locked_for_its_bound() -> None:
    long = "word " * 3000  # 15,000 bytes: the bound is capped
    chunks = plan_chunks(["a", long, "b"], batch_tokens=100)
    assert [c.positions for c in chunks] == [(0, 2), (1,)]
    assert chunks[1].units == MAX_UNITS_PER_INPUT


def test_the_bound_counts_utf8_bytes_and_two_special_tokens_capped() -> None:
    assert [units_bound(t) for t in ["", "a", "déjà vu", "🙂" * 10, "z" * 20_000]] \
        == [2, 3, 11, 42, MAX_UNITS_PER_INPUT]


def test_a_chunk_is_locked_for_what_the_proxy_reserves_for_its_request() -> None:
    """The units a chunk is planned for are the proxy's plain-route reserve for the request that
    carries its texts: the proxy sums the same per-input bound over the same inputs."""
    texts = [*corpus(500), "", "🙂" * 10, "z" * 20_000]
    chunks = plan_chunks(texts, batch_tokens=2000)
    assert len(chunks) > 1
    for chunk in chunks:
        req = CreateEmbeddingRequest(input=[texts[p] for p in chunk.positions], model="m")
        assert estimate_plain_units(req) == chunk.units
    # Token ids: one unit each plus the two special tokens, capped like text.
    req = CreateEmbeddingRequest(input=[[7] * 3, [7] * (MAX_UNITS_PER_INPUT + 1)], model="m")
    assert estimate_plain_units(req) == 5 + MAX_UNITS_PER_INPUT


def test_count_tokens_replaces_the_bound() -> None:
    texts = ["a b c", "d", "e f"]
    count = lambda t: len(t.split()) + 2  # noqa: E731
    assert [(c.positions, c.units) for c in plan_chunks(texts, batch_tokens=7, count_tokens=count)] \
        == [((1, 2), 7), ((0,), 5)]
    assert [(c.positions, c.units) for c in plan_chunks(texts, batch_tokens=6, count_tokens=count)] \
        == [((1,), 3), ((2,), 4), ((0,), 5)]
    with pytest.raises(ValueError, match="count_tokens"):
        plan_chunks(texts, count_tokens=lambda t: 0)


def test_empty_corpus_plans_nothing() -> None:
    assert plan_chunks([]) == []


@pytest.mark.parametrize("bad", [b"bytes", 3, None, ["nested"]])
def test_a_text_that_is_not_a_string_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        plan_chunks(["ok", bad])  # type: ignore[list-item]


def test_a_text_over_the_character_cap_is_refused_by_name() -> None:
    with pytest.raises(InputTooLongError) as exc:
        plan_chunks(["ok", "x" * (MAX_INPUT_CHARS + 1)])
    assert exc.value.field == "texts[1]" and exc.value.status == 400


@pytest.mark.parametrize("options", [
    {"batch_tokens": 0}, {"max_inputs": 0}, {"max_request_chars": 0},
    {"max_inputs": MAX_INPUTS + 1}, {"max_request_chars": MAX_REQUEST_CHARS + 1},
])
def test_bad_limits_are_value_errors(options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        plan_chunks(["a"], **options)
