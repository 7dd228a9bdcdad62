"""Export a model folder to ONNX once, offline, into a cache keyed by the model's files.

Two exporters, chosen by the model:

* **BERT-family encoders** (BERT, RoBERTa, XLM-RoBERTa, CamemBERT with absolute positions; the
  models the torch engine's fused forward takes) are written directly as an ONNX graph of ONNX
  Runtime's fused CPU operators (``com.microsoft``: ``EmbedLayerNormalization``, ``Attention``
  with the packed Q/K/V weight, ``SkipLayerNormalization``, ``BiasGelu``/``FastGelu``) from the
  weights the torch model loaded. ``torch.onnx.export`` of the same model leaves attention as
  separate MatMul/Softmax/Where nodes that ONNX Runtime's graph optimiser does not fuse (the
  mask code of transformers 5 defeats its pattern matcher); the fused graph measured faster
  (README, "Every backend, one table", says by how much).
* **Any other encoder**: ``torch.onnx.export(..., dynamo=True)`` with keyword inputs (the
  TorchScript exporter fails on BERT with positional arguments), dynamic batch and length.

Both produce ``last_hidden_state`` from ``input_ids`` and ``attention_mask``; pooling and
normalisation stay in :mod:`atoma_lab.inference.pooling`, like the torch path's.

The cache lives under :func:`default_cache_dir` (never inside the installed package), one folder
per (model files, exporter recipe, variant). A folder is built in a private temporary folder and
renamed into place once complete, so a reader never sees half a model and two processes
exporting at once both end with one whole copy (the loser's is discarded); a lock file keeps the
second process from doing the work twice where ``fcntl`` exists.

``variant="int8"`` is the fp32 graph with dynamic int8 quantisation of its matrix products
(ONNX Runtime's quantiser, weights per output channel): lossy, measured by
:mod:`atoma_lab.inference.selection`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from atoma_lab.errors import ModelLoadError

Variant = Literal["fp32", "int8"]
VARIANTS: tuple[Variant, ...] = ("fp32", "int8")
CACHE_ENV = "ATOMA_LAB_CACHE_DIR"
# Bumped whenever a graph written for the same weights would differ: old cache entries are then
# never read again.
RECIPE_VERSION = 1
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
MANIFEST = "manifest.json"
_ORT_OPSET = 17  # ai.onnx opset of the graphs written here
_PROTOBUF_LIMIT = 1_800_000_000  # bytes; over this, weights go to an external data file (2 GiB cap)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
_MODEL_FILES = ("config.json",)


def default_cache_dir() -> Path:
    """``$ATOMA_LAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/atoma-lab``, else ``~/.cache/atoma-lab``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "atoma-lab"


def model_fingerprint(transformer_dir: Path) -> str:
    """A BLAKE3 digest of the files that define the model's graph and weights (``config.json``
    and every weight file, names and contents): a changed model gets a new cache entry."""
    from blake3 import blake3

    files = sorted(p for p in transformer_dir.iterdir() if p.is_file() and (
        p.name in _MODEL_FILES or p.name.endswith(_WEIGHT_SUFFIXES)
        or p.name.endswith(".index.json")))
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in files):
        raise ModelLoadError(f"{transformer_dir}: no weight file to export")
    digest = blake3()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class OnnxExport:
    """A cached export: the graph's path and how it was made."""

    path: Path
    variant: Variant
    exporter: str
    """``"bert-contrib"`` (fused ONNX Runtime operators) or ``"torch.onnx"``."""
    fingerprint: str
    cached: bool
    """True when the entry was already there (no export this time)."""
    seconds: float
    """Time this call spent exporting (0 for a cache hit)."""

    @property
    def folder(self) -> Path:
        return self.path.parent


