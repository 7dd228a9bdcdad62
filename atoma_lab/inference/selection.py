"""Which runtime and precision an engine runs: candidates from what the hardware has, the choice
from measurements recorded on this machine.

A *path* is a runtime and a precision: ``torch-float32``, ``torch-bfloat16``, ``torch-float16``,
``onnx-float32``, ``onnx-int8``. :func:`candidate_paths` lists those worth measuring for a mode:

* ``exact``: float32 on the runtimes asked for (``auto``: torch and ONNX Runtime).
* ``fast``: the exact paths, plus the lossy ones the machine has: bfloat16 where the CPU runs it
  natively (AVX512-BF16 or AMX; emulated bfloat16 is slower than float32, docs/benchmarks.md), int8
  ONNX where onnxruntime is installed, float16 weights on CUDA. A lossy path is eligible only
  when its min cosine to exact on :func:`~atoma_lab.inference.corpus.parity_corpus` is at least
  :data:`FAST_MIN_COSINE`; the fastest eligible path wins, so fast mode is never slower than
  exact, and runs exact (saying so) where no lossy path is faster.
* ``int8``: int8 ONNX, whatever its quality (measured and reported).

With more than one candidate, the engine times them interleaved on this machine and
:func:`choose` picks; the outcome is a :class:`Choice`, recorded as JSON under the cache folder
keyed by the model's files, the CPU (model, flags, cores), threads and library versions, so the
next load of the same model on the same machine reads it instead of measuring again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from atoma_lab.inference.hardware import CpuInfo

Runtime = Literal["torch", "onnx", "auto"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx", "auto")
Mode = Literal["exact", "fast", "int8"]
MODES: tuple[Mode, ...] = ("exact", "fast", "int8")
Precision = Literal["float32", "bfloat16", "float16", "int8"]
FAST_MIN_COSINE = 0.999  # a lossy path's least cosine to exact on the parity corpus, fast mode
RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class PathSpec:
    """One way to run the model: a runtime and a precision."""

    runtime: Literal["torch", "onnx"]
    precision: Precision

    @property
    def name(self) -> str:
        return f"{self.runtime}-{self.precision}"

    @property
    def lossy(self) -> bool:
        return self.precision != "float32"

    @classmethod
    def parse(cls, name: str) -> PathSpec:
        runtime, _, precision = name.partition("-")
        if runtime not in ("torch", "onnx") or precision not in (
                "float32", "bfloat16", "float16", "int8"):
            raise ValueError(f"not a path name: {name!r}")
        return cls(runtime, precision)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Measurement:
    """One candidate as measured against the exact reference."""

    seconds: float
    """Seconds of the fastest timing round."""
    speed: float
    """The reference's fastest round over this path's fastest round: > 1 is faster."""
    min_cosine: float
    eligible: bool


@dataclass(frozen=True)
class Choice:
    """The path an engine runs and why."""

    path: str
    reason: str
    measured: dict[str, Measurement] = field(default_factory=dict)
    recorded: str | None = None
    """The record file the choice was read from or written to (None: nothing measured)."""
    from_record: bool = False
    quality: dict[str, float] = field(default_factory=dict)
    """For a lossy path taken whatever its quality (int8): what was measured against exact."""

    @property
    def spec(self) -> PathSpec:
        return PathSpec.parse(self.path)

    def with_quality(self, quality: Mapping[str, float]) -> Choice:
        return replace(self, quality=dict(quality))

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason,
                "measured": {k: asdict(v) for k, v in self.measured.items()},
                "quality": dict(self.quality)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, recorded: str) -> Choice:
        measured = {k: Measurement(**v) for k, v in dict(data["measured"]).items()}
        PathSpec.parse(str(data["path"]))
        quality = {str(k): float(v) for k, v in dict(data.get("quality") or {}).items()}
        return cls(str(data["path"]), str(data["reason"]), measured, recorded, True, quality)


def candidate_paths(mode: Mode, runtime: Runtime, *, device_type: str, cpu: CpuInfo,
                    onnx_available: bool, torch_bf16: bool) -> tuple[list[PathSpec], list[str]]:
    """Paths worth measuring for ``mode`` on ``runtime``, exact ones first, and notes on what
    was left out and why. ``torch_bf16``: whether torch's oneDNN reports native bfloat16."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}")
    notes: list[str] = []
    use_torch = runtime in ("torch", "auto")
    use_onnx = runtime in ("onnx", "auto")
    if use_onnx and not onnx_available:
        if runtime == "onnx":
            raise ValueError("runtime 'onnx' needs onnxruntime: pip install 'atoma-lab[onnx]'")
        notes.append("onnxruntime is not installed: ONNX paths left out")
        use_onnx = False
    if use_onnx and device_type == "cuda" and runtime == "auto":
        notes.append("ONNX paths are measured on the CPU only: torch on CUDA")
        use_onnx = False
    if mode == "int8":
        if not use_onnx:
            raise ValueError("mode 'int8' runs on ONNX Runtime: use runtime 'onnx' or 'auto' "
                             "with onnxruntime installed")
        return [PathSpec("onnx", "int8")], notes
    paths: list[PathSpec] = []
    if use_torch:
        paths.append(PathSpec("torch", "float32"))
    if use_onnx:
        paths.append(PathSpec("onnx", "float32"))
    if mode == "fast":
        if device_type == "cuda":
            if use_torch:
                paths.append(PathSpec("torch", "float16"))
        else:
            if use_torch and cpu.native_bf16 and torch_bf16:
                paths.append(PathSpec("torch", "bfloat16"))
            elif use_torch:
                flags = ", ".join(cpu.relevant_flags) or "no SIMD flags"
                notes.append(f"no native bfloat16 on this CPU ({flags}): bfloat16 left out")
            if use_onnx:
                paths.append(PathSpec("onnx", "int8"))
    return paths, notes


