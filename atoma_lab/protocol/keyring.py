"""A node's X25519 keys for every profile: the current one with its rotation counter and the
attestation evidence that binds it, the keys it rotated away from within a grace window, and
the replay memories. Pure: time is an argument, and a new key comes in from the caller (the
node draws it and has its TEE attest it).

Lookups: Atoma's profile names a key by its public key (``node_dh_public_key``), the hardened
profiles by its id (``node_key_id``, BLAKE2b-256 of the public key). Both find the same
:class:`NodeKey`, or raise :class:`NodeKeyMismatchError` (409 ``STALE_NODE_KEY``) naming the
field the request used.

A key serves while it is current, or retired at most ``grace_s`` seconds ago (``grace_s=0``: not
at all, as in Atoma), and while its replay memory has room.

Replay memory: under Atoma's profile each key remembers the ``salt ‖ nonce`` of every request it
opened (:class:`~atoma_lab.protocol.replay.OpenedMemory`), at most ``opened_per_key`` of them.
When the current key's memory is full, :attr:`NodeKeyRing.rotation_due` asks the caller to
rotate; a retired key whose memory is full stops serving at once. ``remember_opened=False``
keeps no such memory (Atoma's node serves a replay as often as it comes). The hardened profiles
carry a timestamp and use the ring's :class:`~atoma_lab.protocol.replay.ReplayGuard` instead.
"""


from __future__ import annotations

from typing import TYPE_CHECKING

from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.keys import X25519_KEY_SIZE, X25519KeyPair
from atoma_lab.errors import NodeKeyMismatchError
from atoma_lab.protocol.replay import OpenedMemory, ReplayGuard

if TYPE_CHECKING:
    from atoma_lab.crypto.attestation import AttestationEvidence

DEFAULT_KEY_GRACE_S = 60.0  # seconds an old node key is still accepted after rotation
DEFAULT_OPENED_PER_KEY = 1 << 17  # Atoma-profile requests one key opens before it is rotated


def node_key_id(node_public_key: bytes) -> bytes:
    """The 32-byte id of a node X25519 key: BLAKE2b-256 of the public key."""
    if len(node_public_key) != X25519_KEY_SIZE:
        raise ValueError(f"node public key must be {X25519_KEY_SIZE} bytes")
    return blake2b_256(bytes(node_public_key))


class NodeKey:
    """One key of a node: the pair, its rotation counter, the evidence binding it (``None`` where
    no TEE attested it), its public key and id, when it was retired (``None``: current), and
    what it opened under Atoma's profile."""

    __slots__ = ("counter", "evidence", "key_id", "opened", "pair", "public_key", "retired_at")

    def __init__(self, pair: X25519KeyPair, counter: int,
                 evidence: AttestationEvidence | None = None) -> None:
        if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
            raise ValueError("counter must be a non-negative integer")
        if evidence is not None and evidence.report.public_key != pair.public_bytes:
            raise ValueError("evidence binds another public key")
        if evidence is not None and evidence.report.key_rotation_counter != counter:
            raise ValueError("evidence names another key_rotation_counter")
        self.pair = pair
        self.public_key = pair.public_bytes
        self.key_id = node_key_id(self.public_key)
        self.counter = counter
        self.evidence = evidence
        self.retired_at: float | None = None
        self.opened = OpenedMemory()

    def __repr__(self) -> str:
        return (f"NodeKey(counter={self.counter}, key_id={self.key_id.hex()[:16]}..., "
                f"retired_at={self.retired_at}, opened={len(self.opened)})")


