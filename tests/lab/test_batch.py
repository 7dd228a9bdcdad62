"""``embed_dataset``: a corpus on Ray Data through a network's confidential route, from a pool of
client actors; vectors equal to single confidential requests, the ledger's charge exact."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import MODEL, expected_units, expected_vectors, network, settlements

from atoma_lab.lab.batch import DatasetEmbedding, embed_dataset
from atoma_lab.lab.network import Network

pytestmark = pytest.mark.ray


def texts_of(n: int) -> list[str]:
    return [f"document {i} " + "about sealed retrieval " * (i % 11) for i in range(n)]


@pytest.fixture(scope="module")
def ray_net(ray_local: Any) -> Iterator[Network]:
    net = network(nodes=2, mode="ray")
    yield net
    net.close()


def singles(net: Network, texts: list[str]) -> np.ndarray:
    """Each text in a confidential request of its own."""
    client = net.async_client()

    async def run() -> list[np.ndarray]:
        slots = asyncio.Semaphore(32)

        async def one(text: str) -> np.ndarray:
            async with slots:
                r = await client.confidential_embeddings.create(input=[text], model=MODEL)
                return r.to_numpy()[0]
        return await asyncio.gather(*(one(t) for t in texts))

    return np.stack(asyncio.run(run()))


def charged(net: Network, since: int = 0) -> int:
    return sum(int(r["units_charged"]) for r in settlements(net)[since:])


def test_2000_texts_equal_single_confidential_requests_and_the_ledger(ray_net: Network) -> None:
    texts = texts_of(2000)
    n = len(settlements(ray_net))
    out = embed_dataset(texts, network=ray_net, model=MODEL, rows_per_batch=500, clients=2,
                        show_progress=False)
    assert isinstance(out, DatasetEmbedding) and out.vectors is not None and out.ids is not None
    assert out.vectors.shape == (2000, 32)
    np.testing.assert_array_equal(out.ids, np.arange(2000))
    want = sum(expected_units(t) for t in texts)
    s = out.summary
    assert (s.documents, s.tokens, s.units_charged) == (2000, want, want)
    assert charged(ray_net, n) == want and ray_net.ledger.open_locks() == []
    assert s.chunks >= 4 and s.wall_s > 0 and s.documents_per_s > 0
    # Every vector equals what a single confidential request for its text returns.
    one_by_one = singles(ray_net, texts)
    assert float(np.abs(one_by_one - out.vectors).max()) <= 1e-6
    np.testing.assert_array_equal(out.vectors, expected_vectors(texts))


def test_a_dataframe_column_with_ids_into_parquet(ray_net: Network, tmp_path: Path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    texts = texts_of(300)
    frame = pd.DataFrame({"doc": [f"d-{i}" for i in range(300)], "body": texts,
                          "other": range(300)})
    path = tmp_path / "vectors.parquet"
    out = embed_dataset(frame, network=ray_net, model=MODEL, column="body", id_column="doc",
                        output=path, rows_per_batch=64, show_progress=False)
    assert out.path == str(path) and out.vectors is None
    table = pq.read_table(path)
    assert table.column_names == ["id", "embedding"]
    assert table.column("id").to_pylist() == list(frame["doc"])
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(vectors, expected_vectors(texts))
    assert out.summary.units_charged == out.summary.tokens == sum(expected_units(t) for t in texts)


def test_an_in_process_network_through_a_relay(ray_local: Any) -> None:
    """The proxy of an in-process network is reached by the client actors through a relay."""
    texts = texts_of(150)
    with network(nodes=1) as net:
        out = embed_dataset(texts, network=net, model=MODEL, rows_per_batch=40,
                            confidential=False, show_progress=False)
        np.testing.assert_array_equal(out.to_numpy(), expected_vectors(texts))
        assert out.summary.units_charged == sum(expected_units(t) for t in texts)
        assert {r["route"] for r in settlements(net)} == {"plain"}
        assert net.relay is not None


def test_bad_arguments(ray_net: Network, tmp_path: Path) -> None:
    import ray

    with pytest.raises(ValueError, match="base_url"):
        embed_dataset(["a"], model=MODEL)
    with pytest.raises(ValueError, match="id_column"):
        embed_dataset(ray.data.from_items([{"text": "a"}]), network=ray_net, model=MODEL)
    with pytest.raises(ValueError):
        embed_dataset(["a"], network=ray_net, model=MODEL, clients=0)
