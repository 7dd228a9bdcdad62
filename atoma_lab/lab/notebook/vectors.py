"""Agreement of two sets of vectors, and synthetic inputs of a given length."""

from __future__ import annotations

import numpy as np


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (float64)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (n, d) arrays of one shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(np.einsum("ij,ij->i", a, b) / np.where(norms == 0, 1.0, norms))


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How closely two ``(n, d)`` sets of vectors agree, row by row."""
    cos = rowwise_cosine(a, b)
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return {"min cosine": float(cos.min()), "mean cosine": float(cos.mean()),
            "max abs diff": float(diff.max()), "n": int(cos.shape[0])}


_WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "confidential", "embedding", "proxy",
    "node", "cipher", "nonce", "salt", "key", "hash", "stack",
)


def synthetic_texts(count: int, words: int, *, seed: int = 0) -> list[str]:
    """``count`` deterministic texts of ``words`` words each (about one token per word for a
    WordPiece tokenizer), different from each other."""
    if count < 0 or words < 1:
        raise ValueError("count must be >= 0 and words >= 1")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(_WORDS), size=(count, words))
    return [f"{i} " + " ".join(_WORDS[j] for j in row[1:]) if words > 1 else str(i)
            for i, row in enumerate(picks)]


def size_label(n: int) -> str:
    """``64 B``, ``16 KiB``, ``1 MiB``."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"
