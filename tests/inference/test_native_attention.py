"""The AMX attention kernel of the packed bfloat16 path: its numbers, its build cache, its
fallbacks, and the engine that uses it.

The kernel's own tests run where it can (Linux x86-64 with AMX-BF16 and a C compiler) and are
skipped elsewhere with the reason :func:`load_native_attention` gives; the reference, the
fallbacks and the requirement checks run everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atoma_lab.errors import ModelLoadError
from atoma_lab.inference import native_attention as na
from atoma_lab.inference.corpus import min_cosine
from atoma_lab.inference.hardware import CpuInfo
from atoma_lab.inference.selection import PathSpec
from atoma_lab.inference.transformers_engine import TransformersEngine

from .conftest import MIXED_CORPUS, packed_bf16_path

SCALE = 32 ** -0.5


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every call made into the kernel during the test."""
    calls: list[dict[str, Any]] = []
    run = na.NativeAttention.run

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(kwargs)
        run(self, *args, **kwargs)

    monkeypatch.setattr(na.NativeAttention, "run", spy)
    return calls


def _kernel(isa: str | None = None) -> na.NativeAttention:
    kernel, why = na.load_native_attention(isa=isa)
    if kernel is None:
        pytest.skip(f"native attention ({isa or 'best variant'}) cannot run here: {why}")
    return kernel


def _random_case(rng: np.random.Generator, batch: int, length: int, heads: int, *,
                 head_dim: int = 32, extra_columns: int = 0) -> tuple[np.ndarray, np.ndarray]:
    width = 3 * heads * head_dim + extra_columns
    qkv = na.to_bf16_bits(rng.standard_normal((batch * length, width)).astype(np.float32) * 2)
    lengths = rng.integers(1, length + 1, size=batch).astype(np.int64)
    lengths[0] = length
    return qkv, lengths


