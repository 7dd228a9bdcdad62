"""Execute the notebooks and render them for reading (``make notebooks``).

``python -m atoma_lab.tools.notebook_runner notebooks build/notebooks`` runs every ``*.ipynb`` of the
first folder, in name order, with nbclient, in full mode (``ATOMA_LAB_QUICK=0`` unless the
variable is already set, or ``--quick``), and writes into the second folder, for each notebook,
the executed ``.ipynb`` and an ``.html`` with its plots embedded. ``ATOMA_LAB_FIGURES_DIR`` points
the notebooks at the same folder, where each saves its key figure as PNG. A notebook that fails is
still written (up to the failing cell, with the traceback) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atoma_lab.lab.notebook import FIGURES_ENV

QUICK_ENV = "ATOMA_LAB_QUICK"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # plots become PNG outputs
DEFAULT_TIMEOUT_S = 1800  # per cell: the full benchmarks run for minutes


@dataclass(frozen=True, slots=True)
class NotebookRun:
    """What happened to one notebook."""

    name: str
    ok: bool
    seconds: float
    error: str | None = None


def find_notebooks(folder: Path) -> list[Path]:
    """The notebooks of ``folder`` in name order (checkpoints left out)."""
    return sorted(p for p in folder.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def execute_notebook(path: Path, out_dir: Path, *, timeout_s: int = DEFAULT_TIMEOUT_S,
                     kernel_name: str = "python3") -> NotebookRun:
    """Execute ``path`` (working directory: its folder) and write ``out_dir/<name>.ipynb`` and
    ``.html``, also when a cell fails."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout_s, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    error: str | None = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
    except (DeadKernelError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
    return NotebookRun(path.name, error is None, seconds, error)


def run_all(src: Path, out_dir: Path, *, quick: bool | None = None,
            timeout_s: int = DEFAULT_TIMEOUT_S, only: Sequence[str] = ()) -> list[NotebookRun]:
    """Execute every notebook of ``src`` into ``out_dir``; ``only`` filters by name substring."""
    if quick is not None:
        os.environ[QUICK_ENV] = "1" if quick else "0"
    else:
        os.environ.setdefault(QUICK_ENV, "0")
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ[FIGURES_ENV] = str(out_dir.resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["MPLBACKEND"] = INLINE_BACKEND  # a non-interactive backend would drop every plot
    runs = []
    for path in find_notebooks(src):
        if only and not any(s in path.name for s in only):
            continue
        print(f"executing {path.name} ({QUICK_ENV}={os.environ[QUICK_ENV]}) ...", flush=True)
        run = execute_notebook(path, out_dir, timeout_s=timeout_s)
        status = "ok" if run.ok else f"FAILED: {run.error}"
        print(f"  {run.seconds:7.1f} s  {status}", flush=True)
        runs.append(run)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atoma_lab.tools.notebook_runner",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("src", type=Path, help="folder of notebooks (e.g. notebooks)")
    parser.add_argument("out", type=Path, help="output folder (e.g. build/notebooks)")
    parser.add_argument("--quick", action="store_true", default=None,
                        help=f"run in quick mode ({QUICK_ENV}=1)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S,
                        help="seconds per cell before it counts as failed")
    parser.add_argument("--only", action="append", default=[],
                        help="run only notebooks whose name contains this (repeatable)")
    args = parser.parse_args(argv)
    if not args.src.is_dir():
        parser.error(f"{args.src} is not a folder")
    runs = run_all(args.src, args.out, quick=args.quick, timeout_s=args.timeout, only=args.only)
    if not runs:
        print(f"no notebooks found in {args.src}", file=sys.stderr)
        return 1
    failed = [r for r in runs if not r.ok]
    print(f"{len(runs) - len(failed)}/{len(runs)} notebooks ok; HTML and figures in {args.out}")
    for r in failed:
        print(f"FAILED {r.name}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
