"""The embedding engine against sentence-transformers and the naive ways, measured in one run.

Groups (``extra_info`` carries ``pair``, ``role`` and ``target`` for ``atoma_lab.tools.benchreport``):

* ``embed``: ``SentenceTransformer.encode(normalize_embeddings=True)`` (baseline) against the
  engine in exact mode (fp32, target >= 1.25x) and in fast mode (bf16 autocast on CPU / fp16 weights on
  CUDA, target >= 2x, with ``min_cosine`` to the fp32 vectors beside it), on 512 seeded texts of
  4-120 words, same model, same threads, at most 32 rows per forward for both. Fast mode runs on
  the first 64 texts (baseline re-measured on them) when the CPU has no native bf16: there
  autocast is several times *slower* and the full corpus would take minutes.
* ``embed-shapes``: fast mode as a server sees it, 60 requests of 1-24 texts drawn afresh each
  round (new batch shapes all the time; oneDNN builds a kernel for each new GEMM shape), against
  sentence-transformers' bf16 weights on the same requests, and against the engine with its
  GEMM row counts not bucketed (what ``bucket_rows`` saves). CPUs with native bf16 only; no
  target.
* ``embed-batcher``: 64 concurrent single-text requests through the dynamic batcher against the
  same engine serving them one by one: short queries of 4-16 words as asyncio tasks (the node's
  way; target >= 3x) and from 64 threads, and the mixed 4-120-word texts (compute-bound, no
  target).
* ``embed-json``: the OpenAI response for 32 x 1024 floats, ``encode_embeddings_response``
  (orjson on a float32 array) against ``json.dumps`` of Python lists (target >= 10x), and the
  base64 form beside them.

Each pair asserts its result once before timing. The model pairs are interleaved: every timed
round of one member runs after an (untimed there, timed here) round of the other, so both see
the same load on a shared machine; ``paired_speedup`` is the median of the per-round ratios, both
members' runs pooled (what benchreport judges the target on), and
``speedup_of_min`` the ratio of the fastest rounds, beside benchreport's ratio of medians.
Timing is reported, never asserted. ``ATOMA_LAB_BENCH_EMBED_ROUNDS`` (default 5) and
``ATOMA_LAB_BENCH_THREADS`` (default: all cores) adjust the run.

    .venv/bin/python -m pytest benchmarks/test_embed.py --benchmark-only
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")

from bench_support import interleaved, paired_speedup, pool_rounds, show  # noqa: E402

from atoma_lab.inference import (  # noqa: E402 - after the skips
    DEFAULT_MODEL,
    DynamicBatcher,
    encode_embeddings_response,
    resolve_model,
    transformers_engine,
)
from atoma_lab.inference.corpus import make_corpus as _make_corpus  # noqa: E402
from atoma_lab.inference.corpus import min_cosine  # noqa: E402
from atoma_lab.inference.transformers_engine import (  # noqa: E402
    TransformersEngine,
    cpu_has_native_bf16,
    default_device,
)

# Where both sides run: CUDA when visible (as the engine's default), else the CPU.
DEVICE = os.environ.get("ATOMA_LAB_BENCH_DEVICE") or default_device()
ON_CUDA = DEVICE.startswith("cuda")
# The model both sides load: a served name, ``package:...``, a folder or a Hub id.
MODEL = os.environ.get("ATOMA_LAB_BENCH_MODEL") or DEFAULT_MODEL
THREADS = int(os.environ.get("ATOMA_LAB_BENCH_THREADS", str(os.cpu_count() or 1)))
BATCH_SIZE = 32  # sentence-transformers' default; also our row cap per forward
ROUNDS = int(os.environ.get("ATOMA_LAB_BENCH_EMBED_ROUNDS", "5"))
CORPUS_SIZE = 512
TOL = 1e-5

def make_corpus(n: int = CORPUS_SIZE, **options: Any) -> list[str]:
    """The seeded texts of 4-120 words (:func:`atoma_lab.inference.corpus.make_corpus`)."""
    return _make_corpus(n, **options)


CORPUS = make_corpus()
_MEDIANS: dict[tuple[str, str], dict[str, float]] = {}
_MINIMA: dict[tuple[str, str], dict[str, float]] = {}
_EXTRA: dict[tuple[str, str], dict[str, float]] = {}


def _record(benchmark: Any, group: str, pair: str, role: str, *, target: float | None = None,
            **extra: float) -> None:
    benchmark.extra_info.update({"pair": pair, "role": role, **extra})
    if target is not None:
        benchmark.extra_info.update({"target": target, "target_kind": "min"})
    if benchmark.stats is None:  # --benchmark-disable
        return
    _MEDIANS.setdefault((group, pair), {})[role] = benchmark.stats.stats.median
    _MINIMA.setdefault((group, pair), {})[role] = benchmark.stats.stats.min
    _EXTRA.setdefault((group, pair), {}).update(extra)
    if role == "ours" and "baseline" in _MINIMA[(group, pair)]:
        # The median ratio is benchreport's; the ratio of minima is steadier on a busy machine.
        benchmark.extra_info["speedup_of_min"] = (_MINIMA[(group, pair)]["baseline"]
                                                  / _MINIMA[(group, pair)]["ours"])


@pytest.fixture(scope="module", autouse=True)
def _ratio_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the speed-ups (median and min) of every pair measured in this run."""
    yield
    rows = [(key, m) for key, m in _MEDIANS.items() if "ours" in m and "baseline" in m]
    if not rows:
        return
    where = torch.cuda.get_device_name(DEVICE) if ON_CUDA else f"cpu, {THREADS} threads"
    lines = ["", f"embedding engine speed-ups, same run ({where})",
             f"{'group':<15}{'pair':<44}{'baseline':>12}{'ours':>12}{'speed-up':>10}"
             f"{'(min)':>8}  extra"]
    for (group, pair), m in rows:
        mins = _MINIMA[(group, pair)]
        extra = ", ".join(f"{k}={v:.6g}" for k, v in _EXTRA.get((group, pair), {}).items())
        lines.append(f"{group:<15}{pair:<44}{m['baseline'] * 1e3:>10.2f}ms{m['ours'] * 1e3:>10.2f}ms"
                     f"{m['baseline'] / m['ours']:>9.2f}x{mins['baseline'] / mins['ours']:>7.2f}x"
                     f"  {extra}")
    show(request, lines)


