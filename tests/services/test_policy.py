"""Node placement policies: Atoma's rule, random new stacks, and least-loaded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from fakes import MODEL

from atoma_lab.lab.network import Network
from atoma_lab.services.ledger import NodeRecord
from atoma_lab.services.policy import (
    DEFAULT_NODE_POLICY,
    NODE_POLICIES,
    AtomaPolicy,
    LeastLoadedPolicy,
    RandomPolicy,
    node_policy,
)


def _node(node_id: int, price: int = 1) -> NodeRecord:
    return NodeRecord(node_id, f"inproc://node-{node_id}", "0x0", (MODEL,), price, bytes(32), 1,
                      True, None, True)


ELIGIBLE = [_node(2, price=1), _node(3, price=1), _node(1, price=5)]  # cheapest first, then id


def test_atoma_searches_every_node_and_buys_on_the_cheapest() -> None:
    place = AtomaPolicy().place(ELIGIBLE, {2: 99_999})
    assert place.search == (2, 3, 1) and place.buy_on.node_small_id == 2


def test_least_loaded_goes_to_the_node_with_fewest_units_in_flight() -> None:
    policy = LeastLoadedPolicy()
    assert policy.place(ELIGIBLE, {}).buy_on.node_small_id == 2  # ties: cheaper, then lower id
    assert policy.place(ELIGIBLE, {2: 8192}).search == (3,)
    assert policy.place(ELIGIBLE, {2: 8192, 3: 8192}).buy_on.node_small_id == 1
    assert policy.place(ELIGIBLE, {2: 10, 3: 10, 1: 10}).buy_on.node_small_id == 2


def test_random_draws_new_stacks_reproducibly_over_every_eligible_node() -> None:
    draws = [RandomPolicy(seed=7).place(ELIGIBLE, {}).buy_on.node_small_id for _ in range(3)]
    assert len(set(draws)) == 1  # the same seed, the same first draw
    policy = RandomPolicy(seed=7)
    seen = Counter(policy.place(ELIGIBLE, {}).buy_on.node_small_id for _ in range(300))
    assert set(seen) == {1, 2, 3}
    assert policy.place(ELIGIBLE, {}).search == (2, 3, 1)  # existing stacks as Atoma


def test_policies_by_name() -> None:
    assert DEFAULT_NODE_POLICY == "least-loaded"
    assert [node_policy(n).name for n in NODE_POLICIES] == list(NODE_POLICIES)
    custom = AtomaPolicy()
    assert node_policy(custom) is custom
    with pytest.raises(ValueError, match="node_policy must be one of"):
        node_policy("round-robin")


def _nodes_of_open_locks(net: Network, policy: str, locks: int) -> list[int]:
    """Take ``locks`` locks without using them (all stay in flight) under ``policy``."""
    net.proxy.node_policy = node_policy(policy, seed=3)
    client = net.client()
    try:
        return [client.nodes.lock(MODEL).node_small_id for _ in range(locks)]
    finally:
        client.close()


def test_least_loaded_spreads_locks_in_flight_over_the_nodes(
        make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=4)
    assert _nodes_of_open_locks(net, "least-loaded", 8) == [1, 2, 3, 4, 1, 2, 3, 4]
    assert net.ledger.units_in_flight(net.proxy.clock()) == {n: 2 * 8192 for n in (1, 2, 3, 4)}
    assert len(net.ledger.stacks()) == 4  # one stack bought on each node, then reused


def test_atoma_policy_concentrates_a_user_on_one_node(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=4)
    assert set(_nodes_of_open_locks(net, "atoma", 8)) == {1}
    assert net.ledger.units_in_flight(net.proxy.clock()) == {1: 8 * 8192}


def test_random_policy_buys_new_stacks_on_drawn_nodes(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=4, stack_size=8192)  # each lock fills a stack, so each buys a new one
    nodes = _nodes_of_open_locks(net, "random", 12)
    assert len(set(nodes)) > 1
    assert [s.node_small_id for s in net.ledger.stacks()] == nodes


@pytest.mark.parametrize("policy", NODE_POLICIES)
def test_ledger_is_exact_under_every_policy(make_net: Callable[..., Network], policy: str) -> None:
    net = make_net(nodes=3)
    net.proxy.node_policy = node_policy(policy, seed=1)
    client = net.client()
    usage = sum(client.confidential_embeddings.create(input=[f"text {i}", "b c"], model=MODEL)
                .usage.total_tokens for i in range(6))
    client.close()
    charged = sum(int(s["units_charged"]) for s in net.ledger.settlements())
    assert charged == usage
    assert net.ledger.open_locks() == []
    assert net.ledger.units_in_flight(net.proxy.clock()) == {}
    assert all(s.locked_compute_units == 0 for s in net.ledger.stacks())
