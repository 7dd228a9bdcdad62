"""The torch engine: a Hugging Face encoder run the sentence-transformers way, only faster.

This module is the only one in atoma_lab that imports torch and transformers.

What makes it equal to ``SentenceTransformer.encode(normalize_embeddings=True)``: the same
tokenizer (its Rust backend, special tokens added from its own template), the same truncation
(``max_seq_length`` from ``sentence_bert_config.json``), the same pooling modes and the same L2
normalisation. What makes it faster:

* tokenisation straight through the Rust tokenizer, without padding or tensor conversion per
  batch, and once per request (the dynamic batcher does it in the caller's thread);
* micro-batches sorted by token length under a padded-token budget
  (:func:`~atoma_lab.inference.batching.plan_micro_batches`): little padding, cache-sized
  activations;
* for BERT, RoBERTa and XLM-RoBERTa encoders a fused forward (:class:`_FusedEncoder`): one
  GEMM for Q, K and V, SDPA attention without a mask when a micro-batch has no padding, in-place
  residual adds and activation, GEMM outputs written into buffers reused across calls (float32),
  no unused pooler; other architectures run through ``AutoModel`` with SDPA;
* ``torch.inference_mode``.

``mode="fast"`` trades exactness for speed: on CUDA the weights are float16 (no autocast: on a
GPU a small encoder is bound by the host, and autocast's casts are extra kernel launches; on an
H200 float16 weights took 15% less time than float16 autocast on MiniLM and 21% less on a
BERT-large shape); on CPU, bfloat16 autocast (worth it only where the CPU has native bf16,
AVX512-BF16 or AMX). Pooling and normalisation run in float32 either way.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from atoma_lab.errors import (
    InferenceError,
    InputTooLongError,
    InvalidFieldError,
    ModelLoadError,
)
from atoma_lab.inference.batching import DEFAULT_MICRO_BATCH_TOKENS, plan_micro_batches
from atoma_lab.inference.config import (
    PoolingMode,
    SentenceTransformerConfig,
    read_sentence_transformers_config,
)
from atoma_lab.inference.engine import EmbeddingEngine, EngineInput, TokenizedInputs, split_inputs

if TYPE_CHECKING:
    import torch

Mode = Literal["exact", "fast"]
DTypeName = Literal["float32", "float16", "bfloat16"]
_DTYPES = ("float32", "float16", "bfloat16")
_FUSED_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})
_ROBERTA_LIKE = frozenset({"roberta", "xlm-roberta", "camembert"})
_FUSED_ACTIVATIONS = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh", "relu"})
_MAX_SANE_LENGTH = 1_000_000  # tokenizers without a limit report ~1e30
# Tokenising in threads (the Rust tokenizer releases the GIL): worth it from this many texts
# a thread; below, one call. On a GPU host tokenising is often most of an embed call.
_TEXTS_PER_TOKENIZER_THREAD = 32
_tokenizer_pool: ThreadPoolExecutor | None = None
_tokenizer_pool_lock = threading.Lock()


def _tokenizer_executor(workers: int) -> ThreadPoolExecutor:
    """One process-wide pool for tokenising (grown when an engine asks for more threads)."""
    global _tokenizer_pool
    with _tokenizer_pool_lock:
        if _tokenizer_pool is None or _tokenizer_pool._max_workers < workers:
            _tokenizer_pool = ThreadPoolExecutor(workers, thread_name_prefix="atoma-tokenize")
        return _tokenizer_pool


def default_tokenizer_threads() -> int:
    """Threads to tokenise with by default: the usable cores, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


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