def test_reference_matches_torch_sdpa() -> None:
    """The numpy reference the kernel is checked against is torch's attention in float32."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    batch, length, heads = 4, 23, 3
    qkv = rng.standard_normal((batch * length, 3 * heads * 32)).astype(np.float32)
    lengths = np.array([23, 5, 1, 17], dtype=np.int64)
    got = na.reference_attention(qkv, lengths, batch=batch, length=length, heads=heads,
                                 head_dim=32, scale=SCALE)
    t = torch.from_numpy(qkv).view(batch, length, 3, heads, 32).permute(2, 0, 3, 1, 4)
    mask = (torch.arange(length)[None, :] < torch.from_numpy(lengths)[:, None])[:, None, None]
    want = torch.nn.functional.scaled_dot_product_attention(t[0], t[1], t[2], attn_mask=mask)
    want = want.transpose(1, 2).reshape(batch * length, heads * 32).numpy()
    valid = (np.arange(length)[None, :] < lengths[:, None]).reshape(-1)
    np.testing.assert_allclose(got[valid], want[valid], atol=1e-5)
    assert not got[~valid].any()


def test_bf16_bits_round_to_nearest_even() -> None:
    torch = pytest.importorskip("torch")
    values = np.random.default_rng(1).standard_normal(4096).astype(np.float32) * 100
    values[:4] = [1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -0.0, 65504.0]  # ties either way
    want = torch.from_numpy(values).bfloat16().view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(na.to_bf16_bits(values), want)
    np.testing.assert_array_equal(na.from_bf16_bits(want),
                                  torch.from_numpy(want.view(np.int16)).view(torch.bfloat16)
                                  .float().numpy())


@pytest.mark.parametrize("isa", na.ISAS)
@pytest.mark.parametrize(("batch", "length", "heads", "head_dim"),
                         [(1, 1, 1, 32), (3, 7, 2, 32), (2, 16, 12, 32), (2, 33, 4, 32),
                          (4, 157, 12, 32), (1, 512, 2, 32), (17, 10, 12, 32), (1, 1, 1, 64),
                          (3, 45, 16, 64), (2, 130, 4, 64)])
def test_kernel_matches_float32_reference(batch: int, length: int, heads: int,
                                          head_dim: int, isa: str) -> None:
    kernel = _kernel(isa)
    assert kernel.isa == isa
    rng = np.random.default_rng(batch * 1000 + length)
    qkv, lengths = _random_case(rng, batch, length, heads, head_dim=head_dim)
    out = np.full((batch * length, heads * head_dim), 0x7FC0, dtype=np.uint16)  # NaN everywhere
    kernel.run_arrays(qkv, out, lengths, batch=batch, length=length, heads=heads,
                      head_dim=head_dim, scale=head_dim ** -0.5, threads=2)
    want = na.reference_attention(na.from_bf16_bits(qkv), lengths, batch=batch, length=length,
                                  heads=heads, head_dim=head_dim, scale=head_dim ** -0.5)
    got = na.from_bf16_bits(out)
    valid = (np.arange(length)[None, :] < lengths[:, None]).reshape(-1)
    assert np.isfinite(got).all()
    # bfloat16 outputs (8 bits of mantissa) of values up to ~6, probabilities in bfloat16
    assert np.abs(got[valid] - want[valid]).max() <= 0.06
    assert np.abs(got[valid] - want[valid]).mean() <= 0.01
    assert not got[~valid].any()  # rows past a sequence's length: zeros


def test_kernel_reads_and_writes_strided_rows_only_where_told() -> None:
    """Row strides wider than the heads (the GEMM buffers' layout): the columns past the heads
    are neither read into the result nor written."""
    kernel = _kernel()
    rng = np.random.default_rng(5)
    batch, length, heads = 3, 21, 4
    qkv, lengths = _random_case(rng, batch, length, heads, extra_columns=40)
    out = np.full((batch * length, heads * 32 + 24), 0x1234, dtype=np.uint16)
    kernel.run_arrays(qkv, out, lengths, batch=batch, length=length, heads=heads, head_dim=32,
                      scale=SCALE, threads=2)
    assert (out[:, heads * 32:] == 0x1234).all()
    narrow = np.ascontiguousarray(qkv[:, :3 * heads * 32])
    out2 = np.zeros((batch * length, heads * 32), dtype=np.uint16)
    kernel.run_arrays(narrow, out2, lengths, batch=batch, length=length, heads=heads,
                      head_dim=32, scale=SCALE, threads=2)
    np.testing.assert_array_equal(out[:, :heads * 32], out2)


@pytest.mark.parametrize("isa", na.ISAS)
def test_kernel_result_does_not_depend_on_thread_count(isa: str) -> None:
    kernel = _kernel(isa)
    rng = np.random.default_rng(9)
    batch, length, heads = 5, 40, 12
    qkv, lengths = _random_case(rng, batch, length, heads)
    outs = []
    for threads in (1, 2, 3, 64):
        out = np.zeros((batch * length, heads * 32), dtype=np.uint16)
        kernel.run_arrays(qkv, out, lengths, batch=batch, length=length, heads=heads,
                          head_dim=32, scale=SCALE, threads=threads)
        outs.append(out)
    for other in outs[1:]:
        np.testing.assert_array_equal(outs[0], other)


def test_kernel_refuses_bad_arguments() -> None:
    kernel = _kernel()
    qkv = np.zeros((8, 3 * 32), dtype=np.uint16)
    out = np.zeros((8, 32), dtype=np.uint16)
    lengths = np.array([4, 4], dtype=np.int64)
    with pytest.raises(ValueError, match="qkv"):  # too few rows for 2 x 8
        kernel.run_arrays(qkv, out, lengths, batch=2, length=8, heads=1, head_dim=32,
                          scale=SCALE, threads=1)
    with pytest.raises(ValueError, match="out"):  # too narrow for two heads
        kernel.run_arrays(np.zeros((8, 6 * 32), dtype=np.uint16), out, lengths[:1], batch=1,
                          length=8, heads=2, head_dim=32, scale=SCALE, threads=1)
    with pytest.raises(ValueError, match="lengths"):
        kernel.run_arrays(qkv, out, lengths.astype(np.int32), batch=2, length=4, heads=1,
                          head_dim=32, scale=SCALE, threads=1)
    for batch, head_dim in ((0, 32), (1, 48)):  # the C side's checks
        with pytest.raises(na.NativeAttentionError, match="bad arguments"):
            kernel.run(qkv.ctypes.data, 3 * 64, out.ctypes.data, 64, lengths.ctypes.data,
                       batch=batch, length=4, heads=1, head_dim=head_dim, scale=SCALE, threads=1)


def test_requirements_name_what_is_missing() -> None:
    amx = CpuInfo("Xeon", frozenset(na.REQUIRED_FLAGS + na.AMX_FLAGS), 2)
    if na.missing_requirements(amx) is not None:
        pytest.skip(str(na.missing_requirements(amx)))  # not Linux on x86-64
    assert na.missing_requirements(amx, isa="amx") is None and na.best_isa(amx) == "amx"
    avx2 = CpuInfo("AMD EPYC Zen 3", frozenset({"avx2", "fma"}), 2)
    why = na.missing_requirements(avx2)
    assert why is not None and all(flag in why for flag in na.REQUIRED_FLAGS)
    zen5 = CpuInfo("AMD EPYC Zen 5", frozenset({"avx2", "avx512f", "avx512_bf16"}), 2)
    assert na.missing_requirements(zen5) is None and na.best_isa(zen5) == "avx512-bf16"
    assert na.missing_requirements(zen5, isa="amx") == "the CPU lacks amx_tile, amx_bf16"


def test_turned_off_or_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(na.DISABLE_ENV, "0")
    kernel, why = na.load_native_attention()
    assert kernel is None and na.DISABLE_ENV in why
    monkeypatch.setenv(na.DISABLE_ENV, "fastest")
    kernel, why = na.load_native_attention()
    assert kernel is None and "'fastest' is not one of" in why
    with pytest.raises(ValueError, match="isa"):
        na.load_native_attention(isa="sse2")
    monkeypatch.setenv(na.DISABLE_ENV, "avx512-bf16")
    kernel, why = na.load_native_attention()
    if kernel is None:
        pytest.skip(why)
    assert kernel.isa == "avx512-bf16" and why.startswith("avx512-bf16 kernel")


def test_no_compiler_is_a_reason_not_an_error(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    why = na.missing_requirements()
    if why is not None:
        pytest.skip(why)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    kernel, why = na.load_native_attention(tmp_path)
    assert kernel is None and "no-such-cc" in why
    assert not (tmp_path / "kernels").exists()


def test_build_is_cached_and_keyed_by_the_source(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _kernel()  # skips where it cannot build
    kernel, _ = na.load_native_attention(tmp_path)
    assert kernel is not None and kernel.library.parent == tmp_path / "kernels"
    built = kernel.library.stat().st_mtime_ns
    na._load_cached.cache_clear()
    again, _ = na.load_native_attention(tmp_path)
    assert again is not None and again.library == kernel.library
    assert again.library.stat().st_mtime_ns == built  # a cache hit: not compiled again
    changed = tmp_path / "attention_amx.c"
    changed.write_text(na.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(na, "SOURCE", changed)
    na._load_cached.cache_clear()
    other, _ = na.load_native_attention(tmp_path)
    assert other is not None and other.library != kernel.library
    assert sorted(p.name for p in (tmp_path / "kernels").glob("*.so")) == sorted(
        [kernel.library.name, other.library.name])  # no temporary files left


def test_a_kernel_that_fails_its_check_is_not_used(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A build whose numbers are wrong (here: the softmax scale doubled) is refused."""
    _kernel()
    broken = tmp_path / "attention_amx.c"
    source = na.SOURCE.read_text()
    assert "_mm512_set1_ps(jb->scale)" in source
    broken.write_text(source.replace("_mm512_set1_ps(jb->scale)", "_mm512_set1_ps(2 * jb->scale)"))
    monkeypatch.setattr(na, "SOURCE", broken)
    kernel, why = na.load_native_attention(tmp_path)
    assert kernel is None and "failed its check" in why


def test_two_processes_building_at_once_end_with_one_library(tmp_path: Path) -> None:
    _kernel()
    code = ("from atoma_lab.inference.native_attention import load_native_attention as l;"
            "k, why = l(); assert k is not None, why; print(k.library)")
    env = {**os.environ, "ATOMA_LAB_CACHE_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-500:] for r in results]
    assert results[0][0] == results[1][0]
    assert [p.name for p in (tmp_path / "kernels").iterdir() if not p.name.startswith(".")] == [
        Path(results[0][0].strip()).name]
    assert not [p for p in (tmp_path / "kernels").glob(".*.so")]  # no half-written file left


# ------------------------------------------------------------------ the engine


@pytest.fixture(scope="module")
def fast_pair(minilm_path: Path) -> tuple[TransformersEngine, TransformersEngine]:
    """Fast mode's packed bfloat16 path with the kernel and with SDPA (paths built directly:
    whether bfloat16 wins the measurement on this machine is not what these tests are about)."""
    _kernel()
    engines = []
    for attention in ("native", "sdpa"):
        engine = TransformersEngine(minilm_path, device="cpu", attention=attention)  # type: ignore[arg-type]
        engine._path = packed_bf16_path(engine)
        engines.append(engine)
    return engines[0], engines[1]


def test_engine_runs_the_kernel_and_stays_with_sdpa(fast_pair: Any, engine: Any,
                                                    kernel_calls: list[dict[str, Any]]) -> None:
    native, sdpa = fast_pair
    assert native._path.attention == f"native-{na.best_isa()}" and sdpa._path.attention == "sdpa"
    got = native.embed(MIXED_CORPUS).vectors
    layers = len(native._fused.layers)
    assert kernel_calls and len(kernel_calls) % layers == 0
    assert sum(c["batch"] for c in kernel_calls) == len(MIXED_CORPUS) * layers
    kernel_calls.clear()
    want = sdpa.embed(MIXED_CORPUS).vectors
    assert not kernel_calls
    exact = engine.embed(MIXED_CORPUS).vectors
    assert min_cosine(got, want) >= 0.9999
    assert min_cosine(got, exact) >= 0.999


def test_engine_vectors_do_not_depend_on_padding(fast_pair: Any,
                                                 kernel_calls: list[dict[str, Any]]) -> None:
    """A text embedded alone equals the same text in a padded micro-batch of longer ones: the
    kernel masks the keys past each sequence's length."""
    native, _ = fast_pair
    texts = ["short", "a somewhat longer sentence about attention kernels and tiles " * 3,
             "mid-length text here", "x"]
    together = native.embed(texts).vectors
    # the kernel ran, on a micro-batch of several texts of different lengths (padded)
    assert kernel_calls and max(c["batch"] for c in kernel_calls) > 1
    alone = np.stack([native.embed([t]).vectors[0] for t in texts])
    assert min_cosine(together, alone) >= 0.9999


def test_engine_describes_the_attention_it_runs(fast_pair: Any) -> None:
    native, sdpa = fast_pair
    assert native.describe()["attention"] == f"native-{na.best_isa()}"
    assert "checked" in native.describe()["attention_reason"]
    assert sdpa.describe()["attention"] == "sdpa"
    assert "attention='sdpa'" in sdpa.describe()["attention_reason"]


def test_engine_falls_back_or_refuses_where_the_kernel_cannot_run(
        minilm_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(na.DISABLE_ENV, "0")
    engine = TransformersEngine(minilm_path, device="cpu")
    path = packed_bf16_path(engine)
    assert path.attention == "sdpa" and na.DISABLE_ENV in path.attention_reason
    strict = TransformersEngine(minilm_path, device="cpu", attention="native")
    with pytest.raises(ModelLoadError, match="attention='native'"):
        strict._build_path(PathSpec("torch", "bfloat16"))


@pytest.mark.parametrize(("model_type", "heads"), [("bert", 2), ("bert", 1), ("roberta", 1)])
def test_tiny_models_run_the_kernel_at_each_head_size(make_tiny_model: Any, model_type: str,
                                                      heads: int,
                                                      kernel_calls: list[dict[str, Any]]) -> None:
    """Head sizes 32 (two heads of 64) and 64 (one): the kernel runs in the engine and its
    vectors equal SDPA's up to bfloat16 rounding."""
    _kernel()
    folder = make_tiny_model(f"tiny-{model_type}-heads{heads}", model_type=model_type,
                             heads=heads)
    kernel_calls.clear()  # a first load's own check runs the kernel on both head sizes
    vectors = {}
    for attention in ("native", "sdpa"):
        engine = TransformersEngine(folder, device="cpu", attention=attention)  # type: ignore[arg-type]
        path = packed_bf16_path(engine)
        vectors[attention] = engine._run(engine.tokenize(MIXED_CORPUS).sequences, path)
    assert kernel_calls and {c["head_dim"] for c in kernel_calls} == {64 // heads}
    assert min_cosine(vectors["native"], vectors["sdpa"]) >= 0.999


class _FakeKernel:
    """A stand-in for the kernel in the reach measurement: free, or slower than anything."""

    isa = "fake"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lengths: list[int] = []

    def run(self, *args: Any, length: int, **kwargs: Any) -> None:
        self.lengths.append(length)
        if self.seconds:
            time.sleep(self.seconds)


def test_reach_stops_where_the_kernel_stops_paying() -> None:
    """The engine uses the kernel up to the longest length at which it measured faster than
    SDPA: all of them for a kernel that costs nothing, none for one slower than SDPA."""
    from atoma_lab.inference.transformers_engine import _REACH_LENGTHS, _native_attention_reach

    free = _FakeKernel(0.0)
    reach, ratios = _native_attention_reach(free, 12, 32, max_length=256, tokens=512)  # type: ignore[arg-type]
    assert reach == 256 and list(ratios) == [n for n in _REACH_LENGTHS if n <= 256]
    assert all(r < 1.0 for r in ratios.values()) and set(free.lengths) == set(ratios)
    cut, _ = _native_attention_reach(free, 12, 32, max_length=48, tokens=512)  # type: ignore[arg-type]
    assert cut == 48  # the model's longest input is measured, not a length past it
    slow = _FakeKernel(0.05)
    reach, ratios = _native_attention_reach(slow, 12, 32, max_length=512, tokens=512)  # type: ignore[arg-type]
    assert reach == 0 and list(ratios) == [16] and ratios[16] > 1.0


def test_longer_micro_batches_than_the_reach_run_sdpa(fast_pair: Any,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      kernel_calls: list[dict[str, Any]]) -> None:
    native, _ = fast_pair
    path = native._path
    monkeypatch.setattr(path, "native_max_length", 12)
    short = native._run(native.tokenize(["a b c", "four five"]).sequences, path)
    assert kernel_calls and max(c["length"] for c in kernel_calls) <= 12
    kernel_calls.clear()
    long = native._run(native.tokenize([" ".join(["word"] * 40)]).sequences, path)
    assert not kernel_calls  # 42 tokens: SDPA
    assert np.isfinite(short).all() and np.isfinite(long).all()


def test_auto_measures_the_reach_and_says_so(minilm_path: Path) -> None:
    kernel, why = na.load_native_attention()
    if kernel is None:
        pytest.skip(why)
    engine = TransformersEngine(minilm_path, device="cpu")
    path = packed_bf16_path(engine)
    if path.native_attention is None:  # slower than SDPA at 16 tokens on this machine
        assert "slower than SDPA" in path.attention_reason
        return
    assert path.native_max_length in (16, 32, 64, 128, 256, engine._max_seq_length)
    assert f"used up to {path.native_max_length} tokens" in path.attention_reason
    strict = TransformersEngine(minilm_path, device="cpu", attention="native")
    assert strict._build_path(PathSpec("torch", "bfloat16")).native_max_length is None


def test_engine_refuses_an_unknown_attention(minilm_path: Path) -> None:
    with pytest.raises(ValueError, match="attention"):
        TransformersEngine(minilm_path, device="cpu", attention="flash")  # type: ignore[arg-type]


def test_the_engine_logs_what_it_runs(minilm_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An operator reading a node's log sees the path and the attention the engine chose."""
    with caplog.at_level("INFO", logger="atoma_lab.inference"):
        TransformersEngine(minilm_path, device="cpu", attention="sdpa")
    lines = [r.getMessage() for r in caplog.records if r.name == "atoma_lab.inference"]
    assert any("runs torch-float32 on cpu" in m and "attention: sdpa" in m for m in lines), lines
