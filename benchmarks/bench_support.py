"""Helpers the benchmark modules share: interleaved pairs and printing a summary past pytest's
capture."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def interleaved(benchmark: Any, fn: Callable[[], Any], other: Callable[[], Any], *,
                rounds: int) -> list[float]:
    """Time ``fn`` for ``rounds`` rounds, running ``other`` (untimed by the benchmark, timed
    here) before each: both members of a pair then see the same machine load, round by round.
    Returns ``other``'s times."""
    other_s: list[float] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        start = time.perf_counter()
        other()
        other_s.append(time.perf_counter() - start)
        return (), {}

    benchmark.pedantic(fn, setup=setup, rounds=rounds, warmup_rounds=0)
    return other_s


def show(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Print ``lines`` to the terminal even while pytest captures output."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))