class NodeKeyRing:
    """A node's current key, the keys it retired within the grace window, and the replay
    memories of both profiles. :meth:`rotate` changes the ring in place (and returns it)."""

    __slots__ = ("_by_id", "_by_public", "_keys", "_opened_per_key", "grace_s", "guard",
                 "remember_opened")

    def __init__(self, current: X25519KeyPair, *, grace_s: float = DEFAULT_KEY_GRACE_S,
                 counter: int = 1, evidence: AttestationEvidence | None = None,
                 guard: ReplayGuard | None = None, opened_per_key: int = DEFAULT_OPENED_PER_KEY,
                 remember_opened: bool = True) -> None:
        if grace_s < 0:
            raise ValueError("grace_s must not be negative")
        self.grace_s = float(grace_s)
        self.opened_per_key = opened_per_key
        self.remember_opened = remember_opened
        self.guard = ReplayGuard() if guard is None else guard
        self._keys: tuple[NodeKey, ...] = ()
        self._by_id: dict[bytes, NodeKey] = {}
        self._by_public: dict[bytes, NodeKey] = {}
        self._install((NodeKey(current, counter, evidence),))

    def _install(self, keys: tuple[NodeKey, ...]) -> None:
        # New dicts, then one assignment each: a lookup running meanwhile sees the old or the
        # new ring, and a retired key's own retired_at decides whether it still serves.
        self._by_id = {k.key_id: k for k in keys}
        self._by_public = {k.public_key: k for k in keys}
        self._keys = keys

    # ------------------------------------------------------------------ the current key
    @property
    def current_key(self) -> NodeKey:
        return self._keys[-1]

    @property
    def current(self) -> X25519KeyPair:
        return self._keys[-1].pair

    @property
    def current_key_id(self) -> bytes:
        return self._keys[-1].key_id

    @property
    def counter(self) -> int:
        """The current key's rotation counter."""
        return self._keys[-1].counter

    @property
    def evidence(self) -> AttestationEvidence | None:
        """The evidence binding the current key."""
        return self._keys[-1].evidence

    @property
    def keys(self) -> tuple[NodeKey, ...]:
        """The keys held, oldest first (the current one last); some may no longer serve."""
        return self._keys

    # ------------------------------------------------------------------ rotation
    def rotate(self, new_key: X25519KeyPair, *, now: float,
               evidence: AttestationEvidence | None = None) -> NodeKeyRing:
        """Make ``new_key`` current with the next counter (``evidence``, if given, must bind
        that key and counter); the old current key is retired at ``now``, and keys that no
        longer serve are dropped. Returns the ring itself."""
        if new_key.public_bytes in self._by_public:
            raise ValueError("new_key is already a key of this ring")
        old = self._keys[-1]
        key = NodeKey(new_key, old.counter + 1, evidence)
        old.retired_at = float(now)
        self._install((*(k for k in self._keys if self._serves(k, now)), key))
        return self

    @property
    def opened_per_key(self) -> int:
        """How many Atoma-profile requests a key opens before it stops serving."""
        return self._opened_per_key

    @opened_per_key.setter
    def opened_per_key(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("opened_per_key must be an integer of at least 1")
        self._opened_per_key = value

    @property
    def rotation_due(self) -> bool:
        """The current key's replay memory is full: rotate before it opens another request."""
        return self._full(self._keys[-1])

    def _full(self, key: NodeKey) -> bool:
        return self.remember_opened and len(key.opened) >= self._opened_per_key

    def _serves(self, key: NodeKey, now: float) -> bool:
        if self._full(key):
            return False
        retired_at = key.retired_at
        return retired_at is None or (self.grace_s > 0 and now - retired_at <= self.grace_s)

    # ------------------------------------------------------------------ lookups
    def _find(self, index: dict[bytes, NodeKey], value: bytes, field: str, now: float) -> NodeKey:
        key = index.get(value)
        if key is None:
            raise NodeKeyMismatchError(
                f"{field} names no key of this node; take a new lock and seal again", field=field)
        if not self._serves(key, now):
            raise NodeKeyMismatchError(
                f"{field} names a key this node retired (rotated, or its replay memory is "
                "full); take a new lock and seal again", field=field)
        return key

    def by_public_key(self, public_key: bytes, *, now: float) -> NodeKey:
        """The serving key with this public key (Atoma's ``node_dh_public_key``), else
        :class:`NodeKeyMismatchError` on ``node_dh_public_key``."""
        return self._find(self._by_public, public_key, "node_dh_public_key", now)

    def by_key_id(self, key_id: bytes, *, now: float) -> NodeKey:
        """The serving key with this id (the hardened ``node_key_id``), else
        :class:`NodeKeyMismatchError` on ``node_key_id``."""
        return self._find(self._by_id, key_id, "node_key_id", now)

    def lookup(self, key_id: bytes, *, now: float) -> X25519KeyPair:
        """The pair of :meth:`by_key_id`."""
        return self._find(self._by_id, key_id, "node_key_id", now).pair

    # ------------------------------------------------------------------ Atoma's replay memory
    def remember(self, key: NodeKey, marker: bytes) -> None:
        """Record that ``key`` opened the Atoma-profile request with ``marker`` (its salt and
        nonce), or :class:`ReplayedRequestError` if it did before; no-op when
        ``remember_opened`` is off. Call it after the request authenticated, so that only a
        sealed request's owner can fill the memory; then check :attr:`rotation_due`."""
        if self.remember_opened:
            key.opened.add(marker)

    def __repr__(self) -> str:
        return (f"NodeKeyRing(current={self.current_key_id.hex()[:16]}..., "
                f"counter={self.counter}, keys={len(self._keys)}, grace_s={self.grace_s:g})")
