"""Long-running coroutines (health checks, key rotation timers) on a loop run by another thread.

:class:`~atoma_lab.server.ServerGroup` and the simulator's loop thread both mix this in: they own
an event loop in a thread of their own and a blocking ``run(coro, timeout_s)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class BackgroundTasks:
    """``spawn`` a coroutine on ``self.loop``; ``cancel_background`` ends them all. The class
    mixing it in provides ``loop`` and ``run`` and calls ``BackgroundTasks.__init__``."""

    loop: asyncio.AbstractEventLoop | None
    run: Callable[..., Any]

    def __init__(self) -> None:
        self._spawned: list[concurrent.futures.Future[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the loop until :meth:`cancel_background` (or the loop stops)."""
        assert self.loop is not None, "the loop is not running"
        self._spawned.append(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def cancel_background(self) -> None:
        """Cancel every spawned coroutine and let the loop process the cancellations."""
        spawned, self._spawned = self._spawned, []
        for task in spawned:
            task.cancel()
        if spawned and self.loop is not None:
            with contextlib.suppress(Exception):  # best effort while shutting down
                self.run(asyncio.sleep(0.01), 2)


__all__ = ["BackgroundTasks"]
