"""Whole corpora through a network's confidential route, on Ray Data: :func:`embed_dataset`.

    >>> net = build_network(nodes=4, mode="ray")
    >>> out = embed_dataset(texts, network=net)                  # a list, a DataFrame, files
    >>> out.vectors.shape, out.summary.documents_per_s

The texts (a list, a pandas DataFrame column, Parquet or CSV files, or a Ray Dataset) are cut
into blocks of ``rows_per_batch`` rows; a pool of ``clients`` client actors takes them, each
embedding its block with :meth:`~atoma_lab.client.AtomaLabClient.embed_corpus` (length-sorted
chunks within the route's limits, every chunk locked, sealed, sent, opened and checked in the
actor, retried on the client's rules). The driver collects the vectors with their ids into a
numpy array, or streams them into one Parquet file (``id``, ``embedding`` as a fixed-size list
of float32), and returns a :class:`DatasetSummary`: documents, tokens, units charged, wall time,
documents per second.

The client actors reach the proxy through the network's relay actor (Ray and in-process
networks; the proxy lives in the driver) or over HTTP (an HTTP network, or ``base_url``). The
name the issue asked for, ``atoma_lab.batch``, would be a new top-level module, which the
package's layering keeps out: the function lives here, in the lab layer, and
``atoma_lab.lab`` re-exports it.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atoma_lab.client import DEFAULT_CORPUS_CONCURRENCY, DEFAULT_MODEL, AtomaLabClient
from atoma_lab.display.progressbar import progress
from atoma_lab.protocol.atoma.messages import DEFAULT_MAX_NUM_TOKENS

DEFAULT_ROWS_PER_BATCH = 1024  # texts one client actor embeds per call
DEFAULT_CLIENTS = 2  # client actors in the pool
DEFAULT_CLIENT_CPUS = 0.5  # CPUs each client actor reserves (it seals, opens and checks)
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class DatasetSummary:
    """What one :func:`embed_dataset` run did. ``units_charged`` is the ledger's charge to the
    network's user over the run (``None`` without a network object); ``tokens`` what the nodes
    reported; on a network only this run used, the two are equal."""

    documents: int
    tokens: int
    units_charged: int | None
    chunks: int
    retried_chunks: int
    wall_s: float

    @property
    def documents_per_s(self) -> float:
        return self.documents / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "documents_per_s": self.documents_per_s}

    def __str__(self) -> str:
        charged = "?" if self.units_charged is None else f"{self.units_charged}"
        return (f"{self.documents} documents, {self.tokens} tokens, {charged} units charged, "
                f"{self.chunks} chunks ({self.retried_chunks} retried), {self.wall_s:.2f} s, "
                f"{self.documents_per_s:.1f} documents/s")


@dataclass
class DatasetEmbedding:
    """The result of :func:`embed_dataset`: ``ids`` and ``vectors`` (row ``i`` of one is row
    ``i`` of the other, in the input's order), or the ``path`` of the Parquet file holding
    them; and the run's :class:`DatasetSummary`."""

    summary: DatasetSummary
    ids: np.ndarray | None = field(default=None, repr=False)
    vectors: np.ndarray | None = field(default=None, repr=False)
    path: str | None = None

    def to_numpy(self) -> np.ndarray:
        if self.vectors is None:
            raise ValueError(f"the vectors were written to {self.path}")
        return self.vectors

    def __repr__(self) -> str:
        where = f"written to {self.path}" if self.path else \
            f"vectors {None if self.vectors is None else self.vectors.shape}"
        return f"DatasetEmbedding({where}; {self.summary})"


class _Tally:
    """Counts what the client actors did (a small Ray actor they report to)."""

    def __init__(self) -> None:
        self.documents = self.tokens = self.chunks = self.retried = 0

    def add(self, documents: int, tokens: int, chunks: int, retried: int) -> None:
        self.documents += documents
        self.tokens += tokens
        self.chunks += chunks
        self.retried += retried

    def totals(self) -> tuple[int, int, int, int]:
        return self.documents, self.tokens, self.chunks, self.retried


class _EmbedBatches:
    """One client actor of the pool (Ray Data builds it once and calls it per block)."""

    def __init__(self, *, connection: dict[str, Any], corpus: dict[str, Any], tally: Any) -> None:
        transport = None
        if connection["relay"] is not None:
            from atoma_lab.transport.ray import RelayTransport

            transport = RelayTransport(connection["relay"])
        self.client = AtomaLabClient(connection["base_url"], transport=transport,
                                     **connection["client"])
        self.corpus = corpus
        self.tally = tally

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa
        import ray

        texts = batch.column("text").to_pylist()
        result = self.client.embed_corpus(texts, show_progress=False, **self.corpus)
        ray.get(self.tally.add.remote(len(texts), result.usage.total_tokens, len(result.chunks),
                                      result.retried_chunks))
        vectors = result.vectors
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        embedding = pa.FixedSizeListArray.from_arrays(flat, max(vectors.shape[1], 1))
        return pa.table({"id": batch.column("id"), "embedding": embedding})


def _table(ids: Any, texts: Any) -> Any:
    import pyarrow as pa

    try:
        text = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) \
            else pa.array(texts, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TypeError("texts: expected strings") from exc
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        raise TypeError(f"texts: expected strings, got {text.type}")
    if text.null_count:
        raise TypeError(f"texts: {text.null_count} missing (null) texts")
    return pa.table({"id": pa.array(ids), "text": text.cast(pa.string())})


def _read_files(paths: list[str], column: str, id_column: str | None) -> Any:
    """The texts of Parquet/CSV files, read here (so that rows get positional ids)."""
    import pyarrow as pa

    tables = []
    for path in paths:
        kind = _SUFFIXES.get(Path(path).suffix.lower())
        columns = [column] + ([id_column] if id_column else [])
        if kind == "parquet":
            import pyarrow.parquet as pq

            tables.append(pq.read_table(path, columns=columns))
        elif kind == "csv":
            import pyarrow.csv as pcsv

            tables.append(pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                include_columns=columns, column_types={column: pa.string()})))
        else:
            raise ValueError(f"{path}: expected a .parquet or .csv file")
    table = pa.concat_tables(tables)
    ids = table.column(id_column) if id_column else np.arange(table.num_rows)
    return _table(ids, table.column(column))


