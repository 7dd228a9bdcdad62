"""A node restarted (issue 16, item 4): its key counter starts at 1 again, under the same
signing identity (``--signer-seed``) or a new one. The proxy takes the new key at the next probe
or at the first 409, with its attestation checked, because keys are ordered by
``(boot_epoch, key_rotation_counter)``; an older key (a replayed answer) is never taken back, and
an identity whose evidence does not verify is not adopted. In-process: the restart replaces the
node's service at its address (``tests/server/test_standalone.py`` restarts real processes)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fakes import MODEL, error_of, send, settlements

from atoma_lab.crypto.attestation import SimulatedTEE
from atoma_lab.lab.network import Network
from atoma_lab.services.node import NodeService, next_boot_epoch

ADDRESS = "inproc://node-1"


@pytest.fixture
def net(make_net: Callable[..., Network]) -> Network:
    return make_net(nodes=1)


def _restart(net: Network, *, same_identity: bool, tee: SimulatedTEE | None = None) -> NodeService:
    """Stop node 1 and start it again at its address: a new key, counter 1, a later boot."""
    old = net.nodes[0]
    new = NodeService(node_small_id=1, embedder=old.embedder, stack_owner=net.ledger.stack_owner,
                      signer=old.signer if same_identity else None, tee=tee or net.tee,
                      clock=net.proxy.clock, metrics_token=net.metrics_token)
    assert net.transport is not None
    net.transport.register(ADDRESS, new.handle)
    net.nodes[0] = new
    assert new.key_rotation_counter == 1 and new.public_key != old.public_key
    assert new.boot_epoch > old.boot_epoch
    return new


def _serves(net: Network, attempts: int) -> None:
    client = net.client(verify_attestation=True)
    try:
        result = client.confidential_embeddings.create(input=["after restart"], model=MODEL)
        assert result.attempts == attempts
        assert client.embeddings.create(input=["plain too"], model=MODEL).usage.total_tokens == 4
    finally:
        client.close()


@pytest.mark.parametrize("same_identity", [True, False], ids=["same seed", "new identity"])
@pytest.mark.parametrize("found_by", ["409", "probe"])
def test_a_restarted_node_comes_back_into_rotation(net: Network, same_identity: bool,
                                                   found_by: str) -> None:
    before = net.nodes[0]
    before_client = net.client(verify_attestation=True)
    before_client.confidential_embeddings.create(input=["before"], model=MODEL)
    before_client.close()
    for _ in range(3):  # a rotated node: counter 4 before the restart
        net.rotate(0)
    assert before.key_rotation_counter == 4
    new = _restart(net, same_identity=same_identity)
    n_settled = len(settlements(net))
    if found_by == "probe":
        assert net.run(net.proxy.check_nodes()) == {1: True}
        _serves(net, attempts=1)
    else:  # the old key is handed out once: the node's 409 makes the proxy fetch the new one
        _serves(net, attempts=2)
        first = settlements(net)[n_settled]
        assert (first["units_charged"], first["outcome"]) == (0, "STALE_NODE_KEY")
    record = net.ledger.node(1)
    assert record is not None and record.healthy and record.attestation_valid
    assert (record.public_key, record.key_rotation_counter) == (new.public_key, 1)
    assert record.sui_address == new.sui_address
    assert (record.sui_address == before.sui_address) is same_identity
    stacks = net.ledger.stacks()
    assert len(stacks) == 1 and stacks[0].node_small_id == 1  # the node's stack is still used


def test_an_older_key_is_never_taken_back(net: Network) -> None:
    """After the restart's key is taken, the key from before the restart (counter 2 > 1, but an
    earlier boot) changes nothing, announced or answered to a probe; a node answering with it
    is down."""
    net.rotate(0)
    old = net.nodes[0]
    stale = old.evidence
    new = _restart(net, same_identity=True)
    assert net.run(net.proxy.check_nodes()) == {1: True}
    assert net.proxy.accept_node_key(stale) is True  # the key held is valid; nothing changed
    record = net.ledger.node(1)
    assert record is not None and record.public_key == new.public_key
    assert net.transport is not None
    net.transport.register(ADDRESS, old.handle)  # a replayed, older node answers the probe
    assert net.run(net.proxy.check_nodes()) == {1: False}
    record = net.ledger.node(1)
    assert record is not None and record.public_key == new.public_key and not record.healthy


def test_a_new_identity_whose_evidence_does_not_verify_is_not_adopted(net: Network) -> None:
    """A node at the address under a new identity, attested by a TEE vendor the proxy does not
    trust: it stays down, and the registered identity and key stay as they were."""
    held = net.ledger.node(1)
    _restart(net, same_identity=False, tee=SimulatedTEE())
    assert net.run(net.proxy.check_nodes()) == {1: False}
    record = net.ledger.node(1)
    assert record is not None and not record.healthy
    assert held is not None and (record.sui_address, record.public_key) == (
        held.sui_address, held.public_key)
    assert error_of(send(net, "POST", "/v1/nodes/lock", {"model": MODEL}))[0] == 503


def test_boot_epochs_only_grow() -> None:
    epochs = [next_boot_epoch() for _ in range(1000)]
    assert epochs == sorted(set(epochs))
