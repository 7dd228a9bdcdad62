"""The transformers engine: a Hugging Face encoder run the sentence-transformers way, only faster,
on torch or on ONNX Runtime.

This module and :mod:`~atoma_lab.inference.onnx_export` are the only ones in atoma_lab that
import torch and transformers.

What makes it equal to ``SentenceTransformer.encode(normalize_embeddings=True)``: the same
tokenizer (its Rust backend, special tokens added from its own template), the same truncation
(``max_seq_length`` from ``sentence_bert_config.json``), the same pooling modes and the same L2
normalisation. What makes it faster:

* tokenisation straight through the Rust tokenizer, without padding or tensor conversion per
  batch, and once per request (the dynamic batcher does it in the caller's thread);
* micro-batches sorted by token length under a padded-token budget
  (:func:`~atoma_lab.inference.batching.plan_micro_batches`): little padding, cache-sized
  activations;
* on torch, for BERT, RoBERTa and XLM-RoBERTa encoders a fused forward (:class:`_FusedEncoder`):
  one GEMM for Q, K and V, SDPA attention without a mask when a micro-batch has no padding
  (on the packed bfloat16 path of a CPU with AVX512-BF16 or AMX, attention in
  :mod:`~atoma_lab.inference.native_attention`'s kernel instead, as far as it measured faster),
  in-place residual adds and activation, GEMM outputs written into buffers reused across calls
  (float32), no unused pooler; other architectures run through ``AutoModel`` with SDPA;
* on ONNX Runtime (``runtime="onnx"``), the model exported once into a cache
  (:mod:`~atoma_lab.inference.onnx_export`; ONNX Runtime's fused attention and layer-norm
  operators for the BERT family), pooled in numpy (:mod:`~atoma_lab.inference.pooling`).

Which runtime and precision run is a *path* (:mod:`~atoma_lab.inference.selection`):
``runtime="auto"`` and ``mode="fast"`` measure the candidate paths on this machine once and
record the outcome; :meth:`TransformersEngine.describe` says what runs and why.

``mode="fast"`` trades exactness for speed where that pays: float16 weights on CUDA (no autocast:
on a GPU a small encoder is bound by the host, and autocast's casts are extra kernel launches:
docs/benchmarks.md has the H200 figures); on a CPU, bfloat16 autocast where the CPU runs
bfloat16 natively (AVX512-BF16 or AMX) or int8 ONNX, each only when its vectors stay within
cosine 0.999 of exact and it measures faster; elsewhere fast mode runs exact and says so.
``mode="int8"`` takes int8 ONNX whatever its quality, and reports the quality it measured.
Pooling and normalisation run in float32 on every path.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from atoma_lab.errors import (
    InferenceError,
    InvalidFieldError,
    ModelLoadError,
)
from atoma_lab.inference.batching import DEFAULT_MICRO_BATCH_TOKENS, plan_micro_batches
from atoma_lab.inference.config import (
    PoolingMode,
    SentenceTransformerConfig,
    read_sentence_transformers_config,
)
from atoma_lab.inference.corpus import (
    make_corpus,
    min_cosine,
    parity_corpus,
    retrieval_corpus,
    top_k_overlap,
)
from atoma_lab.inference.engine import EmbeddingEngine, EngineInput, TokenizedInputs, split_inputs
from atoma_lab.inference.hardware import CpuInfo, usable_cores
from atoma_lab.inference.selection import (
    FAST_MIN_COSINE,
    MODES,
    RUNTIMES,
    Choice,
    Measurement,
    Mode,
    PathSpec,
    Runtime,
    candidate_paths,
    choose,
    load_record,
    record_key,
    save_record,
)

if TYPE_CHECKING:
    import torch

    from atoma_lab.inference.native_attention import NativeAttention
    from atoma_lab.inference.onnx_export import OnnxExport

DTypeName = Literal["float32", "float16", "bfloat16"]
AttentionName = Literal["auto", "sdpa", "native"]
_ATTENTIONS = ("auto", "sdpa", "native")
_DTYPES = ("float32", "float16", "bfloat16")
_FUSED_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})
_ROBERTA_LIKE = frozenset({"roberta", "xlm-roberta", "camembert"})
_FUSED_ACTIVATIONS = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh", "relu"})
_MAX_SANE_LENGTH = 1_000_000  # tokenizers without a limit report ~1e30
# Tokenising in threads (the Rust tokenizer releases the GIL): worth it from this many texts
# a thread; below, one call. On a GPU host tokenising is often most of an embed call.
_TEXTS_PER_TOKENIZER_THREAD = 32
# What a path is measured on when an engine chooses one (selection.py): quality on the parity
# corpus, speed on seeded mixed texts, interleaved rounds (the ratio of the fastest rounds).
_PARITY_TEXTS = 128
_TIMING_TEXTS = 96
_TIMING_ROUNDS = 5
_RETRIEVAL_TOP_K = 10
# Bumped when a path's implementation changes what it measures: recorded choices made before
# are then measured again.
_PATHS_VERSION = 5  # 4: the packed bf16 path buckets its GEMM row counts; 5: native attention
_tokenizer_pool: ThreadPoolExecutor | None = None
_tokenizer_pool_lock = threading.Lock()
logger = logging.getLogger("atoma_lab.inference")


def _tokenizer_executor(workers: int) -> ThreadPoolExecutor:
    """One process-wide pool for tokenising (grown when an engine asks for more threads)."""
    global _tokenizer_pool
    with _tokenizer_pool_lock:
        if _tokenizer_pool is None or _tokenizer_pool._max_workers < workers:
            _tokenizer_pool = ThreadPoolExecutor(workers, thread_name_prefix="atoma-tokenize")
        return _tokenizer_pool


def default_tokenizer_threads() -> int:
    """Threads to tokenise with by default: the usable cores, at most 8."""
    return min(8, usable_cores())


def _torch() -> Any:
    try:
        import torch
    except ModuleNotFoundError as exc:  # pragma: no cover - the inference extra is missing
        raise ModelLoadError(
            "the transformers engine needs torch; install `pip install 'atoma-lab[inference]'`"
        ) from exc
    return torch


def default_device() -> str:
    """``"cuda"`` when a CUDA device is visible, else ``"cpu"``."""
    torch = _torch()
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    torch = _torch()
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


# oneDNN post-ops of mkldnn._linear_pointwise for the fused forward's activations.
_ONEDNN_POST_OPS = {"none": ("none", ""), "gelu": ("gelu", "none"), "relu": ("relu", ""),
                    "gelu_new": ("gelu", "tanh"), "gelu_pytorch_tanh": ("gelu", "tanh")}


@lru_cache(maxsize=1)
def _onednn_ok() -> bool:
    """Whether torch's oneDNN packed linear works here (a private op: checked on a tiny GEMM
    against F.linear before it is trusted)."""
    torch = _torch()
    try:
        w = torch.randn(8, 16).bfloat16()
        x = torch.randn(4, 16).bfloat16()
        b = torch.zeros(8).bfloat16()
        got = torch.ops.mkldnn._linear_pointwise(
            x, torch.ops.mkldnn._reorder_linear_weight(w, 4), b, "none", [], "")
        want = torch.nn.functional.linear(x, w, b)
        return bool(torch.allclose(got.float(), want.float(), atol=1e-2, rtol=1e-2))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def bucket_rows(rows: int) -> int:
    """The row count a packed GEMM runs ``rows`` at: a multiple of 16 up to 256, of 64 up to
    4,096, of 256 beyond (under 1/16 extra rows past 1,024; 76 shapes up to 4,096 rows)."""
    step = 16 if rows <= 256 else 64 if rows <= 4096 else 256
    return -(-rows // step) * step


def _fused_unsupported_by_config(cfg: Any) -> str | None:
    """Why a model with this Hugging Face config cannot take the fused forward (or the fused
    ONNX graph), or ``None``; the module layout is checked on the loaded model as well."""
    model_type = getattr(cfg, "model_type", "")
    if model_type not in _FUSED_MODEL_TYPES:
        return f"model_type {model_type!r}"
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        return "relative position embeddings"
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return "decoder configuration"
    if cfg.hidden_act not in _FUSED_ACTIVATIONS:
        return f"activation {cfg.hidden_act!r}"
    if cfg.hidden_size % cfg.num_attention_heads:
        return "hidden size not divisible by heads"
    return None


class _FusedEncoder:
    """A BERT-family encoder forward with fused Q/K/V and no per-call mask building.

    Numerically the same computation as the ``transformers`` forward up to float summation
    order. Weights stay in ``nn.Linear``'s ``(out, in)`` layout and are shared with the Hugging
    Face modules (the query, key and value modules are re-pointed at slices of the fused Q/K/V
    matrix), so they exist once.

    A call with ``reuse_buffers`` (float32 without autocast) writes every linear's output into a
    buffer kept across calls (``addmm(..., out=)``); otherwise ``F.linear`` allocates, as
    autocast needs.
    """

    def __init__(self, model: Any, model_type: str) -> None:
        torch = _torch()
        cfg = model.config
        emb = model.embeddings
        self.word = emb.word_embeddings.weight
        self.position = emb.position_embeddings.weight
        self.token_type0 = emb.token_type_embeddings.weight[0]
        self.emb_ln = (emb.LayerNorm.weight, emb.LayerNorm.bias, emb.LayerNorm.eps)
        self.position_offset = (emb.padding_idx + 1) if model_type in _ROBERTA_LIKE else 0
        self.hidden = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.head_dim = self.hidden // self.heads
        self.activation = cfg.hidden_act
        self._buffers: dict[str, Any] = {}
        self._low_layers: dict[Any, list[dict[str, Any]]] = {}
        self.layers: list[dict[str, Any]] = []
        h = self.hidden
        with torch.no_grad():
            for layer in model.encoder.layer:
                att = layer.attention.self
                out = layer.attention.output
                wqkv = torch.cat([att.query.weight, att.key.weight, att.value.weight]).contiguous()
                bqkv = torch.cat([att.query.bias, att.key.bias, att.value.bias]).contiguous()
                for i, lin in enumerate((att.query, att.key, att.value)):
                    lin.weight.data = wqkv[i * h:(i + 1) * h]
                    lin.bias.data = bqkv[i * h:(i + 1) * h]
                self.layers.append({
                    "qkv": (wqkv, bqkv),
                    "o": (out.dense.weight, out.dense.bias),
                    "ln1": (out.LayerNorm.weight, out.LayerNorm.bias, out.LayerNorm.eps),
                    "up": (layer.intermediate.dense.weight, layer.intermediate.dense.bias),
                    "down": (layer.output.dense.weight, layer.output.dense.bias),
                    "ln2": (layer.output.LayerNorm.weight, layer.output.LayerNorm.bias,
                            layer.output.LayerNorm.eps),
                })

    def _linear(self, name: str, x: torch.Tensor, p: dict[str, Any], reuse: bool,
                post: str = "none") -> torch.Tensor:
        torch = _torch()
        weight, bias = p[name][:2]
        if len(p[name]) == 3:  # oneDNN-packed weight: activation fused into the GEMM
            attr, algorithm = _ONEDNN_POST_OPS[post]
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)
        if reuse:
            return torch.addmm(bias, x, weight.t(), out=self._buffer(name, x, weight))
        return torch.nn.functional.linear(x, weight, bias)

    def _buffer(self, name: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """A reused output buffer for linear ``name`` with ``x.shape[0]`` rows.

        Each layer consumes a linear's output before the next layer writes it again, so one
        buffer per linear serves all layers. Fresh multi-megabyte outputs on every call let glibc
        return memory to the kernel and fault it back in (page faults by the thousand per
        corpus); buffers kept across calls avoid that churn.
        """
        return self._rows_buffer(name, x, weight.shape[0])

    def _rows_buffer(self, name: str, x: torch.Tensor, width: int, *,
                     zeros: bool = False) -> torch.Tensor:
        """Buffer ``name`` of ``x.shape[0]`` rows and ``width`` columns in ``x``'s dtype, kept
        across calls (zero-filled when first made, if ``zeros``)."""
        torch = _torch()
        rows = x.shape[0]
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != width or buf.dtype != x.dtype:
            make = torch.zeros if zeros else torch.empty
            buf = make((rows, width), dtype=x.dtype, device=x.device)
            self._buffers[name] = buf
        return buf[:rows]

    @classmethod
    def supports(cls, model: Any) -> str | None:
        """Why ``model`` cannot take the fused path, or ``None`` when it can."""
        why = _fused_unsupported_by_config(model.config)
        if why is not None:
            return why
        try:
            emb = model.embeddings
            _ = (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings,
                 emb.LayerNorm)
            for layer in model.encoder.layer:
                att = layer.attention.self
                _ = (att.query, att.key, att.value, layer.attention.output.dense,
                     layer.attention.output.LayerNorm, layer.intermediate.dense,
                     layer.output.dense, layer.output.LayerNorm)
        except AttributeError as exc:
            return f"unexpected module layout ({exc})"
        return None

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        """The activation, in place (``x`` is a fresh GEMM output)."""
        torch = _torch()
        if self.activation == "gelu":
            return torch.ops.aten.gelu_(x)
        if self.activation == "relu":
            return x.relu_()
        return torch.ops.aten.gelu_(x, approximate="tanh")

    def packs(self, dtype: Any) -> bool:
        """Whether GEMM weights cast to ``dtype`` are packed for oneDNN (bfloat16 on a CPU where
        the packed op works)."""
        return (dtype == _torch().bfloat16 and self.word.device.type == "cpu"
                and _onednn_ok())

    def _low_precision_layers(self, dtype: Any) -> list[dict[str, Any]]:
        """The layers with their four GEMMs' weights and biases cast to ``dtype`` once (layer
        norms stay float32): what autocast would otherwise cast again on every call.

        On a CPU, bfloat16 weights are also packed once into oneDNN's blocked layout
        (``mkldnn._reorder_linear_weight``), which the AMX/AVX512-BF16 kernels otherwise
        re-create on every call; the activation is then fused into the up-projection."""
        cached = self._low_layers.get(dtype)
        if cached is None:
            torch = _torch()
            pack = self.packs(dtype)
            cached = []
            for p in self.layers:
                layer = dict(p)
                for k in ("qkv", "o", "up", "down"):
                    w, b = (t.to(dtype) for t in p[k])
                    layer[k] = (torch.ops.mkldnn._reorder_linear_weight(w, 1024), b, "packed") \
                        if pack else (w, b)
                cached.append(layer)
            self._low_layers[dtype] = cached
        return cached

    def _up(self, x: torch.Tensor, p: dict[str, Any], reuse: bool) -> torch.Tensor:
        """The up-projection and its activation (fused into the GEMM for packed weights)."""
        if len(p["up"]) == 3:
            return self._linear("up", x, p, reuse, post=self.activation)
        return self._act(self._linear("up", x, p, reuse))

    def native_attention_fits(self, gemm_dtype: Any) -> bool:
        """Whether :mod:`~atoma_lab.inference.native_attention`'s kernel can take this model's
        attention on the ``gemm_dtype`` path (packed bfloat16 on a CPU, its head size)."""
        from atoma_lab.inference.native_attention import HEAD_DIMS

        return self.head_dim in HEAD_DIMS and self.packs(gemm_dtype)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor | None, *,
                 reuse_buffers: bool = False, gemm_dtype: Any = None,
                 lengths: torch.Tensor | None = None,
                 native_attention: NativeAttention | None = None) -> torch.Tensor:
        """Hidden states of ``ids``. ``reuse_buffers``: see the class docstring.
        ``gemm_dtype`` (``torch.bfloat16``) runs everything after the embeddings in that dtype on
        weights cast (and on a CPU packed) once, layer-norm parameters and statistics in float32,
        as a bfloat16 model does (sentence-transformers' ``.bfloat16()``): autocast instead casts
        every GEMM's input and weights on every call (a profile of the forward on an AMX CPU is
        in docs/benchmarks.md). ``native_attention`` (with ``lengths``, int64 on the CPU) runs
        attention in that kernel instead of SDPA where :meth:`native_attention_fits`."""
        torch = _torch()
        reuse = reuse_buffers
        layers = self.layers if gemm_dtype is None else self._low_precision_layers(gemm_dtype)
        native = native_attention if (
            native_attention is not None and self.native_attention_fits(gemm_dtype)) else None
        if native is not None and lengths is None:
            raise ValueError("native attention needs the sequences' lengths")


        f = torch.nn.functional
        batch, length = ids.shape
        rows = batch * length
        hidden = self.hidden
        start = self.position_offset
        x = f.embedding(ids, self.word) + self.token_type0
        x = x + self.position[start:start + length]
        x = f.layer_norm(x, (hidden,), *self.emb_ln[:2], self.emb_ln[2]).view(rows, hidden)
        if gemm_dtype is not None:
            x = x.to(gemm_dtype)
        # Packed GEMMs run on a row count from a short list (rows appended; a GEMM's row depends
        # on that row alone, and the extra rows are dropped at the end): oneDNN builds a kernel
        # per new shape, which costs more than the GEMM itself (docs/benchmarks.md), and a
        # server's micro-batches bring new row counts all the time.
        ctx_rows: Any = None
        padded = bucket_rows(rows) if gemm_dtype is not None and self.packs(gemm_dtype) else rows
        if padded != rows:
            x = f.pad(x, (0, 0, 0, padded - rows))
        if padded != rows or native is not None:
            ctx_rows = self._rows_buffer("ctx", x, hidden, zeros=True)
        attn_mask = None if mask is None or native is not None else mask.bool()[:, None, None, :]
        threads = torch.get_num_threads()
        for p in layers:
            qkv_rows = self._linear("qkv", x, p, reuse)
            if native is not None:
                # Reads the heads from the Q/K/V rows and writes the context rows in place.
                assert lengths is not None
                native.run(qkv_rows.data_ptr(), qkv_rows.stride(0), ctx_rows.data_ptr(),
                           ctx_rows.stride(0), lengths.data_ptr(), batch=batch, length=length,
                           heads=self.heads, head_dim=self.head_dim,
                           scale=self.head_dim ** -0.5, threads=threads)
                ctx = ctx_rows
            else:
                qkv = qkv_rows[:rows].view(
                    batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
                ctx = f.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
                if ctx_rows is None:
                    ctx = ctx.transpose(1, 2).reshape(rows, hidden)
                else:
                    ctx_rows[:rows].view(batch, length, self.heads, self.head_dim).copy_(
                        ctx.transpose(1, 2))
                    ctx = ctx_rows
            a = self._linear("o", ctx, p, reuse)
            a = a.add_(x) if a.dtype == x.dtype else a + x
            x = f.layer_norm(a, (hidden,), *p["ln1"][:2], p["ln1"][2])
            h = self._up(x, p, reuse)
            o = self._linear("down", h, p, reuse)
            o = o.add_(x) if o.dtype == x.dtype else o + x
            x = f.layer_norm(o, (hidden,), *p["ln2"][:2], p["ln2"][2])
        return x[:rows].view(batch, length, hidden)


_REACH_LENGTHS = (16, 32, 64, 128, 256, 512)  # sequence lengths the kernel is timed at
_REACH_REPEATS = 3


def _native_attention_reach(kernel: NativeAttention, heads: int, head_dim: int, *,
                            max_length: int, tokens: int) -> tuple[int, dict[int, float]]:
    """How far the native kernel pays here: the longest of :data:`_REACH_LENGTHS` (cut at
    ``max_length``) up to which it ran faster than SDPA at every length measured, 0 if not even
    at the shortest; and its time over SDPA's at each length measured. Each length is one
    micro-batch of about ``tokens`` tokens of random bfloat16 Q/K/V, SDPA timed as the fused
    forward runs it (with the copy into the context rows), the two interleaved, the fastest of
    a few runs each."""
    torch = _torch()
    generator = torch.Generator().manual_seed(0)
    ratios: dict[int, float] = {}
    reach = 0
    for length in sorted({min(n, max_length) for n in _REACH_LENGTHS}):
        ratios[length] = _native_over_sdpa(kernel, heads, head_dim, length,
                                           max(1, tokens // length), generator)
        if ratios[length] > 1.0:
            break
        reach = length
    return reach, ratios


def _native_over_sdpa(kernel: NativeAttention, heads: int, head_dim: int, length: int,
                      batch: int, generator: Any) -> float:
    """The kernel's time over SDPA's on one random micro-batch (fastest run of each)."""
    torch = _torch()
    f = torch.nn.functional
    threads = torch.get_num_threads()
    width = heads * head_dim
    qkv = torch.randn(batch * length, 3 * width, generator=generator).bfloat16()
    out = torch.zeros(batch * length, width, dtype=torch.bfloat16)
    lengths = torch.full((batch,), length, dtype=torch.int64)

    def sdpa() -> None:
        q = qkv.view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        ctx = f.scaled_dot_product_attention(q[0], q[1], q[2])
        out.view(batch, length, heads, head_dim).copy_(ctx.transpose(1, 2))

    def native() -> None:
        kernel.run(qkv.data_ptr(), qkv.stride(0), out.data_ptr(), out.stride(0),
                   lengths.data_ptr(), batch=batch, length=length, heads=heads,
                   head_dim=head_dim, scale=head_dim ** -0.5, threads=threads)

    best = {"sdpa": float("inf"), "native": float("inf")}
    with torch.inference_mode():
        for r in range(_REACH_REPEATS + 1):  # round 0 warms both up, untimed
            for name, fn in (("sdpa", sdpa), ("native", native)):
                start = time.perf_counter()
                fn()
                if r:
                    best[name] = min(best[name], time.perf_counter() - start)
    return best["native"] / best["sdpa"]


class _Path(Protocol):
    """One way to run the model on a padded micro-batch: pooled vectors out."""

    spec: PathSpec

    def run(self, ids: np.ndarray, lengths: np.ndarray) -> Any:
        """Start the forward of ``ids`` (``(rows, longest)`` int64, right-padded); returns a
        handle :meth:`fetch` turns into ``(rows, dim)`` float32 vectors."""

    def fetch(self, handle: Any) -> np.ndarray: ...


class _TorchPath:
    """The torch forward (fused or ``AutoModel``) in float32, under bfloat16 autocast, or with
    the weights' own dtype."""

    def __init__(self, engine: TransformersEngine, spec: PathSpec) -> None:
        self.spec = spec
        self.engine = engine
        torch = _torch()
        low = spec.precision == "bfloat16" and engine._weights_dtype == "float32"
        # bfloat16 over float32 weights: the fused forward casts its GEMM weights once; the
        # generic forward runs under autocast.
        self._gemm_dtype = torch.bfloat16 if low and engine._fused is not None else None
        self._autocast = torch.bfloat16 if low and engine._fused is None else None
        self._reuse = engine._weights_dtype == "float32" and self._autocast is None
        self.packed = (self._gemm_dtype is not None and engine._fused is not None
                       and engine._fused.packs(self._gemm_dtype))
        self.native_attention: NativeAttention | None = None
        self.native_max_length: int | None = None  # longer micro-batches: SDPA
        self.attention, self.attention_reason = "sdpa", "torch's scaled_dot_product_attention"
        if engine._fused is not None and engine._fused.native_attention_fits(self._gemm_dtype):
            self._resolve_attention(engine.attention_requested)

    def _resolve_attention(self, requested: AttentionName) -> None:
        """Use the native kernel where asked (``"native"``: for every length, or fail) or
        (``"auto"``) up to the longest length at which it measured faster than SDPA here; the
        reason goes to ``describe()``."""
        from atoma_lab.inference.native_attention import load_native_attention

        if requested == "sdpa":
            self.attention_reason = "attention='sdpa' asked for"
            return
        kernel, why = load_native_attention(self.engine.cache_dir)
        if kernel is None:
            if requested == "native":
                raise ModelLoadError(f"attention='native' asked for, but the kernel cannot run "
                                     f"here: {why}")
            self.attention_reason = f"native kernel not used: {why}"
            return
        fused = self.engine._fused
        assert fused is not None
        if requested == "auto":
            reach, ratios = _native_attention_reach(
                kernel, fused.heads, fused.head_dim, max_length=self.engine._max_seq_length,
                tokens=self.engine._budget(self))
            measured = ", ".join(f"{n}: {r:.2f}x" for n, r in ratios.items())
            if reach == 0:
                self.attention_reason = (f"native {kernel.isa} kernel not used: slower than SDPA "
                                         f"here (its time / SDPA's by length: {measured})")
                return
            self.native_max_length = reach
            why += (f"; used up to {reach} tokens, where it measured faster than SDPA (its time "
                    f"/ SDPA's by length: {measured})")
        self.native_attention, self.attention_reason = kernel, why
        self.attention = f"native-{kernel.isa}"

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        torch = _torch()
        with torch.inference_mode():
            if self._autocast is None:
                yield
                return
            with torch.autocast(device_type=self.engine.device.type, dtype=self._autocast):
                yield

    def run(self, ids: np.ndarray, lengths: np.ndarray) -> Any:
        torch = _torch()
        eng = self.engine
        device = eng.device
        mask_np = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        ids_t = torch.from_numpy(ids).to(device, non_blocking=True)
        mask_t = torch.from_numpy(mask_np.astype(np.int64)).to(device, non_blocking=True)
        lengths_t = torch.from_numpy(lengths).to(device, non_blocking=True)
        padded = not bool(mask_np.all())
        with self._context():
            if eng._fused is not None:
                native = self.native_attention if (
                    self.native_max_length is None or ids.shape[1] <= self.native_max_length
                ) else None
                hidden = eng._fused(ids_t, mask_t if padded else None, reuse_buffers=self._reuse,
                                    gemm_dtype=self._gemm_dtype, lengths=lengths_t,
                                    native_attention=native)
            else:
                kwargs: dict[str, Any] = {"input_ids": ids_t, "attention_mask": mask_t}
                if eng._accepts_token_types:
                    kwargs["token_type_ids"] = torch.zeros_like(ids_t)
                hidden = eng.model(**kwargs)[0]
            return eng._pool(hidden, mask_t, lengths_t)

    def fetch(self, handle: Any) -> np.ndarray:
        return np.asarray(handle.float().cpu().numpy())


