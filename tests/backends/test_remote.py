"""A node backed by :class:`RemoteEmbedder` against fake OpenAI-API and TEI servers on loopback:
it answers what the server computes (vectors, usage) in the in-process engine's JSON, and every
backend failure is a specific error that charges nothing while the network keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fakes import error_of, money, send, settlements

from atoma_lab.errors import (
    AtomaLabError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadBackendResponseError,
    InputTooLongError,
    InvalidFieldError,
    ModelNotFoundError,
)
from atoma_lab.inference import RemoteEmbedder, apply_dimensions, encode_embeddings_response
from atoma_lab.lab.network import Network, build_network
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.openai import CreateEmbeddingRequest, CreateEmbeddingResponse
from atoma_lab.transport.base import Response

from .fake_servers import DIM, MAX_WORDS, FakeBackend, closed_port_url, fake_tokens, fake_vector

pytestmark = pytest.mark.integration  # real sockets on 127.0.0.1

MODEL = "fake/remote-24"
INPUTS = ["hello world", "the quick brown fox jumps", "Zürich 東京 🚀 naïve café"]
MODES = ["inprocess", "http"]
SECRET = "SECRETWORD"  # must never appear in an error that leaves the node


@pytest.fixture(params=["openai", "tei"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(api: str) -> Iterator[FakeBackend]:
    fake = FakeBackend(api, model=MODEL)
    yield fake
    fake.stop()


def remote(backend: FakeBackend, **options: Any) -> RemoteEmbedder:
    options.setdefault("timeout_s", 5.0)
    return RemoteEmbedder(backend.url, api=backend.api, model=MODEL, **options)  # type: ignore[arg-type]


@pytest.fixture
def make_net() -> Iterator[Callable[..., Network]]:
    made: list[tuple[Network, RemoteEmbedder]] = []

    def make(embedder: RemoteEmbedder, mode: str = "inprocess", **options: Any) -> Network:
        net = build_network(model=MODEL, embedder=embedder, mode=mode, **options)  # type: ignore[arg-type]
        made.append((net, embedder))
        return net

    yield make
    for net, embedder in made:
        embedder.close()  # its pooled connections live in the network's loop
        net.close()


def direct(backend: FakeBackend, inputs: list[str]) -> tuple[np.ndarray, int]:
    """The fake's own answer, asked directly: vectors and its token count."""
    if backend.api == "openai":
        r = httpx.post(backend.url + "/embeddings", json={"input": inputs, "model": MODEL})
        parsed = CreateEmbeddingResponse.from_json(r.content)
        return parsed.to_numpy(), parsed.usage.prompt_tokens
    r = httpx.post(backend.url + "/embed", json={"inputs": inputs, "truncate": True})
    return np.array(r.json(), dtype=np.float32), int(r.headers["x-compute-tokens"])


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ------------------------------------------------------------------------------- serving


@pytest.mark.parametrize("mode", MODES)
def test_a_node_serves_the_backends_vectors_and_usage(backend: FakeBackend, mode: str,
                                                      make_net: Callable[..., Network]) -> None:
    net = make_net(remote(backend), mode)
    client = net.client()
    want, units = direct(backend, INPUTS)
    assert units == sum(fake_tokens(x) for x in INPUTS)
    conf = client.confidential_embeddings.create(input=INPUTS, model=MODEL)
    assert np.array_equal(conf.to_numpy(), want)
    assert conf.usage.total_tokens == conf.usage.prompt_tokens == units
    assert conf.model == MODEL
    b64 = client.confidential_embeddings.create(input=INPUTS, model=MODEL, encoding_format="base64")
    assert np.array_equal(b64.to_numpy(), want)
    plain = client.embeddings.create(input=INPUTS, model=MODEL)
    assert np.array_equal(plain.to_numpy(), want)
    assert plain.usage.total_tokens == units
    cut = client.confidential_embeddings.create(input=INPUTS, model=MODEL, dimensions=8)
    assert np.array_equal(cut.to_numpy(), apply_dimensions(want, 8, model_dimensions=DIM))
    # The ledger charged exactly the backend's usage, four times.
    assert sum(s.already_computed_units for s in net.ledger.stacks()) == 4 * units
    client.close()


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
@pytest.mark.parametrize("dimensions", [None, DIM, 8])
def test_the_answer_is_the_engines_json(backend: FakeBackend, encoding_format: str | None,
                                        dimensions: int | None) -> None:
    """Byte for byte what encode_embeddings_response (the in-process engine's writer) gives for
    the backend's vectors; ``dimensions`` applied here, never forwarded."""
    embedder = remote(backend)
    request = CreateEmbeddingRequest(input=INPUTS, model=MODEL, encoding_format=encoding_format,  # type: ignore[arg-type]
                                     dimensions=dimensions)
    out = run(embedder.embed(request))
    want, units = direct(backend, INPUTS)
    expected = encode_embeddings_response(apply_dimensions(want, dimensions, model_dimensions=DIM),
                                          model=MODEL, prompt_tokens=units,
                                          encoding_format=encoding_format)  # type: ignore[arg-type]
    assert out.body == expected
    assert list(orjson.loads(out.body)) == ["object", "data", "model", "usage"]
    assert (out.usage.prompt_tokens, out.usage.total_tokens) == (units, units)
    sent = backend.calls("/v1/embeddings" if backend.api == "openai" else "/embed")
    assert sent and all("dimensions" not in body for body in sent)


