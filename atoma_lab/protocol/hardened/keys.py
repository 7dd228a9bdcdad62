"""A node's X25519 keys: the current one and those retired within a grace window. Pure: time
is an argument."""


from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.errors import (
    NodeKeyMismatchError,
)
from atoma_lab.protocol.hardened.layout import DEFAULT_KEY_GRACE_S, node_key_id


@dataclass(frozen=True, slots=True)
class _RetiredKey:
    key: X25519KeyPair
    retired_at: float


class NodeKeyRing:
    """A node's current X25519 key and the keys it rotated away from, each usable for a grace
    window after its retirement. Immutable: :meth:`rotate` returns a new ring."""

    __slots__ = ("_by_id", "_current", "_retired", "grace_s")

    def __init__(self, current: X25519KeyPair, *, retired: Iterable[tuple[X25519KeyPair, float]] = (),
                 grace_s: float = DEFAULT_KEY_GRACE_S) -> None:
        if grace_s < 0:
            raise ValueError("grace_s must not be negative")
        self.grace_s = float(grace_s)
        self._current = current
        self._retired = tuple(_RetiredKey(k, float(t)) for k, t in retired)
        self._by_id: dict[bytes, _RetiredKey | None] = {
            node_key_id(r.key.public_bytes): r for r in self._retired
        }
        self._by_id[node_key_id(current.public_bytes)] = None

    @property
    def current(self) -> X25519KeyPair:
        return self._current

    @property
    def current_key_id(self) -> bytes:
        return node_key_id(self._current.public_bytes)

    def rotate(self, new_key: X25519KeyPair, *, now: float) -> NodeKeyRing:
        """A ring whose current key is ``new_key``; the old one is retired at ``now``, and keys
        retired longer than the grace window ago are dropped."""
        keep = [(r.key, r.retired_at) for r in self._retired if now - r.retired_at <= self.grace_s]
        return NodeKeyRing(new_key, retired=[*keep, (self._current, now)], grace_s=self.grace_s)

    def lookup(self, key_id: bytes, *, now: float) -> X25519KeyPair:
        """The key with ``key_id``, or :class:`NodeKeyMismatchError` (unknown, or past grace)."""
        if key_id not in self._by_id:
            raise NodeKeyMismatchError(
                "node_key_id names no key of this node; take a new lock and seal again",
                field="node_key_id",
            )
        retired = self._by_id[key_id]
        if retired is None:
            return self._current
        if now - retired.retired_at > self.grace_s:
            raise NodeKeyMismatchError(
                "node_key_id names a key this node retired; take a new lock and seal again",
                field="node_key_id",
            )
        return retired.key

    def __repr__(self) -> str:
        return (f"NodeKeyRing(current={self.current_key_id.hex()[:16]}..., "
                f"retired={len(self._retired)}, grace_s={self.grace_s:g})")


# ------------------------------------------------------------------------------------------------
