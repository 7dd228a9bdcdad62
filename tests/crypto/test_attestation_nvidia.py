"""Atoma's NVIDIA GPU evidence: NVIDIA's published Hopper sample report (tests/vectors/
nvidia_reports.json names the source) parses field for field; Atoma's compressed evidence list
round-trips; the key binding BLAKE3(nonce ‖ key ‖ 300) is checked. Signatures are not verified
(that needs NVIDIA's RIM and OCSP services), so no test here claims they are."""

from __future__ import annotations

import base64
import zlib
from typing import Any

import orjson
import pytest

from atoma_lab.crypto.attestation import report_nonce
from atoma_lab.crypto.attestation.nvidia import (
    MAX_EVIDENCE_SIZE,
    SPDM_REQUEST_SIZE,
    GpuAttestationReport,
    check_key_binding,
    encode_atoma_evidence,
    parse_atoma_evidence,
)
from atoma_lab.errors import CertificateChainError, EvidenceFormatError, ReportDataError

from .vectors import VECTORS_DIR, load_vectors

SAMPLE = load_vectors("nvidia_reports")[0]
REPORT = bytes.fromhex((VECTORS_DIR / SAMPLE["report"]).read_text().strip())
CHAIN = (VECTORS_DIR / SAMPLE["certificate"]).read_bytes()
KEY = bytes(range(1, 33))
NONCE_AT = 4  # the request's nonce: after version, code, param1, param2


def _synthetic(nonce: bytes) -> bytes:
    """SYNTHETIC: NVIDIA's sample with its request nonce replaced. Its signature no longer
    matches (nothing here checks it); it only stands in for a report requested for our key."""
    return REPORT[:NONCE_AT] + nonce + REPORT[NONCE_AT + 32:]


def test_the_sample_report_parses_field_for_field() -> None:
    r = GpuAttestationReport.parse(REPORT)
    assert r.nonce == SAMPLE["nonce"]
    assert r.spdm_version == SAMPLE["spdm_version"]
    assert len(r.blocks) == SAMPLE["blocks"]
    assert [b.index for b in r.blocks] == list(range(1, SAMPLE["blocks"] + 1))
    assert all(len(b.value) == 48 for b in r.blocks)  # SHA-384 measurements
    assert len(r.opaque) == SAMPLE["opaque_fields"]
    assert r.opaque_text("driver_version") == SAMPLE["driver_version"]
    assert len(r.signature) == SAMPLE["signature_size"]
    assert r.opaque_text("no such field") is None
    assert "550.90.07" in repr(r)


def test_atoma_evidence_round_trips() -> None:
    compressed = encode_atoma_evidence([("device", REPORT, CHAIN), ("nvswitch", REPORT, CHAIN)])
    items = parse_atoma_evidence(compressed)
    assert [i.evidence_type for i in items] == ["device", "nvswitch"]
    assert items[0].raw_evidence == REPORT and items[0].raw_certificate == CHAIN
    assert len(items[0].certificate_chain) == SAMPLE["certificates"]
    assert "NVIDIA" in items[0].certificate_chain[-1]


def test_the_binding_holds_for_a_report_requested_for_the_key() -> None:
    nonce = report_nonce(41, KEY)
    items = parse_atoma_evidence(encode_atoma_evidence(
        [("device", _synthetic(nonce), CHAIN), ("nvswitch", _synthetic(nonce), CHAIN)]))
    assert check_key_binding(items, rotation_nonce=41, public_key=KEY) == nonce


@pytest.mark.parametrize(("nonce", "key"), [(42, KEY), (41, bytes(32))])
def test_the_binding_fails_for_another_rotation_or_key(nonce: int, key: bytes) -> None:
    items = parse_atoma_evidence(encode_atoma_evidence(
        [("device", _synthetic(report_nonce(41, KEY)), CHAIN)]))
    with pytest.raises(ReportDataError, match="evidence\\[0\\]"):
        check_key_binding(items, rotation_nonce=nonce, public_key=key)