class _OnnxPath:
    """An exported graph on ONNX Runtime, pooled in numpy."""

    def __init__(self, engine: TransformersEngine, spec: PathSpec, export: OnnxExport) -> None:
        from atoma_lab.inference.onnx_runtime import OnnxEncoder

        self.spec = spec
        self.export = export
        self.encoder = OnnxEncoder(export.path, device_type=engine.device.type,
                                   threads=engine.num_threads)
        self._modes = engine.config.pooling_modes
        self._normalize = engine.normalize

    def run(self, ids: np.ndarray, lengths: np.ndarray) -> Any:
        from atoma_lab.inference.pooling import pool

        mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        hidden = self.encoder(ids, mask)
        return pool(hidden, lengths, self._modes, normalize=self._normalize)

    def fetch(self, handle: Any) -> np.ndarray:
        return np.asarray(handle, dtype=np.float32)


class TransformersEngine(EmbeddingEngine):
    """A sentence-transformers (or plain Hugging Face) encoder folder, run on torch or ONNX Runtime.

    ``folder`` is a local folder; use :func:`atoma_lab.inference.load_engine` to go from a served
    name, package or Hub id to one. Options:

    * ``runtime``: ``"torch"`` (default), ``"onnx"`` (ONNX Runtime; ``pip install
      'atoma-lab[onnx]'``; the model is exported on first load into ``cache_dir``) or ``"auto"``
      (both measured on this machine once, the faster one kept; the outcome is recorded in
      ``cache_dir``).
    * ``mode``: ``"exact"`` (vectors within 1e-5 of sentence-transformers), ``"fast"`` (the
      fastest path this machine has whose vectors stay within cosine 0.999 of exact, exact
      where none is faster) or ``"int8"`` (int8 ONNX, its measured quality logged and in
      :meth:`describe`).
    * ``device``: ``"cuda"``, ``"cpu"``, ``"cuda:1"``...; default: CUDA when available.
    * ``dtype``: torch weights' dtype (default float32; ``runtime="torch"`` only). ``mode="fast"``
      on CUDA means float16 weights unless ``dtype`` says otherwise.
    * ``num_threads``: torch's (``torch.set_num_threads``, process-wide) and ONNX Runtime's
      intra-op threads when given.
    * ``tokenizer_threads``: threads that tokenise a large input list in slices (default: the
      usable cores, at most 8; 1 tokenises in the calling thread).
    * ``truncate``: default policy for over-long inputs (``True``: cut them, as
      sentence-transformers does; ``False``: :class:`InputTooLongError`).
    * ``micro_batch_tokens`` / ``max_batch_size``: padded-token budget and row cap per forward
      (default budget: :data:`DEFAULT_MICRO_BATCH_TOKENS`, twice that on the packed bfloat16
      CPU path, whose AMX/AVX512-BF16 GEMMs want more rows per call).
    * ``max_seq_length``: override the model's limit (never above its position table).
    * ``fused``: the fused BERT-family torch forward; ``None`` (default) uses it where supported.
    * ``normalize``: L2-normalise vectors (default ``True``, OpenAI semantics).
    * ``cache_dir``: where ONNX exports and recorded choices live (default
      :func:`~atoma_lab.inference.onnx_export.default_cache_dir`).
    * ``attention``: on the packed bfloat16 CPU path (fast mode on a CPU with AVX512-BF16 or
      AMX), ``"auto"`` (default) runs attention in :mod:`~atoma_lab.inference.native_attention`'s
      kernel where it builds and passes its check, for the sequence lengths at which it measured
      faster than torch's SDPA on load, else SDPA; ``"sdpa"`` always SDPA; ``"native"`` the kernel
      at every length, or :class:`ModelLoadError`. ``describe()`` says which runs and why.
    * ``remeasure``: measure the candidate paths again even where a choice is recorded for this
      model, machine and libraries, and record the new outcome in its place (a choice measured
      while other work loaded the machine stays recorded until then).
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        model_name: str | None = None,
        device: str | None = None,
        dtype: DTypeName | None = None,
        mode: Mode = "exact",
        runtime: Runtime = "torch",
        num_threads: int | None = None,
        tokenizer_threads: int | None = None,
        truncate: bool = True,
        micro_batch_tokens: int | None = None,
        max_batch_size: int | None = None,
        max_seq_length: int | None = None,
        fused: bool | None = None,
        normalize: bool = True,
        cache_dir: Path | str | None = None,
        remeasure: bool = False,
        attention: AttentionName = "auto",
    ) -> None:
        self.remeasure = remeasure
        if attention not in _ATTENTIONS:
            raise ValueError(f"attention must be one of {_ATTENTIONS}")
        self.attention_requested: AttentionName = attention
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}")
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}")
        if dtype not in (None, "float32") and (runtime != "torch" or mode == "int8"):
            raise ValueError("dtype chooses torch weights: it needs runtime='torch' and a mode "
                             "other than 'int8'")
        if micro_batch_tokens is not None and micro_batch_tokens < 1:
            raise ValueError("micro_batch_tokens must be at least 1")
        if num_threads is not None and num_threads < 1:
            raise ValueError("num_threads must be at least 1")
        if tokenizer_threads is not None and tokenizer_threads < 1:
            raise ValueError("tokenizer_threads must be at least 1")
        self.tokenizer_threads = tokenizer_threads or default_tokenizer_threads()
        torch = _torch()
        self.folder = Path(folder)
        self.config: SentenceTransformerConfig = read_sentence_transformers_config(self.folder)
        self._model_name = model_name or str(self.folder)
        self.mode: Mode = mode
        self.runtime_requested: Runtime = runtime
        self.truncate = truncate
        self._micro_batch_tokens_option = micro_batch_tokens
        self.max_batch_size = max_batch_size
        self.num_threads = num_threads
        self._normalize = normalize
        self._lock = threading.Lock()
        self.cpu = CpuInfo.detect()
        from atoma_lab.inference.onnx_export import default_cache_dir

        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else (
            default_cache_dir())
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device or default_device())
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"model {self._model_name!r}: device {device!r} asked for, "
                                 "but CUDA is not available")
        # Fast on CUDA over torch: half weights rather than autocast (docstring).
        self._half_for_fast = (mode == "fast" and self.device.type == "cuda" and dtype is None
                               and runtime != "onnx")
        self._weights_dtype: DTypeName = "float16" if self._half_for_fast else (dtype or "float32")
        self._fused_option = fused
        self._fingerprint_value: str | None = None
        self.model: Any = None
        self._fused: _FusedEncoder | None = None
        self._accepts_token_types = True
        self._load_tokenizer()
        self._load_config()

        # Length limit: explicit > sentence_bert_config > tokenizer > position table.
        positions = int(getattr(self.hf_config, "max_position_embeddings", 0) or 0)
        pos_limit = positions - self._position_offset if positions else _MAX_SANE_LENGTH
        limit = max_seq_length or self.config.max_seq_length
        if limit is None:
            tok_limit = int(getattr(self.tokenizer, "model_max_length", 0) or 0)
            limit = tok_limit if 0 < tok_limit < _MAX_SANE_LENGTH else pos_limit
        self._max_seq_length = min(int(limit), pos_limit)
        if self._max_seq_length <= len(self._prefix) + len(self._suffix):
            raise ModelLoadError(f"model {self._model_name!r}: max_seq_length "
                                 f"{self._max_seq_length} leaves no room for text")

        self._notes: list[str] = []
        self._measured_paths: dict[str, _Path] = {}  # what _measure built, reused once
        self._choice = self._choose_path()
        self._path = self._build_path(self._choice.spec)
        self._measured_paths.clear()  # the paths not chosen go (ONNX sessions, weight copies)
        uses_cast_weights = isinstance(self._path, _TorchPath) and self._path._gemm_dtype is not None
        if self._fused is not None and not uses_cast_weights:
            self._fused._low_layers.clear()
        if self._path.spec.runtime == "onnx":
            # The torch model served only to export or measure: free it.
            self.model = None
            self._fused = None
        if mode == "int8":
            self._report_int8_quality()
        self._dimensions = int(self._run([self._prefix + self._suffix]).shape[1])
        if logger.isEnabledFor(logging.INFO):
            about = self.describe()
            logger.info("model %r runs %s on %s (%s); attention: %s (%s)", self._model_name,
                        about["path"], about["device"], about["reason"], about["attention"],
                        about["attention_reason"])

    # ------------------------------------------------------------------ loading
    def _from_folder(self, auto_class: Any, what: str) -> Any:
        """``auto_class.from_pretrained`` on the transformer folder; a failure is a
        :class:`ModelLoadError` saying what could not be done (``what``) where."""
        where = self.config.transformer_dir
        try:
            return auto_class.from_pretrained(str(where))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ModelLoadError(f"model {self._model_name!r}: cannot {what} in "
                                 f"{where} ({type(exc).__name__}: {exc})") from exc

    def _load_tokenizer(self) -> None:
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        tokenizer = self._from_folder(AutoTokenizer, "load the tokenizer")
        if not getattr(tokenizer, "is_fast", False):
            raise ModelLoadError(f"model {self._model_name!r}: needs a fast (Rust) tokenizer "
                                 "(a tokenizer.json)")
        self.tokenizer = tokenizer
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self._truncation_side = getattr(tokenizer, "truncation_side", "right")
        # The special tokens the tokenizer's template puts around a single sequence.
        probe = "hello world"
        bare = backend.encode(probe, add_special_tokens=False).ids
        full = backend.encode(probe, add_special_tokens=True).ids
        for start in range(len(full) - len(bare) + 1):
            if full[start:start + len(bare)] == bare:
                self._prefix = list(full[:start])
                self._suffix = list(full[start + len(bare):])
                break
        else:
            raise ModelLoadError(f"model {self._model_name!r}: cannot find the text inside the "
                                 "tokenizer's special-token template")
        pad = tokenizer.pad_token_id
        self._pad_id = int(pad) if pad is not None else 0


    def _load_config(self) -> None:
        from transformers import AutoConfig

        cfg = self._from_folder(AutoConfig, "read the model config")
        self.hf_config = cfg
        self._model_type = str(getattr(cfg, "model_type", ""))
        self._position_offset = 0
        if self._model_type in _ROBERTA_LIKE:
            self._position_offset = int(getattr(cfg, "pad_token_id", 1) or 0) + 1
        self._vocab_size = int(getattr(cfg, "vocab_size", 0) or 0)
        why_not = _fused_unsupported_by_config(cfg)
        if self._fused_option and why_not is not None:
            raise ModelLoadError(f"model {self._model_name!r}: the fused forward does not "
                                 f"support it ({why_not})")

    def _load_model(self) -> Any:
        """The torch model (loaded once, on first need), with the fused forward where it fits."""
        if self.model is not None:
            return self.model
        from transformers import AutoModel

        torch = _torch()
        where = self.config.transformer_dir
        torch_dtype = getattr(torch, self._weights_dtype)
        model = None
        errors: list[str] = []
        for attn in ("sdpa", None):
            kwargs: dict[str, Any] = {"dtype": torch_dtype}
            if attn:
                kwargs["attn_implementation"] = attn
            try:
                model = AutoModel.from_pretrained(str(where), **kwargs)
                break
            except (OSError, ValueError, TypeError, KeyError, ImportError, RuntimeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        if model is None:
            raise ModelLoadError(f"model {self._model_name!r}: cannot load the weights in "
                                 f"{where} ({errors[-1]})")
        model.eval()
        model.requires_grad_(False)
        self.model = model.to(self.device)
        self._vocab_size = int(model.get_input_embeddings().num_embeddings)
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        self._accepts_token_types = "token_type_ids" in params
        why_not = _FusedEncoder.supports(self.model)
        if self._fused_option and why_not is not None:
            raise ModelLoadError(f"model {self._model_name!r}: the fused forward does not "
                                 f"support it ({why_not})")
        if self._fused_option is not False and why_not is None:
            self._fused = _FusedEncoder(self.model, self._model_type)
        return self.model

    def _fingerprint(self) -> str:
        from atoma_lab.inference.onnx_export import model_fingerprint

        if self._fingerprint_value is None:
            self._fingerprint_value = model_fingerprint(self.config.transformer_dir)
        return self._fingerprint_value

    def _onnx_export(self, variant: Literal["fp32", "int8"]) -> OnnxExport:
        """The cached ONNX export of this model (made now when absent)."""
        from atoma_lab.inference import onnx_export as ox

        fingerprint = self._fingerprint()
        folder = self.config.transformer_dir

        def build_fp32(out_dir: Path) -> None:
            model = self._load_model()
            if model.dtype != _torch().float32:
                raise ModelLoadError("the ONNX export starts from float32 weights")
            if self._fused is not None or _FusedEncoder.supports(model) is None:
                ox.write_bert_graph(model, out_dir, position_offset=self._position_offset)
            else:
                ox.write_torch_onnx_graph(model, out_dir,
                                          accepts_token_types=self._accepts_token_types)

        exporter = "bert-contrib" if _fused_unsupported_by_config(self.hf_config) is None else (
            "torch.onnx")
        about = {"model_type": self._model_type, "cpu": self.cpu.signature()}
        try:
            fp32 = ox.cached_export(folder, fingerprint=fingerprint, exporter=exporter,
                                    variant="fp32", build=build_fp32, cache_dir=self.cache_dir,
                                    describe=about)
            if variant == "fp32":
                return fp32
            return ox.cached_export(folder, fingerprint=fingerprint, exporter="onnxruntime-int8",
                                    variant="int8",
                                    build=lambda out: ox.write_int8_graph(fp32.path, out),
                                    cache_dir=self.cache_dir, describe=about)
        except ModuleNotFoundError as exc:
            raise ModelLoadError(f"the ONNX export needs {exc.name}; install "
                                 "`pip install 'atoma-lab[onnx]'`") from exc

    # ------------------------------------------------------------------ paths
    def _build_path(self, spec: PathSpec) -> _Path:
        built = self._measured_paths.get(spec.name)
        if built is not None:
            return built
        if spec.runtime == "torch":
            self._load_model()
            return _TorchPath(self, spec)
        return _OnnxPath(self, spec, self._onnx_export("int8" if spec.precision == "int8"
                                                       else "fp32"))

    def _choose_path(self) -> Choice:
        """The path to run: the only candidate, or the one measured (or recorded) fastest."""
        from atoma_lab.inference.onnx_runtime import onnxruntime_available

        if self._weights_dtype != "float32":  # the weights' dtype decides: one torch path
            precision = self._weights_dtype
            why = ("fast mode on CUDA: float16 weights" if self._half_for_fast
                   else f"dtype={precision} asked for")
            return Choice(PathSpec("torch", precision).name, why)
        torch_bf16 = self.device.type == "cpu" and self.cpu.native_bf16 and cpu_has_native_bf16()
        try:
            candidates, notes = candidate_paths(
                self.mode, self.runtime_requested, device_type=self.device.type, cpu=self.cpu,
                onnx_available=onnxruntime_available(), torch_bf16=torch_bf16)
        except ValueError as exc:
            raise ModelLoadError(f"model {self._model_name!r}: {exc}") from exc
        self._notes.extend(notes)
        if len(candidates) == 1 and self.mode != "int8":
            only = candidates[0]
            why = f"runtime={self.runtime_requested!r}, mode={self.mode!r}: {only.name}"
            if self.mode == "fast":
                why = ("fast mode runs exact: " + "; ".join(notes)) if notes else (
                    f"fast mode runs exact: no lossy path on runtime {only.runtime}")
            return Choice(only.name, why)
        return self._measure(candidates)

    def _record_context(self, candidates: Sequence[PathSpec]) -> dict[str, Any]:
        from atoma_lab.inference.onnx_export import RECIPE_VERSION
        from atoma_lab.inference.onnx_runtime import onnxruntime_version

        torch = _torch()
        return {"model": self._fingerprint(), "cpu": self.cpu.signature(),
                "device": str(self.device), "mode": self.mode,
                "runtime": self.runtime_requested,
                "threads": self.num_threads or torch.get_num_threads(),
                "torch": torch.__version__, "onnxruntime": onnxruntime_version(),
                "recipe": RECIPE_VERSION, "paths": _PATHS_VERSION,
                "attention": self.attention_requested,
                "micro_batch_tokens": self._micro_batch_tokens_option,
                "max_batch_size": self.max_batch_size,
                "candidates": [c.name for c in candidates]}

    def _measure(self, candidates: list[PathSpec]) -> Choice:
        """Time ``candidates`` interleaved and judge their quality against the first exact one
        (or a recorded outcome for the same model, machine and libraries)."""
        context = self._record_context(candidates)
        key = record_key(**context)
        recorded = None if self.remeasure else load_record(self.cache_dir, key)
        if recorded is not None:
            return recorded
        reference_spec = next((c for c in candidates if not c.lossy), PathSpec("onnx", "float32"))
        paths = self._measured_paths = {c.name: self._build_path(c) for c in candidates}
        reference = paths.get(reference_spec.name) or self._build_path(reference_spec)
        parity = self.tokenize(parity_corpus(_PARITY_TEXTS)).sequences
        ref_vectors = self._run(parity, reference)
        cosines = {name: (1.0 if not p.spec.lossy else
                          min_cosine(self._run(parity, p), ref_vectors))
                   for name, p in paths.items()}
        timing = self.tokenize(make_corpus(_TIMING_TEXTS, seed=99)).sequences
        order = list(paths)
        times: dict[str, list[float]] = {name: [] for name in order}
        ref_times: list[float] = []
        for r in range(_TIMING_ROUNDS + 1):  # round 0 warms every path up, untimed
            rotated = order[r % len(order):] + order[:r % len(order)]
            for name in rotated:
                start = time.perf_counter()
                self._run(timing, paths[name])
                if r:
                    times[name].append(time.perf_counter() - start)
            if r and reference_spec.name not in paths:
                start = time.perf_counter()
                self._run(timing, reference)
                ref_times.append(time.perf_counter() - start)
        ref_times = times.get(reference_spec.name, ref_times)
        measured = {}
        for name in order:
            spec = PathSpec.parse(name)
            # The fastest round of each: on a shared machine the least disturbed one.
            speed = min(ref_times) / min(times[name])
            eligible = self.mode != "fast" or not spec.lossy or cosines[name] >= FAST_MIN_COSINE
            measured[name] = Measurement(min(times[name]), speed, cosines[name], eligible)
        choice = choose(self.mode, measured, reference_spec.name)
        if self.mode == "int8":
            choice = choice.with_quality(self._retrieval_quality(paths[order[0]], reference,
                                                                 measured[order[0]]))
        return save_record(self.cache_dir, key, choice, context)

    def _retrieval_quality(self, path: _Path, reference: _Path,
                           measured: Measurement) -> dict[str, float]:
        """Min cosine (parity corpus), top-10 neighbour overlap (retrieval corpus) and speed of
        ``path`` against the exact ``reference``."""
        corpus = retrieval_corpus()
        queries = self.tokenize(corpus.queries).sequences
        passages = self.tokenize(corpus.passages).sequences
        path_passages, ref_passages = self._run(passages, path), self._run(passages, reference)
        overlap = top_k_overlap(self._run(queries, path), path_passages,
                                self._run(queries, reference), ref_passages, k=_RETRIEVAL_TOP_K)
        passages_cos = min_cosine(path_passages, ref_passages)
        return {"min_cosine": min(measured.min_cosine, passages_cos),
                f"top{_RETRIEVAL_TOP_K}_overlap": overlap, "speed_vs_exact": measured.speed,
                "queries": float(len(queries)), "passages": float(len(passages))}

    def _report_int8_quality(self) -> None:
        q = self._choice.quality
        if not q:
            return
        logger.warning(
            "model %r runs int8 (ONNX Runtime, dynamic quantisation): against exact, min cosine "
            "%.5f on the parity corpus, top-%d neighbour overlap %.3f on a retrieval corpus "
            "(%d queries, %d passages), %.2fx the exact ONNX path's speed on this machine",
            self._model_name, q.get("min_cosine", float("nan")), _RETRIEVAL_TOP_K,
            q.get(f"top{_RETRIEVAL_TOP_K}_overlap", float("nan")), int(q.get("queries", 0)),
            int(q.get("passages", 0)), q.get("speed_vs_exact", float("nan")))

    # ------------------------------------------------------------------ properties
    @property
    def micro_batch_tokens(self) -> int:
        """Padded tokens per forward on the engine's path."""
        return self._budget(self._path)

    @property
    def normalize(self) -> bool:
        return self._normalize

    @property
    def fused(self) -> bool:
        """Whether the fused BERT-family torch forward is in use."""
        return self._fused is not None and self._path.spec.runtime == "torch"

    @property
    def runtime(self) -> Literal["torch", "onnx"]:
        """The runtime that runs the model (``runtime="auto"`` resolved)."""
        return self._path.spec.runtime

    @property
    def precision(self) -> str:
        """``float32``, ``bfloat16``, ``float16`` or ``int8``: what the forward computes in."""
        return self._path.spec.precision

    @property
    def lossy(self) -> bool:
        """Whether vectors may differ from exact by more than float rounding."""
        return self._path.spec.lossy

    @property
    def choice(self) -> Choice:
        """The path this engine runs, why, and what was measured to decide it."""
        return self._choice

    @property
    def pooling_modes(self) -> tuple[PoolingMode, ...]:
        return self.config.pooling_modes

    @property
    def prompts(self) -> dict[str, str]:
        return dict(self.config.prompts)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def special_tokens(self) -> tuple[list[int], list[int]]:
        """Token ids put before and after every input."""
        return list(self._prefix), list(self._suffix)

    def describe(self) -> dict[str, Any]:
        """What runs and why: runtime, precision, mode, device, threads, the CPU and the flags
        that decided it, the choice's reason and its measurements, the ONNX export in use."""
        torch = _torch()
        choice = self._choice
        info: dict[str, Any] = {
            "model": self._model_name,
            "mode": self.mode,
            "runtime_requested": self.runtime_requested,
            "runtime": self.runtime,
            "precision": self.precision,
            "lossy": self.lossy,
            "path": choice.path,
            "reason": choice.reason,
            "device": str(self.device),
            "threads": self.num_threads or torch.get_num_threads(),
            "cpu": self.cpu.model,
            "cpu_flags": list(self.cpu.relevant_flags),
            "native_bf16": self.cpu.native_bf16,
            "fused": self.fused,
            "attention": getattr(self._path, "attention", "onnxruntime"),
            "attention_reason": getattr(self._path, "attention_reason",
                                        "inside the ONNX Runtime graph"),
            "notes": list(self._notes),
            "measured": {k: {"speed_vs_exact": round(m.speed, 4), "seconds": round(m.seconds, 4),
                             "min_cosine": round(m.min_cosine, 6), "eligible": m.eligible}
                         for k, m in choice.measured.items()},
            "recorded": choice.recorded,
            "from_record": choice.from_record,
        }
        if choice.quality:
            info["quality"] = dict(choice.quality)
        if isinstance(self._path, _OnnxPath):
            export = self._path.export
            info["onnx"] = {"path": str(export.path), "exporter": export.exporter,
                            "variant": export.variant, "cached": export.cached}
        return info

    def __repr__(self) -> str:
        return (f"TransformersEngine({self._model_name!r}, device={str(self.device)!r}, "
                f"mode={self.mode!r}, runtime={self.runtime!r}, precision={self.precision!r}, "
                f"dimensions={self._dimensions}, max_seq_length={self._max_seq_length}, "
                f"fused={self.fused})")

    # ------------------------------------------------------------------ tokenisation
    def _prompt(self, prompt_name: str | None) -> str:
        name = prompt_name if prompt_name is not None else self.config.default_prompt_name
        if name is None:
            return ""
        if name not in self.config.prompts:
            raise InvalidFieldError(
                f"prompt_name: {name!r} is not one of the model's prompts "
                f"{sorted(self.config.prompts)}", field="prompt_name")
        prompt = self.config.prompts[name]
        if prompt and not self.config.include_prompt:
            raise InferenceError(f"model {self._model_name!r} excludes prompt tokens from pooling, "
                                 "which this engine does not implement")
        return prompt

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Token ids of ``texts`` (no special tokens), in slices on the tokenizer threads when
        there are enough texts; the same ids either way."""
        backend = self._backend

        def encode(part: list[str]) -> list[list[int]]:
            return [e.ids for e in backend.encode_batch(part, add_special_tokens=False)]

        workers = min(self.tokenizer_threads, len(texts) // _TEXTS_PER_TOKENIZER_THREAD)
        if workers <= 1:
            return encode(texts)
        step = -(-len(texts) // workers)
        parts = [texts[i:i + step] for i in range(0, len(texts), step)]
        contents: list[list[int]] = []
        for ids in _tokenizer_executor(workers).map(encode, parts):
            contents.extend(ids)
        return contents

    def tokenize(self, inputs: EngineInput, *, truncate: bool | None = None,
                 prompt_name: str | None = None) -> TokenizedInputs:
        kind, items = split_inputs(inputs)
        contents: list[list[int]]
        if kind == "text":
            texts: list[str] = items  # type: ignore[assignment]
            prompt = self._prompt(prompt_name)
            if prompt:
                texts = [prompt + t for t in texts]
            if self.config.do_lower_case:
                texts = [t.lower() for t in texts]
            contents = self._encode_texts(texts)
        else:
            contents = items  # type: ignore[assignment]
            self._check_token_ids(contents, self._vocab_size)
        sequences = self._frame(contents, prefix=self._prefix, suffix=self._suffix,
                                truncate=self.truncate if truncate is None else truncate,
                                keep_end=self._truncation_side == "left")
        return TokenizedInputs(sequences, [len(s) for s in sequences])


    # ------------------------------------------------------------------ forward
    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor,
              lengths: torch.Tensor) -> torch.Tensor:
        torch = _torch()
        hidden = hidden.float()
        outputs = []
        mean_sum = counts = None
        for mode in self.config.pooling_modes:
            if mode == "cls":
                outputs.append(hidden[:, 0])
            elif mode == "max":
                outputs.append(hidden.masked_fill(~mask.bool()[..., None], float("-inf"))
                               .amax(dim=1))
            elif mode in ("mean", "mean_sqrt_len_tokens"):
                if mean_sum is None:
                    maskf = mask[..., None].to(hidden.dtype)
                    mean_sum = (hidden * maskf).sum(dim=1)
                    counts = torch.clamp(maskf.sum(dim=1), min=1e-9)
                assert counts is not None
                outputs.append(mean_sum / (counts if mode == "mean" else torch.sqrt(counts)))
            elif mode == "weightedmean":
                weights = torch.arange(1, hidden.shape[1] + 1, device=hidden.device,
                                       dtype=hidden.dtype)[None, :, None]
                wmask = mask[..., None].to(hidden.dtype) * weights
                outputs.append((hidden * wmask).sum(dim=1)
                               / torch.clamp(wmask.sum(dim=1), min=1e-9))
            else:  # lasttoken (right padding: the last real token)
                rows = torch.arange(hidden.shape[0], device=hidden.device)
                outputs.append(hidden[rows, lengths - 1])
        pooled = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        if self._normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        return pooled


    def _budget(self, path: _Path) -> int:
        """Padded tokens per forward on ``path``: the caller's budget, else the default, doubled
        for the packed bfloat16 CPU path (larger GEMMs keep AMX busy; measured on MiniLM)."""
        if self._micro_batch_tokens_option is not None:
            return self._micro_batch_tokens_option
        packed = isinstance(path, _TorchPath) and path.packed
        return DEFAULT_MICRO_BATCH_TOKENS * (2 if packed else 1)

    def _pad(self, sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """``sequences`` right-padded into ``(rows, longest)`` int64 ids, and their lengths."""
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        ids = np.full((len(sequences), int(lengths.max())), self._pad_id, dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = seq
        return ids, lengths

    def _run(self, sequences: Sequence[Sequence[int]], path: _Path | None = None) -> np.ndarray:
        """Vectors of ``sequences`` (at least one) on ``path`` (default: the engine's),
        micro-batched."""
        path = path if path is not None else self._path
        plan = plan_micro_batches([len(s) for s in sequences],
                                  max_batch_tokens=self._budget(path),
                                  max_batch_size=self.max_batch_size)
        out: np.ndarray | None = None
        try:
            with self._lock:
                # Queue every micro-batch before the first copy back: on CUDA the host then
                # pads the next batch while the device runs this one (a copy would wait).
                handles = [(idx, path.run(*self._pad([sequences[i] for i in idx])))
                           for idx in plan]
                for idx, handle in handles:
                    vectors = path.fetch(handle)
                    if out is None:
                        out = np.empty((len(sequences), vectors.shape[1]), dtype=np.float32)
                    out[idx] = vectors
        except (RuntimeError, IndexError) as exc:
            raise InferenceError(f"model {self._model_name!r} failed on a batch of "
                                 f"{len(sequences)} inputs ({type(exc).__name__})") from exc
        assert out is not None
        if not np.isfinite(out).all():
            raise InferenceError(f"model {self._model_name!r} produced non-finite values")
        return out

    def embed_tokens(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        if not sequences:
            return np.empty((0, self._dimensions), dtype=np.float32)
        return self._run(sequences)


__all__ = [
    "DTypeName",
    "Mode",
    "Runtime",
    "TransformersEngine",
    "cpu_has_native_bf16",
    "default_device",
    "default_tokenizer_threads",
]