def cache_entry(cache_dir: Path, fingerprint: str, variant: Variant) -> Path:
    """The folder of one cached export (its manifest names the exporter that wrote it)."""
    return cache_dir / "onnx" / f"{fingerprint[:40]}-r{RECIPE_VERSION}-{variant}"


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not (folder / MODEL_FILE).is_file():
        return None
    return manifest


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock_path`` (a no-op where ``fcntl`` does not exist)."""
    try:
        import fcntl
    except ModuleNotFoundError:  # pragma: no cover - Windows: the atomic rename still protects
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def cached_export(folder: Path, *, fingerprint: str, exporter: str, variant: Variant,
                  build: Callable[[Path], None], cache_dir: Path | None = None,
                  describe: dict[str, Any] | None = None) -> OnnxExport:
    """The cache entry for (``fingerprint``, ``variant``), made by ``build`` (named ``exporter``
    in the manifest) when absent.

    ``build(tmp)`` writes ``tmp/model.onnx`` (and, for large models, ``model.onnx.data``) into a
    fresh private folder; that folder then gets its manifest and is renamed into place. ``folder``
    (the model folder) and ``describe`` go into the manifest for people reading the cache.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    root = (cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    final = cache_entry(root, fingerprint, variant)
    manifest = _read_manifest(final)
    if manifest is not None:
        return OnnxExport(final / MODEL_FILE, variant, str(manifest.get("exporter", exporter)),
                          fingerprint, True, 0.0)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot create the ONNX cache folder {final.parent} ({exc}); set "
                             f"{CACHE_ENV} to a writable folder") from exc
    with locked(final.parent / f".{final.name}.lock"):
        manifest = _read_manifest(final)
        if manifest is not None:  # another process finished it while we waited
            return OnnxExport(final / MODEL_FILE, variant, str(manifest.get("exporter", exporter)),
                              fingerprint, True, 0.0)
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            build(tmp)
            if not (tmp / MODEL_FILE).is_file():
                raise ModelLoadError(f"the {exporter} export of {folder} wrote no {MODEL_FILE}")
            manifest = {"model_folder": str(folder), "fingerprint": fingerprint,
                        "exporter": exporter, "variant": variant, "recipe": RECIPE_VERSION,
                        "created_unix_s": time.time(), **(describe or {})}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            for path in tmp.iterdir():
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
            try:
                os.rename(tmp, final)
            except OSError:
                # A process without the lock (another machine on a shared folder, or no fcntl)
                # renamed its copy first: keep that one.
                if _read_manifest(final) is None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return OnnxExport(final / MODEL_FILE, variant, exporter, fingerprint, False,
                          time.perf_counter() - start)


# ------------------------------------------------------------------------------ graph writers