def test_served_name_and_aliases(backend: FakeBackend) -> None:
    embedder = remote(backend, served_name="mini", aliases=["mini-2"])
    assert list(embedder.models) == ["mini", "mini-2"]
    out = run(embedder.embed(CreateEmbeddingRequest(input="hi there", model="mini-2")))
    assert orjson.loads(out.body)["model"] == "mini-2"
    if backend.api == "openai":  # the backend is asked for its own name
        assert backend.calls("/v1/embeddings")[-1]["model"] == MODEL
    with pytest.raises(ModelNotFoundError):
        run(embedder.embed(CreateEmbeddingRequest(input="hi", model=MODEL)))


def test_dimensions_larger_than_the_model_are_refused(backend: FakeBackend) -> None:
    embedder = remote(backend)
    too_many = CreateEmbeddingRequest(input="hi", model=MODEL, dimensions=DIM + 1)
    with pytest.raises(InvalidFieldError) as first:  # learnt from the answer
        run(embedder.embed(too_many))
    assert first.value.field == "dimensions" and first.value.status == 400
    calls = len(backend.state.calls)
    with pytest.raises(InvalidFieldError):  # now refused before the backend is asked
        run(embedder.embed(too_many))
    assert len(backend.state.calls) == calls


def test_data_out_of_index_order_is_put_in_order() -> None:
    backend = FakeBackend("openai", model=MODEL)
    try:
        backend.state.mode = "reversed"
        out = run(remote(backend).embed(CreateEmbeddingRequest(input=INPUTS, model=MODEL)))
        got = CreateEmbeddingResponse.from_json(out.body).to_numpy()
        assert np.array_equal(got, np.stack([fake_vector(x) for x in INPUTS]))
    finally:
        backend.stop()


def test_tei_requests_are_split_at_its_batch_limit() -> None:
    backend = FakeBackend("tei", model=MODEL)
    try:
        inputs = [f"text number {i} " + "word " * (i % 7) for i in range(70)]
        out = run(remote(backend).embed(CreateEmbeddingRequest(input=inputs, model=MODEL)))
        # the chunks go concurrently, so the server may see them in any order
        sent = [b["inputs"] for b in backend.calls("/embed")]
        assert sorted(len(b) for b in sent) == [6, 32, 32]
        assert sorted(x for b in sent for x in b) == sorted(inputs)
        got = CreateEmbeddingResponse.from_json(out.body).to_numpy()
        assert np.array_equal(got, np.stack([fake_vector(x) for x in inputs]))
        assert out.usage.prompt_tokens == sum(fake_tokens(x) for x in inputs)
    finally:
        backend.stop()


