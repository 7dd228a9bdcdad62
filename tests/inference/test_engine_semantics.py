"""OpenAI semantics of the engine: token counts, token-id inputs, ``dimensions``, truncation and
every error a caller can cause."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from atoma_lab.errors import InferenceError, InputTooLongError, InvalidFieldError
from atoma_lab.inference import apply_dimensions, split_inputs
from atoma_lab.inference.transformers_engine import TransformersEngine

from .conftest import MIXED_CORPUS


def test_token_counts_come_from_the_real_tokenizer(engine: Any, st_model: Any) -> None:
    hf = st_model.tokenizer
    want = [min(len(hf(t)["input_ids"]), 256) for t in MIXED_CORPUS]
    assert engine.count_tokens(MIXED_CORPUS) == want
    res = engine.embed(MIXED_CORPUS)
    assert res.token_counts == want
    assert res.prompt_tokens == sum(want)
    assert engine.count_tokens("hello world") == [4]  # [CLS] hello world [SEP]


def test_empty_string_embeds_as_special_tokens(engine: Any, st_model: Any) -> None:
    res = engine.embed(["", "   "])
    assert res.token_counts == [2, 2]
    ref = st_model.encode([""], normalize_embeddings=True)
    assert float(np.abs(res.vectors[0] - ref[0]).max()) <= 1e-5
    empty_ids = engine.embed([[]])  # an empty token list is the same input
    assert empty_ids.token_counts == [2]
    assert float(np.abs(empty_ids.vectors - res.vectors[:1]).max()) <= 1e-6


def test_empty_input_list_gives_an_empty_result(engine: Any) -> None:
    res = engine.embed([])
    assert res.vectors.shape == (0, 384) and res.token_counts == []


def test_token_id_inputs_equal_their_text(engine: Any, st_model: Any) -> None:
    texts = ["privacy preserving embeddings", "Привет мир", "🚀 launch"]
    ids = [st_model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    by_ids = engine.embed(ids)
    by_text = engine.embed(texts)
    assert by_ids.token_counts == by_text.token_counts
    assert float(np.abs(by_ids.vectors - by_text.vectors).max()) <= 1e-6
    single = engine.embed(ids[0])  # one list of ints is one input
    assert single.vectors.shape == (1, 384)
    assert float(np.abs(single.vectors[0] - by_text.vectors[0]).max()) <= 1e-6


def test_token_ids_outside_the_vocabulary_are_rejected(engine: Any) -> None:
    with pytest.raises(InvalidFieldError) as err:
        engine.embed([[101, 7592], [5, engine.vocab_size]])
    assert err.value.field == "input[1]"
    with pytest.raises(InvalidFieldError) as err:
        engine.embed([[-1]])
    assert err.value.field == "input[0]"


@pytest.mark.parametrize("bad", [[1, "a"], ["a", 1], [["a"]], [[1, 2.5]], 3, None, b"bytes",
                                 [[True]], [1, [2]]])
def test_malformed_inputs_raise_invalid_field(engine: Any, bad: Any) -> None:
    with pytest.raises(InvalidFieldError):
        engine.embed(bad)


def test_split_inputs_shapes() -> None:
    assert split_inputs("a") == ("text", ["a"])
    assert split_inputs(["a", "b"]) == ("text", ["a", "b"])
    assert split_inputs([1, 2]) == ("tokens", [[1, 2]])
    assert split_inputs([[1], [2, 3]]) == ("tokens", [[1], [2, 3]])
    assert split_inputs(np.array([4, 5])) == ("tokens", [[4, 5]])
    assert split_inputs([]) == ("text", [])


def test_truncation_setting(engine: Any) -> None:
    long_text = "sentence " * 300
    assert engine.count_tokens([long_text]) == [256]
    with pytest.raises(InputTooLongError) as err:
        engine.embed(["short", long_text], truncate=False)
    assert err.value.field == "input[1]"
    assert "input[1]" in err.value.message and "256" in err.value.message
    assert err.value.status == 400
    # Exactly at the limit passes; one more token fails.
    at_limit = [1000] * 254
    assert engine.count_tokens([at_limit], truncate=False) == [256]
    with pytest.raises(InputTooLongError):
        engine.count_tokens([[*at_limit, 1000]], truncate=False)


def test_engine_wide_truncation_off(minilm_path: Any) -> None:
    strict = TransformersEngine(minilm_path, device="cpu", truncate=False, max_seq_length=16)
    assert strict.max_seq_length == 16
    with pytest.raises(InputTooLongError) as err:
        strict.embed(["fine", "word " * 20])
    assert err.value.field == "input[1]"
    assert strict.embed(["word " * 20], truncate=True).token_counts == [16]


def test_dimensions_truncate_then_renormalise(engine: Any) -> None:
    texts = ["matryoshka", "dolls inside dolls"]
    full = engine.embed(texts).vectors
    short = engine.embed(texts, dimensions=64)
    assert short.vectors.shape == (2, 64)
    want = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    assert float(np.abs(short.vectors - want).max()) <= 1e-6
    assert np.allclose(np.linalg.norm(short.vectors, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(engine.embed(texts, dimensions=384).vectors, full)


@pytest.mark.parametrize("bad", [0, -3, 385, 10_000])
def test_bad_dimensions_raise_invalid_field(engine: Any, bad: int) -> None:
    with pytest.raises(InvalidFieldError) as err:
        engine.embed(["x"], dimensions=bad)
    assert err.value.field == "dimensions"


def test_apply_dimensions_keeps_zero_vectors_zero() -> None:
    v = np.zeros((2, 8), np.float32)
    v[1, 0] = 3.0
    out = apply_dimensions(v, 4, model_dimensions=8)
    assert out.flags.c_contiguous and out.dtype == np.float32
    assert np.array_equal(out, np.array([[0, 0, 0, 0], [1, 0, 0, 0]], np.float32))


def test_unknown_prompt_name(engine: Any) -> None:
    with pytest.raises(InvalidFieldError) as err:
        engine.embed(["x"], prompt_name="query")
    assert err.value.field == "prompt_name"


def test_prompt_exclusion_is_refused_not_ignored(make_tiny_model: Any) -> None:
    folder = make_tiny_model("bert-no-prompt-pool", prompts={"query": "query: "},
                             include_prompt=False)
    eng = TransformersEngine(folder, device="cpu")
    assert eng.embed(["no prompt, fine"]).vectors.shape == (1, 64)
    with pytest.raises(InferenceError):
        eng.embed(["x"], prompt_name="query")


def test_engine_options_are_checked(minilm_path: Any) -> None:
    with pytest.raises(ValueError):
        TransformersEngine(minilm_path, mode="turbo")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TransformersEngine(minilm_path, dtype="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TransformersEngine(minilm_path, micro_batch_tokens=0)
    with pytest.raises(ValueError):
        TransformersEngine(minilm_path, num_threads=0)
    with pytest.raises(ValueError):
        TransformersEngine(minilm_path, tokenizer_threads=0)


def test_engine_describes_itself(engine: Any) -> None:
    assert engine.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert engine.dimensions == 384 and engine.max_seq_length == 256
    assert engine.pooling_modes == ("mean",)
    assert engine.special_tokens == ([101], [102])
    assert engine.device.type in ("cpu", "cuda")
    assert "all-MiniLM-L6-v2" in repr(engine)


def test_cpu_has_native_bf16_answers_a_bool() -> None:
    from atoma_lab.inference.transformers_engine import cpu_has_native_bf16, default_device

    assert isinstance(cpu_has_native_bf16(), bool)
    assert default_device() in ("cpu", "cuda")


def test_many_inputs(engine: Any) -> None:
    texts = [f"input number {i}" for i in range(2048)]
    res = engine.embed(texts)
    assert res.vectors.shape == (2048, 384)
    assert np.isfinite(res.vectors).all()
    assert np.allclose(res.vectors[7], engine.embed([texts[7]]).vectors[0], atol=1e-5)


def test_threaded_tokenising_gives_the_same_ids_in_order(engine: Any, monkeypatch: Any) -> None:
    """A long list is tokenised in slices on threads; the ids and their order are those of one
    call."""
    texts = [MIXED_CORPUS[i % len(MIXED_CORPUS)] + f" {i}" for i in range(300)]
    monkeypatch.setattr(engine, "tokenizer_threads", 1)
    one = engine.tokenize(texts).sequences
    calls: list[int] = []
    encode_batch = engine._backend.encode_batch
    monkeypatch.setattr(engine, "_backend", type("Spy", (), {
        "encode_batch": staticmethod(lambda part, **kw: calls.append(len(part))
                                     or encode_batch(part, **kw))})())
    monkeypatch.setattr(engine, "tokenizer_threads", 4)
    assert engine.tokenize(texts).sequences == one
    assert calls == [75, 75, 75, 75]
    calls.clear()
    assert engine.tokenize(texts[:40]).sequences == one[:40]  # too few texts to slice
    assert calls == [40]


def test_broken_folders_raise_model_load_error(tmp_path: Any, minilm_path: Any) -> None:
    from atoma_lab.errors import ModelLoadError

    with pytest.raises(ModelLoadError) as err:
        TransformersEngine(tmp_path, model_name="empty/model", device="cpu")
    assert "empty/model" in err.value.message and "tokenizer" in err.value.message
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
              "special_tokens_map.json"):
        (no_weights / f).write_bytes((minilm_path / f).read_bytes())
    with pytest.raises(ModelLoadError) as err:
        TransformersEngine(no_weights, model_name="weightless", device="cpu")
    assert "weightless" in err.value.message and "weights" in err.value.message
    with pytest.raises(ModelLoadError, match="does not exist"):
        TransformersEngine(tmp_path / "missing", device="cpu")
