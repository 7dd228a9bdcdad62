"""Helpers the benchmark modules share: interleaved pairs, printing a summary past pytest's
capture, and a local Ray instance on loopback."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest


def interleaved(benchmark: Any, fn: Callable[..., Any], other: Callable[..., Any], *,
                rounds: int, setup: Callable[[], tuple[Any, ...]] | None = None,
                other_setup: Callable[[], tuple[Any, ...]] | None = None,
                warmup_rounds: int = 0) -> list[float]:
    """Time ``fn`` for ``rounds`` rounds, running ``other`` (untimed by the benchmark, timed
    here) before each: both members of a pair then see the same machine load, round by round.
    ``setup`` / ``other_setup`` make fresh arguments for a round (untimed), for members whose
    inputs are single use. Returns ``other``'s times, warm-up rounds left out."""
    other_s: list[float] = []

    def round_setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        args = other_setup() if other_setup is not None else ()
        start = time.perf_counter()
        other(*args)
        other_s.append(time.perf_counter() - start)
        return (setup() if setup is not None else ()), {}

    benchmark.pedantic(fn, setup=round_setup, rounds=rounds, warmup_rounds=warmup_rounds)
    return other_s[warmup_rounds:]


# (group, pair) -> (ours seconds, baseline seconds) per interleaved round, from both members' runs
_ROUNDS: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
_OURS_INFO: dict[tuple[str, str], dict[str, Any]] = {}

Rounds = list[tuple[float, float]]


def paired_ratio(rounds: Rounds) -> float:
    """median(ours / baseline) time over the rounds."""
    return statistics.median(o / b for o, b in rounds)


def paired_speedup(rounds: Rounds) -> float:
    """median(baseline / ours) time over the rounds."""
    return statistics.median(b / o for o, b in rounds)


def paired_added_ms(rounds: Rounds) -> float:
    """median(ours - baseline) over the rounds, in milliseconds."""
    return statistics.median(o - b for o, b in rounds) * 1e3


def pooled(key: tuple[str, str]) -> Rounds:
    """The pair's interleaved rounds so far, (ours, baseline) seconds."""
    return list(_ROUNDS.get(key, ()))


def pool_rounds(benchmark: Any, key: tuple[str, str], role: str, other_s: list[float], *,
                name: str, figure: Callable[[Rounds], float]) -> float | None:
    """Add one member's interleaved run to its pair's pool and set ``name`` = ``figure(pool)`` in
    the ``ours`` member's ``extra_info`` (what benchreport judges a target on).

    Each member is timed by pytest-benchmark in its own run and by :func:`interleaved` in the
    other's, always second or first within a round; pooling both runs cancels what that order
    and the two timers do to a round.
    Whichever member runs last completes the figure. Returns the figure so far (None before any
    timed round)."""
    if benchmark.stats is not None:
        timed = list(benchmark.stats.stats.data)
        ours, base = (timed, other_s) if role == "ours" else (other_s, timed)
        _ROUNDS[key].extend(zip(ours, base, strict=False))
    if role == "ours":
        _OURS_INFO[key] = benchmark.extra_info
    if not _ROUNDS[key]:
        return None
    value = figure(_ROUNDS[key])
    if key in _OURS_INFO:
        _OURS_INFO[key][name] = value
    return value


def show(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Print ``lines`` to the terminal even while pytest captures output."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


