"""The ledger on its own: stacks, locks, settlement and persistence, with exact arithmetic."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atoma_lab.errors import (
    InsufficientBalanceError,
    PermissionDeniedError,
    StackLockedError,
    StackNotFoundError,
    StackUnavailableError,
)
from atoma_lab.services.ledger import Ledger, LockRecord, NodeRecord, StackRecord

OWNER = "0xproxy"
T0 = 1_000.0


def add_node(ledger: Ledger, node_small_id: int, price: int) -> NodeRecord:
    ledger.upsert_node(node_small_id, address=f"inproc://node-{node_small_id}",
                       sui_address=f"0xnode{node_small_id}", models=["m"],
                       price_per_one_million_compute_units=price)
    ledger.set_node_key(node_small_id, public_key=bytes([node_small_id]) * 32,
                        key_rotation_counter=1, evidence=None, valid=True)
    node = ledger.node(node_small_id)
    assert node is not None
    return node


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    led = Ledger()
    yield led
    led.close()


def buy(ledger: Ledger, user: int, node: NodeRecord, *, size: int = 100, tokens: int = 10,
        timeout_s: float = 5, now: float = T0) -> tuple[StackRecord, LockRecord]:
    return ledger.buy_stack_and_lock(user_id=user, model="m", node=node, owner_address=OWNER,
                                     max_num_tokens=tokens, timeout_s=timeout_s, now=now, size=size)


def test_buy_deducts_the_price_and_locks(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=1_000)
    node = add_node(ledger, 1, price=2_000_000)  # 2 USDC units per compute unit
    stack, lock = buy(ledger, user, node, size=100, tokens=10)
    assert ledger.balance(user) == 1_000 - 200
    assert stack.num_compute_units == 100
    assert stack.locked_compute_units == 10
    assert stack.already_computed_units == 0
    assert stack.tx_digest
    assert lock.max_num_tokens == 10 and lock.expires_at == T0 + 5 and lock.state == "open"


def test_buy_without_enough_balance_changes_nothing(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=199)
    node = add_node(ledger, 1, price=2_000_000)
    with pytest.raises(InsufficientBalanceError) as exc:
        buy(ledger, user, node, size=100)
    assert exc.value.status == 402 and exc.value.code == "BALANCE_ERROR"
    assert ledger.balance(user) == 199
    assert ledger.stacks() == [] and ledger.open_locks() == []


def test_buy_more_than_a_stack_holds_is_refused(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=10**9)
    node = add_node(ledger, 1, price=1)
    with pytest.raises(StackUnavailableError):
        buy(ledger, user, node, size=100, tokens=101)
    assert ledger.balance(user) == 10**9 and ledger.stacks() == []


def test_lock_existing_picks_the_cheapest_stack_with_room(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=10**9)
    dear, cheap = add_node(ledger, 1, price=5), add_node(ledger, 2, price=3)
    s_dear, _ = buy(ledger, user, dear, size=100, tokens=10)
    s_cheap, _ = buy(ledger, user, cheap, size=100, tokens=95)
    # The cheap stack has 5 free units: too few for 10, so the dear one is chosen.
    found = ledger.lock_existing_stack(user_id=user, model="m", max_num_tokens=10, timeout_s=5,
                                       now=T0, eligible_nodes=[1, 2], owner_address=OWNER)
    assert found is not None and found[0].stack_small_id == s_dear.stack_small_id
    # 5 fit on the cheap one.
    found = ledger.lock_existing_stack(user_id=user, model="m", max_num_tokens=5, timeout_s=5,
                                       now=T0, eligible_nodes=[1, 2], owner_address=OWNER)
    assert found is not None and found[0].stack_small_id == s_cheap.stack_small_id
    assert ledger.stack(s_cheap.stack_small_id).free_units == 0
    # Ineligible nodes, other models, other owners and other users are never chosen.
    for kwargs in ({"eligible_nodes": [3]}, {"model": "other"}, {"owner_address": "0xelse"},
                   {"user_id": user + 1}):
        args: dict[str, Any] = {"user_id": user, "model": "m", "max_num_tokens": 1, "timeout_s": 5, "now": T0,
                "eligible_nodes": [1, 2], "owner_address": OWNER, **kwargs}
        assert ledger.lock_existing_stack(**args) is None


def test_expired_locks_give_their_units_back(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=10**9)
    node = add_node(ledger, 1, price=1)
    stack, _ = buy(ledger, user, node, size=100, tokens=40, timeout_s=5)
    assert ledger.prune_expired(T0 + 4.9) == 0
    assert ledger.stack(stack.stack_small_id).locked_compute_units == 40
    assert ledger.prune_expired(T0 + 5) == 1
    assert ledger.stack(stack.stack_small_id).locked_compute_units == 0
    assert ledger.open_locks() == []


def test_consume_settle_and_release(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=10**9)
    node = add_node(ledger, 1, price=1)
    stack, _ = buy(ledger, user, node, size=100, tokens=30)
    sid = stack.stack_small_id
    lock = ledger.consume_lock(stack_small_id=sid, user_id=user, num_compute_units=30, now=T0)
    assert lock.state == "in_flight"
    # In flight: the units stay locked, and the lock cannot be consumed twice.
    assert ledger.stack(sid).locked_compute_units == 30
    with pytest.raises(StackUnavailableError):
        ledger.consume_lock(stack_small_id=sid, user_id=user, num_compute_units=1, now=T0)
    # An in-flight lock does not expire: the request is still being served.
    assert ledger.prune_expired(T0 + 100) == 0
    assert ledger.settle(lock.lock_id, 12, route="confidential", now=T0) == 12
    s = ledger.stack(sid)
    assert (s.already_computed_units, s.locked_compute_units) == (12, 0)
    with pytest.raises(ValueError, match="not in flight"):
        ledger.settle(lock.lock_id, 12, route="confidential", now=T0)
    # A second lock, released: nothing charged.
    found = ledger.lock_existing_stack(user_id=user, model="m", max_num_tokens=50, timeout_s=5,
                                       now=T0, eligible_nodes=[1], owner_address=OWNER)
    assert found is not None
    lock2 = found[1]
    ledger.consume_lock(stack_small_id=sid, user_id=user, num_compute_units=50, now=T0)
    ledger.release(lock2.lock_id, route="confidential", outcome="DECRYPTION_FAILED", now=T0)
    s = ledger.stack(sid)
    assert (s.already_computed_units, s.locked_compute_units) == (12, 0)
    rows = ledger.settlements()
    assert [(r["units_locked"], r["units_charged"], r["outcome"]) for r in rows] == [
        (30, 12, "charged"), (50, 0, "DECRYPTION_FAILED")]


def test_settle_never_charges_more_than_the_lock(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=10**9)
    node = add_node(ledger, 1, price=1)
    stack, _ = buy(ledger, user, node, size=100, tokens=10)
    lock = ledger.consume_lock(stack_small_id=stack.stack_small_id, user_id=user,
                               num_compute_units=10, now=T0)
    assert ledger.settle(lock.lock_id, 1_000, route="plain", now=T0) == 10
    assert ledger.stack(stack.stack_small_id).already_computed_units == 10
    with pytest.raises(ValueError):
        ledger.settle(lock.lock_id, -1, route="plain", now=T0)


def test_consume_errors(ledger: Ledger) -> None:
    alice = ledger.add_user("alice", balance_usdc=10**9)
    bob = ledger.add_user("bob", balance_usdc=10**9)
    node = add_node(ledger, 1, price=1)
    stack, _ = buy(ledger, alice, node, size=100, tokens=10, timeout_s=5)
    sid = stack.stack_small_id
    with pytest.raises(StackNotFoundError) as nf:
        ledger.consume_lock(stack_small_id=sid + 7, user_id=alice, num_compute_units=1, now=T0)
    assert (nf.value.status, nf.value.code) == (404, "STACK_NOT_FOUND")
    with pytest.raises(PermissionDeniedError) as pd:
        ledger.consume_lock(stack_small_id=sid, user_id=bob, num_compute_units=1, now=T0)
    assert pd.value.status == 403
    with pytest.raises(StackUnavailableError) as su:  # the lock covers 10, not 11
        ledger.consume_lock(stack_small_id=sid, user_id=alice, num_compute_units=11, now=T0)
    assert (su.value.status, su.value.code) == (425, "UNAVAILABLE_STACK")
    with pytest.raises(StackUnavailableError):  # expired
        ledger.consume_lock(stack_small_id=sid, user_id=alice, num_compute_units=1, now=T0 + 5)
    assert ledger.stack(sid).locked_compute_units == 0  # the expired lock was pruned
    assert ledger.lock_existing_stack(user_id=alice, model="m", max_num_tokens=10, timeout_s=5,
                                      now=T0, eligible_nodes=[1], owner_address=OWNER)
    ledger.set_stack_flags(sid, is_claimed=True)
    with pytest.raises(StackLockedError) as sl:
        ledger.consume_lock(stack_small_id=sid, user_id=alice, num_compute_units=1, now=T0)
    assert sl.value.status == 423


def test_the_schema_forbids_overdrawing_a_stack(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=10**9)
    node = add_node(ledger, 1, price=1)
    stack, _ = buy(ledger, user, node, size=100, tokens=10)
    with pytest.raises(sqlite3.IntegrityError):
        ledger._conn.execute("UPDATE stacks SET already_computed_units = 95 WHERE stack_small_id=?",
                             (stack.stack_small_id,))
    with pytest.raises(sqlite3.IntegrityError):
        ledger._conn.execute("UPDATE users SET balance_usdc = -1 WHERE user_id=?", (user,))


def test_huge_ids_and_unit_counts_are_plain_misses(ledger: Ledger) -> None:
    """JSON allows u64; SQLite holds i64. Values beyond must be 'not found'/'no room', not a crash."""
    user = ledger.add_user("u", balance_usdc=10**9)
    node = add_node(ledger, 1, price=1)
    stack, _ = buy(ledger, user, node, size=100, tokens=10)
    big = 2**64 - 1
    with pytest.raises(StackNotFoundError):
        ledger.consume_lock(stack_small_id=big, user_id=user, num_compute_units=1, now=T0)
    with pytest.raises(StackNotFoundError):
        ledger.stack(big)
    assert ledger.stack_owner(big) is None
    with pytest.raises(StackUnavailableError):
        ledger.consume_lock(stack_small_id=stack.stack_small_id, user_id=user,
                            num_compute_units=big, now=T0)
    assert ledger.lock_existing_stack(user_id=user, model="m", max_num_tokens=big, timeout_s=5,
                                      now=T0, eligible_nodes=[1], owner_address=OWNER) is None
    with pytest.raises(StackUnavailableError):
        buy(ledger, user, node, tokens=big)


def test_file_ledger_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "l.sqlite")
    led = Ledger(path)
    user = led.add_user("u", balance_usdc=1_000)
    led.add_api_token(user, "secret-token")
    node = add_node(led, 1, price=2_000_000)
    stack, _ = buy(led, user, node, size=100, tokens=10)
    lock = led.consume_lock(stack_small_id=stack.stack_small_id, user_id=user,
                            num_compute_units=10, now=T0)
    led.settle(lock.lock_id, 7, route="confidential", now=T0)
    before = (led.stacks(), led.balance(user), led.settlements(), led.nodes())
    led.close()

    again = Ledger(path)
    try:
        assert (again.stacks(), again.balance(user), again.settlements(), again.nodes()) == before
        assert again.user_for_token("secret-token") == user
        assert again.user_for_token("other") is None
        assert again.user_id("u") == user
    finally:
        again.close()


def test_reopening_releases_in_flight_locks(tmp_path: Path) -> None:
    """A restart cannot know how in-flight requests ended: none is charged, their units return.
    Open (not yet used) locks keep their expiry."""
    path = str(tmp_path / "l.sqlite")
    led = Ledger(path)
    user = led.add_user("u", balance_usdc=10**9)
    node = add_node(led, 1, price=1)
    stack, _ = buy(led, user, node, size=100, tokens=10)
    led.lock_existing_stack(user_id=user, model="m", max_num_tokens=20, timeout_s=5, now=T0,
                            eligible_nodes=[1], owner_address=OWNER)
    led.consume_lock(stack_small_id=stack.stack_small_id, user_id=user, num_compute_units=10,
                     now=T0)
    assert led.stack(stack.stack_small_id).locked_compute_units == 30
    led.close()

    again = Ledger(path)
    try:
        s = again.stack(stack.stack_small_id)
        assert (s.already_computed_units, s.locked_compute_units) == (0, 20)
        assert [(lk.max_num_tokens, lk.state) for lk in again.open_locks()] == [(20, "open")]
        assert again.prune_expired(T0 + 5) == 1
        assert again.stack(stack.stack_small_id).locked_compute_units == 0
    finally:
        again.close()


def _place_on(search: tuple[int, ...], buy_on: NodeRecord, seen: list[dict[int, int]]) -> Any:
    from atoma_lab.services.policy import Placement

    def place(load: dict[int, int]) -> Placement:
        seen.append(dict(load))
        return Placement(search, buy_on)

    return place


def test_place_and_lock_is_the_whole_lock_step_in_one_transaction(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=1_000)
    n1, n2 = add_node(ledger, 1, price=1_000_000), add_node(ledger, 2, price=1_000_000)
    seen: list[dict[int, int]] = []
    step = {"user_id": user, "model": "m", "max_num_tokens": 10, "timeout_s": 5, "now": T0,
            "owner_address": OWNER, "size": 100, "needs_load": True}
    s1, l1, bought = ledger.place_and_lock(place=_place_on((1,), n1, seen), **step)  # type: ignore[arg-type]
    assert bought and s1.node_small_id == 1 and l1.state == "open"
    s2, _, bought = ledger.place_and_lock(place=_place_on((2,), n2, seen), **step)  # type: ignore[arg-type]
    assert bought and s2.node_small_id == 2
    s3, _, bought = ledger.place_and_lock(place=_place_on((1, 2), n2, seen), **step)  # type: ignore[arg-type]
    assert not bought and s3.stack_small_id == s1.stack_small_id  # existing stacks first
    assert seen == [{}, {1: 10}, {1: 10, 2: 10}]  # the load each placement saw
    assert ledger.units_in_flight(T0) == {1: 20, 2: 10}
    assert ledger.balance(user) == 1_000 - 2 * 100
    ledger.place_and_lock(place=_place_on((1,), n1, seen), **{**step, "needs_load": False})  # type: ignore[arg-type]
    assert seen[-1] == {}


def test_a_refused_purchase_still_gives_back_expired_locks(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=150)
    node = add_node(ledger, 1, price=1_000_000)
    stack, _ = buy(ledger, user, node, size=100, tokens=100, timeout_s=5)  # fills the stack
    seen: list[dict[int, int]] = []
    with pytest.raises(InsufficientBalanceError):
        ledger.place_and_lock(user_id=user, model="m", max_num_tokens=10, timeout_s=5,
                              now=T0 + 10, owner_address=OWNER, size=100, needs_load=True,
                              place=_place_on((), node, seen))
    assert seen == [{}]  # the expired lock was given back before the placement
    assert ledger.stack(stack.stack_small_id).locked_compute_units == 0  # and stays given back
    assert ledger.open_locks() == [] and ledger.balance(user) == 50
    with pytest.raises(StackUnavailableError, match="exceeds the stack size"):
        ledger.place_and_lock(user_id=user, model="m", max_num_tokens=101, timeout_s=5,
                              now=T0 + 10, owner_address=OWNER, size=100, needs_load=False,
                              place=_place_on((), node, seen))


def test_a_refused_consume_still_gives_back_its_stacks_expired_locks(ledger: Ledger) -> None:
    user = ledger.add_user("u", balance_usdc=1_000)
    node = add_node(ledger, 1, price=1)
    stack, _ = buy(ledger, user, node, size=100, tokens=10, timeout_s=5)
    with pytest.raises(StackUnavailableError):
        ledger.consume_lock(stack_small_id=stack.stack_small_id, user_id=user,
                            num_compute_units=10, now=T0 + 10)
    assert ledger.stack(stack.stack_small_id).locked_compute_units == 0
    assert ledger.open_locks() == []


def test_file_ledger_synchronous_level(tmp_path: Path) -> None:
    for level, number in (("NORMAL", 1), ("FULL", 2)):
        led = Ledger(str(tmp_path / f"{level}.sqlite3"), synchronous=level)
        try:
            assert led._conn.execute("PRAGMA synchronous").fetchone()[0] == number
            assert led._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            led.close()
    with pytest.raises(ValueError, match="synchronous must be one of"):
        Ledger(synchronous="SOMETIMES")


def test_concurrent_requests_of_one_user_each_find_a_lock_that_covers_them(ledger: Ledger) -> None:
    """Two locks on one stack, the larger taken first; the smaller request arrives first. It
    takes the smallest lock that covers it, so the larger request still finds its own (taking
    the first to expire, it took the larger one and left the larger request a 425)."""
    user = ledger.add_user("u", balance_usdc=10**9)
    node = add_node(ledger, 1, price=1)
    stack, big = buy(ledger, user, node, size=1_000, tokens=200, timeout_s=5)
    found = ledger.lock_existing_stack(user_id=user, model="m", max_num_tokens=50, timeout_s=60,
                                       now=T0 + 1, eligible_nodes=[1], owner_address=OWNER)
    assert found is not None
    sid = stack.stack_small_id
    first = ledger.consume_lock(stack_small_id=sid, user_id=user, num_compute_units=50,
                                now=T0 + 2)
    second = ledger.consume_lock(stack_small_id=sid, user_id=user, num_compute_units=200,
                                 now=T0 + 2)
    assert (first.max_num_tokens, second.max_num_tokens) == (50, 200)
    assert second.lock_id == big.lock_id
