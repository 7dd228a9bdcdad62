"""``atoma-lab node`` and ``atoma-lab proxy`` as separate processes on loopback: the proxy
registers the nodes from their own answers, clients verify attestation end to end, a rotated
key is picked up, a dead node is routed around, and bad set-ups fail clearly."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from cluster import FAKE, Cluster, Service, free_port, start_cluster

from atoma_lab.client import AtomaLabClient
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.inference import FakeEngine
from atoma_lab.protocol.lookup import stack_lookup_digest
from atoma_lab.server.standalone import vendor_policy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXTS = ["first text for the cluster", "second one", "🙂"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Node 2 rotates its key every 1.5 s; the proxy probes every 0.3 s.
    c = start_cluster(nodes=2, node_args={2: ["--rotate-every-s", "1.5"]},
                      proxy_args=["--health-interval-s", "0.3", "--node-timeout-s", "5"])
    yield c
    c.stop()


def _client(c: Cluster) -> AtomaLabClient:
    return AtomaLabClient(c.base_url, api_key=c.api_key, verify_attestation=True,
                          attestation_policy=vendor_policy())


def _attestation(c: Cluster, node_small_id: int) -> dict:
    resp = httpx.get(f"{c.base_url}/v1/nodes/attestation",
                     params={"node_small_id": node_small_id}, timeout=10)
    resp.raise_for_status()
    return resp.json()


def test_confidential_and_plain_round_trips(cluster: Cluster) -> None:
    want = FakeEngine().embed(TEXTS).vectors
    with _client(cluster) as client:
        conf = client.confidential_embeddings.create(input=TEXTS, model=FAKE)
        plain = client.embeddings.create(input=TEXTS, model=FAKE)
    np.testing.assert_allclose(conf.to_numpy(), want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(plain.to_numpy(), want, atol=1e-6, rtol=0)
    assert conf.usage.total_tokens == plain.usage.total_tokens > 0
    models = httpx.get(f"{cluster.base_url}/v1/models", timeout=10,
                       headers={"authorization": f"Bearer {cluster.api_key}"}).json()
    assert [m["id"] for m in models["data"]] == [FAKE]


def test_nodes_check_stacks_at_the_proxy(cluster: Cluster) -> None:
    """The node processes' signed look-ups work (the round trip needs them); nobody else can
    list stacks: unsigned or signed by a key that is no node's, a look-up is 401."""
    with _client(cluster) as client:
        lock = client.nodes.lock(FAKE)
        out = client.confidential_embeddings.create(input="signed look-up", model=FAKE)
    assert out.usage.total_tokens > 0
    url, params = f"{cluster.base_url}/v1/stacks", {"stack_small_id": lock.stack_small_id}
    unsigned = httpx.get(url, params=params, timeout=10)
    assert unsigned.status_code == 401 and unsigned.json()["error"]["code"] == "AUTH_ERROR"
    digest = stack_lookup_digest(lock.node_small_id, lock.stack_small_id)
    impostor = httpx.get(url, params=params, timeout=10, headers={
        "x-node-small-id": str(lock.node_small_id),
        "x-signature": SuiSigner.generate().sign(digest).to_base64()})
    assert impostor.status_code == 401
    assert impostor.json()["error"]["code"] == "INVALID_SIGNATURE"


def test_the_proxy_picks_up_a_rotated_key(cluster: Cluster) -> None:
    first = _attestation(cluster, 2)["key_rotation_counter"]
    deadline = time.monotonic() + 20
    with _client(cluster) as client:
        while _attestation(cluster, 2)["key_rotation_counter"] < first + 2:
            assert time.monotonic() < deadline, "node 2's rotations never reached the proxy"
            # Requests keep working across rotations (a stale key is one transparent retry).
            out = client.confidential_embeddings.create(input="across rotations", model=FAKE)
            assert out.to_numpy().shape == (1, 32)
            time.sleep(0.2)


def test_a_dead_node_is_routed_around(cluster: Cluster) -> None:
    """Runs last in this module: it kills node 1."""
    with _client(cluster) as client:
        for _ in range(4):  # until the user holds a stack on each node
            client.confidential_embeddings.create(input="warm", model=FAKE)
        cluster.nodes[0].kill()
        want = FakeEngine().embed(["after the crash"]).vectors
        for _ in range(3):
            out = client.confidential_embeddings.create(input="after the crash", model=FAKE)
            assert out.node_small_id == 2
            np.testing.assert_allclose(out.to_numpy(), want, atol=1e-6, rtol=0)
            plain = client.embeddings.create(input="after the crash", model=FAKE)
            np.testing.assert_allclose(plain.to_numpy(), want, atol=1e-6, rtol=0)
    # The proxy process logged it, for its operator (INFO and up, to standard error).
    deadline = time.monotonic() + 10
    while not any("node 1 is down" in line for line in cluster.proxy.lines):
        assert time.monotonic() < deadline, "".join(cluster.proxy.lines[-20:])
        time.sleep(0.1)
    assert any("node 2 rotated its key" in line for line in cluster.nodes[1].lines)


def test_a_proxy_that_cannot_reach_its_node_fails_clearly() -> None:
    proxy = Service("proxy", "--port", "0", "--node", f"http://127.0.0.1:{free_port()}",
                    "--wait-for-nodes-s", "1")
    try:
        with pytest.raises(RuntimeError, match="did not register within"):
            proxy.value("ATOMA_LAB_BASE_URL", timeout_s=60)
        assert proxy.proc.wait(20) != 0
    finally:
        proxy.stop()


def test_a_proxy_trusting_another_vendor_refuses_the_node() -> None:
    node = Service("node", "--port", "0", "--model", FAKE, "--proxy", "http://127.0.0.1:9")
    try:
        url = node.value("ATOMA_LAB_NODE_URL")
        proxy = Service("proxy", "--port", "0", "--node", url, "--tee-seed", "11" * 32)
        try:
            with pytest.raises(RuntimeError, match="AttestationError"):
                proxy.value("ATOMA_LAB_BASE_URL", timeout_s=60)
        finally:
            proxy.stop()
    finally:
        node.stop()


def test_a_node_process_in_front_of_an_embedding_server() -> None:
    """``atoma-lab node --backend URL``: the node embeds on an existing server (here a fake
    OpenAI-API server in this process) and the proxy and client see nothing different."""
    from backends.fake_servers import FakeBackend, fake_tokens, fake_vector

    served = "remote/model"
    backend = FakeBackend("openai", model=served)
    try:
        c = start_cluster(nodes=1, model=served,
                          node_args={1: ["--backend", backend.url, "--backend-api", "openai"]})
        try:
            with _client(c) as client:
                got = client.confidential_embeddings.create(input=TEXTS, model=served)
            np.testing.assert_allclose(got.to_numpy(), np.stack([fake_vector(t) for t in TEXTS]),
                                       atol=1e-6, rtol=0)
            assert got.usage.total_tokens == sum(fake_tokens(t) for t in TEXTS)
            assert len(backend.calls("/v1/embeddings")) == 1
        finally:
            c.stop()
    finally:
        backend.stop()
