"""A Ray cluster of two raylets on this machine (``ray start --head`` and a second ``ray start
--address``), and ``atoma-lab serve --mode ray --ray-address`` joining it: the node actors land on
both raylets, and the proxy it serves over HTTP answers a confidential request.

Each ``ray start --block`` is a subprocess of this test and ends with it (SIGTERM makes it stop
the processes it started). ``ray stop`` is not used: it kills every Ray process on the machine
by name, other sessions' included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from cluster import Service, free_port
from ray_support import ray_unavailable, worker_env

from atoma_lab.client import AtomaLabClient
from atoma_lab.inference import FAKE_MODEL, FakeEngine

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 120.0

# Waits until the cluster has two live raylets and prints their ids (its own driver).
ALIVE = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", configure_logging=False)
deadline = time.monotonic() + float(sys.argv[2])
while True:
    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    if len(alive) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print("ALIVE=" + json.dumps(alive))
"""


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([RAY, "start", *args, "--num-cpus", "1",
                                 "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                                 "--block"], env=env, stdout=out, stderr=subprocess.STDOUT)


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_node_actors_are_placed_on_both_raylets(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = ray_unavailable()
    if reason is not None:
        pytest.skip(reason)
    env = {**os.environ, **worker_env(), "PYTHONUNBUFFERED": "1"}
    temp = Path(tempfile.mkdtemp(prefix="atl-ray-", dir="/tmp"))  # Ray's socket paths are short
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs = [_start(["--head", "--port", str(port), "--include-dashboard", "false",
                     "--temp-dir", str(temp)], env, temp / "head.log")]
    serve: Service | None = None
    try:
        procs.append(_start(["--address", address], env, temp / "worker.log"))
        check = subprocess.run([sys.executable, "-c", ALIVE, address, str(START_TIMEOUT_S)],
                               env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S + 60)
        lines = [ln for ln in check.stdout.splitlines() if ln.startswith("ALIVE=")]
        assert lines, check.stderr[-2000:]
        raylets = set(json.loads(lines[-1].split("=", 1)[1]))
        assert len(raylets) == 2, "the second raylet did not join"

        for name, value in worker_env().items():  # its Ray workers import this checkout
            monkeypatch.setenv(name, value)
        serve = Service("serve", "--mode", "ray", "--ray-address", address, "--nodes", "2",
                        "--model", FAKE_MODEL, "--port", str(free_port()),
                        "--health-interval-s", "0", "--node-policy", "random",
                        "--fake-tokens-per-s", "100000")
        base_url = serve.value("ATOMA_LAB_BASE_URL", timeout_s=START_TIMEOUT_S)
        api_key = serve.value("ATOMA_LAB_API_KEY")
        assert any("node policy random, 100000 tokens/s per node" in ln for ln in serve.lines)
        placed = {line.split("ray node ", 1)[1].split()[0]
                  for line in serve.lines if line.strip().startswith("node ") and "ray node" in line}
        assert placed == raylets  # one node actor on each raylet

        texts = ["placed by Ray", "on two raylets"]
        with AtomaLabClient(base_url, api_key=api_key) as client:
            seen = set()
            for _ in range(4):
                r = client.confidential_embeddings.create(input=texts, model=FAKE_MODEL)
                np.testing.assert_array_equal(r.to_numpy(), FakeEngine().embed(texts).vectors)
                seen.add(r.node_small_id)
            assert seen <= {1, 2}
    finally:
        if serve is not None:
            serve.stop()
        for proc in reversed(procs):
            _end(proc)
    assert all(p.returncode is not None for p in procs)