def test_tei_without_the_tokens_header_counts_with_tokenize() -> None:
    backend = FakeBackend("tei", model=MODEL)
    try:
        backend.state.mode = "no_tokens_header"
        long_text = " ".join(["word"] * (MAX_WORDS + 10))  # truncated to MAX_WORDS + 2 tokens
        inputs = ["short one", long_text]
        out = run(remote(backend).embed(CreateEmbeddingRequest(input=inputs, model=MODEL)))
        assert out.usage.prompt_tokens == fake_tokens("short one") + MAX_WORDS + 2
        assert backend.calls("/tokenize") == [{"inputs": inputs, "add_special_tokens": True}]
        assert backend.calls("/embed")[0]["truncate"] is True
    finally:
        backend.stop()


def test_a_token_counter_replaces_the_backends_usage(backend: FakeBackend) -> None:
    seen: list[Any] = []

    def counter(inputs: list[str] | list[list[int]]) -> list[int]:
        seen.append(inputs)
        return [7] * len(inputs)

    out = run(remote(backend, token_counter=counter).embed(
        CreateEmbeddingRequest(input=INPUTS, model=MODEL)))
    assert out.usage.prompt_tokens == out.usage.total_tokens == 21
    assert seen == [INPUTS]


def test_the_client_follows_the_event_loop(backend: FakeBackend) -> None:
    """Each loop gets its own pooled client (httpx connections belong to one loop)."""
    embedder = remote(backend)
    request = CreateEmbeddingRequest(input="again", model=MODEL)
    first = run(embedder.embed(request))
    second = run(embedder.embed(request))  # a new loop: a new client, no error
    assert first.body == second.body

    async def twice() -> None:
        await embedder.embed(request)
        await embedder.aclose()
        await embedder.aclose()  # idempotent
        await embedder.embed(request)
        await embedder.aclose()

    run(twice())


# ------------------------------------------------------------------------------- retries


