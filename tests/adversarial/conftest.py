"""The adversarial tests' fixture: one long-lived network per transport (see ``support``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import MODES, Adversary, start_adversary


@pytest.fixture(scope="package", params=MODES)
def adversary(request: pytest.FixtureRequest) -> Iterator[Adversary]:
    """The network of the adversarial tests, in-process and over loopback HTTP."""
    with start_adversary(request.param) as adversary:
        yield adversary
