"""Choosing a path from what the hardware has (no model here): candidates per CPU, the choice from
measurements, the record on disk, the CPU description, numpy pooling and the quality figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atoma_lab.inference.corpus import (
    make_corpus,
    min_cosine,
    parity_corpus,
    retrieval_corpus,
    top_k_overlap,
)
from atoma_lab.inference.hardware import CpuInfo
from atoma_lab.inference.pooling import pool
from atoma_lab.inference.selection import (
    Choice,
    Measurement,
    PathSpec,
    candidate_paths,
    choose,
    load_record,
    record_key,
    save_record,
)


def _cpu(model: str, flags: str) -> CpuInfo:
    return CpuInfo(model, frozenset(flags.split()), 2)


ZEN3 = _cpu("AMD EPYC 7B13", "fpu sse2 avx avx2 fma f16c aes")
ZEN5 = _cpu("AMD EPYC Zen 5", "avx2 fma avx512f avx512_vnni avx512_bf16")
SAPPHIRE = _cpu("Intel Xeon", "avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8")


def _names(paths: list[PathSpec]) -> list[str]:
    return [p.name for p in paths]


def test_cpu_flags_are_read_from_cpuinfo() -> None:
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
            "flags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_bf16 amx_int8 avx512_vnni\n\n"
            "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    cpu = CpuInfo.from_cpuinfo(text, cores=2)
    assert cpu.model == "Intel(R) Xeon(R) Processor"
    assert cpu.native_bf16 and cpu.int8_dot
    assert cpu.relevant_flags == ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                                  "amx_bf16", "amx_int8")
    assert "amx_bf16" in cpu.signature() and "2 cores" in cpu.signature()
    assert not ZEN3.native_bf16 and not ZEN3.int8_dot
    here = CpuInfo.detect()
    assert here.cores >= 1 and here is CpuInfo.detect()


def test_candidates_follow_the_hardware() -> None:
    paths, notes = candidate_paths("fast", "auto", device_type="cpu", cpu=ZEN3,
                                   onnx_available=True, torch_bf16=False)
    assert _names(paths) == ["torch-float32", "onnx-float32", "onnx-int8"]
    assert any("no native bfloat16" in n and "avx2" in n for n in notes)
    paths, _ = candidate_paths("fast", "auto", device_type="cpu", cpu=SAPPHIRE,
                               onnx_available=True, torch_bf16=True)
    assert _names(paths) == ["torch-float32", "onnx-float32", "torch-bfloat16", "onnx-int8"]
    # The CPU's flags and torch's own check must both say native bfloat16.
    paths, _ = candidate_paths("fast", "torch", device_type="cpu", cpu=ZEN5,
                               onnx_available=True, torch_bf16=False)
    assert _names(paths) == ["torch-float32"]
    paths, _ = candidate_paths("exact", "auto", device_type="cpu", cpu=ZEN5,
                               onnx_available=True, torch_bf16=True)
    assert _names(paths) == ["torch-float32", "onnx-float32"]
    paths, _ = candidate_paths("fast", "auto", device_type="cuda", cpu=ZEN5,
                               onnx_available=True, torch_bf16=True)
    assert _names(paths) == ["torch-float32", "torch-float16"]


def test_candidates_without_onnxruntime() -> None:
    paths, notes = candidate_paths("exact", "auto", device_type="cpu", cpu=ZEN3,
                                   onnx_available=False, torch_bf16=False)
    assert _names(paths) == ["torch-float32"] and "onnxruntime is not installed" in notes[0]
    with pytest.raises(ValueError, match="onnxruntime"):
        candidate_paths("exact", "onnx", device_type="cpu", cpu=ZEN3, onnx_available=False,
                        torch_bf16=False)
    with pytest.raises(ValueError, match="int8"):
        candidate_paths("int8", "torch", device_type="cpu", cpu=ZEN3, onnx_available=True,
                        torch_bf16=False)
    with pytest.raises(ValueError):
        candidate_paths("turbo", "auto", device_type="cpu", cpu=ZEN3,  # type: ignore[arg-type]
                        onnx_available=True, torch_bf16=False)


def _m(speed: float, cos: float = 1.0, eligible: bool = True) -> Measurement:
    return Measurement(1.0 / speed, speed, cos, eligible)


def test_choose_takes_the_fastest_eligible_path() -> None:
    measured = {"torch-float32": _m(1.0), "onnx-float32": _m(1.3),
                "torch-bfloat16": _m(2.5, 0.99996), "onnx-int8": _m(3.0, 0.98, False)}
    choice = choose("fast", measured, "torch-float32")
    assert choice.path == "torch-bfloat16" and "2.50x" in choice.reason
    assert choice.spec == PathSpec("torch", "bfloat16") and choice.spec.lossy


def test_fast_mode_runs_exact_when_no_lossy_path_is_faster_or_good_enough() -> None:
    slow_bf16 = {"torch-float32": _m(1.0), "torch-bfloat16": _m(0.22, 0.99998)}  # Zen 3
    choice = choose("fast", slow_bf16, "torch-float32")
    assert choice.path == "torch-float32"
    assert choice.reason.startswith("fast mode runs exact") and "0.22x" in choice.reason
    bad_int8 = {"torch-float32": _m(1.0), "onnx-float32": _m(1.2),
                "onnx-int8": _m(2.0, 0.98, False)}
    choice = choose("fast", bad_int8, "torch-float32")
    assert choice.path == "onnx-float32" and "< 0.999" in choice.reason
    with pytest.raises(ValueError):
        choose("fast", {"onnx-int8": _m(2.0, 0.9, False)}, "torch-float32")


def test_records_round_trip_and_bad_ones_are_ignored(tmp_path: Path) -> None:
    key = record_key(model="abc", cpu=SAPPHIRE.signature(), threads=2)
    assert key == record_key(threads=2, cpu=SAPPHIRE.signature(), model="abc")
    assert key != record_key(model="abc", cpu=ZEN3.signature(), threads=2)
    assert load_record(tmp_path, key) is None
    choice = choose("fast", {"torch-float32": _m(1.0), "torch-bfloat16": _m(2.0, 0.9999)},
                    "torch-float32").with_quality({"top10_overlap": 0.9})
    saved = save_record(tmp_path, key, choice, {"cpu": SAPPHIRE.signature()})
    assert saved.recorded and Path(saved.recorded).is_file() and not saved.from_record
    loaded = load_record(tmp_path, key)
    assert loaded is not None and loaded.from_record
    assert loaded.path == choice.path and loaded.measured == choice.measured
    assert loaded.quality == {"top10_overlap": 0.9}
    Path(saved.recorded).write_text("{not json")
    assert load_record(tmp_path, key) is None
    with pytest.raises(ValueError):
        PathSpec.parse("jax-float32")
    assert Choice("onnx-int8", "x").spec.precision == "int8"


def _torch_pool(hidden: Any, lengths: Any, modes: Any) -> Any:
    """sentence-transformers' Pooling + Normalize on the same arrays (the reference)."""
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("sentence_transformers.models")
    h = torch.from_numpy(hidden)
    mask = torch.from_numpy((np.arange(hidden.shape[1])[None, :] < lengths[:, None])
                            .astype(np.int64))
    pooling = models.Pooling(hidden.shape[2], pooling_mode=modes)
    out = pooling({"token_embeddings": h, "attention_mask": mask})["sentence_embedding"]
    return torch.nn.functional.normalize(out, dim=1).numpy()


