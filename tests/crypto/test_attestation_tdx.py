"""Intel TDX quotes: dcap-qvl's published sample quotes and collateral (tests/vectors/tdx_quotes.json
names the source) verify inside their collateral's window, and every change is refused with the
error naming the failed check: a flipped bit anywhere in the quote, a time past the collateral's
expiry, another expected report data, a measurement off the allow-list, a TCB status not taken."""

from __future__ import annotations

import calendar
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from atoma_lab.crypto.attestation import (
    NodeKeyClaims,
    VerifiedReport,
    evidence_from_dict,
    evidence_from_json,
    report_nonce,
)
from atoma_lab.crypto.attestation.tdx import (
    INTEL_SGX_ROOT_CA_PEM,
    INTEL_SGX_ROOT_CA_SHA256,
    ExpectedReportData,
    KeyBinding,
    TdxCollateral,
    TdxEvidence,
    TdxPolicy,
    TdxQuote,
    TdxVerifier,
    dcap_error,
    iso_utc_to_unix,
)
from atoma_lab.errors import (
    AttestationError,
    AttestedKeyMismatchError,
    CertificateChainError,
    CollateralError,
    EvidenceFormatError,
    EvidenceSignatureError,
    MeasurementError,
    ReportDataError,
    StaleEvidenceError,
    TcbStatusError,
)

from .vectors import VECTORS_DIR, load_vectors, vector_id

ALL = load_vectors("tdx_quotes")
GOOD = [v for v in ALL if v["kind"] == "verifies"]
REFUSED = [v for v in ALL if v["kind"] == "refused"]
V4 = next(v for v in GOOD if v["name"] == "v4_td10")


def _t(iso: str) -> float:
    return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))


def _quote(v: dict[str, Any]) -> bytes:
    return (VECTORS_DIR / v["quote"]).read_bytes()


def _collateral_text(v: dict[str, Any]) -> str:
    return (VECTORS_DIR / v["collateral"]).read_text()


def _verifier(v: dict[str, Any], **policy: Any) -> TdxVerifier:
    policy.setdefault("report_data", ExpectedReportData(v["report_data"]))
    return TdxVerifier(TdxPolicy(**policy), TdxCollateral.from_json(_collateral_text(v)))


def _flip(raw: bytes, offset: int) -> bytes:
    b = bytearray(raw)
    b[offset] ^= 0x01
    return bytes(b)


# ----------------------------------------------------------------------------- the samples
def test_sample_files_are_the_published_ones() -> None:
    for v in ALL:
        assert hashlib.sha256(_quote(v)).hexdigest() == v["quote_sha256"], v["name"]


@pytest.mark.parametrize("v", ALL, ids=vector_id)
def test_parser_reads_what_dcap_qvl_reads(v: dict[str, Any]) -> None:
    q = TdxQuote.parse(_quote(v))
    assert (q.version, q.body_type, q.tee_type, q.fmspc) == (v["version"], v["body_type"], 0x81,
                                                             v["fmspc"])
    assert q.measurements() == {k: v[k] for k in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3",
                                                  "mr_seam")}
    assert q.report_data == v["report_data"]
    assert q.pck_subjects == ("Intel SGX PCK Certificate", "Intel SGX PCK Platform CA",
                              "Intel SGX Root CA")
    # The layout accounts for every byte: fields tile the quote up to the zero padding.
    end = 0
    for f in q.fields:
        assert f.offset == end, f.name
        end += f.size
    assert end + q.padding == len(q.raw)


@pytest.mark.parametrize("v", GOOD, ids=vector_id)
def test_sample_verifies_inside_its_collateral_window(v: dict[str, Any]) -> None:
    now = _t(v["verify_at"])
    report = _verifier(v).verify(_quote(v), now=now)
    assert isinstance(report, VerifiedReport)
    assert (report.tee, report.status, report.advisory_ids) == ("tdx", v["status"], ())
    assert report.report_data == v["report_data"]
    assert report.measurements["mrtd"] == v["mrtd"]
    assert report.signer == f"Intel SGX PCK Certificate (FMSPC {v['fmspc']}) under Intel SGX Root CA"
    assert report.holds_at(now) and not report.holds_at(_t(v["expired_at"]))
    assert report.details["quote_version"] == v["version"]
    assert report.public_key is None and report.signer_address is None  # a bare quote binds no node


