"""Running Ray in the tests, on loopback only.

Ray advertises the machine's primary address and listens beyond loopback, so its tests run only
inside a network namespace of their own whose one interface is loopback (``make test`` runs them
so: ``unshare -n bash -c 'ip link set lo up; ...'``, as root). Elsewhere they skip and say why.
One local Ray instance serves the whole session (it takes seconds to start); its workers import
this checkout's ``atoma_lab`` and the tests' ``fakes`` (``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
RAY_NUM_CPUS = 2  # the local instance's CPUs (node actors reserve a token share each)


def loopback_only() -> bool:
    """Whether this process's network namespace has no interface but loopback."""
    try:
        names = {name for _, name in socket.if_nameindex()}
    except OSError:
        return False
    return names == {"lo"}


def ray_unavailable() -> str | None:
    """Why the Ray tests cannot run here, or ``None``."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install 'atoma-lab[ray]')"
    if not loopback_only():
        return ("Ray listens beyond loopback: run the Ray tests in a network namespace with only "
                "loopback, as `make test` does (as root: unshare -n bash -c 'ip link set lo up; "
                "RAY_AUTH_MODE=disabled python -m pytest -m ray tests')")
    return None


def worker_env() -> dict[str, str]:
    """The environment Ray's processes inherit: this checkout and the tests' helpers first on
    the path, token authentication off (a local test cluster), models offline."""
    path = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path.rstrip(os.pathsep), "RAY_AUTH_MODE": "disabled",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def start_local_ray() -> None:
    """Connect this process to a local Ray instance on loopback (started once)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.update(worker_env())
    ray.init(num_cpus=RAY_NUM_CPUS, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=False)


@contextlib.contextmanager
def local_ray() -> Iterator[Any]:
    """The tests' local Ray instance on 127.0.0.1 for the ``with`` block (Ray's module), started
    unless this process is connected already, and shut down after if it was started here. Skips
    where the Ray tests would (without Ray, or outside a network namespace whose one interface
    is loopback: ``make test`` and ``make bench`` run them in one)."""
    reason = ray_unavailable()
    if reason is not None:
        pytest.skip(reason)
    import ray

    started = not ray.is_initialized()
    start_local_ray()
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
