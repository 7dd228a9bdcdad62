"""Small HTML pieces for the ``_repr_html_`` of what a notebook shows, so that a network, a
result, a trace, a lock and a report look alike and no class writes its own table markup.

Pure: strings and numbers in, a string out (no I/O, no clock), so that the protocol layer's wire
models may use it. Every value is escaped here; callers pass plain values. Nothing here knows
what a key is: callers pass :func:`fingerprint` of a public key, never key bytes.
"""

from __future__ import annotations

import hashlib
import html
import math
from collections.abc import Iterable, Mapping, Sequence

FINGERPRINT_BYTES = 8  # bytes of BLAKE2b-256(public key) shown: enough to tell keys apart
MAX_ROWS = 40  # rows a table shows before it says how many it left out
_TABLE = "border-collapse:collapse;font-size:12px;margin:2px 0 6px 0"
_CELL = "padding:1px 8px;text-align:left;vertical-align:top"
_HEAD = _CELL + ";font-weight:600;border-bottom:1px solid #999"
# Bar colours by the part of the system a stage ran in (client stages are unprefixed).
_SIDE_COLOURS = {"proxy": "#dd8452", "node": "#55a868", "client": "#4c72b0"}


def fingerprint(public_key: bytes, size: int = FINGERPRINT_BYTES) -> str:
    """The first ``size`` bytes of BLAKE2b-256(``public_key``) in hex, in groups of four digits:
    the start of the hardened profile's ``node_key_id``, a public value that names a key without
    showing it."""
    if not isinstance(public_key, bytes | bytearray | memoryview):
        raise TypeError(f"public_key must be bytes, not {type(public_key).__name__}")
    digest = hashlib.blake2b(bytes(public_key), digest_size=32).hexdigest()[: 2 * size]
    return ":".join(digest[i:i + 4] for i in range(0, len(digest), 4))


def fmt(value: object) -> str:
    """A cell's text: floats to four significant digits, ``None`` as a dash, bytes by size only
    (a caller wanting bytes shown passes them as hex or a fingerprint)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def esc(value: object) -> str:
    """:func:`fmt` then HTML-escaped."""
    return html.escape(fmt(value))


def _caption(title: str | None) -> str:
    return f"<caption style='text-align:left;font-weight:600'>{html.escape(title)}</caption>" \
        if title else ""


def kv_table(rows: Mapping[str, object] | Iterable[tuple[str, object]], *,
             title: str | None = None) -> str:
    """A two-column table: a name, its value."""
    items = rows.items() if isinstance(rows, Mapping) else rows
    body = "".join(f"<tr><th style='{_CELL}'>{html.escape(str(k))}</th>"
                   f"<td style='{_CELL}'>{esc(v)}</td></tr>" for k, v in items)
    return f"<table style='{_TABLE}'>{_caption(title)}{body}</table>"


def table(rows: Sequence[Mapping[str, object]] | Sequence[Sequence[object]],
          columns: Sequence[str] | None = None, *, title: str | None = None,
          max_rows: int = MAX_ROWS) -> str:
    """A table of ``rows`` (mappings, or sequences in ``columns`` order); ``columns`` defaults to
    the first mapping's keys. Beyond ``max_rows`` rows, the rest are counted, not shown."""
    if columns is None:
        first = rows[0] if rows else {}
        columns = list(first) if isinstance(first, Mapping) else []
    head = "".join(f"<th style='{_HEAD}'>{html.escape(str(c))}</th>" for c in columns)
    lines = []
    for row in rows[:max_rows]:
        values = [row.get(c) for c in columns] if isinstance(row, Mapping) else list(row)
        lines.append("<tr>" + "".join(f"<td style='{_CELL}'>{esc(v)}</td>" for v in values)
                     + "</tr>")
    if len(rows) > max_rows:
        lines.append(f"<tr><td style='{_CELL}' colspan='{len(columns)}'>… and "
                     f"{len(rows) - max_rows} more</td></tr>")
    return (f"<table style='{_TABLE}'>{_caption(title)}<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(lines)}</tbody></table>")


def side_of(stage: str) -> str:
    """Where a trace stage ran: ``proxy_*`` on the proxy, ``node_*`` on the node, the rest on
    the client."""
    if stage.startswith("proxy_"):
        return "proxy"
    if stage.startswith("node_"):
        return "node"
    return "client"


def bars(values: Mapping[str, float] | Iterable[tuple[str, float]], *, unit: str = "ms",
         title: str | None = None, width_px: int = 180, colour_by_side: bool = True) -> str:
    """A horizontal bar chart as a table: a name, its value and a bar as long as its share of
    the largest value (negative values drawn as empty bars). Trace stages are coloured by where
    they ran (:func:`side_of`) unless ``colour_by_side`` is false."""
    items = [(str(k), float(v)) for k, v in (values.items() if isinstance(values, Mapping)
                                             else values)]
    top = max((v for _, v in items if math.isfinite(v)), default=0.0)
    lines = []
    for name, value in items:
        share = max(value, 0.0) / top if top > 0 and math.isfinite(value) else 0.0
        colour = _SIDE_COLOURS[side_of(name)] if colour_by_side else _SIDE_COLOURS["client"]
        bar = (f"<div style='background:{colour};height:10px;width:{share * width_px:.0f}px'>"
               "</div>")
        lines.append(f"<tr><td style='{_CELL}'>{html.escape(name)}</td>"
                     f"<td style='{_CELL};text-align:right'>{esc(value)} {html.escape(unit)}</td>"
                     f"<td style='{_CELL};width:{width_px}px'>{bar}</td></tr>")
    return f"<table style='{_TABLE}'>{_caption(title)}{''.join(lines)}</table>"


def section(title: str, *parts: str) -> str:
    """A titled block of already-rendered parts (from the functions above)."""
    return (f"<div style='margin:2px 0 8px 0'><div style='font-weight:700'>"
            f"{html.escape(title)}</div>{''.join(parts)}</div>")


__all__ = ["FINGERPRINT_BYTES", "MAX_ROWS", "bars", "esc", "fingerprint", "fmt", "kv_table",
           "section", "side_of", "table"]