@pytest.mark.parametrize("v", REFUSED, ids=vector_id)
def test_sample_below_every_tcb_level_is_refused(v: dict[str, Any]) -> None:
    with pytest.raises(TcbStatusError, match="No matching TCB level"):
        _verifier(v).verify(_quote(v), now=_t(v["verify_at"]))


# ----------------------------------------------------------------------------- mutations
REGION_ERRORS = [
    ("header.version", EvidenceFormatError),
    ("header.tee_type", EvidenceFormatError),
    ("header.user_data", EvidenceSignatureError),
    ("td.mr_td", EvidenceSignatureError),
    ("td.rtmr3", EvidenceSignatureError),
    ("td.report_data", EvidenceSignatureError),
    ("signature_data.size", EvidenceFormatError),
    ("signature.ecdsa", EvidenceSignatureError),
    ("signature.attestation_key", EvidenceSignatureError),  # the QE report binds the key
    ("certification.type", EvidenceFormatError),
    ("qe.report", EvidenceSignatureError),
    ("qe.report_signature", EvidenceSignatureError),
    ("qe.auth_data", EvidenceSignatureError),
    ("pck.chain", CertificateChainError),
]


@pytest.mark.parametrize(("region", "error"), REGION_ERRORS, ids=[r for r, _ in REGION_ERRORS])
def test_a_flipped_bit_is_refused_with_the_error_of_its_region(region: str,
                                                               error: type[Exception]) -> None:
    raw = _quote(V4)
    f = next(f for f in TdxQuote.parse(raw).fields if f.name == region)
    verifier = _verifier(V4)
    for offset in (f.offset, f.offset + f.size // 2, f.offset + f.size - 1):
        with pytest.raises(error):
            verifier.verify(_flip(raw, offset), now=_t(V4["verify_at"]))


def test_a_flipped_bit_in_the_padding_or_the_embedded_root_is_refused_too() -> None:
    """dcap-qvl alone ignores these bytes (it trusts its own root, not the quote's copy, and stops
    at the signature data); atoma-lab's parser accounts for them."""
    raw = _quote(V4)
    q = TdxQuote.parse(raw)
    root_at = raw.rindex(b"-----BEGIN CERTIFICATE-----")
    verifier = _verifier(V4)
    with pytest.raises(EvidenceFormatError, match="padding"):
        verifier.verify(_flip(raw, len(raw) - q.padding + 3), now=_t(V4["verify_at"]))
    with pytest.raises(CertificateChainError):
        verifier.verify(_flip(raw, root_at + 200), now=_t(V4["verify_at"]))
    newline = raw.index(b"\n", root_at + 28)
    with pytest.raises(CertificateChainError, match="canonical"):
        verifier.verify(_flip(raw, newline), now=_t(V4["verify_at"]))


def test_every_stride_of_single_bit_flips_is_refused() -> None:
    """A sweep over the whole quote (every 7th byte, all offsets mod 7 across the vectors' runs)."""
    raw = _quote(V4)
    assert _accepted_flips(raw, range(0, len(raw), 7)) == []


@pytest.mark.slow
def test_every_single_bit_flip_is_refused() -> None:
    raw = _quote(V4)
    assert _accepted_flips(raw, range(len(raw))) == []


def _accepted_flips(raw: bytes, offsets: range) -> list[int]:
    """The offsets at which a flipped bit still verifies (the V4 sample at its verify time)."""
    verifier = _verifier(V4)
    now = _t(V4["verify_at"])
    accepted = []
    for offset in offsets:
        try:
            verifier.verify(_flip(raw, offset), now=now)
            accepted.append(offset)
        except AttestationError:
            pass
    return accepted


@pytest.mark.parametrize("size", [0, 47, 48, 631, 700, 1500, 4935])
def test_a_truncated_quote_is_refused(size: int) -> None:
    with pytest.raises((EvidenceFormatError, CertificateChainError)):
        _verifier(V4).verify(_quote(V4)[:size], now=_t(V4["verify_at"]))


# ----------------------------------------------------------------------------- time
@pytest.mark.parametrize("v", GOOD, ids=vector_id)
def test_a_time_after_the_collateral_expires_is_refused(v: dict[str, Any]) -> None:
    verifier = _verifier(v)
    report = verifier.verify(_quote(v), now=_t(v["verify_at"]))
    assert report.valid_until is not None and report.valid_from is not None
    verifier.verify(_quote(v), now=report.valid_until)  # the last second still holds
    with pytest.raises(StaleEvidenceError, match="expired"):
        verifier.verify(_quote(v), now=_t(v["expired_at"]))
    with pytest.raises(StaleEvidenceError):  # past the first item's nextUpdate, whichever it is
        verifier.verify(_quote(v), now=report.valid_until + 2)


def test_a_time_before_the_collateral_was_issued_is_refused() -> None:
    collateral = TdxCollateral.from_json(_collateral_text(V4))
    with pytest.raises(StaleEvidenceError, match="in the future"):
        _verifier(V4).verify(_quote(V4), now=collateral.tcb_info_issued - 1)


def test_collateral_older_than_the_maximum_age_is_refused() -> None:
    now = _t(V4["verify_at"])
    collateral = TdxCollateral.from_json(_collateral_text(V4))
    age = now - min(collateral.tcb_info_issued, collateral.qe_identity_issued)
    _verifier(V4, max_collateral_age_s=age).verify(_quote(V4), now=now)
    with pytest.raises(StaleEvidenceError, match="older than"):
        _verifier(V4, max_collateral_age_s=age - 1).verify(_quote(V4), now=now)


# ----------------------------------------------------------------------------- policy
def test_an_expected_report_data_that_differs_is_refused() -> None:
    other = bytearray(V4["report_data"])
    other[63] ^= 0x80
    with pytest.raises(ReportDataError, match="expected value"):
        _verifier(V4, report_data=ExpectedReportData(bytes(other))).verify(
            _quote(V4), now=_t(V4["verify_at"]))


def test_a_measurement_outside_the_allow_list_is_refused() -> None:
    now = _t(V4["verify_at"])
    elsewhere = hashlib.sha384(b"another TD image").digest()
    _verifier(V4, measurements={"mrtd": frozenset({elsewhere, V4["mrtd"]}),
                                "rtmr0": frozenset({V4["rtmr0"]})}).verify(_quote(V4), now=now)
    for name in ("mrtd", "rtmr1", "rtmr3"):
        with pytest.raises(MeasurementError, match=name):
            _verifier(V4, measurements={name: frozenset({elsewhere})}).verify(_quote(V4), now=now)


def test_a_tcb_status_the_policy_does_not_take_is_refused() -> None:
    now = _t(V4["verify_at"])
    with pytest.raises(TcbStatusError, match="UpToDate is not accepted"):
        _verifier(V4, accepted_tcb_statuses=frozenset({"SWHardeningNeeded"})).verify(
            _quote(V4), now=now)


def test_policy_misuse_is_a_value_error() -> None:
    rule = ExpectedReportData(V4["report_data"])
    with pytest.raises(ValueError, match="unknown TCB statuses"):
        TdxPolicy(rule, accepted_tcb_statuses=frozenset({"UpToDateish"}))
    with pytest.raises(ValueError, match="unknown measurement"):
        TdxPolicy(rule, measurements={"mrowner": frozenset()})
    with pytest.raises(ValueError, match="48 bytes"):
        TdxPolicy(rule, measurements={"mrtd": frozenset({b"short"})})
    with pytest.raises(ValueError):
        ExpectedReportData(b"\0" * 32)
    with pytest.raises(ValueError):
        KeyBinding("md5")


# ----------------------------------------------------------------------------- collateral
def test_collateral_changed_after_intel_signed_it_is_refused() -> None:
    doc = json.loads(_collateral_text(V4))
    tcb = json.loads(doc["tcb_info"])
    tcb["tcbLevels"][0]["tcbStatus"] = "UpToDate" if tcb["tcbLevels"][0]["tcbStatus"] != "UpToDate" \
        else "OutOfDate"
    doc["tcb_info"] = json.dumps(tcb)
    verifier = TdxVerifier(TdxPolicy(ExpectedReportData(V4["report_data"])),
                           TdxCollateral.from_json(json.dumps(doc)))
    with pytest.raises(CollateralError, match="tcb_info"):
        verifier.verify(_quote(V4), now=_t(V4["verify_at"]))


def test_collateral_for_another_platform_is_refused() -> None:
    other = next(v for v in ALL if v["fmspc"] != V4["fmspc"])
    verifier = TdxVerifier(TdxPolicy(ExpectedReportData(V4["report_data"])),
                           TdxCollateral.from_json(_collateral_text(other)))
    with pytest.raises(CollateralError, match=f"FMSPC {V4['fmspc']}"):
        verifier.verify(_quote(V4), now=_t(V4["verify_at"]))


@pytest.mark.parametrize("text", ["[]", "{}", '{"tcb_info": 5}', "not json"])
def test_malformed_collateral_is_refused(text: str) -> None:
    with pytest.raises(CollateralError):
        TdxCollateral.from_json(text)


def test_the_root_is_pinned() -> None:
    root = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM)
    assert root.fingerprint(hashes.SHA256()).hex() == INTEL_SGX_ROOT_CA_SHA256
    # A verifier pinned to another root refuses Intel's chain.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intel SGX Root CA")])
    other = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(key.public_key()).serial_number(1)
             .not_valid_before(root.not_valid_before_utc).not_valid_after(root.not_valid_after_utc)
             .sign(key, hashes.SHA256()))
    verifier = TdxVerifier(TdxPolicy(ExpectedReportData(V4["report_data"])),
                           TdxCollateral.from_json(_collateral_text(V4)),
                           root_ca_pem=other.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CertificateChainError, match="pinned root"):
        verifier.verify(_quote(V4), now=_t(V4["verify_at"]))


