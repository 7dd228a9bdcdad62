"""``client.embed_corpus``: a corpus in length-sorted chunks within the route's limits, sent
concurrently, back in corpus order; each chunk retried on the client's rules; the vectors equal
one-by-one requests' and the usage equals what the ledger charged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from fakes import MODEL, expected_units, expected_vectors, fake_embed, network, settlements

from atoma_lab.client import DEFAULT_MODEL, AtomaLabClient, CorpusResult
from atoma_lab.errors import InputTooLongError, NodeFailedError, PeerProtocolError
from atoma_lab.lab.network import Network
from atoma_lab.protocol.openai import MAX_INPUT_CHARS, CreateEmbeddingRequest, EmbeddingUsage
from atoma_lab.services.embedders import CallableEmbedder
from atoma_lab.transport.base import Request, Response
from atoma_lab.transport.intercept import InterceptTransport

CONF = "/v1/confidential/embeddings"


def texts_of(n: int) -> list[str]:
    """Short texts of varied lengths (so that sorting reorders them)."""
    return [f"text {i} " + "word " * (i % 13) for i in range(n)]


def charged(net: Network, since: int = 0) -> int:
    return sum(int(r["units_charged"]) for r in settlements(net)[since:])


@pytest.fixture
def net() -> Iterator[Network]:
    with network(nodes=2) as n:
        yield n


def one_by_one(net: Network, texts: list[str], *, confidential: bool = True) -> np.ndarray:
    """Each text in a request of its own (32 at a time)."""
    client = net.async_client()

    async def run() -> list[np.ndarray]:
        slots = asyncio.Semaphore(32)

        async def one(text: str) -> np.ndarray:
            api = client.confidential_embeddings if confidential else client.embeddings
            async with slots:
                return (await api.create(input=[text], model=MODEL)).to_numpy()[0]
        return await asyncio.gather(*(one(t) for t in texts))

    return np.stack(asyncio.run(run()))


@pytest.mark.slow
def test_5000_short_texts_equal_one_by_one_requests_and_the_ledger(net: Network) -> None:
    texts = texts_of(5000)
    client = net.client()
    result = client.embed_corpus(texts, model=MODEL, show_progress=False)
    assert isinstance(result, CorpusResult) and result.vectors.shape == (5000, 32)
    assert len(result.chunks) > 2  # the 2048-input limit and the lock's units split it
    assert all(len(c.positions) <= 2048 for c in result.chunks)
    assert result.usage.total_tokens == sum(expected_units(t) for t in texts)
    assert charged(net) == result.usage.total_tokens  # what the ledger charged, exactly
    assert net.ledger.open_locks() == []
    n = len(settlements(net))
    singles = one_by_one(net, texts)
    assert float(np.abs(singles - result.vectors).max()) <= 1e-6
    assert charged(net, n) == result.usage.total_tokens
    client.close()


def test_order_is_the_corpus_order_across_many_chunks(net: Network) -> None:
    texts = texts_of(300)
    result = net.client().embed_corpus(texts, model=MODEL, batch_tokens=500, concurrency=3,
                                       show_progress=False)
    assert len(result.chunks) >= 10
    np.testing.assert_array_equal(result.vectors, expected_vectors(texts))
    positions = sorted(p for c in result.chunks for p in c.positions)
    assert positions == list(range(300))
    assert all(c.units_locked >= c.total_tokens for c in result.chunks)
    assert result.usage == EmbeddingUsage(*(2 * [sum(expected_units(t) for t in texts)]))
    assert charged(net) == result.usage.total_tokens
    assert {c.node_small_id for c in result.chunks} <= {1, 2}
    assert "300 texts x 32" in repr(result) and "word" not in repr(result)


def test_the_plain_route(net: Network) -> None:
    texts = texts_of(200)
    result = net.client().embed_corpus(texts, model=MODEL, confidential=False, batch_tokens=800,
                                       show_progress=False)
    assert not result.confidential and len(result.chunks) > 1
    np.testing.assert_array_equal(result.vectors, expected_vectors(texts))
    assert charged(net) == result.usage.total_tokens == sum(expected_units(t) for t in texts)
    np.testing.assert_array_equal(result.vectors, one_by_one(net, texts, confidential=False))


def test_awaited_in_a_running_loop_as_in_a_notebook_cell(net: Network) -> None:
    texts = texts_of(120)

    async def cell() -> CorpusResult:
        async with net.async_client() as client:
            return await client.embed_corpus(texts, model=MODEL, batch_tokens=300,
                                             show_progress=False)

    result = asyncio.run(cell())
    np.testing.assert_array_equal(result.vectors, expected_vectors(texts))


def test_a_chunk_sealed_to_a_rotated_key_is_retried_and_charged_once(net: Network) -> None:
    rotated: list[bool] = []

    def before(request: Request) -> None:
        if request.path == CONF and not rotated:
            rotated.append(True)
            net.rotate(0)
            net.rotate(1)

    client = net.client()
    client.transport = InterceptTransport(client.transport, before=before)
    texts = texts_of(100)
    result = client.embed_corpus(texts, model=MODEL, batch_tokens=400, concurrency=1,
                                 show_progress=False)
    assert result.retried_chunks == 1 and result.chunks[0].attempts == 2
    np.testing.assert_array_equal(result.vectors, expected_vectors(texts))
    outcomes = [r["outcome"] for r in settlements(net)]
    assert outcomes.count("STALE_NODE_KEY") == 1
    assert charged(net) == result.usage.total_tokens
    assert net.ledger.open_locks() == []


def failing_embed(request: CreateEmbeddingRequest) -> tuple[bytes, EmbeddingUsage]:
    if "boom" in request.inputs():
        raise RuntimeError("the engine fell over")
    return fake_embed(request)


def test_a_failing_chunk_raises_and_leaves_nothing_locked() -> None:
    with network(nodes=1, embedder=CallableEmbedder([MODEL], failing_embed)) as net:
        texts = [*texts_of(50), "boom"]
        with pytest.raises(NodeFailedError):
            net.client().embed_corpus(texts, model=MODEL, batch_tokens=200, show_progress=False)
        assert net.ledger.open_locks() == []
        assert all(s.locked_compute_units == 0 for s in net.ledger.stacks())
        # What was charged is what chunks that were served used; the failed one cost nothing.
        failed = [r for r in settlements(net) if r["outcome"] != "charged"]
        assert failed and all(r["units_charged"] == 0 for r in failed)


def test_a_proxy_dropping_a_vector_is_caught(net: Network) -> None:
    def drop_one(request: Request, response: Response) -> Response | None:
        if request.path != "/v1/embeddings" or not response.ok:
            return None
        body = orjson.loads(response.body)
        body["data"] = body["data"][:-1]
        return Response(response.status, orjson.dumps(body), response.headers)

    client = net.client()
    client.transport = InterceptTransport(client.transport, after=drop_one)
    with pytest.raises(PeerProtocolError, match="vectors back"):
        client.embed_corpus(["a", "b", "c"], model=MODEL, confidential=False, show_progress=False)


def test_bad_input_is_refused_before_anything_is_sent(net: Network) -> None:
    client = net.client()
    before = len(net.captured)
    with pytest.raises(TypeError):
        client.embed_corpus("one string", model=MODEL)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        client.embed_corpus(["a", 2], model=MODEL)  # type: ignore[list-item]
    with pytest.raises(InputTooLongError):
        client.embed_corpus(["a", "x" * (MAX_INPUT_CHARS + 1)], model=MODEL)
    with pytest.raises(ValueError):
        client.embed_corpus(["a"], model=MODEL, concurrency=0)
    assert len(net.captured) == before
    empty = client.embed_corpus([], model=MODEL)
    assert empty.vectors.shape[0] == 0 and empty.chunks == [] and empty.usage.total_tokens == 0


def test_to_frame_has_a_row_per_chunk(net: Network) -> None:
    result = net.client().embed_corpus(texts_of(100), model=MODEL, batch_tokens=400,
                                       show_progress=False)
    frame = result.to_frame()
    assert list(frame["chunk"]) == list(range(len(result.chunks)))
    assert int(frame["texts"].sum()) == 100
    assert int(frame["total_tokens"].sum()) == result.usage.total_tokens
    assert {"node_small_id", "attempts", "total_ms", "seal_ms", "node_embed_ms"} <= set(frame)


def test_progress_is_silent_where_it_should_be(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The bar is tqdm.auto's (atoma_lab.display.progress): nothing when output is not a
    terminal, as here, or when TQDM_DISABLE is set."""
    with network() as net:
        net.client().embed_corpus(texts_of(30), model=MODEL)  # show_progress defaults on
        monkeypatch.setenv("TQDM_DISABLE", "1")
        net.client().embed_corpus(texts_of(30), model=MODEL)
    assert "embedding" not in capsys.readouterr().err


