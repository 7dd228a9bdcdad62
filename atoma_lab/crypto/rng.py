"""Injectable randomness: every function that draws keys, salts, nonces or ids takes ``rng``
(``secrets.token_bytes`` by default), so vectors and notebooks can fix what a caller would draw."""

from __future__ import annotations

from collections.abc import Callable

#: ``rng(n)`` returns ``n`` random bytes.
RandomBytes = Callable[[int], bytes]


def draw(value: bytes | None, size: int, name: str, rng: RandomBytes) -> bytes:
    """``value`` if the caller injected one, else ``rng(size)``; either way exactly ``size``
    bytes (``ValueError`` naming ``name`` otherwise)."""
    out = rng(size) if value is None else value
    if not isinstance(out, bytes) or len(out) != size:
        raise ValueError(f"{name} must be {size} bytes")
    return out


__all__ = ["RandomBytes", "draw"]
