"""Compute-unit accounting across a run of mixed requests: exact, nothing left locked, settlements
agree, and a ledger file keeps it all across restarts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fakes import MODEL, expected_units, network, settlements

from atoma_lab.client import AtomaLabClient
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.lab.network import Network

STACK = 60  # compute units per stack: small, so that a run needs several stacks
PRICES = [2_000_000, 1_000_000]  # USDC per million units: node 2 is cheaper
INPUTS = [
    "alpha", "beta gamma", "delta epsilon zeta", ["one", "two three"], "a b c d e f g",
    ["x"], "the rain in spain", ["p q", "r", "s t u"],
]


Seen = dict[str, list[tuple[str, int, int | None]]]


def run_mixed(net: Network, clients: dict[str, AtomaLabClient]) -> Seen:
    """Every user sends every input confidentially and plainly; returns per user
    ``(route, total_tokens, stack_small_id)``."""
    seen: Seen = defaultdict(list)
    for i, inp in enumerate(INPUTS):
        for name, client in clients.items():
            r = client.confidential_embeddings.create(input=inp, model=MODEL, max_num_tokens=20)
            assert r.usage.total_tokens == expected_units(inp)
            seen[name].append(("confidential", r.usage.total_tokens, r.stack_small_id))
            if i % 2 == 0:
                p = client.embeddings.create(input=inp, model=MODEL)
                assert p.usage.total_tokens == expected_units(inp)
                seen[name].append(("plain", p.usage.total_tokens, None))
    return seen


def check_books(net: Network, users: dict[str, int], seen: Seen, balance0: int) -> None:
    stacks = net.ledger.stacks()
    assert len(stacks) >= 2 * len(users), "the run should have needed several stacks per user"
    # Nothing stays locked once every request has finished.
    assert net.ledger.open_locks() == []
    for s in stacks:
        assert s.locked_compute_units == 0, s
        assert 0 < s.already_computed_units <= s.num_compute_units == STACK
    # Per stack: confidential requests name their stack; its units equal the usage seen there,
    # plus what plain requests (which do not say where they went) were charged.
    settle = settlements(net)
    by_stack: dict[int, int] = defaultdict(int)
    for row in settle:
        by_stack[row["stack_small_id"]] += row["units_charged"]
    for s in stacks:
        assert by_stack[s.stack_small_id] == s.already_computed_units
        conf = sum(t for name in seen for route, t, sid in seen[name]
                   if route == "confidential" and sid == s.stack_small_id)
        plain = sum(r["units_charged"] for r in settle
                    if r["route"] == "plain" and r["stack_small_id"] == s.stack_small_id)
        assert s.already_computed_units == conf + plain
    for name, user_id in users.items():
        mine = [s for s in stacks if s.user_id == user_id]
        assert sum(s.already_computed_units for s in mine) == sum(t for _, t, _ in seen[name])
        # One settlement per successful request, each charging what the client saw.
        rows = [r for r in settle if r["user_id"] == user_id]
        assert sorted(r["units_charged"] for r in rows) == sorted(t for _, t, _ in seen[name])
        assert all(r["outcome"] == "charged" for r in rows)
        assert sorted(r["route"] for r in rows) == sorted(route for route, _, _ in seen[name])
        # Each stack was paid for once, at its node's price.
        cost = sum(s.price_per_one_million_compute_units * STACK // 1_000_000 for s in mine)
        assert net.ledger.balance(user_id) == balance0 - cost


def test_mixed_run_is_exact(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=2, mode=mode, stack_size=STACK, prices=PRICES)
    balance0 = net.ledger.balance(net.user_id)
    clients = {"default": net.client()}
    users = {"default": net.user_id}
    for name in ("alice", "bob"):
        key = net.add_user(name, balance_usdc=balance0)
        clients[name] = net.client(api_key=key)
        user_id = net.ledger.user_id(name)
        assert user_id is not None
        users[name] = user_id
    seen = run_mixed(net, clients)
    check_books(net, users, seen, balance0)
    # The cheaper node got every stack.
    assert {s.node_small_id for s in net.ledger.stacks()} == {2}
    for c in clients.values():
        c.close()


def test_concurrent_requests_are_exact(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=2, stack_size=STACK, prices=PRICES)
    balance0 = net.ledger.balance(net.user_id)
    client = net.client()
    jobs = [INPUTS[i % len(INPUTS)] for i in range(24)]

    def one(i: int) -> tuple[str, int, int | None]:
        if i % 3 == 0:
            r = client.embeddings.create(input=jobs[i], model=MODEL)
            return ("plain", r.usage.total_tokens, None)
        r = client.confidential_embeddings.create(input=jobs[i], model=MODEL, max_num_tokens=20)
        return ("confidential", r.usage.total_tokens, r.stack_small_id)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(len(jobs))))
    assert sum(t for _, t, _ in results) == sum(expected_units(j) for j in jobs)
    check_books(net, {"default": net.user_id}, {"default": results}, balance0)


def test_ledger_file_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite")
    # The proxy's wallet owns the stacks it bought: a restarted proxy keeps its wallet.
    wallet = bytes(range(32))
    first = network(ledger_path=path, stack_size=STACK, prices=[1_000_000],
                    proxy_signer=SuiSigner.from_ed25519_seed(wallet))
    try:
        client = first.client()
        for inp in INPUTS:
            client.confidential_embeddings.create(input=inp, model=MODEL, max_num_tokens=30)
        client.embeddings.create(input="one more", model=MODEL)
        stacks = first.ledger.stacks()
        balance = first.ledger.balance(first.user_id)
        settlements = first.ledger.settlements()
        used = sum(s.already_computed_units for s in stacks)
        assert used == sum(expected_units(i) for i in INPUTS) + expected_units("one more")
        assert len(stacks) >= 2
    finally:
        first.close()
        first.ledger.close()

    second = network(ledger_path=path, stack_size=STACK, prices=[1_000_000],
                     proxy_signer=SuiSigner.from_ed25519_seed(wallet))
    try:
        assert second.user_id == first.user_id
        assert second.ledger.stacks() == stacks
        assert second.ledger.balance(second.user_id) == balance
        assert second.ledger.settlements() == settlements
        # The restarted network keeps using (and adding to) the same books.
        r = second.client().confidential_embeddings.create(input="after restart", model=MODEL,
                                                           max_num_tokens=20)
        after = second.ledger.stacks()
        assert sum(s.already_computed_units for s in after) == used + r.usage.total_tokens
        assert second.ledger.open_locks() == []
        # A stack from before the restart still had room: it was used, none was bought.
        assert r.stack_small_id in {s.stack_small_id for s in stacks}
        assert len(after) == len(stacks)
        assert second.ledger.balance(second.user_id) == balance
    finally:
        second.close()
        second.ledger.close()