def _source(data: Any, column: str, id_column: str | None) -> Any:
    """``data`` as a pyarrow table of ``id`` and ``text``, or a Ray Dataset of them."""
    import ray

    if isinstance(data, ray.data.Dataset):
        if id_column is None:
            raise ValueError("a Ray Dataset has no row numbers: name its id_column")
        ds = data.select_columns([id_column, column])
        renames = {k: v for k, v in ((id_column, "id"), (column, "text")) if k != v}
        return ds.rename_columns(renames) if renames else ds
    if isinstance(data, str | os.PathLike):  # one file
        return _read_files([os.fspath(data)], column, id_column)
    if isinstance(data, Sequence) and data and all(isinstance(p, os.PathLike) for p in data):
        return _read_files([os.fspath(p) for p in data], column, id_column)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with ray[data]
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        if column not in data.columns:
            raise ValueError(f"the DataFrame has no column {column!r}")
        ids = data[id_column].to_numpy() if id_column else np.arange(len(data))
        return _table(ids, data[column].tolist())
    if isinstance(data, Sequence) and not isinstance(data, bytes):
        return _table(np.arange(len(data)), list(data))
    raise TypeError("data: expected a list of texts, a pandas DataFrame, Parquet/CSV paths or "
                    f"a Ray Dataset, got {type(data).__name__}")


def _connection(network: Any, base_url: str | None, api_key: str | None,
                client_options: dict[str, Any]) -> dict[str, Any]:
    """How the client actors reach the proxy: a relay (Ray and in-process networks), else HTTP."""
    client: dict[str, Any] = dict(client_options)
    if network is not None:
        client.setdefault("api_key", network.api_key)
        client.setdefault("attestation_policy", network.attestation_policy())
        if network.transport is not None:
            return {"relay": network.actor_relay(), "base_url": None, "client": client}
        return {"relay": None, "base_url": network.base_url, "client": client}
    if base_url is None or api_key is None:
        raise ValueError("give a network, or a base_url and an api_key")
    client.setdefault("api_key", api_key)
    return {"relay": None, "base_url": base_url, "client": client}


def _user_units(network: Any) -> int | None:
    if network is None:
        return None
    return sum(s.already_computed_units for s in network.ledger.stacks(network.user_id))