# ----------------------------------------------------------------------------- node evidence
CLAIMS = NodeKeyClaims(node_small_id=3, key_rotation_counter=2, rotation_nonce=77,
                       public_key=bytes(range(32)), signer_address="0x" + "ab" * 32)


def test_key_binding_rules_compute_what_they_name() -> None:
    blake = KeyBinding("blake3").expected(CLAIMS)
    assert blake == report_nonce(77, bytes(range(32)), 300) + bytes(32)
    assert blake[:32].hex() == report_nonce(77, bytes(range(32))).hex()
    sha = KeyBinding("sha512").expected(CLAIMS)
    assert sha == hashlib.sha512((77).to_bytes(8, "little") + bytes(range(32))).digest()
    with pytest.raises(ValueError, match="bare quote"):
        KeyBinding().expected(None)


@pytest.mark.parametrize("rule", ["blake3", "sha512"])
def test_a_quote_that_does_not_bind_the_claimed_key_is_refused(rule: str) -> None:
    evidence = TdxEvidence(CLAIMS, _quote(V4))
    with pytest.raises(ReportDataError, match=f"{rule} key binding"):
        _verifier(V4, report_data=KeyBinding(rule)).verify(evidence, now=_t(V4["verify_at"]),
                                                           public_key=CLAIMS.public_key)


