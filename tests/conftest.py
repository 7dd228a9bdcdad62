"""Session-wide fixtures: the local Ray instance of the tests marked ``ray``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ray_support import ray_unavailable, start_local_ray


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A local Ray instance on loopback for the whole session (skips where none can run)."""
    reason = ray_unavailable()
    if reason is not None:
        pytest.skip(reason)
    import ray

    start_local_ray()
    yield ray
    ray.shutdown()