def _pool(benchmark: Any, group: str, pair: str, role: str, other_s: list[float]) -> None:
    """The pair's ``paired_speedup`` from both members' interleaved runs (bench_support)."""
    value = pool_rounds(benchmark, (group, pair), role, other_s, name="paired_speedup",
                        figure=paired_speedup)
    if value is not None:
        _EXTRA.setdefault((group, pair), {})["paired_speedup"] = value


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def model_dir() -> Any:
    torch.set_num_threads(THREADS)
    return resolve_model(MODEL)


@pytest.fixture(scope="module")
def st_model(model_dir: Any) -> Any:
    return st.SentenceTransformer(str(model_dir), device=DEVICE)


@pytest.fixture(scope="module")
def exact(model_dir: Any) -> TransformersEngine:
    return TransformersEngine(model_dir, model_name=MODEL, device=DEVICE,
                              max_batch_size=BATCH_SIZE)


@pytest.fixture(scope="module")
def fast(model_dir: Any) -> TransformersEngine:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return TransformersEngine(model_dir, model_name=MODEL, device=DEVICE,
                                  mode="fast", max_batch_size=BATCH_SIZE)


def _synced(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` followed by ``torch.cuda.synchronize()`` on CUDA, so a timing covers the device's
    work too (both sides copy their vectors to the host as well, which waits anyway)."""
    if not ON_CUDA:
        return fn

    def run() -> Any:
        result = fn()
        torch.cuda.synchronize()
        return result

    return run


def _st_encode(model: Any, texts: list[str]) -> Callable[[], Any]:
    return _synced(lambda: model.encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=True,
                                        convert_to_numpy=True))


def _embed(engine: TransformersEngine, texts: list[str]) -> Callable[[], Any]:
    return _synced(lambda: engine.embed(texts))


# Fast mode is fp16 weights on CUDA, bf16 weights on the CPU: worth timing on all 512 texts only where
# the CPU has native bf16 (emulated bf16 is slower than fp32: docs/benchmarks.md).
FAST_TEXTS = CORPUS if ON_CUDA or cpu_has_native_bf16() else CORPUS[:64]
FAST_PAIR = (f"{len(FAST_TEXTS)} texts, fp32 vs fast mode"
             + ("" if len(FAST_TEXTS) == CORPUS_SIZE else " (CPU without native bf16)"))
EXACT_PAIR = f"{CORPUS_SIZE} texts, fp32 exact"

# ------------------------------------------------------------------------------------ embed


def _time_member(benchmark: Any, pair: str, role: str, ours: Callable[..., Any],
                 baseline: Callable[..., Any], *, rounds: int = ROUNDS,
                 target: float | None = None, group: str = "embed",
                 setup: Callable[[], tuple[Any, ...]] | None = None, **extra: float) -> None:
    """Time the ``role`` member of a pair of ``group``, each round after a round of the other,
    and record it with the paired speed-up. ``setup`` makes each round's fresh arguments."""
    timed, other = (ours, baseline) if role == "ours" else (baseline, ours)
    other_s = interleaved(benchmark, timed, other, rounds=rounds, setup=setup, other_setup=setup)
    _record(benchmark, group, pair, role, target=target, **extra)
    _pool(benchmark, group, pair, role, other_s)


@pytest.mark.benchmark(group="embed")
def test_st_encode(benchmark: Any, st_model: Any, exact: TransformersEngine) -> None:
    fn = _st_encode(st_model, CORPUS)
    assert fn().shape == (CORPUS_SIZE, exact.dimensions)
    _time_member(benchmark, EXACT_PAIR, "baseline", _embed(exact, CORPUS), fn)


@pytest.mark.benchmark(group="embed")
def test_engine_exact(benchmark: Any, exact: TransformersEngine, st_model: Any) -> None:
    st_fn = _st_encode(st_model, CORPUS)
    got = exact.embed(CORPUS).vectors
    max_abs = float(np.abs(got - st_fn()).max())
    assert max_abs <= TOL
    _time_member(benchmark, EXACT_PAIR, "ours", _embed(exact, CORPUS), st_fn, target=1.25,
                 max_abs_diff=max_abs)


FAST_ROUNDS = ROUNDS if len(FAST_TEXTS) == CORPUS_SIZE else 2


@pytest.mark.benchmark(group="embed")
def test_st_encode_for_fast_mode(benchmark: Any, st_model: Any) -> None:
    fn = _st_encode(st_model, FAST_TEXTS)
    fn()
    benchmark.pedantic(fn, rounds=max(ROUNDS, FAST_ROUNDS), warmup_rounds=1)
    _record(benchmark, "embed", FAST_PAIR, "baseline")


@pytest.mark.benchmark(group="embed")
def test_engine_fast(benchmark: Any, fast: TransformersEngine, exact: TransformersEngine,
                     st_model: Any) -> None:
    min_cos = min_cosine(fast.embed(FAST_TEXTS).vectors, exact.embed(FAST_TEXTS).vectors)
    assert min_cos >= 0.999
    _time_member(benchmark, FAST_PAIR, "ours", _embed(fast, FAST_TEXTS),
                 _st_encode(st_model, FAST_TEXTS), rounds=FAST_ROUNDS, target=2.0,
                 min_cosine=min_cos,
                 **({} if ON_CUDA else {"native_bf16": float(cpu_has_native_bf16())}))


HALF_PAIR = f"{CORPUS_SIZE} texts, fp16 weights (CUDA)"


@pytest.fixture(scope="module")
def half_models(model_dir: Any) -> tuple[Any, TransformersEngine]:
    """sentence-transformers and the engine with float16 weights (CUDA only: fp16 matmuls on a
    CPU are emulated)."""
    if not ON_CUDA:
        pytest.skip("fp16 weights are timed on CUDA only")
    model = st.SentenceTransformer(str(model_dir), device=DEVICE)
    model.half()
    engine = TransformersEngine(model_dir, model_name=MODEL, device=DEVICE,
                                dtype="float16", max_batch_size=BATCH_SIZE)
    return model, engine


@pytest.mark.benchmark(group="embed")
def test_st_encode_fp16(benchmark: Any, half_models: tuple[Any, TransformersEngine]) -> None:
    st_half, engine = half_models
    fn = _st_encode(st_half, CORPUS)
    assert fn().shape == (CORPUS_SIZE, engine.dimensions)
    _time_member(benchmark, HALF_PAIR, "baseline", _embed(engine, CORPUS), fn)


@pytest.mark.benchmark(group="embed")
def test_engine_fp16(benchmark: Any, half_models: tuple[Any, TransformersEngine],
                     exact: TransformersEngine) -> None:
    st_half, engine = half_models
    min_cos = min_cosine(engine.embed(CORPUS).vectors, exact.embed(CORPUS).vectors)
    assert min_cos >= 0.999
    _time_member(benchmark, HALF_PAIR, "ours", _embed(engine, CORPUS), _st_encode(st_half, CORPUS),
                 min_cosine=min_cos)


# ------------------------------------------------------------------------------- embed-shapes

SHAPES_REQUESTS = 60
SHAPES_VS_ST = f"{SHAPES_REQUESTS} requests of 1-24 texts, fresh sizes: fast vs st bf16"
SHAPES_VS_UNBUCKETED = f"{SHAPES_REQUESTS} requests of 1-24 texts, fresh sizes: GEMM rows bucketed"
_SEEDS = itertools.count(1)
needs_native_bf16 = pytest.mark.skipif(ON_CUDA or not cpu_has_native_bf16(),
                                       reason="the CPU's bf16 paths: needs native bf16 (no CUDA)")


def _fresh_requests() -> tuple[list[list[str]]]:
    rng = random.Random(next(_SEEDS))
    return ([rng.sample(CORPUS, rng.randint(1, 24)) for _ in range(SHAPES_REQUESTS)],)


@pytest.fixture(scope="module")
def st_bf16(model_dir: Any) -> Any:
    return st.SentenceTransformer(str(model_dir), device=DEVICE).bfloat16()


def _serve_fast(engine: TransformersEngine) -> Callable[[list[list[str]]], None]:
    def run(requests: list[list[str]]) -> None:
        for texts in requests:
            _embed(engine, texts)()
    return run


def _serve_st(model: Any) -> Callable[[list[list[str]]], None]:
    def run(requests: list[list[str]]) -> None:
        for texts in requests:
            _st_encode(model, texts)()
    return run


def _serve_unbucketed(engine: TransformersEngine) -> Callable[[list[list[str]]], None]:
    def run(requests: list[list[str]]) -> None:
        bucket = transformers_engine.bucket_rows
        transformers_engine.bucket_rows = lambda rows: rows
        try:
            _serve_fast(engine)(requests)
        finally:
            transformers_engine.bucket_rows = bucket
    return run


@needs_native_bf16
@pytest.mark.benchmark(group="embed-shapes")
@pytest.mark.parametrize("role", ["baseline", "ours"])
def test_fresh_shapes_vs_st_bf16(benchmark: Any, fast: TransformersEngine, st_bf16: Any,
                                 role: str) -> None:
    assert fast.precision == "bfloat16"
    _time_member(benchmark, SHAPES_VS_ST, role, _serve_fast(fast), _serve_st(st_bf16),
                 group="embed-shapes", setup=_fresh_requests)


@needs_native_bf16
@pytest.mark.benchmark(group="embed-shapes")
@pytest.mark.parametrize("role", ["baseline", "ours"])
def test_fresh_shapes_bucketed_rows(benchmark: Any, fast: TransformersEngine, role: str) -> None:
    _time_member(benchmark, SHAPES_VS_UNBUCKETED, role, _serve_fast(fast),
                 _serve_unbucketed(fast), group="embed-shapes", setup=_fresh_requests)


# ------------------------------------------------------------------------------------ batcher

CONCURRENT = 64
SHORT_QUERIES = make_corpus(CONCURRENT, seed=7, min_words=4, max_words=16)
# (texts, how the requests arrive, target). Concurrent requests are mostly short queries, and
# per-forward cost (streaming the weights) is what batching removes; long texts are
# compute-bound either way, so the mixed-length set is reported beside, without a target.
BATCHER_CASES = {
    f"{CONCURRENT} concurrent short queries (4-16 words), asyncio": (SHORT_QUERIES, "asyncio", 3.0),
    f"{CONCURRENT} concurrent short queries (4-16 words), 64 threads": (SHORT_QUERIES, "threads",
                                                                       None),
    f"{CONCURRENT} concurrent texts (4-120 words), asyncio": (CORPUS[:CONCURRENT], "asyncio", None),
}


@pytest.fixture(scope="module")
def batcher(exact: TransformersEngine) -> Iterator[DynamicBatcher]:
    with DynamicBatcher(exact) as b:  # default waits: gap 2 ms, at most 10 ms
        yield b


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(CONCURRENT) as ex:
        yield ex


def _concurrent(batcher: DynamicBatcher, pool: ThreadPoolExecutor, texts: list[str],
                how: str) -> Callable[[], list[Any]]:
    """One single-text request per task (an asyncio task, as in the node, or a thread)."""
    if how == "threads":
        return lambda: list(pool.map(lambda t: batcher.embed([t]).vectors, texts))

    async def gather() -> list[Any]:
        return [r.vectors for r in await asyncio.gather(*(batcher.aembed([t]) for t in texts))]

    return lambda: asyncio.run(gather())


def _one_by_one(engine: TransformersEngine, texts: list[str]) -> Callable[[], list[Any]]:
    return lambda: [engine.embed([t]).vectors for t in texts]


@pytest.mark.benchmark(group="embed-batcher")
@pytest.mark.parametrize("pair", list(BATCHER_CASES))
def test_one_by_one(benchmark: Any, exact: TransformersEngine, batcher: DynamicBatcher,
                    pool: ThreadPoolExecutor, pair: str) -> None:
    texts, how, _ = BATCHER_CASES[pair]
    serve = _one_by_one(exact, texts)
    assert len(serve()) == CONCURRENT
    other = interleaved(benchmark, serve, _concurrent(batcher, pool, texts, how), rounds=ROUNDS)
    _record(benchmark, "embed-batcher", pair, "baseline")
    _pool(benchmark, "embed-batcher", pair, "baseline", other)


@pytest.mark.benchmark(group="embed-batcher")
@pytest.mark.parametrize("pair", list(BATCHER_CASES))
def test_dynamic_batcher(benchmark: Any, exact: TransformersEngine, batcher: DynamicBatcher,
                         pool: ThreadPoolExecutor, pair: str) -> None:
    texts, how, target = BATCHER_CASES[pair]
    serve = _concurrent(batcher, pool, texts, how)
    got = np.concatenate(serve())
    assert float(np.abs(got - exact.embed(texts).vectors).max()) <= TOL
    batcher.stats.batches = batcher.stats.requests = 0
    other = interleaved(benchmark, serve, _one_by_one(exact, texts), rounds=ROUNDS)
    per_batch = batcher.stats.requests / max(1, batcher.stats.batches)
    _record(benchmark, "embed-batcher", pair, "ours", target=target,
            requests_per_forward=per_batch)
    _pool(benchmark, "embed-batcher", pair, "ours", other)


# ------------------------------------------------------------------------------------ JSON

JSON_PAIR = "response JSON, 32 x 1024 floats"


@pytest.fixture(scope="module")
def vectors_1024() -> np.ndarray:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((32, 1024)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _json_dumps_lists(lists: list[list[float]]) -> bytes:
    body = {"object": "list",
            "data": [{"object": "embedding", "embedding": v, "index": i}
                     for i, v in enumerate(lists)],
            "model": DEFAULT_MODEL,
            "usage": {"prompt_tokens": 320, "total_tokens": 320}}
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.benchmark(group="embed-json")
@pytest.mark.parametrize("pair", [JSON_PAIR, JSON_PAIR + ", base64"])
def test_json_dumps_python_lists(benchmark: Any, vectors_1024: np.ndarray, pair: str) -> None:
    """The baseline of both pairs (measured once for each, so each pair has its own)."""
    lists = vectors_1024.tolist()
    out = _json_dumps_lists(lists)
    assert np.array_equal(np.asarray([d["embedding"] for d in json.loads(out)["data"]],
                                     dtype=np.float32), vectors_1024)
    benchmark(_json_dumps_lists, lists)
    _record(benchmark, "embed-json", pair, "baseline", bytes=len(out))


def _ours(vectors: np.ndarray, fmt: str) -> bytes:
    return encode_embeddings_response(vectors, model=DEFAULT_MODEL, prompt_tokens=320,
                                      encoding_format=fmt)  # type: ignore[arg-type]


@pytest.mark.benchmark(group="embed-json")
def test_encode_response_float(benchmark: Any, vectors_1024: np.ndarray) -> None:
    out = _ours(vectors_1024, "float")
    assert np.array_equal(np.asarray([d["embedding"] for d in json.loads(out)["data"]],
                                     dtype=np.float32), vectors_1024)
    benchmark(_ours, vectors_1024, "float")
    _record(benchmark, "embed-json", JSON_PAIR, "ours", target=10.0, bytes=len(out))


@pytest.mark.benchmark(group="embed-json")
def test_encode_response_base64(benchmark: Any, vectors_1024: np.ndarray) -> None:
    import base64

    out = _ours(vectors_1024, "base64")
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="float32")
                        for d in json.loads(out)["data"]])
    assert np.array_equal(decoded, vectors_1024)
    benchmark(_ours, vectors_1024, "base64")
    _record(benchmark, "embed-json", JSON_PAIR + ", base64", "ours", bytes=len(out))
