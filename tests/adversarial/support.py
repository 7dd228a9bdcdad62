"""The adversarial tests' network and what they compare.

The network has two nodes: node 1 serves the fake embedder's model (``fakes.MODEL``), node 2 a
fake engine with truncation off (``LONG_MODEL``, at most ``LONG_MAX_TOKENS`` tokens per input).
Besides the default user there is a ``poor`` user whose only stack is used up and who cannot
buy another. Every case compares :meth:`Adversary.books` and :meth:`Adversary.node_state` before
and after, then proves the network still serves a valid confidential request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from fakes import (
    MODEL,
    FakeClock,
    error_of,
    expected_vectors,
    fake_embedder,
    full_state,
    send,
    settlements,
)

from atoma_lab.client import AtomaLabClient
from atoma_lab.encoding import loads
from atoma_lab.inference.fake import FakeEngine
from atoma_lab.inference.serving import NodeEmbedder
from atoma_lab.lab.network import Network, build_network
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.atoma.messages import NodesCreateLockResponse
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.transport.base import Response

MODES = ["inprocess", pytest.param("http", marks=pytest.mark.integration)]
CONF = "/v1/confidential/embeddings"
LOCK = "/v1/nodes/lock"
LONG_MODEL = "fake/no-truncation"
LONG_MAX_TOKENS = 16  # the truncation-off engine's max_seq_length
SECRET = "adversarial secret 3b9e"
PLAINTEXT = CreateEmbeddingRequest(input=[SECRET, "second input"], model=MODEL).to_json()
EXPIRE_S = 3600.0  # seconds the fake clock jumps to let every lock expire


@dataclass
class Adversary:
    """A running network and the handles the cases need."""

    net: Network
    clock: FakeClock
    client: AtomaLabClient
    poor_token: str
    poor_stack: int
    locks_taken: int = 0
    valid_inputs: list[str] = field(default_factory=lambda: ["still serving", "after that"])

    # ------------------------------------------------------------------ requests
    def token(self, who: str | None) -> str | None:
        return {"default": self.net.api_key, "poor": self.poor_token}.get(who or "", who)

    def lock(self, model: str = MODEL, *, who: str = "default", **extra: Any) -> NodesCreateLockResponse:
        resp = send(self.net, "POST", LOCK, {"model": model, **extra}, token=self.token(who))
        assert resp.status == 200, resp.body
        self.locks_taken += 1
        return NodesCreateLockResponse.from_json(resp.body)

    def seal(self, lock: NodesCreateLockResponse, plaintext: bytes = PLAINTEXT, *,
             model_name: str = MODEL, **options: Any) -> dict[str, Any]:
        """A sealed request for ``lock``, as its wire dict (to be changed by a case)."""
        return seal_request(plaintext, node_public_key=lock.public_key,
                            stack_small_id=lock.stack_small_id, model_name=model_name,
                            **options).request.to_dict()

    def post(self, path: str, body: bytes | dict[str, Any], *, who: str | None = "default",
             headers: dict[str, str] | None = None, method: str = "POST") -> Response:
        return send(self.net, method, path, body, token=self.token(who), extra_headers=headers)

    def expire(self) -> None:
        """Let every open lock expire and give its units back."""
        self.clock.advance(EXPIRE_S)
        self.net.ledger.prune_expired(self.clock())

    # ------------------------------------------------------------------ what must not change
    def books(self) -> dict[str, Any]:
        """Balances, every stack's columns (used, locked, flags) and the open locks."""
        return full_state(self.net)

    def node_state(self) -> list[dict[str, Any]]:
        """Each node's key, rotation counter, evidence and identity, as the node holds them and
        as the proxy's ledger records them."""
        out = []
        for node in self.net.nodes:
            record = self.net.ledger.node(node.node_small_id)
            assert record is not None
            out.append({
                "public_key": node.public_key,
                "key_rotation_counter": node.key_rotation_counter,
                "evidence": node.evidence.to_json(),
                "sui_address": node.sui_address,
                "models": tuple(node.embedder.models),
                "ledger": record,
            })
        return out

    def assert_refused(self, make: Callable[[Adversary], Response], status: int, code: str,
                       stage: str = "proxy") -> Response:
        """Run ``make`` and check its refusal: the status and code in Atoma's error shape, no
        secret in the message; ``stage="proxy"``: nothing settled and only the locks the case
        took left open; ``"node"``: the consumed lock released at once with one settlement of
        nothing; then, the case's locks expired, the books and node keys as before, and a valid
        request served."""
        net = self.net
        self.expire()  # whatever an earlier failure left open
        books, nodes, n_settled = self.books(), self.node_state(), len(settlements(net))
        self.locks_taken = 0
        resp = make(self)
        assert error_of(resp) == (status, code), resp.body
        assert SECRET not in loads(resp.body)["error"]["message"]
        # Right after the answer: nothing in flight, nothing charged.
        locks = net.ledger.open_locks()
        new = settlements(net)[n_settled:]
        assert all(lk.state == "open" for lk in locks), locks
        if stage == "node":
            assert [(r["units_charged"], r["outcome"]) for r in new] == [(0, code)]
            assert locks == []
        else:
            assert new == []
            assert len(locks) == self.locks_taken
        # Once the locks the case took have expired, the books are exactly as before.
        self.expire()
        assert self.books() == books
        assert self.node_state() == nodes
        self.assert_still_serving()
        return resp

    def assert_still_serving(self) -> None:
        """A valid confidential request succeeds, with the right vectors and usage."""
        result = self.client.confidential_embeddings.create(input=self.valid_inputs, model=MODEL)
        np.testing.assert_array_equal(result.to_numpy(), expected_vectors(self.valid_inputs))
        assert result.usage.total_tokens == 2 * 4


def _exhaust(net: Network, token: str, clock: FakeClock) -> int:
    """Buy the poor user's one stack with its whole balance and record it as used up."""
    resp = send(net, "POST", LOCK, {"model": MODEL, "max_num_tokens": 1_000_000}, token=token)
    assert resp.status == 200, resp.body
    stack_id = NodesCreateLockResponse.from_json(resp.body).stack_small_id
    user = net.ledger.user_id("poor")
    assert user is not None and net.ledger.balance(user) == 0
    lock = net.ledger.consume_lock(stack_small_id=stack_id, user_id=user,
                                   num_compute_units=1_000_000, now=clock())
    net.ledger.settle(lock.lock_id, 1_000_000, route="confidential", now=clock())
    stack = net.ledger.stack(stack_id)
    assert stack.free_units == 0 and stack.locked_compute_units == 0
    return stack_id



@contextmanager
def start_adversary(mode: str) -> Iterator[Adversary]:
    """Build and start the network (see the module docstring); close it on exit."""
    clock = FakeClock()
    long_engine = NodeEmbedder(FakeEngine(model_name=LONG_MODEL, truncate=False,
                                          max_seq_length=LONG_MAX_TOKENS))
    net = build_network(nodes=2, mode=mode, clock=clock, model=MODEL,  # type: ignore[arg-type]
                        embedder=[fake_embedder([MODEL]), long_engine])
    try:
        poor_token = net.add_user("poor", balance_usdc=1)  # one stack at 1 USDC per million
        poor_stack = _exhaust(net, poor_token, clock)
        client = net.client()
        adversary = Adversary(net, clock, client, poor_token, poor_stack)
        adversary.assert_still_serving()  # the default user's stacks exist from here on
        adversary.lock(LONG_MODEL)
        adversary.expire()
        assert len(settlements(net)) == 2
        try:
            yield adversary
        finally:
            client.close()
    finally:
        net.close()
        long_engine.close()
