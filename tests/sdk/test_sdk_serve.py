"""The official atoma-sdk, unmodified, against `atoma-lab serve` (a separate process on loopback)
and against `atoma-lab proxy` in front of `atoma-lab node` processes.

Confidential and plain embeddings through the SDK equal the in-process confidential path and
the engine's own vectors on the shipped model (the fake engine's for the standalone cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atoma_lab.client import DEFAULT_MODEL

pytestmark = [pytest.mark.sdk, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Confidential embeddings on a loopback proxy.", "Deuxième phrase, en français.", "🙂 ok"]
API_KEY = "atl-test-sdk-key"

SDK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from atoma_sdk import AtomaSDK
    url, key, model, texts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    sdk = AtomaSDK(bearer_auth=key, server_url=url)
    conf = sdk.confidential_embeddings.create(input=texts, model=model)
    plain = sdk.embeddings.create(input_=texts[0], model=model)
    print(json.dumps({
        "confidential": [d.embedding for d in sorted(conf.data, key=lambda d: d.index)],
        "confidential_usage": conf.usage.total_tokens,
        "plain": [d.embedding for d in plain.data],
        "plain_usage": plain.usage.total_tokens,
    }))
    """
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "atoma_lab.cli", "serve", "--port", "0", "--nodes", "2",
         "--api-key", API_KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    base_url = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ATOMA_LAB_BASE_URL="):
            base_url = line.strip().split("=", 1)[1]
            break
    if base_url is None:
        proc.kill()
        pytest.fail(f"atoma-lab serve did not start: {proc.stderr.read() if proc.stderr else ''}")
    yield base_url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_official_sdk_against_atoma_lab_serve(server: str, sdk_python: Path) -> None:
    done = subprocess.run(
        [str(sdk_python), "-c", SDK_SCRIPT, server, API_KEY, DEFAULT_MODEL, json.dumps(TEXTS)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)

    from atoma_lab.lab.network import build_network

    with build_network(nodes=1) as net:
        client = net.client(verify_attestation=True)
        inproc = client.confidential_embeddings.create(input=TEXTS)
        plain = client.embeddings.create(input=TEXTS[0])
    sdk_conf = np.asarray(got["confidential"], dtype=np.float32)
    assert sdk_conf.shape == inproc.to_numpy().shape
    np.testing.assert_allclose(sdk_conf, inproc.to_numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(got["plain"], dtype=np.float32), plain.to_numpy(),
                               atol=1e-5, rtol=0)
    assert got["confidential_usage"] == inproc.usage.total_tokens
    assert got["plain_usage"] == plain.usage.total_tokens


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """``atoma-lab proxy`` in front of two ``atoma-lab node`` processes (the weightless fake)."""
    from cluster import start_cluster

    c = start_cluster(nodes=2, api_key=API_KEY)
    yield c
    c.stop()


def test_official_sdk_against_a_standalone_proxy(cluster: Any, sdk_python: Path) -> None:
    from cluster import FAKE

    from atoma_lab.inference import FakeEngine

    done = subprocess.run(
        [str(sdk_python), "-c", SDK_SCRIPT, cluster.base_url, API_KEY, FAKE, json.dumps(TEXTS)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    engine = FakeEngine()
    want = engine.embed(TEXTS)
    np.testing.assert_allclose(np.asarray(got["confidential"], dtype=np.float32), want.vectors,
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(got["plain"], dtype=np.float32), want.vectors[:1],
                               atol=1e-6, rtol=0)
    assert got["confidential_usage"] == sum(want.token_counts)
    assert got["plain_usage"] == want.token_counts[0]