@pytest.mark.parametrize("modes", [("mean",), ("cls",), ("max",), ("lasttoken",),
                                   ("mean_sqrt_len_tokens",), ("weightedmean",),
                                   ("cls", "mean")])
def test_numpy_pooling_matches_sentence_transformers(modes: tuple[Any, ...]) -> None:
    rng = np.random.default_rng(3)
    hidden = rng.standard_normal((4, 7, 16)).astype(np.float32)
    lengths = np.array([7, 3, 1, 5])
    got = pool(hidden, lengths, modes, normalize=True)
    want = _torch_pool(hidden, lengths, list(modes) if len(modes) > 1 else modes[0])
    assert got.dtype == np.float32 and got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 1e-6
    with pytest.raises(ValueError):
        pool(hidden[0], lengths, modes, normalize=True)
    with pytest.raises(ValueError):
        pool(hidden, lengths, (), normalize=True)


def test_quality_figures() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 8)).astype(np.float32)
    assert min_cosine(a, a * 3) == pytest.approx(1.0, abs=1e-6)
    b = a.copy()
    b[4] = -b[4]
    assert min_cosine(b, a) == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(ValueError):
        min_cosine(a, a[:3])
    q, p = a[:5], rng.standard_normal((30, 8)).astype(np.float32)
    assert top_k_overlap(q, p, q, p, k=10) == 1.0
    assert top_k_overlap(q, -p, q, p, k=10) < 0.5  # reversed similarities share few neighbours
    with pytest.raises(ValueError):
        top_k_overlap(q, p, q, p, k=31)


def test_corpora_are_seeded_and_shaped() -> None:
    assert make_corpus(5) == make_corpus(5) and make_corpus(5) != make_corpus(5, seed=1)
    assert all(4 <= len(t.split()) <= 120 for t in make_corpus(50))
    parity = parity_corpus(40)
    assert len(parity) == 40 and "" in parity and any(len(t) > 500 for t in parity)
    corpus = retrieval_corpus()
    assert len(corpus.queries) == 50 and len(corpus.passages) == len(corpus.topics) == 300
    with pytest.raises(ValueError):
        make_corpus(3, min_words=5, max_words=2)


@pytest.mark.parametrize(("runtime", "half", "path", "reason"), [
    ("onnx", False, "onnx-float32", "fast mode runs exact"),
    ("torch", True, "torch-float16", "fast mode on CUDA: float16 weights"),
])
def test_fast_mode_on_cuda_takes_the_runtime_asked_for(runtime: str, half: bool, path: str,
                                                       reason: str, monkeypatch: Any) -> None:
    """The engine's choice on a CUDA device (decided before any model runs, so a stand-in
    engine without weights shows it): half weights on torch; on ONNX Runtime, which has no
    lossy path there, exact ONNX, said so, never torch in its place."""
    torch = pytest.importorskip("torch")
    from atoma_lab.inference import onnx_runtime
    from atoma_lab.inference.transformers_engine import TransformersEngine

    monkeypatch.setattr(onnx_runtime, "onnxruntime_available", lambda: True)
    engine = TransformersEngine.__new__(TransformersEngine)
    engine.mode, engine.runtime_requested = "fast", runtime
    engine.device, engine.cpu, engine._notes = torch.device("cuda"), ZEN5, []
    engine._half_for_fast = half
    engine._weights_dtype = "float16" if half else "float32"
    choice = engine._choose_path()
    assert choice.path == path
    assert choice.reason.startswith(reason)