def embed_dataset(
    data: Any,
    *,
    network: Any = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str = DEFAULT_MODEL,
    column: str = "text",
    id_column: str | None = None,
    output: str | os.PathLike[str] | None = None,
    clients: int = DEFAULT_CLIENTS,
    rows_per_batch: int = DEFAULT_ROWS_PER_BATCH,
    batch_tokens: int = DEFAULT_MAX_NUM_TOKENS,
    concurrency: int = DEFAULT_CORPUS_CONCURRENCY,
    confidential: bool = True,
    client_num_cpus: float = DEFAULT_CLIENT_CPUS,
    client_options: dict[str, Any] | None = None,
    show_progress: bool = True,
    ray_address: str | None = None,
) -> DatasetEmbedding:
    """Embed ``data`` through ``network``'s proxy (or the one at ``base_url`` with
    ``api_key``), confidentially unless ``confidential=False``, on Ray Data.

    ``data``: a list of texts (ids are their positions), a pandas DataFrame (its ``column``;
    ids from ``id_column`` or the row positions), Parquet/CSV files (a path string, or a list
    of ``pathlib.Path``; read here, ids likewise), or a Ray Dataset (with its ``id_column``).
    ``clients`` client actors, each reserving ``client_num_cpus`` CPUs, embed
    ``rows_per_batch`` texts at a time with ``embed_corpus`` (``batch_tokens`` units locked per
    chunk at most, ``concurrency`` chunks in flight per actor). ``output`` (a ``.parquet``
    path) streams ``id`` and ``embedding`` there instead of
    returning arrays. ``client_options`` go to each actor's
    :class:`~atoma_lab.client.AtomaLabClient` (``profile``, ``verify_attestation``, ...).
    Ray starts locally unless this process is connected (see
    :func:`~atoma_lab.lab.ray_network.ensure_ray`; ``ray_address`` joins a cluster).
    """
    if clients < 1 or rows_per_batch < 1:
        raise ValueError("clients and rows_per_batch must be at least 1")
    import pyarrow as pa
    import ray

    from atoma_lab.lab.ray_network import ensure_ray

    ensure_ray(ray_address)
    with warnings.catch_warnings():  # Ray Data's first DataContext sets its own deprecated fields
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.data")
        source = _source(data, column, id_column)
        connection = _connection(network, base_url, api_key, client_options or {})
        if isinstance(source, pa.Table):
            total: int | None = source.num_rows
            blocks = [source.slice(i, rows_per_batch)
                      for i in range(0, source.num_rows, rows_per_batch)]
            ds = ray.data.from_arrow(blocks or [source])
        else:
            total, ds = None, source
    ctx = ds.context
    ctx.execution_options.preserve_order = True  # vectors come back in the input's order
    ctx.enable_progress_bars = False  # the driver draws one bar, over documents
    tally: Any = ray.remote(_Tally).options(num_cpus=0).remote()
    corpus = {"model": model, "confidential": confidential, "batch_tokens": batch_tokens,
              "concurrency": concurrency}
    units_before = _user_units(network)
    t0 = time.perf_counter()
    embedded = ds.map_batches(
        _EmbedBatches, batch_size=rows_per_batch, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=clients), num_cpus=client_num_cpus,
        fn_constructor_kwargs={"connection": connection, "corpus": corpus, "tally": tally})
    bar = progress(total=total, desc="embedding dataset", unit="text", show=show_progress)
    ids: list[Any] = []
    vectors: list[np.ndarray] = []
    writer: Any = None
    try:
        batch: Any
        for batch in embedded.iter_batches(batch_format="pyarrow", batch_size=None):
            if batch.num_rows == 0:
                continue
            if output is not None:
                if writer is None:
                    import pyarrow.parquet as pq

                    writer = pq.ParquetWriter(os.fspath(output), batch.schema)
                writer.write_table(batch)
            else:
                ids.append(batch.column("id").to_numpy(zero_copy_only=False))
                emb = batch.column("embedding").combine_chunks()
                vectors.append(np.asarray(emb.flatten().to_numpy(zero_copy_only=False),
                                          dtype=np.float32).reshape(batch.num_rows, -1))
            bar.update(batch.num_rows)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    wall_s = time.perf_counter() - t0
    documents, tokens, chunks, retried = ray.get(tally.totals.remote())
    with contextlib.suppress(Exception):
        ray.kill(tally)
    units_after = _user_units(network)
    charged = None if units_before is None or units_after is None else units_after - units_before
    summary = DatasetSummary(documents, tokens, charged, chunks, retried, wall_s)
    if output is not None:
        return DatasetEmbedding(summary, path=os.fspath(output))
    if not vectors:
        return DatasetEmbedding(summary, ids=np.zeros(0, dtype=np.int64),
                                vectors=np.zeros((0, 0), dtype=np.float32))
    return DatasetEmbedding(summary, ids=np.concatenate(ids), vectors=np.concatenate(vectors))


__all__ = ["DatasetEmbedding", "DatasetSummary", "embed_dataset"]
