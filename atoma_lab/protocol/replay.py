"""Replay memories a node keeps. Pure: time is an argument.

Atoma's profile has no timestamp, so each node key remembers the ``salt`` and ``nonce`` of every
request it opened (held by :class:`~atoma_lab.protocol.keyring.NodeKeyRing`, bounded by rotating
a key whose memory is full). The hardened profiles carry an authenticated timestamp, so one
:class:`ReplayGuard` per node remembers the requests inside a window around now.
"""


from __future__ import annotations

from atoma_lab.errors import (
    ReplayedRequestError,
    ServiceUnavailableError,
    StaleRequestError,
)

DEFAULT_REPLAY_WINDOW_S = 300.0  # seconds either side of now (Phala E2EE v2 uses +-300 s)
DEFAULT_REPLAY_CACHE_ENTRIES = 1_000_000  # entries; beyond that the guard refuses (fail closed)


class ReplayGuard:
    """A timestamp window and a bounded cache of requests seen inside it.

    ``check(key, timestamp, now)`` accepts a request once: its ``timestamp`` must lie within
    ``window_s`` of ``now`` (either side, for clock skew) and ``key`` must not have been accepted
    before. An entry is evicted once its timestamp falls out of the window: from then on the window
    check alone refuses a replay of it, because the timestamp is authenticated with the request.
    The guard's clock never runs backwards (``now`` below the largest seen counts as that), so an
    evicted entry cannot come back into the window. When ``max_entries`` requests are live in the
    window the guard refuses new ones (:class:`ServiceUnavailableError`) rather than forget one.
    """

    __slots__ = ("_entries", "_latest_now", "max_entries", "window_s")

    def __init__(self, *, window_s: float = DEFAULT_REPLAY_WINDOW_S,
                 max_entries: int = DEFAULT_REPLAY_CACHE_ENTRIES) -> None:
        if not window_s > 0:
            raise ValueError("window_s must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.window_s = float(window_s)
        self.max_entries = max_entries
        self._entries: dict[bytes, int] = {}  # key -> timestamp, in insertion order
        self._latest_now = float("-inf")

    @property
    def entries(self) -> int:
        """How many accepted requests the cache holds now (a guard is never falsy)."""
        return len(self._entries)

    def _clock(self, now: float) -> float:
        if now > self._latest_now:
            self._latest_now = float(now)
        return self._latest_now

    def check_window(self, timestamp: int, now: float) -> None:
        """:class:`StaleRequestError` unless ``|now - timestamp| <= window_s``; records nothing."""
        now = self._clock(now)
        if abs(now - timestamp) > self.window_s:
            raise StaleRequestError(
                f"timestamp is outside the {self.window_s:g} s replay window", field="timestamp"
            )

    def _evict(self, now: float, *, full_scan: bool) -> None:
        cutoff = now - self.window_s
        entries = self._entries
        if full_scan:
            for key in [k for k, ts in entries.items() if ts < cutoff]:
                del entries[key]
            return
        # Cheap path: drop from the oldest insertions while they are out of the window.
        while entries:
            key = next(iter(entries))
            if entries[key] >= cutoff:
                break
            del entries[key]

    def check(self, key: bytes, timestamp: int, now: float) -> None:
        """Accept ``key`` once within the window, or raise.

        :class:`StaleRequestError` outside the window, :class:`ReplayedRequestError` for a key
        already accepted, :class:`ServiceUnavailableError` when the cache is full.
        """
        self.check_window(timestamp, now)
        now = self._latest_now
        self._evict(now, full_scan=False)
        if key in self._entries:
            raise ReplayedRequestError("this request was already served", field="request_id")
        if len(self._entries) >= self.max_entries:
            self._evict(now, full_scan=True)
            if len(self._entries) >= self.max_entries:
                raise ServiceUnavailableError("replay cache is full; try again shortly")
        self._entries[bytes(key)] = timestamp

    def __repr__(self) -> str:
        return f"ReplayGuard(window_s={self.window_s:g}, entries={len(self._entries)})"


class OpenedMemory:
    """What one node key opened under Atoma's profile: the ``salt ‖ nonce`` of each request.

    Atoma's envelope has no timestamp and no request id, so nothing ages out: the memory only
    grows. :class:`~atoma_lab.protocol.keyring.NodeKeyRing` bounds it by taking a key whose
    memory is full out of service (the current key is rotated, a retired one dropped).
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, marker: bytes) -> None:
        """Record ``marker``, or :class:`ReplayedRequestError` if it was recorded before."""
        if marker in self._seen:
            raise ReplayedRequestError("this request was already served (same key, salt and "
                                       "nonce); seal every request afresh")
        self._seen.add(marker)

    def __repr__(self) -> str:
        return f"OpenedMemory(entries={len(self._seen)})"
