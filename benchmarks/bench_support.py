"""Helpers the benchmark modules share: interleaved pairs and printing a summary past pytest's
capture."""

from __future__ import annotations

import time
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


def show(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Print ``lines`` to the terminal even while pytest captures output."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))
