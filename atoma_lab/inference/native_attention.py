"""Attention for the packed bfloat16 CPU path: a small C kernel, compiled on first use.

At MiniLM's head size (32) and the short inputs of typical requests, torch's CPU flash attention
takes a share of a forward's time far above its share of the arithmetic (the profile is in
docs/benchmarks.md): its blocks are sized for long sequences, and the heads are read through
strided views of the fused Q/K/V output and written back through a transposing copy. The kernel
in ``kernels/attention_amx.c`` reads each head's queries, keys and values straight from the
Q/K/V GEMM's output rows (head sizes 32 and 64), computes a 16-query block's scores for all
keys, the softmax in float32 with AVX-512 (masked past each sequence's length), the
probabilities rounded to bfloat16 for the P.V product as torch's kernel does, and writes the
context into the output projection's input rows. Its two matrix products run in one of two
variants over the same packed operands:

* ``"amx"``: AMX tiles (``TDPBF16PS``; a 16 x 32 bfloat16 tile holds 16 rows of a head of 32),
  on CPUs with ``amx_tile`` and ``amx_bf16`` (Intel Sapphire Rapids and later), after asking the
  kernel for tile data (``arch_prctl``);
* ``"avx512-bf16"``: ``VDPBF16PS`` dot products, on CPUs with ``avx512f`` and ``avx512_bf16``
  and no AMX (AMD Zen 4 and 5, Intel Cooper Lake).

Heads are shared among OpenMP threads: in a process that has loaded torch, torch's own runtime
(the same ``libgomp.so.1``), so the kernel runs on the threads torch's GEMMs just ran on instead
of competing with them for the cores. The engine measures the kernel against SDPA at a few
sequence lengths when it loads (``TransformersEngine._resolve_attention``) and uses it only as
far as it measured faster.

Where it runs: Linux on x86-64 with the flags above and a C compiler (``$CC``, else
``cc``/``gcc``/``clang``). It is compiled once into the cache folder
(:func:`~atoma_lab.inference.onnx_export.default_cache_dir`, never site-packages), keyed by the
source, the compiler and its flags; a process compiles into a private file and renames it into
place, under a lock, so two processes compiling at once end with one whole library. Before first
use each variant is checked against a float32 reference computed in numpy on random heads; a
kernel that fails the check is not used. ``ATOMA_LAB_NATIVE_ATTENTION=0`` turns it off;
``=avx512-bf16`` (or ``=amx``) picks that variant instead of the CPU's best.
:func:`load_native_attention` returns the kernel or the reason it is not available, which the
engine's ``describe()`` shows.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from atoma_lab.inference.hardware import CpuInfo

DISABLE_ENV = "ATOMA_LAB_NATIVE_ATTENTION"
SOURCE = Path(__file__).with_name("kernels") / "attention_amx.c"
REQUIRED_FLAGS: tuple[str, ...] = ("avx512f", "avx512_bf16")  # the dot-product variant
AMX_FLAGS: tuple[str, ...] = ("amx_tile", "amx_bf16")  # and the tile variant
ISAS: tuple[str, ...] = ("amx", "avx512-bf16")
HEAD_DIMS: tuple[int, ...] = (32, 64)
COMPILE_FLAGS: tuple[str, ...] = (
    "-O3", "-fPIC", "-shared", "-fopenmp", "-mavx512f", "-mavx512vl", "-mavx512bf16", "-mfma",
    "-mamx-tile", "-mamx-bf16",
)
_COMPILE_TIMEOUT_S = 180
_CHECK_TOLERANCE = 0.05  # max abs diff against float32, outputs of size ~1 in bfloat16
_STATUS = {-1: "bad arguments", -2: "out of memory"}


class NativeAttentionError(RuntimeError):
    """The kernel refused a call (bad arguments or no memory)."""


@dataclass(frozen=True, slots=True)
class NativeAttention:
    """The compiled kernel: :meth:`run` on raw buffers (the engine passes tensors' pointers).
    ``isa``: ``"amx"`` (tiles) or ``"avx512-bf16"`` (dot products), the variant it runs."""

    library: Path
    _fn: Any  # the ctypes function
    isa: str

    def run(self, qkv: int, qkv_stride: int, out: int, out_stride: int, lengths: int, *,
            batch: int, length: int, heads: int, head_dim: int, scale: float,
            threads: int) -> None:
        """Attention of ``batch`` right-padded sequences of ``length`` rows.

        ``qkv``: address of bfloat16 rows (``batch * length`` of them, ``qkv_stride`` elements
        apart) holding ``[queries | keys | values]``, each ``heads`` x ``head_dim`` (one of
        :data:`HEAD_DIMS`); ``out``: address of bfloat16 rows (``out_stride`` apart) that
        receive each row's ``heads`` x ``head_dim`` context (zeros for rows past a sequence's
        length); ``lengths``: address of ``batch`` int64 lengths. The caller guarantees the
        buffers' sizes (:meth:`run_arrays` checks them)."""
        status = self._fn(qkv, qkv_stride, out, out_stride, lengths, batch, length, heads,
                          head_dim, scale, threads, 1 if self.isa == "amx" else 0)
        if status != 0:
            raise NativeAttentionError(
                f"native attention failed: {_STATUS.get(status, f'status {status}')}")

    def run_arrays(self, qkv: np.ndarray, out: np.ndarray, lengths: np.ndarray, *,
                   batch: int, length: int, heads: int, head_dim: int, scale: float,
                   threads: int) -> None:
        """:meth:`run` on numpy arrays of bfloat16 bits (``uint16``), sizes checked."""
        rows = batch * length
        for name, arr, width in (("qkv", qkv, 3 * heads * head_dim),
                                 ("out", out, heads * head_dim)):
            if (arr.dtype != np.uint16 or arr.ndim != 2 or arr.shape[0] < rows
                    or arr.shape[1] < width or arr.strides[1] != 2):
                raise ValueError(f"{name}: need uint16 rows ({rows} x >= {width}), got "
                                 f"{arr.dtype} {arr.shape}")
        if not out.flags.writeable:
            raise ValueError("out: read-only")
        if lengths.dtype != np.int64 or lengths.shape != (batch,) or not lengths.flags.c_contiguous:
            raise ValueError(f"lengths: need {batch} contiguous int64")
        self.run(qkv.ctypes.data, qkv.strides[0] // 2, out.ctypes.data, out.strides[0] // 2,
                 lengths.ctypes.data, batch=batch, length=length, heads=heads,
                 head_dim=head_dim, scale=scale, threads=threads)