class _DropFirstConnection:
    """A raw HTTP/1.1 server on 127.0.0.1 that closes its first connection without answering,
    then answers every request with ``body``."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        if self.connections > 1:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(self.body), self.body))
            await writer.drain()
        writer.close()


@pytest.mark.parametrize("retries", [0, 1])
def test_a_dropped_connection_is_sent_again_once(retries: int) -> None:
    vec = fake_vector("x")
    body = orjson.dumps({"object": "list", "data": [{"object": "embedding", "index": 0,
                                                     "embedding": [float(v) for v in vec]}],
                         "model": MODEL, "usage": {"prompt_tokens": 3, "total_tokens": 3}})

    async def scenario() -> Any:
        server_side = _DropFirstConnection(body)
        server = await asyncio.start_server(server_side.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        embedder = RemoteEmbedder(f"http://127.0.0.1:{port}", model=MODEL, retries=retries,
                                  timeout_s=5, wire_format="float")
        try:
            return await embedder.embed(CreateEmbeddingRequest(input="x", model=MODEL))
        finally:
            await embedder.aclose()
            server.close()

    if retries == 0:
        with pytest.raises(BadBackendResponseError) as info:
            run(scenario())
        assert info.value.status == 502
    else:
        out = run(scenario())
        assert np.array_equal(CreateEmbeddingResponse.from_json(out.body).to_numpy()[0], vec)


# ------------------------------------------------------------------------------- failures


def _confidential(net: Network, inputs: list[str]) -> Response:
    lock = net.client().nodes.lock(MODEL)
    plaintext = CreateEmbeddingRequest(input=inputs, model=MODEL).to_json()
    body = seal_request(plaintext, node_public_key=lock.public_key,
                        stack_small_id=lock.stack_small_id, model_name=MODEL).request.to_json()
    return send(net, "POST", "/v1/confidential/embeddings", body)


def _plain(net: Network, inputs: list[str]) -> Response:
    return send(net, "POST", "/v1/embeddings", {"input": inputs, "model": MODEL})


ROUTES = {"confidential": _confidential, "plain": _plain}
LONG = " ".join([SECRET] * (MAX_WORDS + 5))

# failure: (fake's mode, error the embedder raises, the node's status)
FAILURES: dict[str, tuple[str, type[AtomaLabError], int]] = {
    "down": ("down", BackendUnavailableError, 503),
    "hang": ("hang", BackendTimeoutError, 504),
    "500": ("status:500", BadBackendResponseError, 502),
    "424": ("status:424", BadBackendResponseError, 502),  # TEI's backend error
    "503": ("status:503", BackendUnavailableError, 503),
    "429": ("status:429", BackendUnavailableError, 503),  # overloaded
    "504": ("status:504", BackendTimeoutError, 504),
    "401": ("status:401", BadBackendResponseError, 502),  # the node's key is wrong
    "garbage": ("garbage", BadBackendResponseError, 502),
    "wrong_count": ("wrong_count", BadBackendResponseError, 502),
    "non_finite": ("nan", BadBackendResponseError, 502),
    "too_long": ("ok", InputTooLongError, 400),  # the caller's input
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_backend_failure_is_a_specific_error_and_charges_nothing(
        api: str, mode: str, failure: str, make_net: Callable[..., Network]) -> None:
    fake_mode, error, status = FAILURES[failure]
    backend = FakeBackend(api, model=MODEL)
    # A generous time bound, so that a loaded machine cannot turn an answer into a timeout;
    # the hanging backend gets a short one, which is what it tests.
    embedder = RemoteEmbedder(backend.url, api=api, model=MODEL, timeout_s=30.0,  # type: ignore[arg-type]
                              truncate=False)
    try:
        net = make_net(embedder, mode)
        client = net.client()
        client.confidential_embeddings.create(input=["warm up"], model=MODEL)
        if failure == "hang":
            embedder.timeout_s = 0.5
        inputs = [LONG] if failure == "too_long" else [f"a {SECRET} input", "another"]
        if fake_mode == "down":
            backend.stop()
        else:
            backend.state.mode = fake_mode
        # The embedder itself: the documented class, status and code.
        with pytest.raises(error) as info:
            net.run(embedder.embed(CreateEmbeddingRequest(input=inputs, model=MODEL)), 10)
        assert info.value.status == status
        assert SECRET not in info.value.message
        # Through the proxy: a caller's fault keeps the node's status and code, a node's 5xx is
        # 502 NODE_ERROR naming the node's status; nothing is charged.
        before, n = money(net), len(settlements(net))
        node_failed = net.nodes[0].metrics.render().decode()
        for route in ROUTES.values():
            resp = route(net, inputs)
            if status < 500:
                assert error_of(resp) == (status, error.code)
            else:
                assert error_of(resp) == (502, "NODE_ERROR")
                assert f"node 1 failed with {status}" in orjson.loads(resp.body)["error"]["message"]
            assert SECRET.encode() not in resp.body
        assert money(net) == before
        assert net.ledger.open_locks() == []
        assert all(s.locked_compute_units == 0 for s in net.ledger.stacks())
        new = settlements(net)[n:]
        assert [r["units_charged"] for r in new] == [0, 0]
        assert f'code="{error.code}"' in net.nodes[0].metrics.render().decode()
        assert f'code="{error.code}"' not in node_failed or failure == "too_long"
        # The backend back, the same node serves again.
        if fake_mode == "down":
            backend = FakeBackend(api, model=MODEL, port=backend.port)
        backend.state.mode = "ok"
        embedder.timeout_s = 30.0
        ok = ["after the failure"]
        for route in ROUTES.values():
            assert route(net, ok).status == 200
        result = client.confidential_embeddings.create(input=ok, model=MODEL)
        assert np.array_equal(result.to_numpy(), fake_vector(ok[0])[None, :])
        assert result.usage.total_tokens == fake_tokens(ok[0])
        client.close()
    finally:
        backend.stop()


def test_an_unreachable_backend_is_503_without_waiting() -> None:
    embedder = RemoteEmbedder(closed_port_url(), model=MODEL, timeout_s=5, retries=1)
    with pytest.raises(BackendUnavailableError) as info:
        run(embedder.embed(CreateEmbeddingRequest(input="x", model=MODEL)))
    assert info.value.code == "BACKEND_UNAVAILABLE" and info.value.status == 503


@pytest.mark.parametrize("kwargs", [{"api": "grpc"}, {"wire_format": "fp16"}, {"timeout_s": 0},
                                    {"retries": -1}, {"max_inputs_per_call": 0}])
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RemoteEmbedder("http://127.0.0.1:1", model=MODEL, **kwargs)
    with pytest.raises(ValueError):
        RemoteEmbedder("127.0.0.1:1", model=MODEL)
