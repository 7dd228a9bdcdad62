"""The SDK-shaped clients: construction, inputs of every OpenAI shape, results, error classes,
the one retry on a rotated key, the attestation cache, fresh randomness per request; the async
client under concurrency (in-process and over HTTP), and the sync client from many threads and
from inside a running event loop."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fakes import (
    MODEL,
    expected_units,
    expected_vectors,
    fake_units,
    fake_vector,
    network,
)

from atoma_lab.client import AsyncAtomaLabClient, AtomaLabClient, EmbeddingsResult
from atoma_lab.errors import (
    APIError,
    AuthenticationError,
    InvalidFieldError,
    ModelNotFoundError,
    StackUnavailableError,
    TransportError,
)
from atoma_lab.lab.network import Network
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.transport.base import Headers, Request, Response
from atoma_lab.transport.http import HttpTransport
from atoma_lab.transport.intercept import InterceptTransport

CONF = "/v1/confidential/embeddings"
MODES = ["inprocess", pytest.param("http", marks=pytest.mark.integration)]


@pytest.fixture(scope="module", params=MODES)
def net(request: pytest.FixtureRequest) -> Iterator[Network]:
    n = network(nodes=2, mode=request.param)
    yield n
    n.close()


@pytest.fixture
def client(net: Network) -> Iterator[AtomaLabClient]:
    c = net.client()
    yield c
    c.close()


@pytest.mark.parametrize("cls", [AtomaLabClient, AsyncAtomaLabClient])
def test_construction_needs_somewhere_to_go(cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATOMA_LAB_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="base_url or a transport"):
        cls(api_key="k")
    with pytest.raises(ValueError, match="attestation_policy"):
        cls("http://127.0.0.1:9", api_key="k", verify_attestation=True)
    with pytest.raises(ValueError, match="not an http"):
        cls("ftp://127.0.0.1:9", api_key="k")
    with pytest.raises(ValueError, match="profile"):
        cls("http://127.0.0.1:9", api_key="k", profile="rot13")


@pytest.mark.parametrize("cls", [AtomaLabClient, AsyncAtomaLabClient])
def test_without_arguments_the_client_names_the_variables_it_reads(
        cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATOMA_LAB_BASE_URL", raising=False)
    monkeypatch.delenv("ATOMA_LAB_API_KEY", raising=False)
    with pytest.raises(ValueError, match="ATOMA_LAB_API_KEY"):
        cls("http://127.0.0.1:9")
    monkeypatch.setenv("ATOMA_LAB_API_KEY", "k")
    with pytest.raises(ValueError, match="ATOMA_LAB_BASE_URL"):
        cls()
    monkeypatch.setenv("ATOMA_LAB_API_KEY", "")  # empty counts as unset
    with pytest.raises(ValueError, match="ATOMA_LAB_API_KEY"):
        cls("http://127.0.0.1:9")


@pytest.mark.integration
def test_the_clients_read_the_proxy_and_key_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with network(mode="http") as net:
        monkeypatch.setenv("ATOMA_LAB_BASE_URL", str(net.base_url))
        monkeypatch.setenv("ATOMA_LAB_API_KEY", net.api_key)
        with AtomaLabClient() as client:
            assert (client.base_url, client.api_key) == (net.base_url, net.api_key)
            out = client.confidential_embeddings.create(input="from the environment", model=MODEL)
            np.testing.assert_array_equal(out.to_numpy(), expected_vectors("from the environment"))

        async def in_a_loop() -> list[str]:
            async with AsyncAtomaLabClient() as aclient:
                return await aclient.models.list()

        assert asyncio.run(in_a_loop()) == [MODEL]
        # Arguments win over the environment.
        monkeypatch.setenv("ATOMA_LAB_API_KEY", "not-a-key")
        with AtomaLabClient() as wrong, pytest.raises(AuthenticationError):
            wrong.models.list()
        with AtomaLabClient(api_key=net.api_key) as client:
            assert client.models.list() == [MODEL]


def test_a_transport_given_is_not_redirected_by_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOMA_LAB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    with network() as net, AtomaLabClient(api_key=net.api_key,
                                           transport=net.client_transport()) as client:
        assert client.base_url is None
        assert client.models.list() == [MODEL]


def test_a_base_url_alone_means_http() -> None:
    c = AtomaLabClient("http://127.0.0.1:9", api_key="secret-key")
    assert isinstance(c.transport, HttpTransport) and c.transport.base_url == "http://127.0.0.1:9"
    assert "secret-key" not in repr(c)
    c.close()


def test_a_transport_can_be_given(net: Network) -> None:
    hook = InterceptTransport(net.client_transport())
    c = AtomaLabClient(api_key=net.api_key, transport=hook)
    assert c.models.list() == [MODEL]
    assert hook.paths() == ["/v1/models"]
    c.close()


def test_client_as_context_manager_closes_its_transport(net: Network) -> None:
    closed: list[bool] = []

    class Closing(InterceptTransport):
        async def aclose(self) -> None:
            closed.append(True)
            await super().aclose()

    with AtomaLabClient(api_key=net.api_key, transport=Closing(net.client_transport())) as c:
        c.models.list()
    assert closed == [True]

    async def use() -> list[str]:
        async with AsyncAtomaLabClient(api_key=net.api_key,
                                       transport=Closing(net.client_transport())) as ac:
            return await ac.models.list()

    assert asyncio.run(use()) == [MODEL]
    assert closed == [True, True]


@pytest.mark.parametrize("inputs", [
    "a single string",
    ["a", "list", "of strings"],
    ("a", "tuple"),
    [101, 2023, 102],
    [[101, 7592], [101, 2088, 102]],
])
def test_every_input_shape(client: AtomaLabClient, inputs: Any) -> None:
    items = CreateEmbeddingRequest(input=list(inputs) if isinstance(inputs, tuple) else inputs,
                                   model=MODEL).inputs()
    want = np.stack([fake_vector(x) for x in items])
    for create in (client.confidential_embeddings.create, client.embeddings.create):
        result = create(input=inputs, model=MODEL)
        np.testing.assert_array_equal(result.to_numpy(), want)
        assert result.usage.total_tokens == sum(fake_units(x) for x in items)


def test_dimensions_travel_to_the_engine(client: AtomaLabClient) -> None:
    for create in (client.confidential_embeddings.create, client.embeddings.create):
        result = create(input=["a", "b"], model=MODEL, dimensions=8)
        assert result.to_numpy().shape == (2, 8)
        np.testing.assert_array_equal(result.to_numpy(), expected_vectors(["a", "b"])[:, :8])


def test_the_sealed_plaintext_is_the_openai_request(client: AtomaLabClient) -> None:
    result = client.confidential_embeddings.create(input=["x"], model=MODEL, user="u-1",
                                                   encoding_format="float")
    assert orjson.loads(result.raw["plaintext"]) == {
        "input": ["x"], "model": MODEL, "encoding_format": "float", "user": "u-1"}
    assert set(result.raw["request"]) >= {"ciphertext", "stack_small_id", "nonce", "salt",
                                          "client_dh_public_key", "node_dh_public_key",
                                          "plaintext_body_hash", "model_name"}
    assert result.raw["request"]["stream"] is False


def test_every_request_uses_fresh_randomness(client: AtomaLabClient) -> None:
    a = client.confidential_embeddings.create(input="same", model=MODEL).raw["request"]
    b = client.confidential_embeddings.create(input="same", model=MODEL).raw["request"]
    for field in ("nonce", "salt", "client_dh_public_key", "ciphertext"):
        assert a[field] != b[field], field
    assert a["plaintext_body_hash"] == b["plaintext_body_hash"]


def test_result_is_ordered_by_index() -> None:
    from atoma_lab.protocol.openai import CreateEmbeddingResponse
    from atoma_lab.services.trace import Trace

    payload = {"object": "list", "model": MODEL, "usage": {"prompt_tokens": 2, "total_tokens": 2},
               "data": [{"index": 1, "embedding": [1.0, 1.0]}, {"index": 0, "embedding": [0.0, 0.5]}]}
    result = EmbeddingsResult(CreateEmbeddingResponse.from_dict(payload), Trace())
    np.testing.assert_array_equal(result.to_numpy(), np.array([[0.0, 0.5], [1.0, 1.0]], np.float32))
    assert result.model == MODEL and result.object == "list" and len(result.data) == 2


def test_errors_come_back_as_their_classes(net: Network) -> None:
    bad = AtomaLabClient(net.base_url, api_key="not-a-key", transport=net.client_transport())
    with pytest.raises(AuthenticationError) as auth:
        bad.confidential_embeddings.create(input="x", model=MODEL)
    assert auth.value.status == 401 and auth.value.code == "AUTH_ERROR"
    with pytest.raises(AuthenticationError):
        bad.models.list()
    bad.close()
    good = net.client()
    with pytest.raises(ModelNotFoundError):
        good.confidential_embeddings.create(input="x", model="no/such-model")
    with pytest.raises(ModelNotFoundError):
        good.embeddings.create(input="x", model="no/such-model")
    with pytest.raises(InvalidFieldError):
        good.embeddings.create(input=["x"] * 2049, model=MODEL)
    good.close()


def test_a_non_json_error_is_an_api_error(net: Network) -> None:
    def after(request: Request, response: Response) -> Response:
        return Response(502, b"<html>Bad Gateway</html>", Headers({"content-type": "text/html"}))

    c = AtomaLabClient(api_key=net.api_key,
                       transport=InterceptTransport(net.client_transport(), after=after))
    with pytest.raises(APIError) as exc:
        c.models.list()
    assert exc.value.status == 502 and exc.value.code == "HTTP_ERROR"


def test_an_unknown_error_code_keeps_status_and_code(net: Network) -> None:
    def after(request: Request, response: Response) -> Response:
        return Response.json({"error": {"code": "FIAT_PAYMENTS_ONLY", "message": "fiat"}}, 400)

    c = AtomaLabClient(api_key=net.api_key,
                       transport=InterceptTransport(net.client_transport(), after=after))
    with pytest.raises(APIError) as exc:
        c.embeddings.create(input="x", model=MODEL)
    assert (exc.value.status, exc.value.code, exc.value.message) == (400, "FIAT_PAYMENTS_ONLY", "fiat")


def test_only_a_stale_key_is_retried(net: Network) -> None:
    """425 (no lock) is not retried: the client makes exactly one lock and one send."""
    def after(request: Request, response: Response) -> Response | None:
        if request.path == CONF:
            return Response.json({"error": {"code": "UNAVAILABLE_STACK", "message": "no"}}, 425)
        return None

    hook = InterceptTransport(net.client_transport(), after=after)
    c = AtomaLabClient(api_key=net.api_key, transport=hook)
    with pytest.raises(StackUnavailableError):
        c.confidential_embeddings.create(input="x", model=MODEL)
    assert hook.paths() == ["/v1/nodes/lock", CONF]
    net.ledger.prune_expired(net.proxy.clock() + 3600)


def test_verified_keys_are_cached(net: Network) -> None:
    hook = InterceptTransport(net.client_transport())
    c = AtomaLabClient(api_key=net.api_key, transport=hook,
                       attestation_policy=net.attestation_policy(), verify_attestation=True)
    for _ in range(4):
        c.confidential_embeddings.create(input="x", model=MODEL)
    fetches = [p for p in hook.paths() if p.startswith("/v1/nodes/attestation")]
    assert 1 <= len(fetches) <= len(net.nodes)
    assert len(c.verified_nodes) == len(fetches)


def test_max_num_tokens_sizes_the_lock(net: Network, client: AtomaLabClient) -> None:
    result = client.confidential_embeddings.create(input="a b c", model=MODEL, max_num_tokens=5)
    assert result.usage.total_tokens == expected_units("a b c") == 5
    last = net.ledger.settlements()[-1]
    assert (last["units_locked"], last["units_charged"]) == (5, 5)
    from atoma_lab.errors import ComputeUnitsExceededError

    with pytest.raises(ComputeUnitsExceededError):
        client.confidential_embeddings.create(input="a b c d", model=MODEL, max_num_tokens=5)


def test_base64_answer_decodes_as_little_endian_float32(client: AtomaLabClient) -> None:
    result = client.confidential_embeddings.create(input="v", model=MODEL, encoding_format="base64")
    wire = orjson.loads(result.raw["response_plaintext"])["data"][0]["embedding"]
    assert np.frombuffer(base64.b64decode(wire), "<f4").tobytes() == fake_vector("v").tobytes()


# ------------------------------------------------------------------------------ concurrency

CONCURRENT = [f"concurrent request {i} " + "word " * (i % 5) for i in range(64)]


@pytest.fixture(params=MODES)
def fresh(request: pytest.FixtureRequest) -> Iterator[Network]:
    """A network of its own, so that its books hold only what the test did."""
    n = network(nodes=2, mode=request.param)
    yield n
    n.close()


def _books_match(net: Network, results: list[EmbeddingsResult]) -> None:
    """The units charged are the usage the clients saw, request by request; nothing locked."""
    used = [r.usage.total_tokens for r in results]
    settled = net.ledger.settlements()
    assert len(settled) == len(results)
    assert {s["outcome"] for s in settled} == {"charged"}
    assert sorted(int(s["units_charged"]) for s in settled) == sorted(used)
    assert sum(s.already_computed_units for s in net.ledger.stacks()) == sum(used)
    assert all(s.locked_compute_units == 0 for s in net.ledger.stacks())
    assert net.ledger.open_locks() == []


def test_the_async_client_gathers_64_confidential_requests(fresh: Network) -> None:
    """64 concurrent requests in one event loop (``asyncio.run``, as a notebook cell's loop):
    each answer is its own input's (equal to the same request made alone), the books are
    exact, and each node's attestation was fetched once however many requests waited on it."""
    spy = InterceptTransport(fresh.client_transport())

    async def gather() -> list[EmbeddingsResult]:
        async with fresh.async_client(transport=spy, verify_attestation=True) as client:
            return await asyncio.gather(*(
                client.confidential_embeddings.create(input=text, model=MODEL)
                for text in CONCURRENT))

    results = asyncio.run(gather())
    _books_match(fresh, results)
    fetches = [p for p in spy.paths() if p == "/v1/nodes/attestation"]
    assert 1 <= len(fetches) == len({(r.node_small_id) for r in results}) <= len(fresh.nodes)
    alone = fresh.client()
    for text, got in zip(CONCURRENT, results, strict=True):
        np.testing.assert_array_equal(got.to_numpy(), expected_vectors(text))
        assert got.usage.total_tokens == expected_units(text)
        np.testing.assert_array_equal(
            got.to_numpy(), alone.confidential_embeddings.create(input=text, model=MODEL).to_numpy())
        assert set(got.trace.stages_ms) >= {"lock", "attest", "seal", "transport", "open"}
    alone.close()


def test_the_async_client_concurrently_on_the_networks_own_loop(fresh: Network) -> None:
    """Awaited on the loop the in-process services run on, it calls them directly."""
    async def gather() -> list[EmbeddingsResult]:
        client = fresh.async_client()
        try:
            return await asyncio.gather(*(
                client.confidential_embeddings.create(input=text, model=MODEL)
                for text in CONCURRENT[:16]))
        finally:
            await client.aclose()

    results = fresh.run(gather())
    for text, got in zip(CONCURRENT, results, strict=False):
        np.testing.assert_array_equal(got.to_numpy(), expected_vectors(text))
    _books_match(fresh, results)


def test_the_sync_client_from_a_thread_pool(fresh: Network) -> None:
    """One sync client shared by 16 threads, 64 requests: every answer is its own."""
    from concurrent.futures import ThreadPoolExecutor

    client = fresh.client()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(
            lambda text: client.confidential_embeddings.create(input=text, model=MODEL),
            CONCURRENT))
    client.close()
    for text, got in zip(CONCURRENT, results, strict=True):
        np.testing.assert_array_equal(got.to_numpy(), expected_vectors(text))
    _books_match(fresh, results)


