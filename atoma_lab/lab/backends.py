"""One table of embedding backends measured in one run, interleaved, as paired ratios.

A :class:`Backend` is anything that embeds the same corpus: sentence-transformers in this
process, a peer in a venv of its own behind a pipe, a server over HTTP, the engine on each
runtime and mode. :func:`measure_backends` runs every backend once per round, in an order that
rotates from round to round (so each sees the machine as the others do), and turns the times
into :class:`BackendTable`: texts/s, the per-round ratio to the baseline and to the fastest peer
of at least the same quality (median and spread over rounds), and each backend's min cosine and
max abs difference to the baseline's vectors. Quality classes: ``exact`` (max abs difference <=
1e-5), ``cos>=0.999`` (min cosine >= 0.999), ``lossy`` (the rest).

The benchmark (``benchmarks/test_embed_backends.py``) fills it with every backend and writes it
as JSON; notebook 03 plots that file, or a small table it measures itself in quick mode.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from atoma_lab.display.frames import to_frame
from atoma_lab.display.html import section, table
from atoma_lab.inference.corpus import min_cosine
from atoma_lab.inference.hardware import CpuInfo

Role = Literal["peer", "ours"]
Quality = Literal["exact", "cos>=0.999", "lossy"]
EXACT_TOL = 1e-5  # max abs difference that counts as exact (the parity tests' tolerance)
QUALITY_FLOOR = 0.999  # min cosine of the middle class
_QUALITY_RANK = {"exact": 2, "cos>=0.999": 1, "lossy": 0}


@dataclass
class Backend:
    """One way to embed the corpus. ``run()`` embeds it once and returns the seconds it took
    (timed where the work happens: in this process, in the peer's, or around an HTTP call);
    ``vectors()`` returns its ``(n, d)`` vectors of the corpus."""

    name: str
    role: Role
    run: Callable[[], float]
    vectors: Callable[[], np.ndarray]
    note: str = ""


def timed(fn: Callable[[], Any]) -> Callable[[], float]:
    """``run`` for an in-process callable: its wall time."""

    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def engine_backend(name: str, engine: Any, texts: Sequence[str]) -> Backend:
    """The engine (a :class:`~atoma_lab.inference.TransformersEngine`) embedding ``texts``;
    the note says which path it runs and why (:meth:`describe`), and the attention kernel where
    it is not the runtime's own."""
    about = engine.describe() if hasattr(engine, "describe") else {}
    note = f"{about['path']}: {about['reason']}" if about else ""
    if about.get("attention") not in (None, "sdpa", "onnxruntime"):
        note += f"; attention: {about['attention']}"
    items = list(texts)
    return Backend(name, "ours", timed(lambda: engine.embed(items)),
                   lambda: engine.embed(items).vectors, note)


def sentence_transformers_backend(name: str, model: Any, texts: Sequence[str], *,
                                  batch_size: int = 32) -> Backend:
    """``model.encode(texts, batch_size=..., normalize_embeddings=True)``, as people call it."""
    items = list(texts)

    def encode() -> np.ndarray:
        return np.asarray(model.encode(items, batch_size=batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True), dtype=np.float32)

    return Backend(name, "peer", timed(encode), encode)


@dataclass(frozen=True)
class Spread:
    """A paired ratio over rounds: its median and range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def __str__(self) -> str:
        return f"{self.median:.2f}x [{self.low:.2f}-{self.high:.2f}]"


@dataclass(frozen=True)
class BackendRow:
    name: str
    role: Role
    quality: Quality
    texts_per_s: float
    """Texts over the median round's seconds."""
    vs_baseline: Spread
    """Per round: the baseline's seconds over this backend's (> 1: faster)."""
    best_peer: str | None
    """The fastest peer (median ratio) whose quality class is at least this backend's."""
    vs_best_peer: Spread | None
    min_cosine: float
    max_abs_diff: float
    seconds: list[float]
    note: str = ""


@dataclass
class BackendTable:
    """Rows of one run, and what they ran on."""

    rows: list[BackendRow]
    baseline: str
    texts: int
    rounds: int
    cpu: str
    cpu_flags: list[str]
    threads: int
    date: str
    not_run: dict[str, str] = field(default_factory=dict)
    """Backends that could not run here, and why."""

    def row(self, name: str) -> BackendRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no backend {name!r} in the table; have {[r.name for r in self.rows]}")

    def paired(self, name: str, versus: str) -> Spread:
        """Per-round ratio of ``versus``'s seconds to ``name``'s (> 1: ``name`` is faster)."""
        ours, theirs = self.row(name).seconds, self.row(versus).seconds
        return Spread.of([t / o for o, t in zip(ours, theirs, strict=True)])

    def fastest(self, name: str, versus: str) -> float:
        """``versus``'s fastest round over ``name``'s: on a machine shared with other work, the
        least disturbed rounds (beside the paired median, not instead of it)."""
        return min(self.row(versus).seconds) / min(self.row(name).seconds)

    # ------------------------------------------------------------------ output
    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackendTable:
        rows = []
        for r in data["rows"]:
            r = dict(r)
            r["vs_baseline"] = Spread(**r["vs_baseline"])
            r["vs_best_peer"] = Spread(**r["vs_best_peer"]) if r.get("vs_best_peer") else None
            rows.append(BackendRow(**r))
        return cls(**{**data, "rows": rows})

    def save(self, path: Path | str) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: Path | str) -> BackendTable:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def header(self) -> str:
        return (f"{self.texts} texts, {self.rounds} interleaved rounds, {self.threads} threads; "
                f"{self.cpu} ({', '.join(self.cpu_flags) or 'no SIMD flags'}); {self.date}")

    def to_markdown(self) -> str:
        lines = [self.header(), "",
                 f"| backend | quality | texts/s | vs {self.baseline}: paired median [range] "
                 "| fastest rounds | vs best peer as good | min cosine | max abs diff |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            peer = f"{r.vs_best_peer} ({r.best_peer})" if r.vs_best_peer and r.best_peer else "-"
            lines.append(f"| {r.name} | {r.quality} | {r.texts_per_s:.1f} | {r.vs_baseline} | "
                         f"{self.fastest(r.name, self.baseline):.2f}x | {peer} | "
                         f"{r.min_cosine:.5f} | {r.max_abs_diff:.1e} |")
        for name, why in self.not_run.items():
            lines.append(f"| {name} | not run: {why} | | | | | | |")
        return "\n".join(lines)

    def to_frame(self) -> Any:
        return to_frame({
            "backend": r.name, "role": r.role, "quality": r.quality,
            "texts/s": r.texts_per_s, f"vs {self.baseline}": r.vs_baseline.median,
            "vs baseline low": r.vs_baseline.low, "vs baseline high": r.vs_baseline.high,
            "best peer": r.best_peer,
            "vs best peer": r.vs_best_peer.median if r.vs_best_peer else None,
            "min cosine": r.min_cosine, "max abs diff": r.max_abs_diff} for r in self.rows)

    def _repr_html_(self) -> str:
        columns = ["backend", "quality", "texts/s", f"vs {self.baseline}", "vs best peer as good",
                   "min cosine"]
        rows = [[r.name, r.quality, f"{r.texts_per_s:.1f}", str(r.vs_baseline),
                 f"{r.vs_best_peer or '-'} {r.best_peer or ''}".rstrip(), f"{r.min_cosine:.5f}"]
                for r in self.rows]
        return section(self.header(), table(rows, columns))

    def plot(self, ax: Any = None) -> Any:
        """Horizontal bars: median speed relative to the baseline, with the rounds' range,
        coloured by role (ours, peers) and labelled with the min cosine."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(11, 0.45 * len(self.rows) + 1.5))
        rows = sorted(self.rows, key=lambda r: r.vs_baseline.median)
        y = np.arange(len(rows))
        med = np.array([r.vs_baseline.median for r in rows])
        err = np.array([[m - r.vs_baseline.low, r.vs_baseline.high - m]
                        for m, r in zip(med, rows, strict=True)]).T
        colours = ["tab:blue" if r.role == "ours" else "tab:gray" for r in rows]
        ax.barh(y, med, xerr=err, color=colours, capsize=3)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(y, [f"{r.name} ({r.quality})" for r in rows])
        for yi, r in enumerate(rows):
            ax.text(r.vs_baseline.high, yi, f"  {r.vs_baseline.median:.2f}x, cos "
                    f"{r.min_cosine:.5f}", va="center", fontsize=8)
        ax.set_xlim(0, max(r.vs_baseline.high for r in rows) * 1.35)
        ax.set_xlabel(f"speed relative to {self.baseline} (paired over {self.rounds} rounds: "
                      "median and range)")
        ax.set_title(f"Embedding backends, {self.texts} texts, {self.threads} threads, "
                     f"{self.date}\n{self.cpu}: {self.cpu_flags_short()}", fontsize=10)
        return ax

    def cpu_flags_short(self) -> str:
        keep = [f for f in self.cpu_flags if f.startswith(("avx512_bf16", "amx", "avx512_vnni",
                                                           "avx2"))]
        return ", ".join(keep) or "no SIMD flags"


def quality_of(max_abs: float, min_cos: float) -> Quality:
    if max_abs <= EXACT_TOL:
        return "exact"
    return "cos>=0.999" if min_cos >= QUALITY_FLOOR else "lossy"


def measure_backends(backends: Sequence[Backend], *, baseline: str, texts: int, rounds: int,
                     threads: int, not_run: dict[str, str] | None = None,
                     progress: Callable[[str], None] | None = None) -> BackendTable:
    """Run ``backends`` interleaved for ``rounds`` rounds (after one untimed pass each that
    also collects their vectors) and tabulate them against ``baseline`` (one of their names)."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    names = [b.name for b in backends]
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not among the backends {names}")
    if len(set(names)) != len(names):
        raise ValueError("backend names must be unique")
    vectors = {}
    for b in backends:
        if progress:
            progress(f"warm-up and vectors: {b.name}")
        vectors[b.name] = np.asarray(b.vectors(), dtype=np.float32)
    ref = vectors[baseline]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(backends)
        for b in list(backends[shift:]) + list(backends[:shift]):
            if progress:
                progress(f"round {r + 1}/{rounds}: {b.name}")
            seconds[b.name].append(float(b.run()))
    quality: dict[str, tuple[Quality, float, float]] = {}
    for n in names:
        max_abs = float(np.abs(vectors[n] - ref).max())
        cos = min_cosine(vectors[n], ref)
        quality[n] = (quality_of(max_abs, cos), cos, max_abs)

    def ratio(name: str, versus: str) -> Spread:
        return Spread.of([t / o for o, t in zip(seconds[name], seconds[versus], strict=True)])

    peers = [b for b in backends if b.role == "peer"]
    rows = []
    for b in backends:
        cls, cos, max_abs = quality[b.name]
        good_enough = [p.name for p in peers if p.name != b.name
                       and _QUALITY_RANK[quality[p.name][0]] >= _QUALITY_RANK[cls]]
        best = max(good_enough, key=lambda p: ratio(p, baseline).median, default=None)
        rows.append(BackendRow(
            b.name, b.role, cls, texts / statistics.median(seconds[b.name]),
            ratio(b.name, baseline), best, ratio(b.name, best) if best else None, cos, max_abs,
            seconds[b.name], b.note))
    cpu = CpuInfo.detect()
    return BackendTable(rows, baseline, texts, rounds, cpu.model, list(cpu.relevant_flags),
                        threads, time.strftime("%Y-%m-%d"), dict(not_run or {}))


__all__ = [
    "Backend",
    "BackendRow",
    "BackendTable",
    "Spread",
    "engine_backend",
    "measure_backends",
    "quality_of",
    "sentence_transformers_backend",
    "timed",
]
