"""DataFrames on request: pandas is imported by :func:`to_frame` when it is called, never by
importing atoma-lab (it is in the ``notebooks`` extra, not a core dependency)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def pandas() -> Any:
    """The pandas module, or an ``ImportError`` that says how to install it."""
    try:
        import pandas
    except ImportError as exc:
        raise ImportError("to_frame() needs pandas: pip install 'atoma-lab[notebooks]' "
                          "(or pandas)") from exc
    return pandas


def to_frame(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
             index: str | None = None) -> Any:
    """A :class:`pandas.DataFrame` of ``rows`` (one mapping per row), with ``columns`` in that
    order (an empty result keeps them), indexed by the column ``index`` if given."""
    frame = pandas().DataFrame(list(rows), columns=list(columns) if columns is not None else None)
    return frame.set_index(index) if index is not None else frame


__all__ = ["pandas", "to_frame"]
