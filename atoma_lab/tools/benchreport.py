"""Print the ratio table of a pytest-benchmark JSON file (``make bench``).

Benchmarks mark themselves with ``benchmark.extra_info``:

* ``pair``: what is compared (e.g. ``"seal 64 KiB"``); the members of a pair run in the same
  session, on the same machine;
* ``role``: ``"baseline"`` for the peer (raw ``cryptography``, sentence-transformers,
  ``json.dumps``, ...) or ``"ours"``; a pair may have several ``ours`` against one baseline
  (e.g. 2 and 4 nodes against 1), each then shown with its test id;
* optional ``target``: the ratio the issue asks for, with ``"max"`` (ours/baseline time at most)
  or ``"min"`` (speed-up at least) in ``target_kind``, or ``"max_added_ms"`` (ours may take at
  most ``target`` milliseconds more than the baseline); any other numeric ``extra_info`` (e.g.
  ``min_cosine``) is shown beside the row.

The ratio is ``median(ours) / median(baseline)`` (time; lower is better) and its inverse, the
speed-up. Where a pair ran interleaved and recorded its paired figure (``paired_ratio``,
``paired_speedup`` or ``paired_added_ms``: the median over rounds), the target is judged on that.

In a notebook, :func:`to_frame` gives the same rows as a :class:`pandas.DataFrame`
(``to_frame("build/bench/latest.json")``).
"""

from __future__ import annotations

import json
import platform
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoma_lab.display.frames import to_frame as _frame

FRAME_COLUMNS = ("group", "pair", "ours", "baseline", "ours_ms", "baseline_ms", "ratio",
                 "speedup", "added_ms", "target", "target_kind", "verdict")

@dataclass(frozen=True)
class Row:
    group: str
    pair: str
    ours: str
    baseline: str
    ours_s: float
    baseline_s: float
    target: float | None
    target_kind: str | None
    extra: dict[str, Any]

    @property
    def ratio(self) -> float:
        return self.ours_s / self.baseline_s

    @property
    def speedup(self) -> float:
        return self.baseline_s / self.ours_s

    @property
    def added_ms(self) -> float:
        return (self.ours_s - self.baseline_s) * 1e3

    def _judged(self, paired: str, from_medians: float) -> tuple[float, str]:
        value = self.extra.get(paired)
        return (float(value), ", paired") if value is not None else (from_medians, "")

    @property
    def verdict(self) -> str:
        """Met or missed, on the pair's paired figure where it ran interleaved (the median over
        rounds, steadier on a shared machine), else on the ratio of medians."""
        if self.target is None:
            return ""
        if self.target_kind == "max":
            value, how = self._judged("paired_ratio", self.ratio)
            ok, bound = value <= self.target, f"<= {self.target}x time"
        elif self.target_kind == "max_added_ms":
            value, how = self._judged("paired_added_ms", self.added_ms)
            ok, bound = value <= self.target, f"<= +{self.target} ms"
        else:
            value, how = self._judged("paired_speedup", self.speedup)
            ok, bound = value >= self.target, f">= {self.target}x speed"
        return f"{'met' if ok else 'MISSED'} ({bound}{how})"


def rows(data: dict[str, Any]) -> list[Row]:
    members: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for b in data.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if "pair" not in info or "role" not in info:
            continue
        members[(b.get("group") or "", str(info["pair"]))][str(info["role"])].append(b)
    out = []
    for (group, pair), roles in sorted(members.items()):
        if not roles.get("baseline") or not roles.get("ours"):
            continue
        base = roles["baseline"][0]
        for ours in roles["ours"]:
            info = ours.get("extra_info") or {}
            extra = {k: v for k, v in info.items()
                     if k not in ("pair", "role", "target", "target_kind")
                     and isinstance(v, int | float) and not isinstance(v, bool)}
            out.append(Row(group, pair, ours["name"], base["name"], ours["stats"]["median"],
                           base["stats"]["median"], info.get("target"), info.get("target_kind"),
                           extra))
    return out


def records(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the ratio table as plain values (times in milliseconds), each pair's numeric
    ``extra_info`` in columns of their own."""
    return [{"group": r.group, "pair": r.pair, "ours": r.ours, "baseline": r.baseline,
             "ours_ms": r.ours_s * 1e3, "baseline_ms": r.baseline_s * 1e3, "ratio": r.ratio,
             "speedup": r.speedup, "added_ms": r.added_ms, "target": r.target,
             "target_kind": r.target_kind, "verdict": r.verdict, **r.extra} for r in rows(data)]


def load(source: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A pytest-benchmark JSON document, from a path or as already parsed."""
    if isinstance(source, dict):
        return source
    data = json.loads(Path(source).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{source}: not a pytest-benchmark JSON document")
    return data


def to_frame(source: dict[str, Any] | str | Path) -> Any:
    """The ratio table of a benchmark run (a JSON path or the parsed document) as a
    :class:`pandas.DataFrame`: :func:`records`, one row per compared pair."""
    found = records(load(source))
    extra = sorted({k for r in found for k in r} - set(FRAME_COLUMNS))
    return _frame(found, [*FRAME_COLUMNS, *extra])


def _test_id(name: str) -> str:
    """``test_x[a-b]`` -> ``a-b``; a name without parameters as it is."""
    return name[name.index("[") + 1:-1] if name.endswith("]") and "[" in name else name


def render(data: dict[str, Any]) -> str:
    machine = data.get("machine_info", {})
    when = data.get("datetime", "?")
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or platform.processor()
    lines = [f"Benchmarks of {when} on {cpu} ({machine.get('python_implementation', '')} "
             f"{machine.get('python_version', '')})", "",
             "| group | comparison | ours (median) | baseline (median) | time ratio | speed-up "
             "| added | target | extra |",
             "|---|---|---|---|---|---|---|---|---|"]
    table = rows(data)
    members: dict[tuple[str, str], int] = defaultdict(int)
    for r in table:
        members[(r.group, r.pair)] += 1
    for r in table:
        extra = ", ".join(f"{k}={v:.6g}" for k, v in r.extra.items())
        # A pair with several ``ours`` names each by its test id (its parameters).
        name = f"{r.pair}: {_test_id(r.ours)}" if members[(r.group, r.pair)] > 1 else r.pair
        lines.append(f"| {r.group} | {name} | {r.ours_s * 1e3:.3f} ms | {r.baseline_s * 1e3:.3f} ms | "
                     f"{r.ratio:.3f}x | {r.speedup:.2f}x | {r.added_ms:+.3f} ms | {r.verdict} | {extra} |")
    lines.extend(backend_tables(data))
    return "\n".join(lines)


def backend_tables(data: dict[str, Any]) -> list[str]:
    """The tables of benchmarks that measured many backends at once (``extra_info``
    ``backend_table``, see :mod:`atoma_lab.lab.backends`), with their targets judged on the
    paired figures (``extra_info`` ``targets``: what, median, low, high, target)."""
    from atoma_lab.lab.backends import BackendTable

    out: list[str] = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if "backend_table" not in info:
            continue
        table = BackendTable.from_json(info["backend_table"])
        out += ["", f"{b.get('group') or b.get('name')}: {table.to_markdown()}"]
        for t in info.get("targets", []):
            verdict = "met" if t["median"] >= t["target"] else "MISSED"
            out.append(f"- {t['what']}: {t['median']:.2f}x [{t['low']:.2f}-{t['high']:.2f}] "
                       f"(target >= {t['target']}x, paired) {verdict}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m atoma_lab.tools.benchreport BENCH.json", file=sys.stderr)
        return 2
    data = load(args[0])
    table = render(data)
    print(table)
    Path(args[0]).with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
