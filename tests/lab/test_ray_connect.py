"""``ensure_ray``: how a notebook, ``build_network(mode="ray")`` and ``embed_dataset`` connect to
Ray, with ``ray.init`` recorded instead of called (no Ray instance starts here)."""

from __future__ import annotations

from typing import Any

import pytest

from atoma_lab.lab.ray_network import ensure_ray

ray = pytest.importorskip("ray")


@pytest.fixture
def inits(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``ray.init`` was called with, in a process not connected to Ray."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_no_address_starts_a_local_instance_on_loopback(inits: list[dict[str, Any]]) -> None:
    assert ensure_ray() is True
    assert inits == [{"include_dashboard": False, "_node_ip_address": "127.0.0.1"}]


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:6379", {"address": "127.0.0.1:6379", "_node_ip_address": "127.0.0.1"}),
    ("ray://localhost:10001", {"address": "ray://localhost:10001", "_node_ip_address": "127.0.0.1"}),
    ("ray://head.example:10001", {"address": "ray://head.example:10001"}),
    ("auto", {"address": "auto"}),
])
def test_an_address_joins_that_cluster(inits: list[dict[str, Any]], address: str,
                                       expected: dict[str, Any]) -> None:
    assert ensure_ray(address) is True
    assert inits == [expected]


def test_ray_address_in_the_environment_is_joined_as_given(
        inits: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # a cluster elsewhere: not on loopback
    assert ensure_ray() is True
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6380")  # one on this machine: over loopback
    assert ensure_ray() is True
    assert inits == [{"address": "10.0.0.5:6379"},
                     {"address": "127.0.0.1:6380", "_node_ip_address": "127.0.0.1"}]


def test_a_connected_process_is_left_as_it_is(inits: list[dict[str, Any]],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    assert ensure_ray() is False and ensure_ray("auto") is False
    assert inits == []