def _save(model: Any, out_dir: Path, weight_bytes: int) -> None:
    import onnx

    path = out_dir / MODEL_FILE
    if weight_bytes > _PROTOBUF_LIMIT:
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=DATA_FILE, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def write_bert_graph(model: Any, out_dir: Path, *, position_offset: int) -> None:
    """Write a BERT-family ``model`` (a transformers ``BertModel``/``RobertaModel``... in float32
    that the fused torch forward supports) as a graph of ONNX Runtime's fused operators.

    Inputs ``input_ids`` and ``attention_mask`` (int32, ``(batch, length)``, right padding);
    output ``last_hidden_state`` (float32). Position ids are ``0..length-1`` into the position
    table from ``position_offset`` on (RoBERTa's real tokens start after its padding index).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg = model.config
    hidden = int(cfg.hidden_size)
    initializers: list[Any] = []
    nodes: list[Any] = []
    total = 0

    def weight(name: str, tensor: Any, *, transpose: bool = False) -> str:
        nonlocal total
        array = tensor.detach().float().cpu().numpy()
        array = np.ascontiguousarray(array.T if transpose else array)
        total += array.nbytes
        initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        domain = "" if op in ("MatMul", "Add", "Relu", "Mul", "Identity") else "com.microsoft"
        nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attrs))

    emb = model.embeddings
    initializers.append(numpy_helper.from_array(np.array(0, dtype=np.int32), "zero"))
    node("Mul", ["input_ids", "zero"], ["token_type_ids"])
    node("EmbedLayerNormalization",
         ["input_ids", "token_type_ids", weight("word", emb.word_embeddings.weight),
          weight("position", emb.position_embeddings.weight[position_offset:]),
          weight("token_type", emb.token_type_embeddings.weight),
          weight("emb_ln_w", emb.LayerNorm.weight), weight("emb_ln_b", emb.LayerNorm.bias)],
         ["x0", "mask_index_unused"], epsilon=float(emb.LayerNorm.eps))
    import torch

    x = "x0"
    act = cfg.hidden_act
    for i, layer in enumerate(model.encoder.layer):
        p = f"l{i}."
        att, out = layer.attention.self, layer.attention.output
        wqkv = torch.cat([att.query.weight, att.key.weight, att.value.weight])
        bqkv = torch.cat([att.query.bias, att.key.bias, att.value.bias])
        node("Attention", [x, weight(p + "qkv_w", wqkv, transpose=True),
                           weight(p + "qkv_b", bqkv), "attention_mask"],
             [p + "ctx"], num_heads=int(cfg.num_attention_heads))
        node("MatMul", [p + "ctx", weight(p + "o_w", out.dense.weight, transpose=True)],
             [p + "o"])
        node("SkipLayerNormalization",
             [p + "o", x, weight(p + "ln1_w", out.LayerNorm.weight),
              weight(p + "ln1_b", out.LayerNorm.bias), weight(p + "o_b", out.dense.bias)],
             [p + "x1"], epsilon=float(out.LayerNorm.eps))
        node("MatMul", [p + "x1", weight(p + "up_w", layer.intermediate.dense.weight,
                                         transpose=True)], [p + "up"])
        up_b = weight(p + "up_b", layer.intermediate.dense.bias)
        if act == "gelu":
            node("BiasGelu", [p + "up", up_b], [p + "act"])
        elif act in ("gelu_new", "gelu_pytorch_tanh"):
            node("FastGelu", [p + "up", up_b], [p + "act"])
        elif act == "relu":
            node("Add", [p + "up", up_b], [p + "up_biased"])
            node("Relu", [p + "up_biased"], [p + "act"])
        else:
            raise ModelLoadError(f"activation {act!r} has no fused ONNX Runtime operator here")
        node("MatMul", [p + "act", weight(p + "down_w", layer.output.dense.weight,
                                          transpose=True)], [p + "down"])
        node("SkipLayerNormalization",
             [p + "down", p + "x1", weight(p + "ln2_w", layer.output.LayerNorm.weight),
              weight(p + "ln2_b", layer.output.LayerNorm.bias),
              weight(p + "down_b", layer.output.dense.bias)],
             [p + "x2"], epsilon=float(layer.output.LayerNorm.eps))
        x = p + "x2"
    node("Identity", [x], ["last_hidden_state"])
    graph = helper.make_graph(
        nodes, f"{cfg.model_type}-encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "length"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT32, ["batch", "length"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       ["batch", "length", hidden])],
        initializers)
    onnx_model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", _ORT_OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="atoma-lab")
    if total < _PROTOBUF_LIMIT:  # the checker serialises the model: not past protobuf's cap
        onnx.checker.check_model(onnx_model)
    _save(onnx_model, out_dir, total)


def write_torch_onnx_graph(model: Any, out_dir: Path, *, accepts_token_types: bool) -> None:
    """Export any transformers encoder with ``torch.onnx.export(dynamo=True)``.

    Inputs ``input_ids`` and ``attention_mask`` (int64), output ``last_hidden_state``.
    """
    import torch

    class _Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if accepts_token_types:
                kwargs["token_type_ids"] = torch.zeros_like(input_ids)
            return self.inner(**kwargs)[0]

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ids = torch.ones((2, 8), dtype=torch.long)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    try:
        program = torch.onnx.export(
            _Encoder(model).eval(), (ids, torch.ones_like(ids)), dynamo=True,
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_shapes={"input_ids": {0: batch, 1: length},
                            "attention_mask": {0: batch, 1: length}},
            optimize=True, verbose=False)
    except (RuntimeError, ValueError, TypeError, ImportError) as exc:
        raise ModelLoadError(f"torch.onnx.export failed ({type(exc).__name__}: {exc})") from exc
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ModelLoadError("torch.onnx.export returned no program")
    _save(program.model_proto, out_dir, weight_bytes)


def write_int8_graph(fp32_path: Path, out_dir: Path) -> None:
    """Dynamic int8 quantisation of ``fp32_path``'s matrix products (weights per channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out_dir / MODEL_FILE), weight_type=QuantType.QInt8,
                     per_channel=True, op_types_to_quantize=["MatMul", "Attention"],
                     use_external_data_format=fp32_path.with_name(DATA_FILE).exists(),
                     extra_options={"DefaultTensorType": 1})  # 1: TensorProto.FLOAT


__all__ = [
    "CACHE_ENV",
    "RECIPE_VERSION",
    "VARIANTS",
    "OnnxExport",
    "Variant",
    "cache_entry",
    "cached_export",
    "default_cache_dir",
    "model_fingerprint",
    "write_bert_graph",
    "write_int8_graph",
    "write_torch_onnx_graph",
]