def test_tdx_evidence_checks_the_presented_key_and_node() -> None:
    """With the sample's own report data as the rule (the sample binds no key of ours), the
    checks of the presented key and node still apply to the claims."""
    evidence = TdxEvidence(CLAIMS, _quote(V4))
    verifier = _verifier(V4)
    now = _t(V4["verify_at"])
    report = verifier.verify(evidence, now=now, public_key=CLAIMS.public_key, node_small_id=3)
    assert (report.public_key, report.node_small_id, report.key_rotation_counter) == (
        CLAIMS.public_key, 3, 2)
    assert report.signer_address is None  # the quote does not bind the node's Sui address
    with pytest.raises(AttestedKeyMismatchError, match="key"):
        verifier.verify(evidence, now=now, public_key=bytes(32))
    with pytest.raises(AttestedKeyMismatchError, match="another node"):
        verifier.verify(evidence, now=now, node_small_id=4)
    with pytest.raises(ValueError, match="bare quote"):
        verifier.verify(_quote(V4), now=now, public_key=CLAIMS.public_key)


def test_tdx_evidence_on_the_wire() -> None:
    evidence = TdxEvidence(CLAIMS, _quote(V4))
    again = evidence_from_json(evidence.to_json())
    assert again == evidence
    assert evidence_from_dict(json.loads(evidence.to_json())) == evidence
    broken = json.loads(evidence.to_json())
    broken["report"]["public_key"] = "AAAA"
    with pytest.raises(EvidenceFormatError, match="public_key"):
        evidence_from_dict(broken)
    for bad in ({"evidence_type": "sev-snp"}, {"evidence_type": {"nested": 1}},
                {"evidence_type": ["device"]}, {}, [], "device", None):
        with pytest.raises(EvidenceFormatError, match="unknown evidence_type"):
            evidence_from_dict(bad)


