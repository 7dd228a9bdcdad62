"""The ledger's books by route, as a notebook shows them."""

from __future__ import annotations

from typing import Any


def ledger_summary(ledger: Any) -> dict[str, Any]:
    """Units the ledger charged, per route and in all, beside the stacks' own counters."""
    settlements = list(ledger.settlements())
    out: dict[str, Any] = {
        "stacks": len(ledger.stacks()),
        "stack units computed": sum(s.already_computed_units for s in ledger.stacks()),
        "units charged": sum(int(r["units_charged"]) for r in settlements),
        "charged requests": sum(1 for r in settlements if r["outcome"] == "charged"),
        "refused requests": sum(1 for r in settlements if r["outcome"] != "charged"),
    }
    for route in sorted({str(r["route"]) for r in settlements}):
        out[f"units charged ({route})"] = sum(int(r["units_charged"]) for r in settlements
                                              if r["route"] == route)
    return out
