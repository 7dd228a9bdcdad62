"""The ``atoma-lab`` command's scale-out options, refused before anything starts where they
cannot apply (the commands that serve are exercised end to end in tests/server and tests/sdk)."""

from __future__ import annotations

import pytest

from atoma_lab.cli import build_parser, main
from atoma_lab.inference import FAKE_MODEL
from atoma_lab.services.policy import DEFAULT_NODE_POLICY, NODE_POLICIES


def test_policy_and_capacity_flags_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--nodes", "4", "--model", FAKE_MODEL, "--node-policy",
                              "atoma", "--fake-tokens-per-s", "200"])
    assert (args.nodes, args.node_policy, args.fake_tokens_per_s) == (4, "atoma", 200.0)
    assert parser.parse_args(["serve"]).node_policy == DEFAULT_NODE_POLICY == "least-loaded"
    proxy = parser.parse_args(["proxy", "--node", "http://127.0.0.1:1", "--node-policy", "random",
                               "--policy-seed", "5"])
    assert (proxy.node_policy, proxy.policy_seed) == ("random", 5)
    node = parser.parse_args(["node", "--proxy", "http://127.0.0.1:1", "--model", FAKE_MODEL,
                              "--fake-tokens-per-s", "50"])
    assert node.fake_tokens_per_s == 50.0
    for policy in NODE_POLICIES:
        assert parser.parse_args(["serve", "--node-policy", policy]).node_policy == policy


def test_an_unknown_policy_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--node-policy", "round-robin"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'round-robin'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["serve", "--fake-tokens-per-s", "200"],  # the default model is a real one
    ["serve", "--model", "all-MiniLM-L6-v2", "--fake-tokens-per-s", "200"],
    ["node", "--proxy", "http://127.0.0.1:9", "--fake-tokens-per-s", "200"],
    ["node", "--proxy", "http://127.0.0.1:9", "--model", FAKE_MODEL, "--backend",
     "http://127.0.0.1:9", "--fake-tokens-per-s", "200"],
])
def test_capacity_is_refused_for_a_real_model(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match="--fake-tokens-per-s models a device for --model "
                                         f"{FAKE_MODEL} only"):
        main(argv)


@pytest.mark.parametrize("command", [["serve"], ["node", "--proxy", "http://127.0.0.1:9"]])
def test_capacity_must_be_positive(command: list[str]) -> None:
    with pytest.raises(SystemExit, match="must be positive"):
        main([*command, "--model", FAKE_MODEL, "--fake-tokens-per-s", "0"])
