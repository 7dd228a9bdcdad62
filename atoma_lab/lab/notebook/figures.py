"""Stage timings in coarse groups for stacked bars, size labels, and saving figures."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import Any

FIGURES_ENV = "ATOMA_LAB_FIGURES_DIR"


# Coarse groups of the trace stages (atoma_lab.services.trace), bottom to top of a stacked bar.
STAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "model (node_embed)": ("node_embed",),
    "client: seal/open or JSON": ("seal", "open", "encode", "decode"),
    "node: open, seal, sign, checks": ("node_open", "node_seal", "node_check", "node_sign"),
    "proxy: checks, verification": ("proxy_check", "proxy_verify"),
    "lock and attestation": ("lock", "attest"),
    "transport": ("transport", "proxy_forward"),
}
NODE_GROUP = "node: open, seal, sign, checks"
PROXY_GROUP = "proxy: checks, verification"


def stage_group(stage: str) -> str:
    """The group of :data:`STAGE_GROUPS` a stage belongs to (``other`` if none)."""
    for group, stages in STAGE_GROUPS.items():
        if stage in stages:
            return group
    if stage.startswith("node_"):
        return NODE_GROUP
    if stage.startswith("proxy_"):
        return PROXY_GROUP
    return "other"


def stage_medians(traces: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The median of each stage over ``traces`` (``Trace.stages_ms`` dicts), in first-seen
    order; a stage missing from a trace counts as 0 ms there."""
    names: dict[str, None] = {}
    for t in traces:
        names.update(dict.fromkeys(t))
    return {name: float(median(t.get(name, 0.0) for t in traces)) for name in names}


def grouped_stages(traces_by_label: Mapping[str, Sequence[Mapping[str, float]]]) -> list[dict[str, Any]]:
    """Long-form rows ``{label, group, ms}`` of the median stage times per label, summed per
    group (:func:`stage_group`), groups in :data:`STAGE_GROUPS` order (``other`` last)."""
    order = [*STAGE_GROUPS, "other"]
    rows = []
    for label, traces in traces_by_label.items():
        sums = dict.fromkeys(order, 0.0)
        for stage, ms in stage_medians(traces).items():
            sums[stage_group(stage)] += max(ms, 0.0)
        rows += [{"label": label, "group": g, "ms": ms} for g, ms in sums.items()]
    return rows


def save_figure(fig: Any, name: str, *, dpi: int = 90) -> Path | None:
    """Write ``fig`` as ``<$ATOMA_LAB_FIGURES_DIR>/<name>.png`` when that variable is set
    (``make notebooks`` sets it); otherwise do nothing and return ``None``."""
    folder = os.environ.get(FIGURES_ENV)
    if not folder:
        return None
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