class _FusedEncoder:
    """A BERT-family encoder forward with fused Q/K/V and no per-call mask building.

    Numerically the same computation as the ``transformers`` forward up to float summation
    order. Weights stay in ``nn.Linear``'s ``(out, in)`` layout and are shared with the Hugging
    Face modules (the query, key and value modules are re-pointed at slices of the fused Q/K/V
    matrix), so they exist once.

    ``reuse_buffers`` (float32 without autocast) writes every linear's output into a buffer kept
    across calls (``addmm(..., out=)``); otherwise ``F.linear`` allocates, as autocast needs.
    """

    def __init__(self, model: Any, model_type: str, *, reuse_buffers: bool) -> None:
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
        self.reuse_buffers = reuse_buffers
        self._buffers: dict[str, Any] = {}
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

    def _linear(self, name: str, x: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        torch = _torch()
        weight, bias = p[name]
        if self.reuse_buffers:
            return torch.addmm(bias, x, weight.t(), out=self._buffer(name, x, weight))
        return torch.nn.functional.linear(x, weight, bias)

    def _buffer(self, name: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """A reused output buffer for linear ``name`` with ``x.shape[0]`` rows.

        Each layer consumes a linear's output before the next layer writes it again, so one
        buffer per linear serves all layers. Fresh multi-megabyte outputs on every call let glibc
        return memory to the kernel and fault it back in (tens of thousands of page faults per
        512-text corpus here); buffers kept across calls avoid that churn.
        """
        torch = _torch()
        rows = x.shape[0]
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.dtype != x.dtype:
            buf = torch.empty((rows, weight.shape[0]), dtype=x.dtype, device=x.device)
            self._buffers[name] = buf
        return buf[:rows]

    @classmethod
    def supports(cls, model: Any) -> str | None:
        """Why ``model`` cannot take the fused path, or ``None`` when it can."""
        cfg = model.config
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

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        torch = _torch()
        f = torch.nn.functional
        batch, length = ids.shape
        hidden = self.hidden
        start = self.position_offset
        x = f.embedding(ids, self.word) + self.token_type0
        x = x + self.position[start:start + length]
        x = f.layer_norm(x, (hidden,), *self.emb_ln[:2], self.emb_ln[2]).view(batch * length,
                                                                                hidden)
        attn_mask = None if mask is None else mask.bool()[:, None, None, :]
        for p in self.layers:
            qkv = self._linear("qkv", x, p).view(
                batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            ctx = f.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
            ctx = ctx.transpose(1, 2).reshape(batch * length, hidden)
            a = self._linear("o", ctx, p)
            a = a.add_(x) if a.dtype == x.dtype else a + x
            x = f.layer_norm(a, (hidden,), *p["ln1"][:2], p["ln1"][2])
            h = self._act(self._linear("up", x, p))
            o = self._linear("down", h, p)
            o = o.add_(x) if o.dtype == x.dtype else o + x
            x = f.layer_norm(o, (hidden,), *p["ln2"][:2], p["ln2"][2])
        return x.view(batch, length, hidden)


class TransformersEngine(EmbeddingEngine):
    """A sentence-transformers (or plain Hugging Face) encoder folder, loaded with transformers.

    ``folder`` is a local folder; use :func:`atoma_lab.inference.load_engine` to go from a served
    name, package or Hub id to one. Options:

    * ``device``: ``"cuda"``, ``"cpu"``, ``"cuda:1"``...; default: CUDA when available.
    * ``dtype``: weights' dtype (default float32). ``mode="fast"``: float16 weights on CUDA
      (unless ``dtype`` says otherwise), bf16 autocast over float32 weights on CPU.
    * ``num_threads``: calls ``torch.set_num_threads`` (process-wide) when given.
    * ``tokenizer_threads``: threads that tokenise a large input list in slices (default: the
      usable cores, at most 8; 1 tokenises in the calling thread).
    * ``truncate``: default policy for over-long inputs (``True``: cut them, as
      sentence-transformers does; ``False``: :class:`InputTooLongError`).
    * ``micro_batch_tokens`` / ``max_batch_size``: padded-token budget and row cap per forward.
    * ``max_seq_length``: override the model's limit (never above its position table).
    * ``fused``: the fused BERT-family forward; ``None`` (default) uses it where supported.
    * ``normalize``: L2-normalise vectors (default ``True``, OpenAI semantics).
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        model_name: str | None = None,
        device: str | None = None,
        dtype: DTypeName | None = None,
        mode: Mode = "exact",
        num_threads: int | None = None,
        tokenizer_threads: int | None = None,
        truncate: bool = True,
        micro_batch_tokens: int = DEFAULT_MICRO_BATCH_TOKENS,
        max_batch_size: int | None = None,
        max_seq_length: int | None = None,
        fused: bool | None = None,
        normalize: bool = True,
    ) -> None:
        if mode not in ("exact", "fast"):
            raise ValueError("mode must be 'exact' or 'fast'")
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}")
        if micro_batch_tokens < 1:
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
        self.truncate = truncate
        self.micro_batch_tokens = micro_batch_tokens
        self.max_batch_size = max_batch_size
        self._normalize = normalize
        self._lock = threading.Lock()
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device or default_device())
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"model {self._model_name!r}: device {device!r} asked for, "
                                 "but CUDA is not available")

        if mode == "fast" and self.device.type == "cuda" and dtype is None:
            dtype = "float16"  # fast on CUDA: half weights rather than autocast (docstring)
        self._load_tokenizer()
        self._load_model(torch, dtype)

        # Length limit: explicit > sentence_bert_config > tokenizer > position table.
        positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        pos_limit = positions - self._position_offset if positions else _MAX_SANE_LENGTH
        limit = max_seq_length or self.config.max_seq_length
        if limit is None:
            tok_limit = int(getattr(self.tokenizer, "model_max_length", 0) or 0)
            limit = tok_limit if 0 < tok_limit < _MAX_SANE_LENGTH else pos_limit
        self._max_seq_length = min(int(limit), pos_limit)
        if self._max_seq_length <= len(self._prefix) + len(self._suffix):
            raise ModelLoadError(f"model {self._model_name!r}: max_seq_length "
                                 f"{self._max_seq_length} leaves no room for text")

        why_not = _FusedEncoder.supports(self.model)
        if fused and why_not is not None:
            raise ModelLoadError(f"model {self._model_name!r}: the fused forward does not "
                                 f"support it ({why_not})")
        plain_fp32 = mode == "exact" and dtype in (None, "float32")
        self._fused = _FusedEncoder(self.model, self._model_type, reuse_buffers=plain_fp32) if (
            fused is not False and why_not is None) else None

        self._autocast_dtype = None
        if mode == "fast" and self.device.type != "cuda":
            self._autocast_dtype = torch.bfloat16
            if not cpu_has_native_bf16():
                warnings.warn(
                    "mode='fast' on a CPU without native bfloat16 (AVX512-BF16/AMX): "
                    "bf16 autocast will be slower than float32 here",
                    RuntimeWarning, stacklevel=2,
                )
        with torch.inference_mode():
            self._dimensions = int(self._forward_padded([self._prefix + self._suffix]).shape[1])

    # ------------------------------------------------------------------ loading
    def _load_tokenizer(self) -> None:
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        where = self.config.transformer_dir
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(where))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ModelLoadError(f"model {self._model_name!r}: cannot load the tokenizer in "
                                 f"{where} ({type(exc).__name__}: {exc})") from exc
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

    def _load_model(self, torch: Any, dtype: DTypeName | None) -> None:
        from transformers import AutoModel

        where = self.config.transformer_dir
        torch_dtype = getattr(torch, dtype) if dtype else torch.float32
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
        self._model_type = str(getattr(model.config, "model_type", ""))
        self._position_offset = 0
        if self._model_type in _ROBERTA_LIKE:
            self._position_offset = int(getattr(model.config, "pad_token_id", 1) or 0) + 1
        self._vocab_size = int(model.get_input_embeddings().num_embeddings)
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        self._accepts_token_types = "token_type_ids" in params

    # ------------------------------------------------------------------ properties
    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @property
    def normalize(self) -> bool:
        return self._normalize

    @property
    def fused(self) -> bool:
        """Whether the fused BERT-family forward is in use."""
        return self._fused is not None

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

    def __repr__(self) -> str:
        return (f"TransformersEngine({self._model_name!r}, device={str(self.device)!r}, "
                f"mode={self.mode!r}, dimensions={self._dimensions}, "
                f"max_seq_length={self._max_seq_length}, fused={self.fused})")

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
        cut = self.truncate if truncate is None else truncate
        n_special = len(self._prefix) + len(self._suffix)
        room = self._max_seq_length - n_special
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
            vocab = self._vocab_size
            for i, ids in enumerate(contents):
                if ids and (min(ids) < 0 or max(ids) >= vocab):
                    raise InvalidFieldError(
                        f"input[{i}]: token ids must be in [0, {vocab}) for this model",
                        field=f"input[{i}]")
        prefix, suffix = self._prefix, self._suffix
        sequences: list[list[int]] = []
        for i, ids in enumerate(contents):
            if len(ids) > room:
                if not cut:
                    raise InputTooLongError(
                        f"input[{i}] has {len(ids) + n_special} tokens; the model takes at most "
                        f"{self._max_seq_length} (truncation is off)", field=f"input[{i}]")
                ids = ids[:room] if self._truncation_side != "left" else ids[len(ids) - room:]
            sequences.append(prefix + list(ids) + suffix)
        return TokenizedInputs(sequences, [len(s) for s in sequences])

    # ------------------------------------------------------------------ forward
    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        torch = _torch()
        if self._autocast_dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype):
            yield

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

    def _forward_padded(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """One forward over ``sequences`` padded to the longest; returns pooled vectors."""
        torch = _torch()
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        longest = int(lengths.max())
        ids = np.full((len(sequences), longest), self._pad_id, dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = seq
        mask_np = np.arange(longest)[None, :] < lengths[:, None]
        ids_t = torch.from_numpy(ids).to(self.device, non_blocking=True)
        mask_t = torch.from_numpy(mask_np.astype(np.int64)).to(self.device, non_blocking=True)
        lengths_t = torch.from_numpy(lengths).to(self.device, non_blocking=True)
        padded = not bool(mask_np.all())
        with self._autocast():
            if self._fused is not None:
                hidden = self._fused(ids_t, mask_t if padded else None)
            else:
                kwargs: dict[str, Any] = {"input_ids": ids_t, "attention_mask": mask_t}
                if self._accepts_token_types:
                    kwargs["token_type_ids"] = torch.zeros_like(ids_t)
                hidden = self.model(**kwargs)[0]
            return self._pool(hidden, mask_t, lengths_t)

    def embed_tokens(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        torch = _torch()
        out = np.empty((len(sequences), self._dimensions), dtype=np.float32)
        if not sequences:
            return out
        lengths = [len(s) for s in sequences]
        plan = plan_micro_batches(lengths, max_batch_tokens=self.micro_batch_tokens,
                                  max_batch_size=self.max_batch_size)
        try:
            with self._lock, torch.inference_mode():
                # Queue every micro-batch before the first copy back: on CUDA the host then
                # pads the next batch while the device runs this one (a copy would wait).
                pooled = [(idx, self._forward_padded([sequences[i] for i in idx])) for idx in plan]
                for idx, vectors in pooled:
                    out[idx] = vectors.float().cpu().numpy()
        except (RuntimeError, IndexError) as exc:
            raise InferenceError(f"model {self._model_name!r} failed on a batch of "
                                 f"{len(sequences)} inputs ({type(exc).__name__})") from exc
        if not np.isfinite(out).all():
            raise InferenceError(f"model {self._model_name!r} produced non-finite values")
        return out


__all__ = [
    "DTypeName",
    "Mode",
    "TransformersEngine",
    "cpu_has_native_bf16",
    "default_device",
    "default_tokenizer_threads",
]
