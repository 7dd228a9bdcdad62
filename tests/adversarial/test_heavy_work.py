"""Heavy work at a node (issue 16, item 6): a request over its units is refused right after
tokenising, before any forward runs; a heavy request of one stack delays another stack's small
one by a chunk, not by all of its work; work whose caller has gone (the proxy timed out, or the
client went away) is dropped before it runs. The engine is the fake one behind a gate, so the
tests count and order its forwards instead of timing them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import pytest
from fakes import error_of, headers, settlements

from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.encoding import serde_compact
from atoma_lab.errors import ComputeUnitsExceededError, TransportTimeoutError
from atoma_lab.inference.batching import DynamicBatcher
from atoma_lab.inference.fake import FakeEngine
from atoma_lab.inference.serving import NodeEmbedder
from atoma_lab.lab.network import Network, build_network
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.transport.base import Headers, Request
from atoma_lab.transport.http import HttpTransport
from atoma_lab.transport.loop import LoopThread

HEAVY = "fake/heavy-work"
WORDS = 254  # words per heavy input: 256 tokens with the two special ones
MODES = ["inprocess", pytest.param("http", marks=pytest.mark.integration)]


class GatedEngine(FakeEngine):
    """The fake engine; each forward records its sequences, then waits for :attr:`gate` (one
    release a forward) unless :attr:`free`."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.gate = threading.Semaphore(0)
        self.free = False
        self.forwards: list[list[list[int]]] = []
        self.entered = threading.Event()

    def embed_tokens(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        self.forwards.append([list(s) for s in sequences])
        self.entered.set()
        if not self.free:
            assert self.gate.acquire(timeout=20), "the test never released this forward"
        return super().embed_tokens(sequences)

    def ran(self, text: str) -> bool:
        """Whether any forward so far held the (one-word) input ``text``."""
        word = self.word_id(text)
        return any(word in seq for fwd in self.forwards for seq in fwd)

    def open_gate(self) -> None:
        self.free = True
        self.gate.release(100)


def _heavy_inputs(n: int) -> list[str]:
    return [" ".join(f"w{i}x{j}" for j in range(WORDS)) for i in range(n)]


def _wait_for(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


@pytest.fixture(params=MODES)
def gated(request: pytest.FixtureRequest) -> Iterator[tuple[Network, GatedEngine, NodeEmbedder]]:
    engine = GatedEngine(model_name=HEAVY, max_seq_length=512)
    embedder = NodeEmbedder(engine)
    net = build_network(nodes=1, mode=request.param, model=HEAVY, embedder=embedder,
                        node_timeout_s=1.0)
    try:
        yield net, engine, embedder
    finally:
        engine.open_gate()
        net.close()
        embedder.close()


def test_a_request_over_its_units_is_refused_before_any_forward(
        gated: tuple[Network, GatedEngine, NodeEmbedder]) -> None:
    """512 inputs of 256 tokens (131,072 tokens) against the default 8,192 units: 413 from the
    node after tokenising, no forward, the lock released with nothing charged."""
    net, engine, _ = gated
    client = net.client()
    n_settled = len(settlements(net))
    with pytest.raises(ComputeUnitsExceededError) as exc:
        client.confidential_embeddings.create(input=_heavy_inputs(512), model=HEAVY)
    assert exc.value.status == 413
    assert engine.forwards == []
    new = settlements(net)[n_settled:]
    assert [(r["units_charged"], r["outcome"]) for r in new] == [(0, "COMPUTE_UNITS_EXCEEDED")]
    assert all(lk.state == "open" for lk in net.ledger.open_locks())
    engine.open_gate()
    assert client.confidential_embeddings.create(input=["fits"], model=HEAVY).usage.total_tokens == 3
    client.close()


def test_the_plain_route_checks_the_locked_units_before_the_model() -> None:
    """The node's plain route takes its limit from ``X-Num-Compute-Units`` (the proxy's
    reservation) and refuses more tokens before any forward (a request signed as the proxy
    signs it, straight to the node)."""
    engine = GatedEngine(model_name=HEAVY, max_seq_length=512)
    embedder = NodeEmbedder(engine)
    net = build_network(nodes=1, model=HEAVY, embedder=embedder)
    try:
        stack = net.client().nodes.lock(HEAVY).stack_small_id
        body = {"input": _heavy_inputs(4), "model": HEAVY}
        signed = Headers({
            "content-type": "application/json",
            "x-signature": net.proxy.signer.sign(blake2b_256(serde_compact(body))).to_base64(),
            "x-stack-small-id": str(stack), "x-num-compute-units": "1000"})
        resp = net.run(net.nodes[0].handle(Request("POST", "/v1/embeddings", signed,
                                                   orjson.dumps(body))))
        assert error_of(resp) == (413, "COMPUTE_UNITS_EXCEEDED")
        assert engine.forwards == []
    finally:
        engine.open_gate()
        net.close()
        embedder.close()


def test_a_small_request_of_another_stack_is_served_while_a_heavy_one_is_queued() -> None:
    """A heavy request (256 inputs, 65,536 tokens, four forwards) of one user, then a one-word
    request of another user (another stack): the small one runs in the next forward and is
    answered while the heavy one still has forwards to go."""
    engine = GatedEngine(model_name=HEAVY, max_seq_length=512)
    embedder = NodeEmbedder(engine)
    net = build_network(nodes=1, model=HEAVY, embedder=embedder)
    heavy_client = net.client()
    small_client = net.client(api_key=net.add_user("small"))
    try:
        with ThreadPoolExecutor(2) as pool:
            heavy = pool.submit(heavy_client.confidential_embeddings.create,
                                input=_heavy_inputs(256), model=HEAVY, max_num_tokens=70_000)
            _wait_for(engine.entered.is_set, "the heavy request's first forward")
            small = pool.submit(small_client.confidential_embeddings.create,
                                input=["smallmarker"], model=HEAVY)
            _wait_for(lambda: len(embedder.batcher.waiting()) == 2,
                      "the small request queued beside the heavy one")
            engine.gate.release()  # the heavy request's first forward ends
            _wait_for(lambda: len(engine.forwards) == 2, "the second forward")
            marker = engine.word_id("smallmarker")
            assert any(marker in seq for seq in engine.forwards[1])  # the small one rides in it
            engine.gate.release()  # the second forward ends: the small request is answered
            small.result(timeout=20)
            assert not heavy.done()  # its third and fourth forwards wait at the gate
            assert small.result().usage.total_tokens == 3
            engine.open_gate()
            assert heavy.result(timeout=30).usage.total_tokens == 256 * 256
        assert len(engine.forwards) == 4  # the small request rode in the heavy one's second
        stacks = {s.user_id: s.stack_small_id for s in net.ledger.stacks()}
        assert len(stacks) == 2
    finally:
        engine.open_gate()
        heavy_client.close()
        small_client.close()
        net.close()
        embedder.close()


def _settled(net: Network, outcome: str) -> list[dict[str, Any]]:
    return [r for r in settlements(net) if r["outcome"] == outcome]


def test_work_whose_caller_timed_out_is_dropped(
        gated: tuple[Network, GatedEngine, NodeEmbedder]) -> None:
    """A holds the engine; B queues behind it. The proxy gives up on both after its node
    timeout (504, nothing charged); B's work is dropped at the node without running, so the
    next request C runs right after A's forward."""
    net, engine, _ = gated
    clients = [net.client() for _ in range(3)]
    try:
        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(clients[0].confidential_embeddings.create, input=["firstmarker"],
                            model=HEAVY)
            _wait_for(engine.entered.is_set, "A's forward")
            b = pool.submit(clients[1].confidential_embeddings.create, input=["droppedmarker"],
                            model=HEAVY)
            for f in (a, b):
                with pytest.raises(TransportTimeoutError):
                    f.result(timeout=30)
        assert len(_settled(net, "GATEWAY_TIMEOUT")) == 2
        engine.open_gate()
        c = clients[2].confidential_embeddings.create(input=["lastmarker"], model=HEAVY)
        assert c.usage.total_tokens == 3
        assert engine.ran("firstmarker") and engine.ran("lastmarker")
        assert not engine.ran("droppedmarker")
    finally:
        for client in clients:
            client.close()


@pytest.mark.integration
def test_work_of_a_client_gone_away_is_dropped_and_its_units_given_back() -> None:
    """Over HTTP: a client gives up on its request (its connection closes) while the request
    waits at the node. The proxy's server cancels the proxy's work, which gives the units back
    (``ABORTED``) and closes the connection to the node, whose server cancels the node's work:
    the request never runs."""
    engine = GatedEngine(model_name=HEAVY, max_seq_length=512)
    embedder = NodeEmbedder(engine)
    net = build_network(nodes=1, mode="http", model=HEAVY, embedder=embedder)
    holder = net.client()
    impatient = LoopThread("impatient-client")
    try:
        with ThreadPoolExecutor(1) as pool:
            a: Future[Any] = pool.submit(holder.confidential_embeddings.create,
                                         input=["firstmarker"], model=HEAVY)
            _wait_for(engine.entered.is_set, "A's forward")
            lock = holder.nodes.lock(HEAVY)
            plaintext = CreateEmbeddingRequest(input=["gonemarker"], model=HEAVY).to_json()
            body = seal_request(plaintext, node_public_key=lock.public_key, model_name=HEAVY,
                                stack_small_id=lock.stack_small_id).request.to_json()
            assert net.base_url is not None
            sent = asyncio.run_coroutine_threadsafe(
                HttpTransport(net.base_url).handle(Request(
                    "POST", "/v1/confidential/embeddings", headers(net.api_key), body)),
                impatient.loop)
            _wait_for(lambda: embedder.batcher.waiting(), "B queued at the node behind A")
            sent.cancel()  # the client gives up: its connection to the proxy closes
            _wait_for(lambda: len(_settled(net, "ABORTED")) == 1, "the proxy giving B's units back")
            _wait_for(lambda: not embedder.batcher.waiting(), "the node dropping B's work")
            engine.open_gate()
            assert a.result(timeout=30).usage.total_tokens == 3
        assert not engine.ran("gonemarker")
        assert [r["units_charged"] for r in _settled(net, "ABORTED")] == [0]
        assert all(lk.state == "open" for lk in net.ledger.open_locks())
    finally:
        engine.open_gate()
        impatient.stop()
        holder.close()
        net.close()
        embedder.close()


def test_the_batcher_drops_cancelled_work_and_takes_flows_in_turn() -> None:
    """At the batcher itself: flows alternate chunk by chunk; a cancelled request's chunks are
    never run."""
    engine = GatedEngine(max_seq_length=64)
    batcher = DynamicBatcher(engine, max_batch_tokens=8, chunk_tokens=8, max_wait_ms=0, gap_ms=0)
    try:
        first = batcher.submit(["hold"], flow="x")
        _wait_for(engine.entered.is_set, "the first forward")
        heavy = batcher.submit([f"h{i} a b c d e" for i in range(3)], flow="a")  # 8 tokens each
        cancelled = batcher.submit(["gone a b c d e"], flow="b")
        light = batcher.submit(["l a b c d e"], flow="c")
        assert cancelled.cancel()
        engine.open_gate()
        for f in (first, heavy, light):
            f.result(timeout=10)
        firsts = [engine.word_id(w) for w in ("h0", "l", "h1", "h2")]
        order = [seq[1] for fwd in engine.forwards[1:] for seq in fwd]
        assert order == firsts  # a, c, a, a: the light flow's turn comes after one chunk
        assert not engine.ran("gone")
    finally:
        engine.open_gate()
        batcher.close()