def best_isa(cpu: CpuInfo | None = None) -> str:
    """The variant this CPU runs best: tiles where it has AMX-BF16, else dot products."""
    flags = (cpu or CpuInfo.detect()).flags
    return "amx" if all(f in flags for f in AMX_FLAGS) else "avx512-bf16"


def missing_requirements(cpu: CpuInfo | None = None, isa: str = "avx512-bf16") -> str | None:
    """Why this machine cannot run the kernel's ``isa`` variant (platform or CPU flags), or
    ``None``."""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return f"needs Linux on x86-64 (this is {platform.system()} {platform.machine()})"
    flags = (cpu or CpuInfo.detect()).flags
    needed = REQUIRED_FLAGS + (AMX_FLAGS if isa == "amx" else ())
    lacking = [f for f in needed if f not in flags]
    if lacking:
        return f"the CPU lacks {', '.join(lacking)}"
    return None


def _compiler() -> list[str] | None:
    configured = os.environ.get("CC", "").split()
    if configured:
        return configured if shutil.which(configured[0]) else None
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def _library_path(cache_dir: Path, compiler: list[str]) -> Path:
    """Where the library built from this source by this compiler lives in the cache."""
    try:
        version = subprocess.run([*compiler, "--version"], capture_output=True, timeout=30,
                                 check=False).stdout.splitlines()[:1]
    except (OSError, subprocess.SubprocessError):
        version = []
    digest = hashlib.blake2b(digest_size=12)
    for part in (SOURCE.read_bytes(), " ".join(compiler).encode(), *version,
                 " ".join(COMPILE_FLAGS).encode()):
        digest.update(part + b"\0")
    return cache_dir / "kernels" / f"attention_amx-{digest.hexdigest()}.so"


def _compile(compiler: list[str], target: Path) -> None:
    """Compile the source into ``target`` (a private file first, renamed into place)."""
    from atoma_lab.inference.onnx_export import locked

    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f".{target.name}.lock"):
        if target.is_file():  # another process built it while we waited
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([*compiler, *COMPILE_FLAGS, "-o", tmp, str(SOURCE)],
                                  capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S,
                                  check=False)
            if done.returncode != 0:
                lines = (done.stderr or done.stdout).strip().splitlines()
                raise OSError(f"{compiler[0]} exited {done.returncode}"
                              + (f": {lines[-1]}" if lines else ""))
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (round to nearest even) as ``uint16``."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (``uint16``) -> float32."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def reference_attention(qkv: np.ndarray, lengths: np.ndarray, *, batch: int, length: int,
                        heads: int, head_dim: int, scale: float) -> np.ndarray:
    """What the kernel computes, in float32 numpy: ``qkv`` float32 rows ``[q | k | v]``; rows
    past a sequence's length are zero."""
    d = head_dim
    x = qkv[:batch * length, :3 * heads * d].reshape(batch, length, 3, heads, d)
    out = np.zeros((batch, length, heads, d), dtype=np.float32)
    for b in range(batch):
        n = int(min(max(lengths[b], 0), length))
        if n == 0:
            continue
        q, k, v = (x[b, :n, i].transpose(1, 0, 2) for i in range(3))  # (heads, n, d)
        s = np.einsum("hid,hjd->hij", q, k) * scale
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        out[b, :n] = np.einsum("hij,hjd->hid", p, v).transpose(1, 0, 2)
    return out.reshape(batch * length, heads * d)


