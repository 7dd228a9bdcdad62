"""A timestamp window and a bounded memory of the requests seen inside it. Pure: time is an
argument."""


from __future__ import annotations

from atoma_lab.errors import (
    ReplayedRequestError,
    ServiceUnavailableError,
    StaleRequestError,
)
from atoma_lab.protocol.hardened.layout import DEFAULT_REPLAY_CACHE_ENTRIES, DEFAULT_REPLAY_WINDOW_S


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
