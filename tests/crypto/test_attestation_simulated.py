"""The simulated TEE behind the verifier interface: its report, and each failed check's error."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from atoma_lab.crypto.attestation import (
    AttestationEvidence,
    AttestationPolicy,
    AttestationVerifier,
    SimulatedTEE,
    SimulatedVerifier,
    VerifierSet,
    report_nonce,
)
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.errors import (
    AttestedKeyMismatchError,
    EvidenceFormatError,
    EvidenceSignatureError,
    MeasurementError,
    ReportDataError,
    StaleEvidenceError,
    UntrustedSignerError,
)

NOW = 1_750_000_000.0
TEE = SimulatedTEE(SuiSigner.from_ed25519_seed(bytes(32)))
KEY = X25519KeyPair.generate().public_bytes
NODE = SuiSigner.from_ed25519_seed(bytes([1]) * 32)


def _evidence(tee: SimulatedTEE = TEE, **changes: object) -> AttestationEvidence:
    evidence = tee.attest(node_small_id=7, key_rotation_counter=3, rotation_nonce=11,
                          public_key=KEY, signer_address=NODE.address, now=NOW)
    if changes:  # re-signed by the vendor, so only the changed check can fail
        report = dataclasses.replace(evidence.report, **changes)
        import blake3

        from atoma_lab.encoding import dumps

        digest = blake3.blake3(dumps(report.to_dict())).digest()
        evidence = AttestationEvidence(report, tee.vendor.sign(digest).to_base64())
    return evidence


def _flipped(signature_b64: str) -> str:
    raw = bytearray(base64.b64decode(signature_b64))
    raw[5] ^= 0x01  # inside the signature, after Sui's scheme flag
    return base64.b64encode(bytes(raw)).decode()


def _verifier(**policy: object) -> SimulatedVerifier:
    return SimulatedVerifier(AttestationPolicy.trusting([TEE.vendor_address], **policy))  # type: ignore[arg-type]


def test_the_simulated_verifier_reports_what_the_vendor_signed() -> None:
    verifier = _verifier(max_age_s=60)
    assert isinstance(verifier, AttestationVerifier)
    report = verifier.verify(_evidence(), now=NOW + 30, public_key=KEY, node_small_id=7)
    assert (report.tee, report.signer, report.status) == ("simulated", TEE.vendor_address, "OK")
    assert report.measurements == {"measurement": "atoma-lab-node-v1"}
    assert report.report_data == report_nonce(11, KEY)
    assert (report.valid_from, report.valid_until) == (NOW, NOW + 60)
    assert (report.public_key, report.node_small_id, report.key_rotation_counter,
            report.signer_address) == (KEY, 7, 3, NODE.address)
    assert report.holds_at(NOW + 60) and not report.holds_at(NOW + 61)
    assert report.to_dict()["report_data"] == report_nonce(11, KEY).hex()
    assert "<table" in report._repr_html_() and "measurement" in report._repr_html_()


@pytest.mark.parametrize(("evidence", "kwargs", "error"), [
    (_evidence(SimulatedTEE()), {}, UntrustedSignerError),
    (AttestationEvidence(_evidence().report, _flipped(_evidence().vendor_signature)), {},
     EvidenceSignatureError),
    (_evidence(report_data=bytes(32)), {}, ReportDataError),
    (_evidence(measurement="patched-node"), {}, MeasurementError),
    (_evidence(), {"public_key": bytes(32)}, AttestedKeyMismatchError),
    (_evidence(), {"node_small_id": 8}, AttestedKeyMismatchError),
    (_evidence(issued_at=NOW - 61), {}, StaleEvidenceError),
    (_evidence(issued_at=NOW + 1), {}, StaleEvidenceError),
])
def test_each_failed_check_has_its_error(evidence: AttestationEvidence, kwargs: dict[str, object],
                                         error: type[Exception]) -> None:
    with pytest.raises(error):
        _verifier(max_age_s=60).verify(evidence, now=NOW, **kwargs)  # type: ignore[arg-type]


def test_malformed_simulated_evidence_is_a_format_error() -> None:
    with pytest.raises(EvidenceFormatError):
        AttestationEvidence.from_dict({"evidence_type": "device", "report": {}})
    with pytest.raises(EvidenceFormatError, match="simulated evidence"):
        _verifier().verify(b"a quote", now=NOW)


def test_a_verifier_set_dispatches_by_kind() -> None:
    class Other:
        tee = "other"

        def accepts(self, evidence: object) -> bool:
            return isinstance(evidence, str)

        def verify(self, evidence: object, **_: object) -> object:
            raise AssertionError("not for simulated evidence")

    both = VerifierSet(Other(), _verifier())  # type: ignore[arg-type]
    assert both.tee == "other+simulated"
    assert both.verify(_evidence(), now=NOW).signer == TEE.vendor_address
    assert both.accepts(_evidence()) and not both.accepts(3)
    with pytest.raises(EvidenceFormatError, match="no verifier"):
        both.verify(3, now=NOW)
    with pytest.raises(ValueError):
        VerifierSet()


def test_reports_and_evidence_render_as_html_with_the_key_by_fingerprint() -> None:
    from atoma_lab.display import fingerprint

    evidence = _evidence()
    report = _verifier().verify(evidence, now=NOW, public_key=KEY, node_small_id=7)
    for html in (report._repr_html_(), evidence.report._repr_html_(), evidence._repr_html_()):
        assert "<table" in html and fingerprint(KEY) in html
        assert KEY.hex() not in html and base64.b64encode(KEY).decode() not in html
        assert "atoma-lab-node-v1" in html
    assert "Verified attestation report (simulated)" in report._repr_html_()
    whole = evidence._repr_html_()
    assert evidence.vendor_signature not in whole and evidence.vendor_signature[:24] in whole
