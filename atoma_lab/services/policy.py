"""How the proxy places a request on a node: Atoma's rule, and two a researcher can try instead.

A policy sees the nodes eligible for a request (healthy, attested, serving the model; cheapest
first, then lowest id) and the compute units each has in flight (locked, not yet settled), and
answers with a :class:`Placement`: the nodes on which the caller's existing stacks may be used,
in the ledger's order (cheapest stack first), and the node to buy a stack on when none has room.

* ``"atoma"``: Atoma's proxy as deployed (``select_node_public_key_for_encryption``): the cheapest
  existing stack on any eligible node, else a new stack on the cheapest node. A user's traffic
  thus stays on one node: adding nodes adds failover, not capacity.
* ``"random"``: existing stacks as Atoma; a new stack on a node drawn at random among the
  eligible ones (seeded), as the on-chain contract may choose.
* ``"least-loaded"`` (the default): the request goes to the eligible node with the fewest units
  in flight (ties: cheaper, then lower id), on the caller's stack there or on one bought there.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from atoma_lab.services.ledger import NodeRecord

ATOMA = "atoma"
RANDOM = "random"
LEAST_LOADED = "least-loaded"
NODE_POLICIES = (LEAST_LOADED, ATOMA, RANDOM)
DEFAULT_NODE_POLICY = LEAST_LOADED


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request may go: stacks on ``search`` (ledger order), else a new stack on ``buy_on``."""

    search: tuple[int, ...]
    buy_on: NodeRecord


class NodePolicy(Protocol):
    name: ClassVar[str]
    needs_load: ClassVar[bool]  # whether ``place`` reads the units in flight (a ledger query)

    def place(self, eligible: Sequence[NodeRecord], load: Mapping[int, int]) -> Placement: ...


class AtomaPolicy:
    name: ClassVar[str] = ATOMA
    needs_load: ClassVar[bool] = False

    def place(self, eligible: Sequence[NodeRecord], load: Mapping[int, int]) -> Placement:
        return Placement(tuple(n.node_small_id for n in eligible), eligible[0])


class RandomPolicy:
    name: ClassVar[str] = RANDOM
    needs_load: ClassVar[bool] = False

    def __init__(self, seed: int | None = 0) -> None:
        self._rng = random.Random(seed)

    def place(self, eligible: Sequence[NodeRecord], load: Mapping[int, int]) -> Placement:
        return Placement(tuple(n.node_small_id for n in eligible), self._rng.choice(eligible))


class LeastLoadedPolicy:
    name: ClassVar[str] = LEAST_LOADED
    needs_load: ClassVar[bool] = True

    def place(self, eligible: Sequence[NodeRecord], load: Mapping[int, int]) -> Placement:
        # ``eligible`` is ordered by price, then id: min() keeps that order among equal loads.
        target = min(eligible, key=lambda n: load.get(n.node_small_id, 0))
        return Placement((target.node_small_id,), target)


def node_policy(policy: str | NodePolicy, *, seed: int | None = 0) -> NodePolicy:
    """The policy named ``policy`` (one of :data:`NODE_POLICIES`), or ``policy`` itself."""
    if not isinstance(policy, str):
        return policy
    if policy == ATOMA:
        return AtomaPolicy()
    if policy == RANDOM:
        return RandomPolicy(seed)
    if policy == LEAST_LOADED:
        return LeastLoadedPolicy()
    raise ValueError(f"node_policy must be one of {', '.join(NODE_POLICIES)}, not {policy!r}")


__all__ = [
    "DEFAULT_NODE_POLICY",
    "NODE_POLICIES",
    "AtomaPolicy",
    "LeastLoadedPolicy",
    "NodePolicy",
    "Placement",
    "RandomPolicy",
    "node_policy",
]