def choose(mode: Mode, measured: Mapping[str, Measurement], reference: str) -> Choice:
    """The fastest eligible measured path (ties: the earlier, exact ones come first)."""
    eligible = {k: m for k, m in measured.items() if m.eligible}
    if not eligible:
        raise ValueError("no eligible path was measured")
    best = max(eligible, key=lambda k: eligible[k].speed)
    lossy = [k for k in measured if PathSpec.parse(k).lossy]
    if mode == "fast" and not PathSpec.parse(best).lossy:
        if not lossy:
            why = "fast mode runs exact: this machine has no lossy path to offer"
        else:
            details = ", ".join(
                f"{k} {m.speed:.2f}x, min cosine {m.min_cosine:.5f}"
                + ("" if m.eligible else f" < {FAST_MIN_COSINE}") for k, m in measured.items()
                if k in lossy)
            why = ("fast mode runs exact: no lossy path was both good enough and faster than "
                   f"the fastest exact path ({details})")
        reason = f"{why}; {best} measured fastest of the exact paths"
    else:
        m = eligible[best]
        reason = (f"{best} measured fastest ({m.speed:.2f}x {reference}"
                  + (f", min cosine {m.min_cosine:.5f}" if PathSpec.parse(best).lossy else "")
                  + ")")
    return Choice(best, reason, dict(measured))


def record_key(**parts: Any) -> str:
    """A file name for a record of ``parts`` (a BLAKE3 digest of their canonical JSON)."""
    from blake3 import blake3

    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return blake3(text.encode()).hexdigest()[:40]


def load_record(cache_dir: Path, key: str) -> Choice | None:
    path = cache_dir / "choices" / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != RECORD_VERSION:
            return None
        return Choice.from_json(data["choice"], recorded=str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_record(cache_dir: Path, key: str, choice: Choice, context: Mapping[str, Any]) -> Choice:
    """Write ``choice`` atomically (a temporary file renamed into place); returns it with
    ``recorded`` set. A folder that cannot be written leaves the choice unrecorded."""
    folder = cache_dir / "choices"
    path = folder / f"{key}.json"
    body = json.dumps({"version": RECORD_VERSION, "context": dict(context),
                       "choice": choice.to_json()}, indent=1, default=str)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".choice-", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
        os.replace(tmp, path)
    except OSError:
        return choice
    return replace(choice, recorded=str(path), from_record=False)


__all__ = [
    "FAST_MIN_COSINE",
    "MODES",
    "RUNTIMES",
    "Choice",
    "Measurement",
    "Mode",
    "PathSpec",
    "Precision",
    "Runtime",
    "candidate_paths",
    "choose",
    "load_record",
    "record_key",
    "save_record",
]