def self_check(kernel: NativeAttention, *, threads: int = 2, seed: int = 0) -> float:
    """The kernel's max abs difference to :func:`reference_attention` on random heads in a few
    shapes (padding, one token, more than one key block, an odd length) and every head size."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    cases = [(3, 37, 2, 32), (1, 1, 1, 32), (2, 70, 3, 32), (5, 16, 2, 32), (3, 37, 2, 64),
             (2, 49, 1, 64)]
    for batch, length, heads, head_dim in cases:
        values = rng.standard_normal((batch * length, 3 * heads * head_dim)).astype(np.float32)
        bits = to_bf16_bits(values)
        lengths = rng.integers(1, length + 1, size=batch).astype(np.int64)
        lengths[0] = length
        out = np.full((batch * length, heads * head_dim), 0x7FC0, dtype=np.uint16)  # NaN bits
        scale = float(head_dim) ** -0.5
        kernel.run_arrays(bits, out, lengths, batch=batch, length=length, heads=heads,
                          head_dim=head_dim, scale=scale, threads=threads)
        want = reference_attention(from_bf16_bits(bits), lengths, batch=batch, length=length,
                                   heads=heads, head_dim=head_dim, scale=scale)
        got = from_bf16_bits(out)
        diff = float(np.nanmax(np.abs(got - want))) if np.isfinite(got).all() else float("inf")
        worst = max(worst, diff)
    return worst


def _load(library: Path, isa: str) -> NativeAttention:
    lib = ctypes.CDLL(str(library))
    if isa == "amx" and lib.atoma_amx_permit() != 0:
        raise OSError("the operating system refused AMX tile data (arch_prctl)")
    fn = lib.atoma_attention_bf16
    fn.restype = ctypes.c_int
    i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    fn.argtypes = [ptr, i64, ptr, i64, ptr, i64, i64, i64, i64, ctypes.c_float, c_int, c_int]
    return NativeAttention(library, fn, isa)


@lru_cache(maxsize=8)
def _load_cached(cache_dir: Path, isa: str) -> tuple[NativeAttention | None, str]:
    why = missing_requirements(isa=isa)
    if why is not None:
        return None, why
    compiler = _compiler()
    if compiler is None:
        return None, ("no C compiler ($CC, cc, gcc or clang) to build it"
                      if not os.environ.get("CC") else f"$CC ({os.environ['CC']}) not found")
    try:
        library = _library_path(cache_dir, compiler)
        if not library.is_file():
            _compile(compiler, library)
        kernel = _load(library, isa)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot build or load it ({exc})"
    error = self_check(kernel)
    if not error <= _CHECK_TOLERANCE:
        return None, f"failed its check against float32 (max abs diff {error:.3g})"
    return kernel, (f"{isa} kernel {library.name} (checked: max abs diff {error:.3g} to "
                    "float32)")


def load_native_attention(cache_dir: Path | str | None = None, *,
                          isa: str | None = None) -> tuple[NativeAttention | None, str]:
    """The kernel and what it is, or ``None`` and why it cannot run here (loaded once per
    process, cache folder and variant). ``isa``: ``"amx"`` or ``"avx512-bf16"``; default
    :func:`best_isa` for this CPU."""
    if isa is not None and isa not in ISAS:
        raise ValueError(f"isa must be one of {ISAS}")
    setting = os.environ.get(DISABLE_ENV, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return None, f"turned off by {DISABLE_ENV}"
    if isa is None and setting in ISAS:
        isa = setting
    elif setting not in ("", "1", "true", "yes", "on", "auto", *ISAS):
        return None, (f"{DISABLE_ENV}={setting!r} is not one of 0, 1, auto, "
                      f"{', '.join(ISAS)}")
    from atoma_lab.inference.onnx_export import default_cache_dir

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return _load_cached(root.resolve(), isa or best_isa())


__all__ = [
    "DISABLE_ENV",
    "HEAD_DIMS",
    "ISAS",
    "NativeAttention",
    "NativeAttentionError",
    "best_isa",
    "from_bf16_bits",
    "load_native_attention",
    "missing_requirements",
    "reference_attention",
    "self_check",
    "to_bf16_bits",
]