def test_one_unbound_report_among_bound_ones_fails_the_binding() -> None:
    good = _synthetic(report_nonce(41, KEY))
    items = parse_atoma_evidence(encode_atoma_evidence(
        [("device", good, CHAIN), ("device", REPORT, CHAIN)]))
    with pytest.raises(ReportDataError, match="evidence\\[1\\]"):
        check_key_binding(items, rotation_nonce=41, public_key=KEY)


def test_nvidias_own_sample_binds_no_atoma_key() -> None:
    items = parse_atoma_evidence(encode_atoma_evidence([("device", REPORT, CHAIN)]))
    with pytest.raises(ReportDataError):
        check_key_binding(items, rotation_nonce=0, public_key=KEY)
    with pytest.raises(EvidenceFormatError):
        check_key_binding([], rotation_nonce=0, public_key=KEY)


def _set(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value):]


@pytest.mark.parametrize(("change", "match"), [
    (lambda r: r[:SPDM_REQUEST_SIZE], "truncated"),
    (lambda r: r[:-1], "signature"),
    (lambda r: r + b"\0", "signature"),
    (lambda r: _set(r, 1, b"\x61"), "GET_MEASUREMENTS"),
    (lambda r: _set(r, SPDM_REQUEST_SIZE + 1, b"\x61"), "MEASUREMENTS"),
    (lambda r: _set(r, SPDM_REQUEST_SIZE, b"\x12"), "version"),
    (lambda r: _set(r, SPDM_REQUEST_SIZE + 4, b"\x3f"), "announces 63"),
    (lambda r: _set(r, SPDM_REQUEST_SIZE + 5, b"\xff\xff\x00"), "truncated"),
])
def test_a_malformed_report_is_refused(change: Any, match: str) -> None:
    with pytest.raises(EvidenceFormatError, match=match):
        GpuAttestationReport.parse(change(REPORT))


def _item(**changes: object) -> dict[str, object]:
    item: dict[str, object] = {"evidence_type": "device",
                               "evidence": base64.b64encode(REPORT).decode(),
                               "certificate": base64.b64encode(CHAIN).decode()}
    item.update(changes)
    return item


@pytest.mark.parametrize(("compressed", "error"), [
    (b"not zlib", EvidenceFormatError),
    (zlib.compress(b"[1, 2")[:-3], EvidenceFormatError),
    (zlib.compress(b"{}"), EvidenceFormatError),
    (zlib.compress(b"[]"), EvidenceFormatError),
    (zlib.compress(b"not json"), EvidenceFormatError),
    (zlib.compress(orjson.dumps([_item(evidence_type="cpu")])), EvidenceFormatError),
    (zlib.compress(orjson.dumps([_item(evidence="!!")])), EvidenceFormatError),
    (zlib.compress(orjson.dumps([_item(evidence=5)])), EvidenceFormatError),
    (zlib.compress(orjson.dumps([_item(certificate=base64.b64encode(b"no pem").decode())])),
     CertificateChainError),
    (zlib.compress(orjson.dumps([_item()])) + b"more", EvidenceFormatError),
    (zlib.compress(b" " * (MAX_EVIDENCE_SIZE + 1)), EvidenceFormatError),
])
def test_malformed_atoma_evidence_is_refused(compressed: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_atoma_evidence(compressed)


def test_evidence_base64_must_be_canonical() -> None:
    """The project's strict base64: a report whose last symbol carries set trailing bits (which
    ``base64.b64decode(validate=True)`` would decode to the same bytes) is refused."""
    canonical = base64.b64encode(REPORT).decode()
    assert canonical.endswith("A==")
    loose = canonical[:-3] + "B=="
    assert base64.b64decode(loose, validate=True) == REPORT
    assert parse_atoma_evidence(zlib.compress(orjson.dumps([_item(evidence=canonical)])))
    with pytest.raises(EvidenceFormatError, match=r"evidence\[0\]\.evidence is not strict base64"):
        parse_atoma_evidence(zlib.compress(orjson.dumps([_item(evidence=loose)])))