def test_the_tdx_verifier_takes_only_tdx_evidence() -> None:
    verifier = _verifier(V4)
    assert verifier.accepts(_quote(V4)) and verifier.accepts(TdxEvidence(CLAIMS, _quote(V4)))
    assert not verifier.accepts("a quote")
    with pytest.raises(EvidenceFormatError):
        verifier.verify("a quote", now=_t(V4["verify_at"]))


# ----------------------------------------------------------------------------- helpers
@pytest.mark.parametrize(("message", "error"), [
    ("Verification failed: TCBInfo expired", StaleEvidenceError),
    ("Verification failed: QE Identity issue date is in the future", StaleEvidenceError),
    ("Verification failed: ISV enclave report signature is invalid", EvidenceSignatureError),
    ("Verification failed: QE report hash mismatch", EvidenceSignatureError),
    ("Verification failed: Signature is invalid for qe_report in quote", EvidenceSignatureError),
    ("Verification failed: Signature is invalid for tcb_info in quote_collateral", CollateralError),
    ("Verification failed: Failed to verify certificate chain\n\nCaused by:\n    UnknownIssuer",
     CertificateChainError),
    ("Verification failed: Failed to verify certificate chain\n\nCaused by:\n    CertExpired",
     StaleEvidenceError),
    ("Verification failed: Failed to verify certificate chain\n\nCaused by:\n    CrlExpired { time: "
     "UnixTime(1752919235), next_update: UnixTime(1752919235) }", StaleEvidenceError),
    ("Verification failed: No matching TCB level found", TcbStatusError),
    ("Verification failed: TCB status is invalid: Revoked", TcbStatusError),
    ("Verification failed: Fmspc mismatch", CollateralError),
    ("Verification failed: Debug mode is enabled", MeasurementError),
    ("Verification failed: Failed to decode quote\n\nCaused by:\n    Invalid TEE type",
     EvidenceFormatError),
])
def test_dcap_qvl_messages_map_to_the_check_that_failed(message: str, error: type) -> None:
    err = dcap_error(message)
    assert type(err) is error
    assert "\n" not in err.message


def test_an_unknown_dcap_qvl_message_stays_a_plain_attestation_error() -> None:
    assert type(dcap_error("Verification failed: something new")) is AttestationError


@pytest.mark.parametrize("iso", ["1970-01-01T00:00:00Z", "2000-02-29T12:34:56Z",
                                 "2025-06-19T10:16:03Z", "2100-03-01T00:00:00Z",
                                 "2026-11-07T00:09:46.123Z"])
def test_iso_utc_to_unix(iso: str) -> None:
    assert iso_utc_to_unix(iso) == calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))


def test_iso_utc_to_unix_refuses_other_forms() -> None:
    for bad in ("2025-06-19 10:16:03", "2025-06-19T10:16:03+00:00", ""):
        with pytest.raises(ValueError):
            iso_utc_to_unix(bad)


def test_quote_rows_show_every_field() -> None:
    q = TdxQuote.parse(_quote(V4))
    rows = q.to_rows()
    assert [r[0] for r in rows][:3] == ["header.version", "header.attestation_key_type",
                                        "header.tee_type"]
    assert ("header.tee_type", 4, 4, "0x81") in rows
    assert any(r[0] == "pck.chain" and "Intel SGX Root CA" in r[3] for r in rows)
    assert "<table>" in q._repr_html_() and "mrtd" in repr(q)


def test_sample_paths_stay_inside_the_vectors_folder() -> None:
    for v in ALL:
        assert (VECTORS_DIR / v["quote"]).resolve().is_relative_to(Path(VECTORS_DIR).resolve())
