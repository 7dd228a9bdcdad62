"""The ratio table `make bench` prints."""

from __future__ import annotations

import json

from atoma_lab.tools.benchreport import main, render, rows


def _bench(name: str, group: str, median: float, **info: object) -> dict[str, object]:
    return {"name": name, "group": group, "stats": {"median": median}, "extra_info": info}


DATA = {
    "datetime": "2026-11-25T00:00:00",
    "machine_info": {"cpu": {"brand_raw": "Test CPU"}, "python_implementation": "CPython",
                     "python_version": "3.11"},
    "benchmarks": [
        _bench("raw", "envelope", 0.010, pair="seal 1 KiB", role="baseline"),
        _bench("ours", "envelope", 0.011, pair="seal 1 KiB", role="ours", target=1.15,
               target_kind="max"),
        _bench("st", "embed", 2.0, pair="exact", role="baseline"),
        _bench("engine", "embed", 1.0, pair="exact", role="ours", target=1.25, target_kind="min",
               min_cosine=0.99999),
        _bench("inproc", "e2e", 0.010, pair="http vs in-process", role="baseline"),
        _bench("http", "e2e", 0.012, pair="http vs in-process", role="ours", target=3,
               target_kind="max_added_ms"),
        _bench("lonely", "embed", 1.0, pair="no baseline", role="ours"),
        _bench("unmarked", "embed", 1.0),
    ],
}


def test_pairs_become_ratios() -> None:
    got = {(r.group, r.pair): r for r in rows(DATA)}
    assert set(got) == {("envelope", "seal 1 KiB"), ("embed", "exact"), ("e2e", "http vs in-process")}
    assert abs(got[("e2e", "http vs in-process")].added_ms - 2.0) < 1e-9
    assert got[("e2e", "http vs in-process")].verdict.startswith("met")
    assert abs(got[("envelope", "seal 1 KiB")].ratio - 1.1) < 1e-9
    assert got[("envelope", "seal 1 KiB")].verdict.startswith("met")
    assert abs(got[("embed", "exact")].speedup - 2.0) < 1e-9
    assert got[("embed", "exact")].verdict.startswith("met")
    assert got[("embed", "exact")].extra == {"min_cosine": 0.99999}


def test_missed_target_is_flagged() -> None:
    data = json.loads(json.dumps(DATA))
    data["benchmarks"][1]["stats"]["median"] = 0.02
    (row,) = [r for r in rows(data) if r.group == "envelope"]
    assert row.verdict.startswith("MISSED")


def test_render_and_main(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    text = render(DATA)
    assert "Test CPU" in text and "| envelope | seal 1 KiB |" in text
    path = tmp_path / "b.json"
    path.write_text(json.dumps(DATA))
    assert main([str(path)]) == 0
    assert "seal 1 KiB" in capsys.readouterr().out
    assert (tmp_path / "b.md").read_text().startswith("Benchmarks of")
    assert main([]) == 2


def test_a_paired_figure_decides_the_verdict() -> None:
    data = json.loads(json.dumps(DATA))
    ours = data["benchmarks"][1]
    ours["stats"]["median"] = 0.02  # the medians say 2x ...
    ours["extra_info"]["paired_ratio"] = 1.1  # ... the interleaved rounds say 1.1x
    (row,) = [r for r in rows(data) if r.group == "envelope"]
    assert row.verdict == "met (<= 1.15x time, paired)"
    ours["extra_info"]["paired_ratio"] = 1.2
    (row,) = [r for r in rows(data) if r.group == "envelope"]
    assert row.verdict.startswith("MISSED")
    data["benchmarks"][3]["extra_info"]["paired_speedup"] = 1.2  # medians say 2x speed
    data["benchmarks"][5]["extra_info"]["paired_added_ms"] = 3.5  # medians say +2 ms
    got = {r.group: r.verdict for r in rows(data)}
    assert got["embed"] == "MISSED (>= 1.25x speed, paired)"
    assert got["e2e"] == "MISSED (<= +3 ms, paired)"


def test_the_table_as_a_frame(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from atoma_lab.tools.benchreport import FRAME_COLUMNS, to_frame

    path = tmp_path / "b.json"
    path.write_text(json.dumps(DATA))
    for source in (DATA, path, str(path)):
        frame = to_frame(source)
        assert list(frame.columns) == [*FRAME_COLUMNS, "min_cosine"]
        assert len(frame) == len(rows(DATA)) == 3
        row = frame.set_index("pair").loc["seal 1 KiB"]
        assert abs(row["ratio"] - 1.1) < 1e-9 and abs(row["ours_ms"] - 11.0) < 1e-9
        assert row["verdict"].startswith("met")
        assert frame.set_index("pair").loc["exact", "min_cosine"] == 0.99999
    empty = to_frame({"benchmarks": []})
    assert list(empty.columns) == list(FRAME_COLUMNS) and len(empty) == 0


def test_several_ours_in_one_pair_are_told_apart_by_their_test_ids() -> None:
    data = {"benchmarks": [
        _bench("test_scale[http-1nodes-least-loaded]", "scale", 2.0, pair="http", role="baseline"),
        _bench("test_scale[http-4nodes-least-loaded]", "scale", 0.5, pair="http", role="ours",
               target=3.2, target_kind="min"),
        _bench("test_scale[http-4nodes-atoma]", "scale", 2.0, pair="http", role="ours"),
    ]}
    got = rows(data)
    assert [r.speedup for r in got] == [4.0, 1.0]
    assert got[0].verdict.startswith("met")
    text = render(data)
    assert "| scale | http: http-4nodes-least-loaded |" in text
    assert "| scale | http: http-4nodes-atoma |" in text
    assert "| envelope | seal 1 KiB |" in render(DATA)  # a single ours keeps the pair's name


def test_a_backend_table_is_rendered_with_its_targets() -> None:
    import numpy as np

    from atoma_lab.lab.backends import Backend, measure_backends

    vec = [[1.0, 0.0], [0.0, 1.0]]
    times = {"st": iter([2.0, 2.0]), "ours": iter([1.0, 0.8])}
    backends = [Backend(n, "peer" if n == "st" else "ours", lambda n=n: next(times[n]),
                        lambda: np.asarray(vec, dtype=np.float32)) for n in ("st", "ours")]
    table = measure_backends(backends, baseline="st", texts=2, rounds=2, threads=1)
    data = {"benchmarks": [_bench("test_backend_table", "embed-backends", 4.0, backend_table=
                                  table.to_json(), targets=[{"what": "ours vs st", "median": 2.25,
                                                             "low": 2.0, "high": 2.5,
                                                             "target": 3.0}])]}
    text = render(data)
    assert "| ours | exact | 2.2 | 2.25x [2.00-2.50] |" in text
    assert "- ours vs st: 2.25x [2.00-2.50] (target >= 3.0x, paired) MISSED" in text
