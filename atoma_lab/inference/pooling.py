"""sentence-transformers' pooling modes and L2 normalisation on numpy arrays (no torch here).

The ONNX Runtime path hands back the encoder's last hidden state as a numpy array; this pools it
exactly as :class:`sentence_transformers.models.Pooling` does (the torch path does the same in
torch). Rows are right-padded: ``lengths[i]`` tokens of row ``i`` are real.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from atoma_lab.inference.config import PoolingMode


def pool(hidden: np.ndarray, lengths: np.ndarray, modes: Sequence[PoolingMode], *,
         normalize: bool) -> np.ndarray:
    """Pool ``hidden`` (``(batch, length, dim)``) into ``(batch, dim * len(modes))`` float32."""
    if hidden.ndim != 3:
        raise ValueError("hidden must be (batch, length, dim)")
    if not modes:
        raise ValueError("at least one pooling mode is needed")
    hidden = np.asarray(hidden, dtype=np.float32)
    batch, length, _ = hidden.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    mask = np.arange(length)[None, :] < lengths[:, None]
    maskf = mask[..., None].astype(np.float32)
    outputs: list[np.ndarray] = []
    mean_sum: np.ndarray | None = None
    counts: np.ndarray | None = None
    for mode in modes:
        if mode == "cls":
            outputs.append(hidden[:, 0])
        elif mode == "max":
            outputs.append(np.where(mask[..., None], hidden, -np.inf).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            if mean_sum is None:
                mean_sum = np.einsum("bld,bl->bd", hidden, maskf[..., 0])
                counts = np.maximum(maskf.sum(axis=1), np.float32(1e-9))
            assert counts is not None
            outputs.append(mean_sum / (counts if mode == "mean" else np.sqrt(counts)))
        elif mode == "weightedmean":
            weights = np.arange(1, length + 1, dtype=np.float32)[None, :] * maskf[..., 0]
            outputs.append(np.einsum("bld,bl->bd", hidden, weights)
                           / np.maximum(weights.sum(axis=1, keepdims=True), np.float32(1e-9)))
        elif mode == "lasttoken":
            outputs.append(hidden[np.arange(batch), lengths - 1])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    pooled = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=-1)
    pooled = np.asarray(pooled, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled = pooled / np.maximum(norms, np.float32(1e-12))  # torch's F.normalize eps
    return pooled


__all__ = ["pool"]
