"""The ``atoma-lab`` command's conventions: ``--version``; ``embed`` reading
``ATOMA_LAB_BASE_URL`` and ``ATOMA_LAB_API_KEY`` (what ``serve`` prints) and printing the OpenAI
response with ``--json``; ``--log-level`` on every service command; the engine options and the
backend API key of ``node``; the scale-out options (``--node-policy``, ``--fake-tokens-per-s``),
refused before anything starts where they cannot apply."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import numpy as np
import pytest
from backends.fake_servers import FakeBackend
from fakes import MODEL, expected_units, expected_vectors, network

import atoma_lab
from atoma_lab.cli import _engine_options, _node_embedder, _setup_logging, build_parser, main
from atoma_lab.inference import FAKE_MODEL
from atoma_lab.lab.network import Network
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.services.policy import DEFAULT_NODE_POLICY, NODE_POLICIES

TEXTS = ["first text", "and a second one"]


@pytest.fixture(scope="module")
def http_net() -> Iterator[Network]:
    with network(mode="http") as net:
        yield net


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"atoma-lab {atoma_lab.__version__}"


@pytest.mark.integration
@pytest.mark.parametrize("route", ["plain", "confidential"])
def test_embed_reads_the_environment_and_prints_the_openai_response(
        http_net: Network, route: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATOMA_LAB_BASE_URL", str(http_net.base_url))
    monkeypatch.setenv("ATOMA_LAB_API_KEY", http_net.api_key)
    extra = ["--confidential"] if route == "confidential" else []
    assert main(["embed", "--json", "--model", MODEL, *extra, *TEXTS]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["object"] == "list" and answer["model"] == MODEL
    got = np.array([d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])],
                   dtype=np.float32)
    np.testing.assert_array_equal(got, expected_vectors(TEXTS))
    assert answer["usage"]["total_tokens"] == expected_units(TEXTS)


@pytest.mark.integration
def test_embed_flags_win_over_the_environment(http_net: Network, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATOMA_LAB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("ATOMA_LAB_API_KEY", "not-the-key")
    assert main(["embed", "--base-url", str(http_net.base_url), "--api-key", http_net.api_key,
                 "--model", MODEL, "hello"]) == 0
    out = capsys.readouterr().out
    assert "dim=32" in out and "usage:" in out


def test_embed_with_a_proxy_but_no_key_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOMA_LAB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("ATOMA_LAB_API_KEY", raising=False)
    with pytest.raises(SystemExit, match="ATOMA_LAB_API_KEY"):
        main(["embed", "hello"])


@pytest.mark.parametrize("command", [["serve"], ["node", "--proxy", "http://127.0.0.1:9"],
                                     ["proxy", "--node", "http://127.0.0.1:9"]])
def test_every_service_command_takes_a_log_level(command: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(command).log_level == "INFO"
    assert parser.parse_args([*command, "--log-level", "debug"]).log_level == "DEBUG"
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--log-level", "chatty"])


def test_the_log_level_applies_to_atoma_labs_loggers() -> None:
    logger = logging.getLogger("atoma_lab")
    before = logger.level
    try:
        _setup_logging(build_parser().parse_args(["proxy", "--node", "http://x", "--log-level",
                                                  "WARNING"]))
        assert logging.getLogger("atoma_lab.proxy").getEffectiveLevel() == logging.WARNING
        _setup_logging(build_parser().parse_args(["proxy", "--node", "http://x", "--log-level",
                                                  "DEBUG"]))
        assert logging.getLogger("atoma_lab.node").isEnabledFor(logging.DEBUG)
    finally:
        logger.setLevel(before)


def test_node_engine_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["node", "--proxy", "http://127.0.0.1:9", "--device", "cpu",
                              "--dtype", "bfloat16", "--engine-mode", "fast",
                              "--batch-tokens", "4096"])
    assert _engine_options(args) == {"device": "cpu", "dtype": "bfloat16", "mode": "fast",
                                     "max_batch_tokens": 4096}
    assert _engine_options(parser.parse_args(["node", "--proxy", "http://127.0.0.1:9"])) == {}
    assert _engine_options(parser.parse_args(["serve", "--engine-mode", "exact"])) == {
        "mode": "exact"}
    assert _engine_options(parser.parse_args(["serve", "--engine-mode", "fast",
                                              "--remeasure"])) == {"mode": "fast",
                                                                   "remeasure": True}
    assert _engine_options(parser.parse_args(["node", "--proxy", "x", "--engine-mode", "fast",
                                              "--attention", "sdpa"])) == {"mode": "fast",
                                                                           "attention": "sdpa"}
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--attention", "flash"])
    for flag in (["--remeasure"], ["--attention", "native"]):
        with pytest.raises(SystemExit, match=flag[0]):
            _engine_options(parser.parse_args(["serve", "--model", "atoma-lab/fake-embedder",
                                               *flag]))
    with pytest.raises(SystemExit):
        parser.parse_args(["node", "--proxy", "x", "--dtype", "int4"])
    backend = parser.parse_args(["node", "--proxy", "x", "--backend", "http://127.0.0.1:9",
                                 "--device", "cpu"])
    with pytest.raises(SystemExit, match="not --backend"):
        _node_embedder(backend)


@pytest.mark.integration
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_node_sends_its_backend_api_key(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FakeBackend("openai", model=MODEL)
    try:
        args = ["node", "--proxy", "http://127.0.0.1:9", "--backend", backend.url, "--model", MODEL]
        if how == "flag":
            monkeypatch.setenv("ATOMA_LAB_BACKEND_API_KEY", "from-the-environment")
            args += ["--backend-api-key", "sk-flag"]
        else:
            monkeypatch.setenv("ATOMA_LAB_BACKEND_API_KEY", "sk-environment")
        embedder = _node_embedder(build_parser().parse_args(args))

        async def once() -> None:
            try:
                await embedder.embed(CreateEmbeddingRequest(input=["hello"], model=MODEL))
            finally:
                await embedder.aclose()

        asyncio.run(once())
        assert backend.state.authorization == [f"Bearer sk-{how}"]
    finally:
        backend.stop()


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