def test_the_sync_client_inside_a_running_loop(net: Network) -> None:
    """A notebook cell calls the sync client while the notebook's loop runs: it blocks that
    cell, never the loop its requests run on."""
    client = net.client()

    async def cell() -> list[str]:
        return client.models.list()

    assert asyncio.run(cell()) == [MODEL]
    client.close()


def test_a_hook_may_call_another_client_but_not_its_own(net: Network) -> None:
    """Calling the same sync client from its own hook would wait on itself: refused, not hung."""
    other = net.client()
    client = net.client()
    listed: list[list[str]] = []
    client.transport = InterceptTransport(
        client.transport, before=lambda request: listed.append(other.models.list()) or None)
    assert client.models.list() == [MODEL] and listed == [[MODEL]]
    client.transport = InterceptTransport(
        client.transport, before=lambda request: client.models.list() and None)
    with pytest.raises(RuntimeError, match="await it there"):
        client.models.list()
    other.close()
    client.close()


def test_a_closed_network_is_a_transport_error() -> None:
    net = network(nodes=1)
    client = net.client()
    assert client.models.list() == [MODEL]
    net.close()
    with pytest.raises(TransportError) as exc:
        client.models.list()
    assert exc.value.status == 503
    with pytest.raises(TransportError):
        asyncio.run(net.async_client().models.list())
    client.close()  # nothing left to close: no error either


def test_the_async_client_shares_one_http_transport_across_loops(fresh: Network) -> None:
    """``asyncio.run`` twice with one client (a script's two phases): each loop gets its own
    connections."""
    client = fresh.async_client()
    first = asyncio.run(client.confidential_embeddings.create(input="one", model=MODEL))
    second = asyncio.run(client.confidential_embeddings.create(input="two", model=MODEL))
    np.testing.assert_array_equal(first.to_numpy(), expected_vectors("one"))
    np.testing.assert_array_equal(second.to_numpy(), expected_vectors("two"))
    asyncio.run(client.aclose())


def test_the_sync_client_takes_every_option_of_the_async_one() -> None:
    """One implementation: the sync client's constructor mirrors the async one's, so an option
    added to one cannot be missing from the other."""
    import inspect

    from atoma_lab.client import AsyncAtomaLabClient, AtomaLabClient

    sync = inspect.signature(AtomaLabClient.__init__).parameters
    async_ = inspect.signature(AsyncAtomaLabClient.__init__).parameters
    assert list(sync) == list(async_)
    assert all(sync[n].default == async_[n].default and sync[n].kind == async_[n].kind
               for n in sync)
