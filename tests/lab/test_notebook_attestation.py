"""The attestation notebook's helpers."""

from __future__ import annotations

from atoma_lab.crypto.attestation.tdx import ExpectedReportData, TdxPolicy, TdxQuote, TdxVerifier
from atoma_lab.lab.notebook.attestation import flip_sweep, tdx_sample


def test_tdx_sample_loads_a_published_quote_and_times_around_its_collateral() -> None:
    s = tdx_sample()
    q = TdxQuote.parse(s.quote)
    assert q.fmspc == s.collateral.fmspc
    assert s.collateral.tcb_info_issued < s.verify_at < s.collateral.tcb_info_next_update < s.expired_at
    assert "dcap-qvl" in s.source


def test_flip_sweep_names_the_field_and_the_refusal() -> None:
    s = tdx_sample()
    q = TdxQuote.parse(s.quote)
    verifier = TdxVerifier(TdxPolicy(ExpectedReportData(q.report_data)), s.collateral)
    rows = flip_sweep(verifier, s.quote, now=s.verify_at, offsets=[0, 200, 640, len(s.quote) - 1])
    assert [(r["field"], r["error"]) for r in rows] == [
        ("header.version", "EvidenceFormatError"), ("td.mr_td", "EvidenceSignatureError"),
        ("signature.ecdsa", "EvidenceSignatureError"), ("padding", "EvidenceFormatError")]
