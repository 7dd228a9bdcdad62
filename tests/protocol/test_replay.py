"""Replay memories (``atoma_lab.protocol.replay``): the hardened profiles' timestamp window and
bounded cache (:class:`ReplayGuard`), and the memory of what one node key opened under Atoma's
profile (:class:`OpenedMemory`)."""

from __future__ import annotations

import pytest

from atoma_lab.errors import ReplayedRequestError, ServiceUnavailableError, StaleRequestError
from atoma_lab.protocol import OpenedMemory, ReplayGuard, hardened

# ------------------------------------------------------------------------------------------------
# ReplayGuard
# ------------------------------------------------------------------------------------------------


def test_the_guard_is_the_one_the_hardened_profile_exports() -> None:
    assert hardened.ReplayGuard is ReplayGuard
    assert ReplayGuard().window_s == hardened.DEFAULT_REPLAY_WINDOW_S
    assert ReplayGuard().max_entries == hardened.DEFAULT_REPLAY_CACHE_ENTRIES


@pytest.mark.parametrize(("offset", "accepted"), [
    (-300.0, True), (300.0, True), (-300.001, False), (300.001, False), (0.0, True),
])
def test_window_edges(offset: float, accepted: bool) -> None:
    guard = ReplayGuard(window_s=300)
    if accepted:
        guard.check(b"k", 1000, 1000 + offset)
        assert guard.entries == 1
    else:
        with pytest.raises(StaleRequestError) as excinfo:
            guard.check(b"k", 1000, 1000 + offset)
        assert excinfo.value.field == "timestamp" and guard.entries == 0


def test_guard_evicts_only_out_of_window_entries() -> None:
    guard = ReplayGuard(window_s=10)
    guard.check(b"a", 100, 100)
    guard.check(b"b", 105, 105)
    guard.check(b"c", 112, 112)  # cutoff 102: a goes, b stays
    assert guard.entries == 2
    with pytest.raises(ReplayedRequestError):
        guard.check(b"b", 105, 112)
    with pytest.raises(StaleRequestError):
        guard.check(b"a", 100, 112)


def test_guard_clock_does_not_run_backwards() -> None:
    guard = ReplayGuard(window_s=10)
    guard.check(b"a", 100, 100)
    guard.check(b"z", 120, 120)  # evicts a
    with pytest.raises(StaleRequestError):
        guard.check(b"a", 100, 100)  # an earlier `now` counts as 120


def test_guard_is_bounded_and_fails_closed() -> None:
    guard = ReplayGuard(window_s=10, max_entries=2)
    guard.check(b"a", 100, 100)
    guard.check(b"b", 101, 101)
    with pytest.raises(ServiceUnavailableError):
        guard.check(b"c", 102, 102)
    assert guard.entries == 2
    # Entries stuck behind a future-dated one are found by the full scan once out of window.
    guard = ReplayGuard(window_s=10, max_entries=2)
    guard.check(b"future", 109, 100)
    guard.check(b"old", 100, 100)
    guard.check(b"new", 111, 111)  # cutoff 101: old evicted by the full scan
    assert guard.entries == 2
    with pytest.raises(ReplayedRequestError):
        guard.check(b"future", 109, 111)


def test_guard_arguments() -> None:
    with pytest.raises(ValueError):
        ReplayGuard(window_s=0)
    with pytest.raises(ValueError):
        ReplayGuard(max_entries=0)


# ------------------------------------------------------------------------------------------------
# OpenedMemory (Atoma's profile, one per node key)
# ------------------------------------------------------------------------------------------------


def test_opened_memory_refuses_a_repeat() -> None:
    memory = OpenedMemory()
    memory.add(b"salt-a" + b"nonce-a")
    memory.add(b"salt-a" + b"nonce-b")  # another nonce: another request
    assert len(memory) == 2
    with pytest.raises(ReplayedRequestError) as excinfo:
        memory.add(b"salt-a" + b"nonce-a")
    assert not isinstance(excinfo.value, StaleRequestError) and excinfo.value.status == 409
    assert len(memory) == 2


def test_opened_memory_repr_shows_a_count_only() -> None:
    memory = OpenedMemory()
    memory.add(b"secret-looking-marker")
    assert repr(memory) == "OpenedMemory(entries=1)"
