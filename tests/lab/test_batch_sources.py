"""What ``embed_dataset`` reads (no Ray cluster needed): lists, DataFrame columns, Parquet and
CSV files, each as ``id`` and ``text``; bad sources are refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

from atoma_lab.lab.batch import DatasetSummary, _source  # noqa: E402

TEXTS = ["alpha", "beta gamma", "", "déjà vu 🙂"]


def rows(table: object) -> list[tuple[object, str]]:
    return list(zip(table.column("id").to_pylist(), table.column("text").to_pylist(),  # type: ignore[attr-defined]
                    strict=True))


def test_a_list_gets_positional_ids() -> None:
    assert rows(_source(TEXTS, "text", None)) == list(enumerate(TEXTS))
    assert rows(_source([], "text", None)) == []


def test_a_dataframe_column_with_or_without_its_ids() -> None:
    frame = pd.DataFrame({"body": TEXTS, "key": ["k1", "k2", "k3", "k4"]})
    assert rows(_source(frame, "body", None)) == list(enumerate(TEXTS))
    assert rows(_source(frame, "body", "key")) == list(zip(frame["key"], TEXTS, strict=True))
    with pytest.raises(ValueError, match="no column"):
        _source(frame, "text", None)


def test_parquet_and_csv_files_in_order(tmp_path: Path) -> None:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": TEXTS[:2], "n": [1, 2]}), tmp_path / "a.parquet")
    pcsv.write_csv(pa.table({"text": ["007", "x,y"]}), tmp_path / "b.csv")
    table = _source([tmp_path / "a.parquet", tmp_path / "b.csv"], "text", None)
    # CSV text stays text (not the number 7); rows are numbered across the files.
    assert rows(table) == [(0, "alpha"), (1, "beta gamma"), (2, "007"), (3, "x,y")]
    assert rows(_source(str(tmp_path / "a.parquet"), "text", "n")) == [(1, "alpha"),
                                                                      (2, "beta gamma")]


@pytest.mark.parametrize(("data", "error", "match"), [
    ([1, 2, 3], TypeError, "texts"),
    (["a", 3], TypeError, "texts"),
    (["a", None], TypeError, "missing"),
    (object(), TypeError, "data"),
    ("notes.txt", ValueError, "parquet"),
])
def test_bad_sources_are_refused(data: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _source(data, "text", None)


def test_the_summary_reads_well() -> None:
    s = DatasetSummary(documents=1000, tokens=5000, units_charged=5000, chunks=4,
                       retried_chunks=1, wall_s=2.0)
    assert s.documents_per_s == 500.0
    assert s.as_dict()["documents_per_s"] == 500.0
    assert str(s) == ("1000 documents, 5000 tokens, 5000 units charged, 4 chunks (1 retried), "
                      "2.00 s, 500.0 documents/s")
    assert "?" in str(DatasetSummary(1, 1, None, 1, 0, 0.0))
    assert np.isclose(DatasetSummary(1, 1, None, 1, 0, 0.0).documents_per_s, 0.0)
