"""``POST /v1/nodes/lock`` and the locks it hands out: which stack, when a stack is bought, what
it costs, when the lock expires, and that one lock pays for exactly one request."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest
from fakes import MODEL, FakeClock, error_of, full_state, money, send

from atoma_lab.crypto.attestation import SimulatedTEE
from atoma_lab.errors import (
    InsufficientBalanceError,
    ModelNotFoundError,
    ServiceUnavailableError,
)
from atoma_lab.lab.network import Network
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.atoma.messages import DEFAULT_LOCK_TIMEOUT_S, DEFAULT_MAX_NUM_TOKENS
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.services.policy import node_policy
from atoma_lab.transport.inprocess import Fault

PLAINTEXT = CreateEmbeddingRequest(input="lock me", model=MODEL).to_json()


def sealed_body(net: Network, lock_public_key: bytes, stack_small_id: int,
                num_compute_units: int | None = None) -> bytes:
    return seal_request(PLAINTEXT, node_public_key=lock_public_key, stack_small_id=stack_small_id,
                        model_name=MODEL, num_compute_units=num_compute_units).request.to_json()


def test_lock_answer_and_bookkeeping(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    client = net.client()
    lock = client.nodes.lock(MODEL)
    node = net.nodes[0]
    assert lock.public_key == node.public_key
    assert lock.node_small_id == node.node_small_id
    stack = net.ledger.stack(lock.stack_small_id)
    assert stack.locked_compute_units == DEFAULT_MAX_NUM_TOKENS
    assert stack.owner_address == net.proxy.address and stack.user_id == net.user_id
    assert lock.stack_entry_digest == stack.tx_digest  # a new stack says where it was bought
    [open_lock] = net.ledger.open_locks()
    assert open_lock.max_num_tokens == DEFAULT_MAX_NUM_TOKENS
    assert open_lock.state == "open"
    # The lock's expiry is the default timeout from now.
    assert 0 < open_lock.expires_at - net.proxy.clock() <= DEFAULT_LOCK_TIMEOUT_S
    lock2 = client.nodes.lock(MODEL, max_num_tokens=100, timeout=30)
    assert lock2.stack_small_id == lock.stack_small_id  # the same stack, reused
    assert net.ledger.stack(lock.stack_small_id).locked_compute_units == DEFAULT_MAX_NUM_TOKENS + 100
    client.close()


def test_lock_picks_the_cheapest_node_and_reuses_its_stack(make_net: Callable[..., Network]) -> None:
    """Atoma's rule: the cheapest node, and then the caller's stack there while it has room
    (the default least-loaded policy would spread these open locks over the nodes)."""
    net = make_net(nodes=3, prices=[7_000_000, 3_000_000, 5_000_000], stack_size=1_000)
    net.proxy.node_policy = node_policy("atoma")
    client = net.client()
    balance = net.ledger.balance(net.user_id)
    first = client.nodes.lock(MODEL, max_num_tokens=10)
    assert first.node_small_id == 2 and first.public_key == net.nodes[1].public_key
    assert net.ledger.balance(net.user_id) == balance - 3_000  # 1000 units at 3 USDC each
    for _ in range(5):
        again = client.nodes.lock(MODEL, max_num_tokens=10)
        assert again.stack_small_id == first.stack_small_id
        assert again.stack_entry_digest is None or again.stack_entry_digest == first.stack_entry_digest
    assert len(net.ledger.stacks()) == 1
    assert net.ledger.balance(net.user_id) == balance - 3_000


def test_lock_buys_a_new_stack_when_none_has_room(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, prices=[2_000_000], stack_size=50)
    client = net.client()
    balance = net.ledger.balance(net.user_id)
    a = client.nodes.lock(MODEL, max_num_tokens=30)
    b = client.nodes.lock(MODEL, max_num_tokens=30)  # 20 free on a: a new stack
    c = client.nodes.lock(MODEL, max_num_tokens=20)  # fits the 20 left on a
    assert a.stack_small_id != b.stack_small_id
    assert c.stack_small_id == a.stack_small_id
    assert b.stack_entry_digest is not None and b.stack_entry_digest != a.stack_entry_digest
    assert net.ledger.balance(net.user_id) == balance - 2 * 100
    assert [s.locked_compute_units for s in net.ledger.stacks()] == [50, 30]
    # A lock bigger than a whole stack can never be served.
    resp = send(net, "POST", "/v1/nodes/lock", {"model": MODEL, "max_num_tokens": 51})
    assert 400 <= resp.status < 500 and error_of(resp)
    assert net.ledger.balance(net.user_id) == balance - 2 * 100


def test_lock_without_balance_is_402(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode, prices=[2_000_000], stack_size=100,
                   user_balance_usdc=199)
    before = full_state(net)
    resp = send(net, "POST", "/v1/nodes/lock", {"model": MODEL, "max_num_tokens": 10})
    assert error_of(resp) == (402, "BALANCE_ERROR")
    assert full_state(net) == before
    with pytest.raises(InsufficientBalanceError):
        net.client().nodes.lock(MODEL, max_num_tokens=10)
    # The plain route buys stacks the same way.
    resp = send(net, "POST", "/v1/embeddings", {"input": "hi", "model": MODEL})
    assert error_of(resp) == (402, "BALANCE_ERROR")
    assert full_state(net) == before


def test_lock_with_exactly_enough_balance(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, prices=[2_000_000], stack_size=100, user_balance_usdc=200)
    net.client().nodes.lock(MODEL, max_num_tokens=10)
    assert net.ledger.balance(net.user_id) == 0


def test_lock_for_an_unknown_model_is_404(net: Network) -> None:
    before = full_state(net)
    resp = send(net, "POST", "/v1/nodes/lock", {"model": "no/such-model"})
    assert error_of(resp) == (404, "MODEL_NOT_FOUND")
    with pytest.raises(ModelNotFoundError):
        net.client().nodes.lock("no/such-model")
    assert full_state(net) == before


def test_lock_with_no_attested_node_is_503(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    # The node rotates, attested by a vendor the proxy does not trust: its key is not valid.
    net.nodes[0].tee = SimulatedTEE()
    net.rotate(0)
    node = net.ledger.node(1)
    assert node is not None and node.attestation_valid is False
    before = full_state(net)
    resp = send(net, "POST", "/v1/nodes/lock", {"model": MODEL})
    assert error_of(resp) == (503, "SERVICE_UNAVAILABLE")
    with pytest.raises(ServiceUnavailableError):
        net.client().nodes.lock(MODEL)
    assert full_state(net) == before


def test_lock_with_an_unhealthy_node_is_503(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=2, prices=[1, 2])
    assert net.transport is not None
    net.ledger.set_node_health(1, False)
    assert net.client().nodes.lock(MODEL).node_small_id == 2
    # Both down and really unreachable: the lock's probe finds neither, so 503.
    for url in net.node_urls:
        net.transport.inject(url, Fault(drop=True))
    net.ledger.set_node_health(2, False)
    assert error_of(send(net, "POST", "/v1/nodes/lock", {"model": MODEL})) == (
        503, "SERVICE_UNAVAILABLE")
    # Node 2 is back: the next lock's probe finds it.
    net.transport.inject(net.node_urls[1], None)
    assert net.client().nodes.lock(MODEL).node_small_id == 2


def test_lock_expires_and_its_units_return(make_net: Callable[..., Network]) -> None:
    clock = FakeClock()
    net = make_net(nodes=1, clock=clock)
    client = net.client()
    lock = client.nodes.lock(MODEL, max_num_tokens=100, timeout=5)
    sid = lock.stack_small_id
    assert net.ledger.stack(sid).locked_compute_units == 100
    clock.advance(4.9)
    assert len(net.ledger.open_locks()) == 1
    clock.advance(0.2)  # past the timeout
    before = money(net)
    resp = send(net, "POST", "/v1/confidential/embeddings",
                sealed_body(net, lock.public_key, sid, num_compute_units=100))
    assert error_of(resp) == (425, "UNAVAILABLE_STACK")
    assert money(net) == before
    # Refusing the request pruned the expired lock: its units are free again.
    assert net.ledger.stack(sid).locked_compute_units == 0
    assert net.ledger.open_locks() == []


def test_expired_locks_are_pruned_by_the_next_lock_call(make_net: Callable[..., Network]) -> None:
    clock = FakeClock()
    net = make_net(nodes=1, clock=clock)
    client = net.client()
    first = client.nodes.lock(MODEL, max_num_tokens=100, timeout=5)
    clock.advance(6)
    client.nodes.lock(MODEL, max_num_tokens=7, timeout=5)
    assert net.ledger.stack(first.stack_small_id).locked_compute_units == 7
    assert [lk.max_num_tokens for lk in net.ledger.open_locks()] == [7]


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_expired_locks_are_given_back_on_a_timer(make_net: Callable[..., Network],
                                                 mode: str) -> None:
    """Issue 16, item 14: nobody takes another lock, yet the proxy's sweeper gives an expired
    lock's units back; the clock is the network's (injected), the timer's period real."""
    clock = FakeClock()
    net = make_net(nodes=1, mode=mode, clock=clock, lock_sweep_interval_s=0.01)
    lock = net.client().nodes.lock(MODEL, max_num_tokens=100, timeout=5)
    sid = lock.stack_small_id
    before = money(net)
    time.sleep(0.1)  # several sweeps: the lock has not expired by the network's clock
    assert net.ledger.stack(sid).locked_compute_units == 100
    assert len(net.ledger.open_locks()) == 1
    clock.advance(5.1)
    assert _wait_for(lambda: net.ledger.open_locks() == [])
    assert net.ledger.stack(sid).locked_compute_units == 0
    assert money(net) == before  # given back, nothing charged


