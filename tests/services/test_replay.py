"""Replayed confidential requests: Atoma's node would serve (and its proxy charge) a byte-identical
request again; here the node refuses it with 409 REPLAYED_REQUEST and nothing is charged."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fakes import MODEL, error_of, expected_units, money, send

from atoma_lab.errors import ReplayedRequestError
from atoma_lab.lab.network import Network
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.services.node import NodeService

CONF = "/v1/confidential/embeddings"


def _sealed(net: Network, text: str = "replay me") -> tuple[bytes, int]:
    """A sealed request body for a fresh lock, and its stack."""
    lock = net.client().nodes.lock(MODEL)
    plaintext = CreateEmbeddingRequest(input=text, model=MODEL).to_json()
    body = seal_request(plaintext, node_public_key=lock.public_key,
                        stack_small_id=lock.stack_small_id, model_name=MODEL).request.to_json()
    return body, lock.stack_small_id


def test_a_replayed_request_is_refused_and_not_charged(make_net: Callable[..., Network],
                                                       mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    body, stack = _sealed(net)
    assert send(net, "POST", CONF, body).status == 200
    used = net.ledger.stack(stack).already_computed_units
    assert used == expected_units("replay me")
    # The attacker (or a buggy retry) has a lock of its own open on the same stack.
    net.client().nodes.lock(MODEL)
    before = money(net)
    resp = send(net, "POST", CONF, body)
    assert error_of(resp) == (409, "REPLAYED_REQUEST")
    assert money(net) == before
    assert net.ledger.stack(stack).locked_compute_units == 0
    assert net.ledger.stack(stack).already_computed_units == used
    # Fresh requests still go through.
    assert send(net, "POST", CONF, _sealed(net, "fresh")[0]).status == 200


def test_the_client_never_trips_the_replay_check(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    client = net.client()
    for _ in range(20):
        client.confidential_embeddings.create(input="same text every time", model=MODEL)
    assert net.nodes[0].metrics.failed.labels("REPLAYED_REQUEST")._value.get() == 0


def test_a_full_replay_memory_rotates_the_key(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    node = net.nodes[0]
    node.replay_cache_size = 3
    first_key, counter = node.public_key, node.key_rotation_counter
    bodies = [_sealed(net, f"text {i}")[0] for i in range(3)]
    for body in bodies:
        assert send(net, "POST", CONF, body).status == 200
    assert node.public_key != first_key and node.key_rotation_counter == counter + 1
    # The old key is gone (no grace window): its requests, replays included, are stale now.
    net.client().nodes.lock(MODEL)
    assert error_of(send(net, "POST", CONF, bodies[0])) == (409, "STALE_NODE_KEY")


def test_replay_memory_survives_a_grace_window(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, grace_window_s=60.0)
    body, _ = _sealed(net)
    assert send(net, "POST", CONF, body).status == 200
    net.rotate(0)
    net.client().nodes.lock(MODEL)
    assert error_of(send(net, "POST", CONF, body)) == (409, "REPLAYED_REQUEST")


def test_replay_cache_size_is_checked() -> None:
    with pytest.raises(ValueError):
        NodeService(node_small_id=1, embedder=None, stack_owner=lambda _: None,  # type: ignore[arg-type]
                    replay_cache_size=0)
    assert ReplayedRequestError.status == 409
