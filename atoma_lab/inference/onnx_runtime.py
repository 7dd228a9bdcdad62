"""An ONNX Runtime session over an exported encoder (see :mod:`~atoma_lab.inference.onnx_export`).

onnxruntime is imported here only, and only when a session is built: ``import atoma_lab`` never
loads it (tests/test_layering.py checks).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from atoma_lab.errors import InferenceError, ModelLoadError

_NUMPY_TYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}
# onnxruntime's own exception classes (they derive from Exception, not RuntimeError).
_ORT_ERRORS = ("EPFail", "EngineError", "Fail", "InvalidArgument", "InvalidGraph",
               "InvalidProtobuf", "NoModel", "NoSuchFile", "NotFound", "NotImplemented",
               "RuntimeException")


def onnxruntime_available() -> bool:
    """Whether onnxruntime is installed (``pip install 'atoma-lab[onnx]'``)."""
    return importlib.util.find_spec("onnxruntime") is not None


def _ort() -> Any:
    try:
        import onnxruntime
    except ModuleNotFoundError as exc:
        raise ModelLoadError("the ONNX runtime needs onnxruntime; install "
                             "`pip install 'atoma-lab[onnx]'`") from exc
    return onnxruntime


def ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's exception classes, to catch by name."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = tuple(getattr(state, name, None) for name in _ORT_ERRORS)
    return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException))


def onnxruntime_version() -> str | None:
    if not onnxruntime_available():
        return None
    return str(_ort().__version__)


def providers_for(device_type: str) -> list[str]:
    """ONNX Runtime execution providers for a torch-style device type, or
    :class:`ModelLoadError` when this onnxruntime build has none for it."""
    available = _ort().get_available_providers()
    if device_type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ModelLoadError("runtime 'onnx' on CUDA needs onnxruntime-gpu (this onnxruntime "
                                 f"has {available})")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEncoder:
    """``last_hidden_state`` of an exported encoder, from right-padded token ids.

    ``threads``: ONNX Runtime's intra-op threads (default: its own, the physical cores).
    Graph optimisations are all on: they fuse and reorder, and leave the arithmetic exact up to
    float summation order (the parity tests hold it to 1e-5).
    """

    def __init__(self, path: Path, *, device_type: str = "cpu", threads: int | None = None) -> None:
        ort = _ort()
        self._errors: tuple[type[BaseException], ...] = (*ort_errors(), RuntimeError, ValueError)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: no hardware-specific optimisation notes
        load_errors: tuple[type[BaseException], ...] = (*self._errors, OSError)
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=providers_for(device_type))
        except load_errors as exc:
            raise ModelLoadError(f"ONNX Runtime cannot load {path} "
                                 f"({type(exc).__name__}: {exc})") from exc
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        if set(inputs) != {"input_ids", "attention_mask"}:
            raise ModelLoadError(f"{path}: expected inputs input_ids and attention_mask, "
                                 f"got {sorted(inputs)}")
        try:
            self._ids_dtype = _NUMPY_TYPES[inputs["input_ids"]]
            self._mask_dtype = _NUMPY_TYPES[inputs["attention_mask"]]
        except KeyError as exc:
            raise ModelLoadError(f"{path}: integer inputs expected, got {inputs}") from exc
        self.path = path
        self.threads = threads

    @property
    def ids_dtype(self) -> type[np.integer[Any]]:
        return self._ids_dtype  # type: ignore[return-value]

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": np.ascontiguousarray(ids, dtype=self._ids_dtype),
                "attention_mask": np.ascontiguousarray(mask, dtype=self._mask_dtype)}
        try:
            (hidden,) = self.session.run(["last_hidden_state"], feed)
        except self._errors as exc:
            raise InferenceError(f"ONNX Runtime failed on a batch of {ids.shape[0]} "
                                 f"({type(exc).__name__})") from exc
        return np.asarray(hidden)


__all__ = ["OnnxEncoder", "onnxruntime_available", "onnxruntime_version", "providers_for"]
