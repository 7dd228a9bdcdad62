"""Per-stage timings of a request, across client, proxy and node.

Services report their stages in the standard ``Server-Timing`` header
(``node_open;dur=0.120, node_embed;dur=5.300``, milliseconds), so the same numbers arrive
in-process and over HTTP. The client adds its own stages and exposes a :class:`Trace`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from atoma_lab.display.frames import to_frame
from atoma_lab.display.html import bars, kv_table, section, side_of


class ServerTiming:
    """Accumulates stage durations (ms) and renders/parses ``Server-Timing``."""

    __slots__ = ("stages_ms",)

    def __init__(self) -> None:
        self.stages_ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter_ns()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter_ns() - t0) / 1e6)

    def add(self, name: str, ms: float) -> None:
        self.stages_ms[name] = self.stages_ms.get(name, 0.0) + ms

    def header(self) -> str:
        return ", ".join(f"{k};dur={v:.3f}" for k, v in self.stages_ms.items())

    @staticmethod
    def parse(header: str | None) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in (header or "").split(","):
            name, _, rest = part.strip().partition(";")
            if not name:
                continue
            for param in rest.split(";"):
                key, _, value = param.strip().partition("=")
                if key == "dur":
                    try:
                        out[name] = out.get(name, 0.0) + float(value)
                    except ValueError:
                        continue
        return out


@dataclass(slots=True)
class Trace:
    """Stage timings of one client request, in milliseconds, in the order they happened.

    Client stages: ``seal``, ``transport`` (round trip, including the servers), ``open``.
    Proxy and node stages come from ``Server-Timing``: ``proxy_*``, ``node_*``.
    """

    stages_ms: dict[str, float] = field(default_factory=dict)
    total_ms: float = 0.0

    def add(self, name: str, ms: float) -> None:
        self.stages_ms[name] = self.stages_ms.get(name, 0.0) + ms

    def merge(self, other: dict[str, float]) -> None:
        for k, v in other.items():
            self.add(k, v)

    @property
    def server_ms(self) -> float:
        return sum(v for k, v in self.stages_ms.items() if k.startswith(("proxy_", "node_")))

    def as_rows(self) -> list[tuple[str, float]]:
        return list(self.stages_ms.items())

    def rows(self) -> list[dict[str, Any]]:
        """One row per stage, in order: ``stage``, ``side`` (client, proxy or node), ``ms`` and
        ``share`` of the total (``None`` when no total was recorded)."""
        total = self.total_ms
        return [{"stage": k, "side": side_of(k), "ms": v,
                 "share": v / total if total > 0 else None} for k, v in self.stages_ms.items()]

    def to_frame(self) -> Any:
        """The stages as a :class:`pandas.DataFrame` (columns of :meth:`rows`), indexed by
        stage."""
        return to_frame(self.rows(), ["stage", "side", "ms", "share"], index="stage")

    def _repr_html_(self) -> str:
        head = kv_table({"total ms": self.total_ms, "server ms (proxy and node)": self.server_ms})
        return section("Trace", head, bars(self.stages_ms, unit="ms"))

    def __str__(self) -> str:
        parts = ", ".join(f"{k}={v:.3f}ms" for k, v in self.stages_ms.items())
        return f"Trace(total={self.total_ms:.3f}ms: {parts})"

    __repr__ = __str__  # the same short line (a notebook shows _repr_html_)
