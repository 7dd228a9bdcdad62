"""The ONNX Runtime path: exact against sentence-transformers, the export cache, int8 and the
choice of a path by runtime='auto' and mode='fast'.

Exact means max abs difference <= 1e-5 to ``SentenceTransformer.encode(normalize_embeddings=
True)`` (torch), as for the torch path (test_equivalence.py).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from atoma_lab.errors import InputTooLongError, InvalidFieldError, ModelLoadError
from atoma_lab.inference import load_engine
from atoma_lab.inference import onnx_export as ox
from atoma_lab.inference.corpus import min_cosine, parity_corpus
from atoma_lab.inference.transformers_engine import TransformersEngine

from .conftest import MIXED_CORPUS

TOL = 1e-5


def test_shipped_model_on_onnx_matches_sentence_transformers(onnx_engine: Any,
                                                             st_reference: Any) -> None:
    assert onnx_engine.runtime == "onnx" and onnx_engine.precision == "float32"
    assert not onnx_engine.lossy and not onnx_engine.fused
    info = onnx_engine.describe()
    assert info["onnx"]["exporter"] == "bert-contrib" and info["onnx"]["variant"] == "fp32"
    assert onnx_engine.model is None  # the torch weights served the export only
    got = onnx_engine.embed(MIXED_CORPUS).vectors
    assert got.dtype == np.float32 and got.shape == st_reference.shape
    assert float(np.abs(got - st_reference).max()) <= TOL


def test_onnx_on_the_parity_corpus_and_in_small_batches(onnx_engine: Any, st_model: Any,
                                                        engine: Any) -> None:
    texts = parity_corpus(96)
    ref = st_model.encode(texts, batch_size=32, normalize_embeddings=True)
    assert float(np.abs(onnx_engine.embed(texts).vectors - ref).max()) <= TOL
    small = TransformersEngine(engine.folder, device="cpu", runtime="onnx",
                               micro_batch_tokens=64, max_batch_size=3)
    assert small.describe()["onnx"]["cached"]  # the session's export is reused
    assert float(np.abs(small.embed(texts[:20]).vectors - ref[:20]).max()) <= TOL
    assert float(np.abs(engine.embed(texts).vectors - ref).max()) <= TOL  # torch, same corpus


def test_onnx_engine_keeps_the_openai_semantics(onnx_engine: Any, engine: Any) -> None:
    texts = ["privacy preserving embeddings", "", "sentence " * 300]
    assert onnx_engine.count_tokens(texts) == engine.count_tokens(texts) == [8, 2, 256]
    ids = [engine.tokenize([t]).sequences[0][1:-1] for t in texts[:2]]
    by_ids = onnx_engine.embed(ids)
    assert float(np.abs(by_ids.vectors - onnx_engine.embed(texts[:2]).vectors).max()) <= 1e-6
    with pytest.raises(InputTooLongError):
        onnx_engine.embed(texts, truncate=False)
    with pytest.raises(InvalidFieldError):
        onnx_engine.embed([[onnx_engine.vocab_size]])
    short = onnx_engine.embed(texts[:1], dimensions=32).vectors
    assert short.shape == (1, 32) and abs(float(np.linalg.norm(short)) - 1.0) < 1e-6


@pytest.mark.parametrize(("model_type", "pooling"), [
    ("bert", "mean"), ("bert", "cls"), ("bert", "max"), ("bert", ["cls", "mean"]),
    ("roberta", "mean"), ("roberta", "lasttoken"), ("roberta", "weightedmean"),
    ("bert", "mean_sqrt_len_tokens"),
])
def test_tiny_models_on_onnx_match_sentence_transformers(make_tiny_model: Any, model_type: str,
                                                          pooling: Any) -> None:
    """The fused-operator graph (BERT and RoBERTa positions) and numpy pooling in every mode."""
    st = pytest.importorskip("sentence_transformers")
    name = f"{model_type}-{'-'.join(pooling) if isinstance(pooling, list) else pooling}"
    folder = make_tiny_model(name, model_type=model_type, pooling=pooling)
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(
        MIXED_CORPUS, batch_size=8, normalize_embeddings=True)
    eng = TransformersEngine(folder, device="cpu", runtime="onnx")
    assert eng.describe()["onnx"]["exporter"] == "bert-contrib"
    got = eng.embed(MIXED_CORPUS).vectors
    assert got.shape == ref.shape
    assert float(np.abs(got - ref).max()) <= TOL


@pytest.mark.parametrize("act", ["gelu_new", "relu"])
def test_other_fused_activations_on_onnx(make_tiny_model: Any, act: str) -> None:
    st = pytest.importorskip("sentence_transformers")
    folder = make_tiny_model(f"bert-{act}", hidden_act=act)
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(
        MIXED_CORPUS[:8], normalize_embeddings=True)
    got = TransformersEngine(folder, device="cpu", runtime="onnx").embed(MIXED_CORPUS[:8])
    assert float(np.abs(got.vectors - ref).max()) <= TOL


@pytest.mark.slow
def test_architectures_outside_the_bert_family_export_through_torch_onnx(
        make_tiny_model: Any) -> None:
    """An activation the fused graph has no operator for: torch.onnx.export(dynamo=True)."""
    st = pytest.importorskip("sentence_transformers")
    folder = make_tiny_model("bert-silu", hidden_act="silu")
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(
        MIXED_CORPUS, normalize_embeddings=True)
    eng = TransformersEngine(folder, device="cpu", runtime="onnx")
    assert eng.describe()["onnx"]["exporter"] == "torch.onnx"
    assert float(np.abs(eng.embed(MIXED_CORPUS).vectors - ref).max()) <= TOL


# ------------------------------------------------------------------------------ the cache


def test_a_changed_model_is_exported_again(make_tiny_model: Any, tmp_path: Path) -> None:
    import torch
    from transformers import BertModel

    source = make_tiny_model("bert-mean", pooling="mean")
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    cache = tmp_path / "cache"
    first = TransformersEngine(folder, device="cpu", runtime="onnx", cache_dir=cache)
    again = TransformersEngine(folder, device="cpu", runtime="onnx", cache_dir=cache)
    assert not first.describe()["onnx"]["cached"] and again.describe()["onnx"]["cached"]
    assert first.describe()["onnx"]["path"] == again.describe()["onnx"]["path"]
    before = first.embed(["same text"]).vectors

    model = BertModel.from_pretrained(str(folder))
    with torch.no_grad():
        model.encoder.layer[0].output.dense.weight.mul_(1.5)
    model.save_pretrained(str(folder))
    changed = TransformersEngine(folder, device="cpu", runtime="onnx", cache_dir=cache)
    info = changed.describe()["onnx"]
    assert not info["cached"] and info["path"] != first.describe()["onnx"]["path"]
    ref = TransformersEngine(folder, device="cpu").embed(["same text"]).vectors  # torch
    after = changed.embed(["same text"]).vectors
    assert float(np.abs(after - ref).max()) <= TOL
    assert float(np.abs(after - before).max()) > 1e-3
    entries = sorted(p.name for p in (cache / "onnx").iterdir() if not p.name.startswith("."))
    assert len(entries) == 2 and all(e.endswith("-fp32") for e in entries)
    manifest = json.loads((Path(info["path"]).parent / "manifest.json").read_text())
    assert manifest["exporter"] == "bert-contrib" and manifest["variant"] == "fp32"


def test_the_cache_lives_outside_the_package(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.delenv(ox.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ox.default_cache_dir() == tmp_path / "xdg" / "atoma-lab"
    monkeypatch.setenv(ox.CACHE_ENV, str(tmp_path / "mine"))
    assert ox.default_cache_dir() == tmp_path / "mine"


def test_fingerprint_follows_weights_and_config_not_other_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights-1")
    (tmp_path / "README.md").write_text("notes")
    first = ox.model_fingerprint(tmp_path)
    (tmp_path / "README.md").write_text("other notes")
    assert ox.model_fingerprint(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"weights-2")
    assert ox.model_fingerprint(tmp_path) != first
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weight file"):
        ox.model_fingerprint(tmp_path)


_EXPORT_PROCESS = """
import sys, time
from pathlib import Path
from atoma_lab.inference import onnx_export as ox

