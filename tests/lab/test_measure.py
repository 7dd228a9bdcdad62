"""The measurement helpers the notebooks use (shapes and parsing, never timing thresholds)."""

from __future__ import annotations

import pytest

from atoma_lab.lab.measure import crypto_costs, envelope_vs_raw, parse_openssl_speed, time_call

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