def test_it_shows_itself_in_a_notebook(net: Network) -> None:
    result = net.client().embed_corpus(texts_of(50), model=MODEL, batch_tokens=200,
                                       show_progress=False)
    html = result._repr_html_()
    assert "Corpus embedded" in html and "total tokens" in html
    assert "word" not in html  # no text, no vectors


@pytest.mark.slow
def test_the_shipped_model_gives_one_by_one_vectors() -> None:
    """On the real engine, batches of mixed lengths equal single requests to 1e-6."""
    texts = [("Confidential embeddings " + "of private text " * (i % 9) + str(i)).strip()
             for i in range(40)]
    with network(model=DEFAULT_MODEL, embedder=None) as net:
        client = net.client()
        result = client.embed_corpus(texts, model=DEFAULT_MODEL, batch_tokens=1500,
                                     show_progress=False)
        assert len(result.chunks) > 1 and result.vectors.shape == (40, 384)
        assert charged(net) == result.usage.total_tokens
        singles = [client.confidential_embeddings.create(input=[t], model=DEFAULT_MODEL)
                   for t in texts]
        vectors = np.stack([r.to_numpy()[0] for r in singles])
        assert float(np.abs(vectors - result.vectors).max()) <= 1e-6
        # The same tokens, counted chunk by chunk or text by text.
        assert sum(r.usage.total_tokens for r in singles) == result.usage.total_tokens
        client.close()


def test_the_sync_client_has_the_same_signature() -> None:
    import inspect

    from atoma_lab.client import AsyncAtomaLabClient

    sync = inspect.signature(AtomaLabClient.embed_corpus)
    async_ = inspect.signature(AsyncAtomaLabClient.embed_corpus)
    assert list(sync.parameters) == list(async_.parameters)
    assert all(sync.parameters[k].default == async_.parameters[k].default for k in sync.parameters)

