"""A restarted proxy keeps its wallet and stacks; HEAD works where GET does; the lock answer's
``stack_entry_digest`` is set only when a stack was bought for it (as Atoma does)."""

from __future__ import annotations

from pathlib import Path

from fakes import MODEL, network, send

from atoma_lab.encoding import loads


def test_restart_without_a_given_signer_keeps_the_wallet_and_its_stacks(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    first = network(nodes=1, ledger_path=path, api_key="k")
    client = first.client()
    client.confidential_embeddings.create(input=["one two"], model=MODEL)
    owner, used = first.proxy.address, first.ledger.stacks()[0].already_computed_units
    balance = first.ledger.balance(first.user_id)
    first.close()

    second = network(nodes=1, ledger_path=path, api_key="k")
    try:
        assert second.proxy.address == owner
        second.client().confidential_embeddings.create(input=["three"], model=MODEL)
        stacks = second.ledger.stacks()
        assert len(stacks) == 1, "the restarted proxy bought a new stack instead of reusing its own"
        assert stacks[0].already_computed_units > used
        assert second.ledger.balance(second.user_id) == balance
    finally:
        second.close()


def test_head_is_get_without_a_body() -> None:
    net = network(nodes=1)
    try:
        get = send(net, "GET", "/health", token=None)
        head = send(net, "HEAD", "/health", token=None)
        assert head.status == get.status == 200
        assert head.body == b"" and get.body
    finally:
        net.close()


def test_stack_entry_digest_only_when_a_stack_is_bought() -> None:
    net = network(nodes=1)
    try:
        first = loads(send(net, "POST", "/v1/nodes/lock", {"model": MODEL}).body)
        again = loads(send(net, "POST", "/v1/nodes/lock", {"model": MODEL}).body)
        assert first["stack_small_id"] == again["stack_small_id"]
        assert isinstance(first["stack_entry_digest"], str) and first["stack_entry_digest"]
        assert again["stack_entry_digest"] is None
    finally:
        net.close()
