"""Progress bars on long work, with ``tqdm.auto``: a widget in a Jupyter kernel, a bar in a
terminal, and nothing at all when ``TQDM_DISABLE`` is set, when the caller says ``show=False``,
or outside a notebook when standard error is not a terminal (CI logs, test runs, pipes).

``tqdm`` is imported when a bar is made, not when atoma-lab is imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

DISABLE_ENV = "TQDM_DISABLE"  # tqdm's own switch, honoured even where a bar is asked for
_FALSE = frozenset({"", "0", "false", "no", "off"})


def progress_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` turns every bar off."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in _FALSE


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where a bar is a widget in the cell's output)."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    get = getattr(shell, "get_ipython", None)
    ip = get() if get is not None else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None,
             desc: str | None = None, unit: str = "it", show: bool = True,
             delay_s: float = 0.0, leave: bool = True) -> Any:
    """A ``tqdm.auto`` bar over ``iterable`` (or to :meth:`update` by hand with ``total``).

    ``delay_s``: the bar appears only once the work has lasted that long (for work that is
    usually quick, e.g. loading a model that is already in memory). Use it as a context manager
    or close it; it is thread-safe to ``update`` from worker threads.
    """
    from tqdm.auto import tqdm

    if not show or progress_disabled():
        disable: bool | None = True
    elif in_notebook():
        disable = False
    else:
        disable = None  # tqdm's rule: no bar when the stream is not a terminal
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, delay=delay_s,
                leave=leave)


__all__ = ["DISABLE_ENV", "in_notebook", "progress", "progress_disabled"]