def build(out):
    data = bytes(range(256)) * 4096
    with (out / ox.MODEL_FILE).open("wb") as fh:
        for _ in range(8):
            fh.write(data)
            fh.flush()
            time.sleep(0.05)

res = ox.cached_export(Path("model"), fingerprint="f" * 64, exporter="test", variant="fp32",
                       build=build, cache_dir=Path(sys.argv[1]))
print(int(res.cached), res.path)
"""


def test_two_processes_exporting_at_once_leave_one_whole_entry(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _EXPORT_PROCESS, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2]) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    results = [o[0].split() for o in outs]
    assert sorted(r[0] for r in results) == ["0", "1"]  # one exported, one waited and reused
    assert results[0][1] == results[1][1]
    path = Path(results[0][1])
    assert path.read_bytes() == bytes(range(256)) * 4096 * 8
    leftovers = [p.name for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".")
                 and not p.name.endswith(".lock")]
    assert leftovers == []


def test_a_lost_rename_race_keeps_the_winner(tmp_path: Path, monkeypatch: Any) -> None:
    """Without the lock (a shared folder, no fcntl) both build; the first rename wins and the
    second process discards its copy instead of failing or mixing files."""
    import contextlib

    monkeypatch.setattr(ox, "locked", lambda path: contextlib.nullcontext())
    barrier = threading.Barrier(2)
    results: list[ox.OnnxExport] = []

    def build(out: Path) -> None:
        (out / ox.MODEL_FILE).write_bytes(threading.current_thread().name.encode())
        barrier.wait(timeout=30)

    def run() -> None:
        results.append(ox.cached_export(Path("m"), fingerprint="a" * 64, exporter="t",
                                        variant="fp32", build=build, cache_dir=tmp_path))

    threads = [threading.Thread(target=run, name=f"builder-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and results[0].path == results[1].path
    assert results[0].path.read_bytes() in (b"builder-0", b"builder-1")
    assert [p for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".")] == []


def test_cached_export_rejects_a_build_that_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="wrote no"):
        ox.cached_export(Path("m"), fingerprint="b" * 64, exporter="t", variant="fp32",
                         build=lambda out: None, cache_dir=tmp_path)
    with pytest.raises(ValueError):
        ox.cached_export(Path("m"), fingerprint="b" * 64, exporter="t", variant="fp16",  # type: ignore[arg-type]
                         build=lambda out: None, cache_dir=tmp_path)
    assert not ox.cache_entry(tmp_path, "b" * 64, "fp32").exists()


def test_onnx_encoder_refuses_what_is_not_an_encoder_graph(tmp_path: Path) -> None:
    from atoma_lab.inference.onnx_runtime import OnnxEncoder

    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not a protobuf")
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load"):
        OnnxEncoder(bogus)


# ------------------------------------------------------------------------------ int8, fast, auto


@pytest.mark.slow
def test_int8_reports_its_measured_quality(minilm_path: Path, engine: Any,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="atoma_lab.inference"):
        int8 = TransformersEngine(minilm_path, device="cpu", runtime="onnx", mode="int8")
    assert int8.precision == "int8" and int8.lossy and int8.runtime == "onnx"
    quality = int8.describe()["quality"]
    assert 0.5 < quality["min_cosine"] < 1.0
    assert 0.0 <= quality["top10_overlap"] <= 1.0 and quality["speed_vs_exact"] > 0
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "int8" in message and "min cosine" in message and "top-10 neighbour overlap" in message
    texts = parity_corpus(32)
    cos = min_cosine(int8.embed(texts).vectors, engine.embed(texts).vectors)
    assert 0.5 < cos < 1.0  # lossy, but the same model
    with pytest.raises(ModelLoadError, match="int8"):
        TransformersEngine(minilm_path, device="cpu", runtime="torch", mode="int8")


@pytest.mark.slow
def test_fast_mode_is_never_chosen_slower_than_exact(minilm_path: Path, engine: Any) -> None:
    """fast picks, from what it measured, a path at least as fast as every exact one, with
    min cosine >= 0.999; where it runs exact it says so."""
    fast = TransformersEngine(minilm_path, device="cpu", runtime="auto", mode="fast")
    info = fast.describe()
    measured = fast.choice.measured
    assert measured, info
    chosen = measured[fast.choice.path]
    exact = [m for name, m in measured.items() if not name.endswith(("bfloat16", "int8"))]
    assert exact and all(chosen.speed >= m.speed for m in exact)
    assert chosen.min_cosine >= 0.999
    texts = parity_corpus(48)
    got, want = fast.embed(texts).vectors, engine.embed(texts).vectors
    assert min_cosine(got, want) >= 0.999
    if not fast.lossy:
        assert info["reason"].startswith("fast mode runs exact")
        assert float(np.abs(got - want).max()) <= TOL
    assert info["cpu_flags"] == list(fast.cpu.relevant_flags)
    again = TransformersEngine(minilm_path, device="cpu", runtime="auto", mode="fast")
    assert again.choice.from_record and again.choice.path == fast.choice.path
    assert again.describe()["recorded"] == info["recorded"]
    record = Path(info["recorded"])
    before = record.stat().st_mtime_ns
    fresh = TransformersEngine(minilm_path, device="cpu", runtime="auto", mode="fast",
                               remeasure=True)
    assert not fresh.choice.from_record and fresh.choice.measured
    assert fresh.describe()["recorded"] == info["recorded"]  # the new outcome replaced the old
    assert record.stat().st_mtime_ns > before


def test_auto_exact_chooses_between_exact_runtimes(minilm_path: Path, st_reference: Any) -> None:
    auto = load_engine(str(minilm_path), device="cpu", runtime="auto")
    assert set(auto.choice.measured) == {"torch-float32", "onnx-float32"}
    assert auto.runtime in ("torch", "onnx") and not auto.lossy
    best = max(auto.choice.measured.values(), key=lambda m: m.speed)
    assert auto.choice.measured[auto.choice.path] == best
    assert float(np.abs(auto.embed(MIXED_CORPUS).vectors - st_reference).max()) <= TOL


def test_runtime_options_are_checked(minilm_path: Path) -> None:
    with pytest.raises(ValueError, match="runtime"):
        TransformersEngine(minilm_path, runtime="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        TransformersEngine(minilm_path, runtime="onnx", dtype="bfloat16")
    with pytest.raises(ValueError, match="mode"):
        TransformersEngine(minilm_path, mode="int4")  # type: ignore[arg-type]