def test_without_the_sweeper_an_expired_lock_waits_for_the_next_lock_call(
        make_net: Callable[..., Network]) -> None:
    clock = FakeClock()
    net = make_net(nodes=1, clock=clock, lock_sweep_interval_s=None)
    net.client().nodes.lock(MODEL, max_num_tokens=100, timeout=5)
    clock.advance(6)
    time.sleep(0.1)
    assert len(net.ledger.open_locks()) == 1  # what the timer mends
    assert net.proxy.sweep_locks() == 1 and net.ledger.open_locks() == []


def test_a_lock_serves_exactly_one_request(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    client = net.client()
    lock = client.nodes.lock(MODEL)
    body = sealed_body(net, lock.public_key, lock.stack_small_id)
    ok = send(net, "POST", "/v1/confidential/embeddings", body)
    assert ok.status == 200
    after_first = money(net)
    again = send(net, "POST", "/v1/confidential/embeddings", body)
    assert error_of(again) == (425, "UNAVAILABLE_STACK")
    assert money(net) == after_first
    stack = net.ledger.stack(lock.stack_small_id)
    assert stack.locked_compute_units == 0
    assert net.ledger.open_locks() == []


def test_num_compute_units_must_fit_the_lock(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    client = net.client()
    lock = client.nodes.lock(MODEL, max_num_tokens=50)
    # Without num_compute_units the request claims the default 8192: the 50-unit lock is too small.
    resp = send(net, "POST", "/v1/confidential/embeddings",
                sealed_body(net, lock.public_key, lock.stack_small_id))
    assert error_of(resp) == (425, "UNAVAILABLE_STACK")
    resp = send(net, "POST", "/v1/confidential/embeddings",
                sealed_body(net, lock.public_key, lock.stack_small_id, num_compute_units=50))
    assert resp.status == 200


def test_usage_over_num_compute_units_is_refused_and_not_charged(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    before = money(net)
    lock = client.nodes.lock(MODEL, max_num_tokens=3)
    # "lock me" is 2 words + 2 special tokens = 4 units > 3.
    resp = send(net, "POST", "/v1/confidential/embeddings",
                sealed_body(net, lock.public_key, lock.stack_small_id, num_compute_units=3))
    assert error_of(resp) == (413, "COMPUTE_UNITS_EXCEEDED")
    assert money(net) == before
    assert net.ledger.open_locks() == []
    assert net.ledger.stack(lock.stack_small_id).locked_compute_units == 0


def test_another_users_stack_is_403(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    lock = net.client().nodes.lock(MODEL)
    mallory = net.add_user("mallory")
    before = full_state(net)
    resp = send(net, "POST", "/v1/confidential/embeddings",
                sealed_body(net, lock.public_key, lock.stack_small_id), token=mallory)
    assert error_of(resp) == (403, "FORBIDDEN")
    # The owner's lock is untouched and still serves the owner.
    assert full_state(net) == before
    resp = send(net, "POST", "/v1/confidential/embeddings",
                sealed_body(net, lock.public_key, lock.stack_small_id))
    assert resp.status == 200


def test_unknown_stack_is_404(net: Network) -> None:
    lock = net.client().nodes.lock(MODEL)
    before = full_state(net)
    for sid in (lock.stack_small_id + 1000, 2**63, 2**64 - 1):
        resp = send(net, "POST", "/v1/confidential/embeddings",
                    sealed_body(net, lock.public_key, sid))
        assert error_of(resp) == (404, "STACK_NOT_FOUND"), sid
    assert full_state(net) == before


def test_claimed_stack_is_423_and_the_next_lock_avoids_it(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    client = net.client()
    lock = client.nodes.lock(MODEL)
    net.ledger.set_stack_flags(lock.stack_small_id, is_claimed=True)
    before = money(net)
    resp = send(net, "POST", "/v1/confidential/embeddings",
                sealed_body(net, lock.public_key, lock.stack_small_id))
    assert error_of(resp) == (423, "LOCKED")
    assert money(net) == before
    result = client.confidential_embeddings.create(input="elsewhere", model=MODEL)
    assert result.stack_small_id != lock.stack_small_id


def test_lock_with_a_number_beyond_u64_is_400(net: Network) -> None:
    body = b'{"model":"' + MODEL.encode() + b'","max_num_tokens":18446744073709551616}'
    assert error_of(send(net, "POST", "/v1/nodes/lock", body))[0] == 400


@pytest.mark.parametrize("body", [
    {"model": MODEL, "max_num_tokens": 0},
    {"model": MODEL, "max_num_tokens": -1},
    {"model": MODEL, "max_num_tokens": "10"},
    {"model": MODEL, "max_num_tokens": 2**64 - 1},
    {"model": MODEL, "max_num_tokens": 2**63},
    {"model": MODEL, "timeout": 0},
    {"model": MODEL, "timeout": 1.5},
    {"model": ""},
    {"model": 7},
    {"model": None},
    {},
    [],
    "m",
])
def test_bad_lock_bodies_are_4xx_and_free(net: Network, body: object) -> None:
    before = full_state(net)
    resp = send(net, "POST", "/v1/nodes/lock", orjson.dumps(body))
    status, _ = error_of(resp)
    assert 400 <= status < 500
    assert full_state(net) == before
