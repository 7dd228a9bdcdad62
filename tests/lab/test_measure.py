"""The measurement helpers the notebooks use (shapes and parsing, never timing thresholds)."""

from __future__ import annotations

import pytest

from atoma_lab.lab.measure import (
    PROTOCOL_WORK,
    crypto_costs,
    envelope_vs_raw,
    openssl_versions,
    parse_openssl_speed,
    protocol_floor,
    time_call,
)

OPENSSL_OUTPUT = """\
version: 3.0.19
The 'numbers' are in 1000s of bytes per second processed.
type          16384 bytes
AES-256-GCM    2798554.38k
"""


def test_parse_openssl_speed() -> None:
    assert parse_openssl_speed(OPENSSL_OUTPUT, [16384]) == {16384: pytest.approx(2798554380.0)}
    with pytest.raises(ValueError, match="expected 2 rates"):
        parse_openssl_speed(OPENSSL_OUTPUT, [1024, 16384])
    with pytest.raises(ValueError, match="no AES-256-GCM"):
        parse_openssl_speed("nothing here", [1024])


def test_time_call_calibrates_and_counts() -> None:
    calls = []
    t = time_call(lambda: calls.append(1), repeat=3, min_time_s=0.001)
    assert t.number >= 1 and t.repeat == 3
    assert len(calls) >= t.number * 3
    assert 0 < t.min_ns <= t.median_ns


def test_crypto_costs_rows() -> None:
    rows = crypto_costs([64, 4096], repeat=1, min_time_s=0.0005)
    ops = {r["op"] for r in rows}
    assert {"x25519 exchange", "hkdf-sha256", "aes-256-gcm encrypt", "blake2b-256",
            "base64 encode", "json floats (orjson+numpy)"} <= ops
    assert {r["size"] for r in rows} == {64, 4096}
    assert all(r["median_ns"] > 0 and r["gb_per_s"] > 0 for r in rows)


def test_envelope_vs_raw_rows() -> None:
    (row,) = envelope_vs_raw([256], repeat=1, min_time_s=0.0005)
    assert row["size"] == 256 and row["ratio"] == pytest.approx(row["envelope_ns"] / row["raw_ns"])


def test_protocol_floor_adds_the_work_a_round_trip_cannot_avoid() -> None:
    unit = {"x25519 keygen": 1.0, "x25519 exchange": 10.0, "hkdf-sha256": 100.0,
            "aes-256-gcm encrypt": 1e3, "aes-256-gcm decrypt": 1e4, "blake2b-256": 1e5,
            "base64 encode": 1e6, "base64 decode": 1e7, "json floats (json.dumps)": 1e9}
    rows = [{"op": op, "size": size, "median_ns": ns * size}
            for size in (1, 2) for op, ns in unit.items()]
    wire = protocol_floor(rows)
    assert wire == {1: 1 + 20 + 200 + 2e3 + 2e4 + 4e5 + 2e6 + 2e7,
                    2: 2 * (1 + 20 + 200 + 2e3 + 2e4 + 4e5 + 2e6 + 2e7)}
    assert protocol_floor(rows, PROTOCOL_WORK)[1] == 1 + 20 + 200 + 2e3 + 2e4 + 4e5
    with pytest.raises(ValueError, match="lack base64 decode"):
        protocol_floor([r for r in rows if r["op"] != "base64 decode"])


def test_the_floor_of_measured_costs_covers_every_size() -> None:
    sizes = [1 << 10, 64 << 10]
    floor = protocol_floor(crypto_costs(sizes, repeat=3, min_time_s=0.002), PROTOCOL_WORK)
    assert sorted(floor) == sizes and all(v > 0 for v in floor.values())
    assert floor[64 << 10] > floor[1 << 10]


def test_openssl_versions_name_both_references() -> None:
    versions = openssl_versions()
    assert versions["cryptography"].startswith("OpenSSL")  # type: ignore[union-attr]
    assert versions["system"] is None or "OpenSSL" in versions["system"]


def test_embedding_sweep_times_every_implementation_on_the_same_texts() -> None:
    from atoma_lab.lab.measure import embedding_sweep

    seen: dict[str, list[list[str]]] = {"a": [], "b": []}
    impls = {name: (lambda texts, name=name: seen[name].append(list(texts))) for name in seen}
    rows = embedding_sweep(impls, batches=[1, 3], words=[2, 5],
                           count_tokens=lambda texts: [len(t.split()) + 2 for t in texts],
                           repeat=2, show_progress=False)
    assert [(r["impl"], r["words"], r["batch"]) for r in rows] == [
        (impl, w, b) for w in (2, 5) for b in (1, 3) for impl in ("a", "b")]
    assert seen["a"] == seen["b"]  # the same inputs for both
    assert {len(call) for call in seen["a"]} == {1, 3}
    for r in rows:
        assert r["tokens"] == r["batch"] * (r["words"] + 2)
        assert r["latency ms"] > 0
        assert abs(r["texts/s"] - r["batch"] / (r["latency ms"] / 1e3)) < 1e-6 * r["texts/s"]
        assert abs(r["tokens/s"] - r["tokens"] / (r["latency ms"] / 1e3)) < 1e-6 * r["tokens/s"]
