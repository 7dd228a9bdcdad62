"""What this machine's CPU can do, read from the operating system (no torch here).

Every hardware-dependent choice of the engine (which runtime, which lossy path) reads it, and every
benchmark table names it: processors differ from one machine to the next, and a path that is fast
on one (bfloat16 on a CPU with AVX512-BF16 or AMX) is slower than float32 on another (emulated
bfloat16 on an AVX2-only CPU).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# The flags that decide a path, in the order tables print them. Linux /proc/cpuinfo names.
RELEVANT_FLAGS: tuple[str, ...] = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8",
)
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # oneDNN runs bfloat16 GEMMs natively
_INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})  # int8 dot products
_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """The CPU's model name and the instruction-set flags that matter for inference."""

    model: str
    flags: frozenset[str]
    cores: int

    @classmethod
    def from_cpuinfo(cls, text: str, *, cores: int | None = None) -> CpuInfo:
        """Parse the text of ``/proc/cpuinfo`` (the first processor's entry)."""
        model = ""
        flags: frozenset[str] = frozenset()
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                continue
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = frozenset(value.split())
            if model and flags:
                break
        return cls(model or platform.processor() or platform.machine(), flags,
                   cores if cores is not None else usable_cores())

    @classmethod
    def detect(cls) -> CpuInfo:
        """This machine's CPU (cached for the process)."""
        return _detect()

    @property
    def native_bf16(self) -> bool:
        """AVX512-BF16 or AMX-BF16: bfloat16 matrix products run natively."""
        return bool(self.flags & _BF16_FLAGS)

    @property
    def int8_dot(self) -> bool:
        """VNNI or AMX-INT8: int8 dot products in one instruction."""
        return bool(self.flags & _INT8_DOT_FLAGS)

    @property
    def relevant_flags(self) -> tuple[str, ...]:
        """The flags of :data:`RELEVANT_FLAGS` this CPU has, in that order."""
        return tuple(f for f in RELEVANT_FLAGS if f in self.flags)

    def signature(self) -> str:
        """A short stable text naming the model, the relevant flags and the usable cores: what
        a recorded measurement is only valid for."""
        return f"{self.model} | {' '.join(self.relevant_flags) or 'no simd flags'} | {self.cores} cores"

    def __str__(self) -> str:
        return self.signature()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@lru_cache(maxsize=1)
def _detect() -> CpuInfo:
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return CpuInfo.from_cpuinfo(text)


__all__ = ["RELEVANT_FLAGS", "CpuInfo", "usable_cores"]
