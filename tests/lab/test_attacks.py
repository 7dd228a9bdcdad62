"""The attack table of notebooks/05_attacks.ipynb, cell by cell: which attack each setup stops,
and how (the error code), so that a regression in either profile changes a cell and fails here."""

from __future__ import annotations

from html import escape as html_escape

import pytest

from atoma_lab.lab.attacks import (
    ATTACKS,
    SETUPS,
    AttackOutcome,
    AttackResults,
    outcome_table,
    run_attacks,
)

ATOMA, OURS, HARDENED = (s.name for s in SETUPS)

# attack -> setup -> (verdict, a word the detail must contain)
EXPECTED: dict[str, dict[str, tuple[str, str]]] = {
    "replay a captured request": {
        ATOMA: ("SUCCEEDED", "more units charged"),
        OURS: ("blocked", "REPLAYED_REQUEST"),
        HARDENED: ("blocked", "REPLAYED_REQUEST"),
    },
    "proxy hands out its own key": {
        ATOMA: ("SUCCEEDED", "decrypted the input"),
        OURS: ("blocked", "ATTESTATION_FAILED"),
        HARDENED: ("blocked", "ATTESTATION_FAILED"),
    },
    "swap responses between requests": {
        ATOMA: ("blocked", "DECRYPTION_FAILED"),
        OURS: ("blocked", "DECRYPTION_FAILED"),
        HARDENED: ("blocked", "BAD_PEER_RESPONSE"),
    },
    "move a request to another user's stack": {
        ATOMA: ("SUCCEEDED", "node served it"),
        OURS: ("SUCCEEDED", "node served it"),
        HARDENED: ("blocked", "DECRYPTION_FAILED"),
    },
    "inflate the clear usage": {
        ATOMA: ("SUCCEEDED", "1000 extra tokens"),
        OURS: ("blocked", "BAD_PEER_RESPONSE"),
        HARDENED: ("blocked", "INVALID_SIGNATURE"),
    },
    "downgrade to Atoma's profile": {
        ATOMA: ("n/a", "weaker profile"),
        OURS: ("n/a", "weaker profile"),
        HARDENED: ("blocked", "INVALID_FIELD"),
    },
}


@pytest.fixture(scope="module")
def outcomes() -> list[AttackOutcome]:
    return run_attacks()


def test_every_attack_runs_against_every_setup(outcomes: list[AttackOutcome]) -> None:
    assert len(outcomes) == len(ATTACKS) * len(SETUPS)
    assert {o.attack for o in outcomes} == set(EXPECTED)


@pytest.mark.parametrize("attack", list(EXPECTED))
def test_outcome(outcomes: list[AttackOutcome], attack: str) -> None:
    got = {o.setup: o for o in outcomes if o.attack == attack}
    for setup, (verdict, word) in EXPECTED[attack].items():
        assert got[setup].verdict == verdict, (setup, got[setup])
        assert word in got[setup].detail, (setup, got[setup])


def test_the_table_has_a_row_per_attack_and_a_column_per_setup(
        outcomes: list[AttackOutcome]) -> None:
    table = outcome_table(outcomes)
    assert [row["attack"] for row in table] == list(EXPECTED)
    assert all(set(row) == {"attack", ATOMA, OURS, HARDENED} for row in table)


def test_the_outcomes_show_as_a_table_and_a_frame(outcomes: list[AttackOutcome]) -> None:
    assert isinstance(outcomes, AttackResults)
    long = outcomes.to_frame()
    assert len(long) == len(outcomes)
    assert list(long.columns) == ["attack", "setup", "verdict", "blocked", "detail"]
    assert list(long["verdict"]) == [o.verdict for o in outcomes]
    wide = outcomes.to_frame(wide=True)
    assert list(wide.index) == list(EXPECTED) and set(wide.columns) == {ATOMA, OURS, HARDENED}
    html = outcomes._repr_html_()
    blocked = sum(1 for o in outcomes if o.blocked)
    assert f"{blocked} blocked" in html
    assert all(html_escape(attack) in html for attack in EXPECTED)
    one = outcomes[0]._repr_html_()
    assert html_escape(outcomes[0].attack) in one and outcomes[0].verdict in one
