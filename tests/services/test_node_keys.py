"""A node keeps one key ring for every profile: Atoma's envelope (keys named by public key) and
the hardened ones (keys named by key id) see the same keys, the same rotations and the same grace
window, and each profile's replay memory is bounded."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fakes import (
    MODEL,
    FakeClock,
    error_of,
    expected_units,
    fake_embedder,
    money,
    send,
    settlements,
)

from atoma_lab.lab.network import Network
from atoma_lab.protocol import hardened
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.keyring import node_key_id
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.services.node import NodeService

CONF = "/v1/confidential/embeddings"
PROFILES = {"atoma": None, "hardened": hardened.PROFILE, "hpke": hardened.PROFILE_HPKE}


def _sealed(net: Network, profile: str, node_public_key: bytes, text: str = "keyring") -> bytes:
    """A body sealed to ``node_public_key`` in ``profile``, on a fresh lock (its stack)."""
    lock = net.client().nodes.lock(MODEL, timeout=600)
    plaintext = CreateEmbeddingRequest(input=text, model=MODEL).to_json()
    wire = PROFILES[profile]
    if wire is None:
        return seal_request(plaintext, node_public_key=node_public_key,
                            stack_small_id=lock.stack_small_id, model_name=MODEL).request.to_json()
    return hardened.seal_hardened_request(plaintext, node_public_key=node_public_key, model_name=MODEL,
                                 stack_small_id=lock.stack_small_id, now=net.proxy.clock(),
                                 profile=wire).request.to_json()


def test_both_names_of_a_key_find_the_same_record(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, grace_window_s=60)
    node = net.nodes[0]
    first = node.public_key
    net.rotate(0)
    ring = node.key_ring
    now = node.clock()
    for public in (first, node.public_key):
        record = ring.by_public_key(public, now=now)
        assert record is ring.by_key_id(node_key_id(public), now=now)
        assert record.evidence is not None and record.evidence.report.public_key == public
    assert node.current is ring.current_key and node.evidence is ring.evidence
    assert [k.counter for k in ring.keys] == [1, 2]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_rotated_away_key_serves_through_the_grace_window_then_is_stale(
        make_net: Callable[..., Network], mode: str, profile: str) -> None:
    clock = FakeClock()
    net = make_net(nodes=1, mode=mode, grace_window_s=30, clock=clock)
    old = net.nodes[0].public_key
    net.rotate(0)
    assert net.nodes[0].public_key != old
    clock.advance(29)
    assert send(net, "POST", CONF, _sealed(net, profile, old, "in grace")).status == 200
    clock.advance(2)
    body = _sealed(net, profile, old, "too late")
    before = money(net)
    assert error_of(send(net, "POST", CONF, body)) == (409, "STALE_NODE_KEY")
    assert money(net) == before
    assert net.ledger.open_locks() == []
    # The current key serves every profile.
    assert send(net, "POST", CONF, _sealed(net, profile, net.nodes[0].public_key)).status == 200


@pytest.mark.parametrize("profile", ["hardened", "hpke"])
def test_a_key_rotated_by_atoma_traffic_is_gone_for_the_hardened_profiles(
        make_net: Callable[..., Network], profile: str) -> None:
    net = make_net(nodes=1, grace_window_s=60)
    node = net.nodes[0]
    node.replay_cache_size = 2
    first, counter = node.public_key, node.key_rotation_counter
    hardened_body = _sealed(net, profile, first, "sealed before the rotation")
    for i in range(2):
        assert send(net, "POST", CONF, _sealed(net, "atoma", first, f"atoma {i}")).status == 200
    assert node.key_rotation_counter == counter + 1 and node.public_key != first
    # A key whose memory is full does not serve out its grace window, in any profile.
    assert error_of(send(net, "POST", CONF, hardened_body)) == (409, "STALE_NODE_KEY")
    assert [k.public_key for k in node.key_ring.keys] == [node.public_key]


def test_atoma_replay_memory_is_bounded_per_key(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, grace_window_s=60)
    node = net.nodes[0]
    node.replay_cache_size = 3
    bodies = []
    for i in range(7):
        body = _sealed(net, "atoma", node.public_key, f"text {i}")
        bodies.append(body)
        assert send(net, "POST", CONF, body).status == 200
        assert all(len(k.opened) <= 3 for k in node.key_ring.keys)
    assert node.key_rotation_counter == 3  # rotated after the 3rd and the 6th request
    assert len(node.current.opened) == 1
    # Every earlier request is refused: the 7th as a replay, the others' keys left the ring.
    before = money(net)
    codes = []
    for body in bodies:
        net.client().nodes.lock(MODEL)  # a lock of the sender's own is open
        codes.append(error_of(send(net, "POST", CONF, body))[1])
    assert codes == ["STALE_NODE_KEY"] * 6 + ["REPLAYED_REQUEST"]
    assert money(net) == before
    assert [s["outcome"] for s in settlements(net)].count("charged") == 7


@pytest.mark.parametrize("profile", ["hardened", "hpke"])
def test_hardened_replay_memory_is_bounded_and_fails_closed(
        make_net: Callable[..., Network], profile: str) -> None:
    net = make_net(nodes=1)
    node = net.nodes[0]
    guard = hardened.ReplayGuard(window_s=300, max_entries=2)
    node.key_ring.guard = guard
    assert node.replay_guard is guard
    for i in range(2):
        assert send(net, "POST", CONF, _sealed(net, profile, node.public_key, f"h {i}")).status == 200
    body = _sealed(net, profile, node.public_key, "one too many")
    before = money(net)
    # The node refuses with 503 SERVICE_UNAVAILABLE, which its proxy passes on as a node error.
    assert error_of(send(net, "POST", CONF, body)) == (502, "NODE_ERROR")
    assert node.metrics.failed.labels("SERVICE_UNAVAILABLE")._value.get() == 1
    assert money(net) == before and guard.entries == 2
    assert net.ledger.open_locks() == []
    # Atoma's profile keeps its own memory per key and is not refused by the full window.
    assert send(net, "POST", CONF, _sealed(net, "atoma", node.public_key)).status == 200


def test_the_node_options_configure_its_ring() -> None:
    node = NodeService(node_small_id=1, embedder=fake_embedder(), stack_owner=lambda _: None,
                       replay_window_s=60, replay_window_entries=5, grace_window_s=7,
                       replay_cache_size=9, replay_protection=False)
    ring = node.key_ring
    assert (ring.guard.window_s, ring.guard.max_entries) == (60, 5)
    assert (node.grace_window_s, node.replay_cache_size, node.replay_protection) == (7, 9, False)
    assert ring.counter == node.key_rotation_counter == 1
    evidence = node.rotate_key(rotation_nonce=42)
    assert evidence is node.evidence is ring.evidence
    assert evidence.report.rotation_nonce == 42 and evidence.report.key_rotation_counter == 2
    assert evidence.report.public_key == node.public_key


def test_rotation_by_a_full_memory_keeps_clients_served(make_net: Callable[..., Network]) -> None:
    """The proxy learns each key the node rotated to on its own from the next 409, so every
    client request goes through, charged once, whichever profile it uses."""
    net = make_net(nodes=1)
    node = net.nodes[0]
    node.replay_cache_size = 2
    atoma, hard = net.client(), net.client(profile="hardened")
    texts = [f"request {i}" for i in range(6)]
    attempts = []
    for i, text in enumerate(texts):
        client = atoma if i % 2 == 0 else hard
        result = client.confidential_embeddings.create(input=text, model=MODEL)
        assert result.usage.total_tokens == expected_units(text)
        attempts.append(result.attempts)
    assert node.key_rotation_counter == 2  # three Atoma-profile requests: one rotation
    assert attempts.count(2) == 1 and attempts.count(1) == 5
    record = net.ledger.node(1)
    assert record is not None and record.public_key == node.public_key
    assert record.key_rotation_counter == node.key_rotation_counter
    assert [s["units_charged"] for s in settlements(net) if s["outcome"] == "charged"] == [
        expected_units(t) for t in texts]
