"""The backend table: interleaved rounds, paired ratios, quality classes and the best peer as
good, on backends whose times and vectors are given (no model, no clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atoma_lab.lab.backends import Backend, BackendTable, Spread, measure_backends, quality_of

REF = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)


def _backend(name: str, role: Any, times: list[float], vectors: np.ndarray,
             log: list[str]) -> Backend:
    it = iter(times)

    def run() -> float:
        log.append(name)
        return next(it)

    return Backend(name, role, run, lambda: vectors)


def _table(log: list[str]) -> BackendTable:
    lossy = REF + np.float32(0.3) * np.random.default_rng(2).standard_normal(REF.shape).astype(
        np.float32)
    near = REF + np.float32(1e-4)
    backends = [
        _backend("base", "peer", [2.0, 2.0, 4.0], REF, log),
        _backend("peer-fast-exact", "peer", [1.0, 1.0, 2.0], REF + np.float32(1e-7), log),
        _backend("peer-bf16", "peer", [0.5, 0.5, 1.0], near, log),
        _backend("peer-int8", "peer", [0.25, 0.25, 0.5], lossy, log),
        _backend("ours-exact", "ours", [0.8, 0.5, 1.0], REF, log),
        _backend("ours-fast", "ours", [0.4, 0.4, 0.8], near, log),
    ]
    return measure_backends(backends, baseline="base", texts=6, rounds=3, threads=2,
                            not_run={"absent": "not installed"})


def test_rounds_rotate_and_ratios_are_paired() -> None:
    log: list[str] = []
    t = _table(log)
    assert log[:6] == ["base", "peer-fast-exact", "peer-bf16", "peer-int8", "ours-exact",
                       "ours-fast"]
    assert log[6] == "peer-fast-exact" and log[12] == "peer-bf16"  # each round starts later
    exact = t.row("ours-exact")
    assert exact.quality == "exact" and exact.best_peer == "peer-fast-exact"
    assert exact.vs_baseline == Spread(4.0, 2.5, 4.0)  # 2/0.8, 2/0.5, 4/1
    assert exact.vs_best_peer == Spread(2.0, 1.25, 2.0)
    assert exact.texts_per_s == pytest.approx(6 / 0.8)
    fast = t.row("ours-fast")
    assert fast.quality == "cos>=0.999" and fast.best_peer == "peer-bf16"
    assert fast.vs_best_peer == Spread(1.25, 1.25, 1.25)
    assert t.row("peer-int8").quality == "lossy"
    assert t.row("peer-int8").best_peer == "peer-bf16"  # fastest other peer at least as good
    assert t.paired("ours-fast", "peer-fast-exact").median == pytest.approx(2.5)
    assert t.not_run == {"absent": "not installed"}


def test_the_table_round_trips_and_renders(tmp_path: Path) -> None:
    t = _table([])
    again = BackendTable.load(t.save(tmp_path / "t.json"))
    assert again == t
    md = t.to_markdown()
    assert "| ours-fast | cos>=0.999 |" in md and "not run: not installed" in md
    assert t.cpu in md and "ours-exact" in t._repr_html_()
    frame = pytest.importorskip("pandas") and t.to_frame()
    assert list(frame["backend"]) == [r.name for r in t.rows]
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ax = t.plot()
    assert len(ax.patches) == len(t.rows)


def test_bad_tables_are_refused() -> None:
    b = Backend("a", "peer", lambda: 1.0, lambda: REF)
    with pytest.raises(ValueError, match="baseline"):
        measure_backends([b], baseline="z", texts=1, rounds=1, threads=1)
    with pytest.raises(ValueError, match="rounds"):
        measure_backends([b], baseline="a", texts=1, rounds=0, threads=1)
    with pytest.raises(ValueError, match="unique"):
        measure_backends([b, b], baseline="a", texts=1, rounds=1, threads=1)
    with pytest.raises(KeyError):
        measure_backends([b], baseline="a", texts=1, rounds=1, threads=1).row("nope")
    assert quality_of(1e-6, 1.0) == "exact" and quality_of(1e-3, 0.9995) == "cos>=0.999"
    assert quality_of(1e-1, 0.98) == "lossy"


class _DescribedEngine:
    def __init__(self, attention: str) -> None:
        self.attention = attention

    def describe(self) -> dict[str, Any]:
        return {"path": "torch-bfloat16", "reason": "measured fastest",
                "attention": self.attention}

    def embed(self, texts: list[str]) -> Any:
        raise AssertionError("not called by these tests")


def test_engine_rows_name_their_path_and_a_kernel_of_their_own() -> None:
    from atoma_lab.lab.backends import engine_backend

    native = engine_backend("fast", _DescribedEngine("native-amx"), ["a"])
    assert native.note == "torch-bfloat16: measured fastest; attention: native-amx"
    assert engine_backend("fast", _DescribedEngine("sdpa"), ["a"]).note == (
        "torch-bfloat16: measured fastest")
