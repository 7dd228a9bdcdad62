"""``build_network``: its options, the network it returns, and its life cycle."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from fakes import MODEL, expected_vectors, fake_embedder, network

from atoma_lab.crypto.attestation import SimulatedTEE
from atoma_lab.lab.network import PROXY_ADDRESS, Network, build_network
from atoma_lab.services.ledger import NodeRecord
from atoma_lab.transport.base import Request


def record(net: Network, node_small_id: int) -> NodeRecord:
    node = net.ledger.node(node_small_id)
    assert node is not None
    return node


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        build_network(nodes=0, embedder=fake_embedder(), model=MODEL)
    with pytest.raises(ValueError, match="one per node"):
        build_network(nodes=2, embedder=[fake_embedder()], model=MODEL)
    with pytest.raises(ValueError, match="mode"):
        build_network(mode="carrier-pigeon", embedder=fake_embedder(), model=MODEL)  # type: ignore[arg-type]


def test_in_process_network_shape() -> None:
    with network(nodes=3, prices=[5, 1, 3]) as net:
        assert isinstance(net, Network) and net.mode == "inprocess"
        assert net.base_url is None
        assert net.node_urls == ["inproc://node-1", "inproc://node-2", "inproc://node-3"]
        assert [n.node_small_id for n in net.nodes] == [1, 2, 3]
        records = net.ledger.nodes()
        assert [r.price_per_one_million_compute_units for r in records] == [5, 1, 3]
        assert [r.sui_address for r in records] == [n.sui_address for n in net.nodes]
        assert [r.public_key for r in records] == [n.public_key for n in net.nodes]
        assert all(r.attestation_valid and r.models == (MODEL,) for r in records)
        assert net.transport is not None and PROXY_ADDRESS in net.transport.handlers
        assert net.captured is net.transport.captured
        assert "in-process" in repr(net) and "nodes=3" in repr(net)
        # The cheapest node gets the work.
        assert net.client().confidential_embeddings.create(input="x", model=MODEL).node_small_id == 2


@pytest.mark.integration
def test_http_network_shape() -> None:
    import httpx

    with network(nodes=2, mode="http") as net:
        assert net.mode == "http" and net.transport is None and net.captured == []
        assert net.base_url is not None and net.base_url.startswith("http://127.0.0.1:")
        assert len(set(net.node_urls)) == 2
        assert all(u.startswith("http://127.0.0.1:") for u in net.node_urls)
        assert httpx.get(net.base_url + "/health").json() == {"message": "ok"}
        r = net.client().confidential_embeddings.create(input=["a", "b"], model=MODEL)
        np.testing.assert_array_equal(r.to_numpy(), expected_vectors(["a", "b"]))
        base_url = net.base_url
    with pytest.raises(httpx.TransportError):
        httpx.get(base_url + "/health", timeout=2)


def test_one_embedder_per_node() -> None:
    with network(nodes=2, embedder=[fake_embedder(["m-a"]), fake_embedder(["m-b"])]) as net:
        assert [r.models for r in net.ledger.nodes()] == [("m-a",), ("m-b",)]
        c = net.client()
        assert c.confidential_embeddings.create(input="x", model="m-a").node_small_id == 1
        assert c.confidential_embeddings.create(input="x", model="m-b").node_small_id == 2


def test_api_key_and_balance_options() -> None:
    with network(api_key="my-key", user_balance_usdc=1234) as net:
        assert net.api_key == "my-key"
        assert net.ledger.user_for_token("my-key") == net.user_id
        assert net.ledger.balance(net.user_id) == 1234


def test_add_user_gives_a_working_separate_account() -> None:
    with network() as net:
        key = net.add_user("alice", balance_usdc=10**9)
        assert key != net.api_key
        alice_id = net.ledger.user_id("alice")
        assert alice_id is not None and alice_id != net.user_id
        alice = net.client(api_key=key)
        r = alice.confidential_embeddings.create(input="x", model=MODEL)
        assert r.stack_small_id is not None
        assert net.ledger.stack(r.stack_small_id).user_id == alice_id
        assert net.ledger.stacks(net.user_id) == []


def test_rotate_and_publish() -> None:
    with network(nodes=2) as net:
        old = [n.public_key for n in net.nodes]
        evidence = net.rotate(1, publish=False)
        assert evidence.report.key_rotation_counter == 2
        assert record(net, 2).public_key == old[1]
        net.publish_key(1)
        assert record(net, 2).public_key == net.nodes[1].public_key != old[1]
        assert record(net, 1).public_key == old[0]


def test_publish_of_an_untrusted_key_is_recorded_as_invalid() -> None:
    with network(nodes=1) as net:
        net.nodes[0].tee = SimulatedTEE()
        net.rotate(0)
        assert record(net, 1).attestation_valid is False


def test_require_attestation_false_accepts_any_vendor() -> None:
    with network(nodes=1, require_attestation=False) as net:
        net.nodes[0].tee = SimulatedTEE()
        net.rotate(0)
        assert record(net, 1).attestation_valid is True
        assert net.client().confidential_embeddings.create(input="x", model=MODEL).attempts == 1


def test_close_is_idempotent_and_stops_the_loop() -> None:
    net = network()
    net.client().confidential_embeddings.create(input="x", model=MODEL)
    threads = {t.name for t in threading.enumerate()}
    assert "atoma-lab-sim" in threads
    net.close()
    net.close()
    assert "atoma-lab-sim" not in {t.name for t in threading.enumerate() if t.is_alive()}


def test_run_drives_coroutines_on_the_network_loop() -> None:
    with network() as net:
        resp = net.run(net.proxy.handle(Request("GET", "/health")))
        assert resp.status == 200

        async def where() -> str:
            return threading.current_thread().name
        assert net.run(where()) == "atoma-lab-sim"


def test_usable_from_inside_a_running_event_loop() -> None:
    """As in Jupyter, whose own loop is running: the synchronous API must not deadlock."""
    async def notebook_cell() -> np.ndarray:
        with network() as net:
            return net.client().confidential_embeddings.create(input="cell", model=MODEL).to_numpy()

    np.testing.assert_array_equal(asyncio.run(notebook_cell()), expected_vectors("cell"))


def test_two_networks_are_independent() -> None:
    with network() as a, network() as b:
        a.client().confidential_embeddings.create(input="x", model=MODEL)
        assert b.ledger.stacks() == []
        assert a.proxy.address != b.proxy.address
        assert a.tee.vendor_address != b.tee.vendor_address
        from atoma_lab.errors import AuthenticationError

        with pytest.raises(AuthenticationError):  # a's key means nothing to b
            b.client(api_key=a.api_key).models.list()


def test_ledger_path_twice_keeps_users_units_and_balances(tmp_path: Path) -> None:
    path = str(tmp_path / "sim.sqlite")
    with network(ledger_path=path, stack_size=10_000, prices=[1_000_000]) as first:
        r = first.client().confidential_embeddings.create(input="a b c", model=MODEL)
        used, balance, user = r.usage.total_tokens, first.ledger.balance(first.user_id), first.user_id
        assert balance == 10**12 - 10_000
    first.ledger.close()
    with network(ledger_path=path, stack_size=10_000, prices=[1_000_000]) as second:
        assert second.user_id == user
        assert second.ledger.balance(user) == balance
        assert sum(s.already_computed_units for s in second.ledger.stacks()) == used
        # A new API key was issued for the same user, and it works.
        assert second.client().models.list() == [MODEL]
    second.ledger.close()


def test_node_policy_is_chosen_per_network() -> None:
    with network(nodes=2, node_policy="atoma") as net:
        assert net.proxy.node_policy.name == "atoma"
    with network(nodes=2) as net:
        assert net.proxy.node_policy.name == "least-loaded"  # the default
    with network(nodes=2, node_policy="random", policy_seed=7) as net:
        assert net.proxy.node_policy.name == "random"
    with pytest.raises(ValueError, match="node_policy must be one of"):
        network(nodes=2, node_policy="round-robin")


def test_fake_capacity_gives_every_node_a_device_of_its_own() -> None:
    from atoma_lab.inference import FAKE_MODEL, FakeEngine

    with build_network(nodes=3, model=FAKE_MODEL, fake_tokens_per_s=1e6) as net:
        engines = [n.embedder.engine for n in net.nodes]  # type: ignore[attr-defined]
        assert len({id(e) for e in engines}) == 3
        assert len({id(n.embedder.batcher) for n in net.nodes}) == 3  # type: ignore[attr-defined]
        assert all(isinstance(e, FakeEngine) and e.tokens_per_s == 1e6 for e in engines)
        r = net.client().confidential_embeddings.create(input=["one two"], model=FAKE_MODEL)
        used = engines[r.node_small_id - 1]
        assert used.busy_s == pytest.approx(r.usage.total_tokens / 1e6)
        assert [e.busy_s for e in engines].count(0.0) == 2
    with build_network(nodes=2, model=FAKE_MODEL) as net:  # no capacity: still one engine each
        assert net.nodes[0].embedder is not net.nodes[1].embedder
        assert net.nodes[0].embedder.engine.tokens_per_s is None  # type: ignore[attr-defined]


def test_fake_capacity_is_refused_where_it_cannot_apply() -> None:
    from atoma_lab.client import DEFAULT_MODEL
    from atoma_lab.inference import FAKE_MODEL

    with pytest.raises(ValueError, match="fake_tokens_per_s models a device for"):
        build_network(model=DEFAULT_MODEL, fake_tokens_per_s=200)  # refused before loading
    with pytest.raises(ValueError, match="embedders passed in"):
        build_network(model=FAKE_MODEL, embedder=fake_embedder([FAKE_MODEL]), fake_tokens_per_s=200)
    with pytest.raises(ValueError, match="tokens_per_s must be positive"):
        build_network(model=FAKE_MODEL, fake_tokens_per_s=0)


@pytest.mark.integration
def test_serve_http_puts_an_in_process_proxy_on_a_loopback_port() -> None:
    """``Network.serve_http``: clients in other processes reach the proxy, whose services stay on
    the network's loop (their traffic is still captured)."""
    import httpx

    from atoma_lab.client import AtomaLabClient

    with network(nodes=2) as net:
        url = net.serve_http()
        assert url.startswith("http://127.0.0.1:") and net.http_url == url
        assert httpx.get(url + "/health").json() == {"message": "ok"}
        assert httpx.get(url + "/v1/models").status_code == 401  # the token checked before the body
        with AtomaLabClient(url, api_key=net.api_key) as remote:
            r = remote.confidential_embeddings.create(input=["over http"], model=MODEL)
        np.testing.assert_array_equal(r.to_numpy(), expected_vectors(["over http"]))
        assert any(m.request.path == "/v1/confidential/embeddings" for m in net.captured)
        with pytest.raises(ValueError, match="already serving"):
            net.serve_http()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)
    with network(mode="http") as http_net, pytest.raises(ValueError, match="already serves"):
        http_net.serve_http()


def test_an_embedder_factory_is_built_once_or_once_per_node() -> None:
    made: list[object] = []

    def factory() -> object:
        made.append(fake_embedder())
        return made[-1]

    with network(nodes=2, embedder=factory) as net:
        assert len(made) == 1 and net.owns_embedders
        assert net.client().confidential_embeddings.create(input="x", model=MODEL).attempts == 1
    with network(nodes=2, embedder=[factory, factory]) as net:
        assert len(made) == 3 and net.owns_embedders
    with network(nodes=1, embedder=fake_embedder()) as net:
        assert not net.owns_embedders  # the caller's own
