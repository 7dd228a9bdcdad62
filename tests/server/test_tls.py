"""TLS on every listener (issue 16, item 15), with certificates made in the test
(``tests/tlscerts.py``) for 127.0.0.1: a network whose proxy and nodes serve HTTPS, clients and
the proxy->node transport that trust its CA (and only it), mutual TLS where the listeners ask
for client certificates, and the ``node`` and ``proxy`` commands with the TLS flags."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cluster import FAKE, Service, free_port
from fakes import MODEL, expected_vectors, network, settlements
from tlscerts import Pki, make_pki

from atoma_lab.client import AtomaLabClient
from atoma_lab.errors import TransportError
from atoma_lab.inference import FakeEngine
from atoma_lab.server.standalone import vendor_policy
from atoma_lab.server.tls import ServerTls
from atoma_lab.transport.http import client_tls_context

pytestmark = pytest.mark.integration

TEXTS = ["over TLS", "both ways"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _round_trip(client: AtomaLabClient) -> None:
    conf = client.confidential_embeddings.create(input=TEXTS, model=MODEL)
    np.testing.assert_array_equal(conf.to_numpy(), expected_vectors(TEXTS))
    plain = client.embeddings.create(input=TEXTS, model=MODEL)
    np.testing.assert_array_equal(plain.to_numpy(), expected_vectors(TEXTS))


def test_a_network_over_tls(pki: Pki) -> None:
    net = network(nodes=2, mode="http", tls=ServerTls(pki.server_cert, pki.server_key),
                  tls_client=client_tls_context(pki.ca))
    try:
        assert net.base_url is not None and net.base_url.startswith("https://127.0.0.1:")
        assert all(url.startswith("https://") for url in net.node_urls)
        with net.client(verify_attestation=True) as client:
            _round_trip(client)
        n_settled = len(settlements(net))
        for tls in (client_tls_context(pki.other_ca), client_tls_context()):  # not its CA
            with AtomaLabClient(net.base_url, api_key=net.api_key, tls=tls) as stranger, \
                    pytest.raises(TransportError, match="SSL"):
                stranger.nodes.lock(MODEL)
        plain_http = net.base_url.replace("https://", "http://")
        with AtomaLabClient(plain_http, api_key=net.api_key, timeout_s=5) as cleartext, \
                pytest.raises(TransportError):
            cleartext.nodes.lock(MODEL)
        assert len(settlements(net)) == n_settled and net.ledger.open_locks() == []
    finally:
        net.close()


def test_mutual_tls(pki: Pki) -> None:
    """Listeners that require client certificates: the proxy reaches its nodes, and a client
    the proxy, only with one signed by the CA."""
    with_cert = client_tls_context(pki.ca, certfile=pki.client_cert, keyfile=pki.client_key)
    net = network(nodes=1, mode="http", tls_client=with_cert,
                  tls=ServerTls(pki.server_cert, pki.server_key, client_ca_file=pki.ca))
    try:
        with net.client() as client:
            _round_trip(client)
        assert net.base_url is not None
        with AtomaLabClient(net.base_url, api_key=net.api_key,
                            tls=client_tls_context(pki.ca)) as anonymous, \
                pytest.raises(TransportError):
            anonymous.nodes.lock(MODEL)
        assert net.ledger.open_locks() == []
    finally:
        net.close()


def test_server_tls_and_client_contexts_check_their_files(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ValueError, match="no such file"):
        ServerTls(str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="no such file"):
        ServerTls(pki.server_cert, pki.server_key, client_ca_file=str(tmp_path / "none.pem"))
    with pytest.raises(ValueError, match="certfile"):
        client_tls_context(pki.ca, keyfile=pki.client_key)
    with pytest.raises(FileNotFoundError):
        client_tls_context(str(tmp_path / "missing-ca.pem"))


@pytest.fixture
def tls_services(pki: Pki) -> Iterator[list[Service]]:
    services: list[Service] = []
    yield services
    for s in services:
        s.stop()


@pytest.mark.slow
def test_node_and_proxy_commands_over_mutual_tls(pki: Pki,
                                                 tls_services: list[Service]) -> None:
    listen = ["--tls-certfile", pki.server_cert, "--tls-keyfile", pki.server_key,
              "--tls-client-ca-file", pki.ca]
    reach = ["--tls-ca-file", pki.ca, "--tls-client-certfile", pki.client_cert,
             "--tls-client-keyfile", pki.client_key]
    proxy_port = free_port()
    node = Service("node", "--port", "0", "--node-id", "1", "--model", FAKE, "--proxy",
                   f"https://127.0.0.1:{proxy_port}", *listen, *reach)
    tls_services.append(node)
    node_url = node.value("ATOMA_LAB_NODE_URL")
    assert node_url.startswith("https://")
    proxy = Service("proxy", "--port", str(proxy_port), "--api-key", "atl-tls", "--node",
                    node_url, *listen, *reach)
    tls_services.append(proxy)
    base_url = proxy.value("ATOMA_LAB_BASE_URL")
    assert base_url == f"https://127.0.0.1:{proxy_port}"
    tls = client_tls_context(pki.ca, certfile=pki.client_cert, keyfile=pki.client_key)
    with AtomaLabClient(base_url, api_key="atl-tls", tls=tls, verify_attestation=True,
                        attestation_policy=vendor_policy()) as client:
        got = client.confidential_embeddings.create(input=TEXTS, model=FAKE)  # the node looks
        # the stack up at the proxy over mutual TLS too
        np.testing.assert_allclose(got.to_numpy(), FakeEngine().embed(TEXTS).vectors, atol=1e-6)
