"""Simulated TEE attestation evidence binding a node's X25519 key, as Atoma binds it.

Atoma's node computes the report nonce as
``BLAKE3(rotation nonce as u64 LE ‖ new X25519 public key ‖ device_type as u16 LE)`` with
``device_type = 300`` (NVIDIA CC GPU slot) and asks the GPU for an attestation report over it
(atoma-protocol.md section 3). Here a *simulated vendor* key (Ed25519) stands in for the GPU
vendor's certificate chain: it signs a report holding that nonce, a measurement of the node's
software, and the node's Sui signing address, so a verifier can check that a key handed out by a
proxy really belongs to an attested node.

The report also names the node's ``boot_epoch``, a number the node picks once per start and
never lower than the last (its start time in microseconds): a key rotation counter starts again
at 1 when a node restarts, so keys are ordered by ``(boot_epoch, key_rotation_counter)``.

Evidence is JSON (canonical, sorted keys) so that notebooks can show it byte by byte.
:class:`SimulatedVerifier` is this TEE's implementation of the
:class:`~atoma_lab.crypto.attestation.base.AttestationVerifier` interface.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

import blake3

from atoma_lab.crypto.attestation.base import (
    NVIDIA_CC_GPU_DEVICE_SLOT,
    AttestationVerifier,
    VerifiedReport,
    report_nonce,
)
from atoma_lab.crypto.signing import SignatureScheme, SuiSigner, verify_sui_signature
from atoma_lab.display.html import fingerprint, kv_table, section
from atoma_lab.encoding import b64decode, b64encode, dumps, loads, require_int, require_str
from atoma_lab.errors import (
    AtomaLabError,
    AttestedKeyMismatchError,
    EvidenceFormatError,
    EvidenceSignatureError,
    InvalidFieldError,
    MeasurementError,
    ReportDataError,
    StaleEvidenceError,
    UntrustedSignerError,
)

DEFAULT_MEASUREMENT = "atoma-lab-node-v1"  # the simulated measurement of the node's software
SIMULATED_TEE = "simulated"


@dataclass(frozen=True, slots=True)
class AttestationReport:
    """What the simulated TEE vouches for."""

    node_small_id: int
    key_rotation_counter: int
    rotation_nonce: int
    public_key: bytes
    device_type: int
    report_data: bytes
    measurement: str
    signer_address: str
    issued_at: float
    boot_epoch: int = 0

    @property
    def key_order(self) -> tuple[int, int]:
        """``(boot_epoch, key_rotation_counter)``: a later key of a node is greater."""
        return self.boot_epoch, self.key_rotation_counter

    def to_dict(self) -> dict[str, object]:
        return {
            "boot_epoch": self.boot_epoch,
            "device_type": self.device_type,
            "issued_at": self.issued_at,
            "key_rotation_counter": self.key_rotation_counter,
            "measurement": self.measurement,
            "node_small_id": self.node_small_id,
            "public_key": b64encode(self.public_key),
            "report_data": b64encode(self.report_data),
            "rotation_nonce": self.rotation_nonce,
            "signer_address": self.signer_address,
        }

    def _repr_html_(self) -> str:
        return section("Attestation report (simulated TEE)", kv_table({
            "node": self.node_small_id, "key rotation counter": self.key_rotation_counter,
            "rotation nonce": self.rotation_nonce,
            "public key (fingerprint)": fingerprint(self.public_key),
            "device type": self.device_type, "report data": self.report_data.hex(),
            "measurement": self.measurement, "node signer": self.signer_address,
            "issued at (Unix s)": self.issued_at}))

    @classmethod
    def from_dict(cls, d: object) -> AttestationReport:
        if not isinstance(d, dict):
            raise InvalidFieldError("report: expected an object", field="report")
        issued_at = d.get("issued_at")
        if isinstance(issued_at, bool) or not isinstance(issued_at, int | float):
            raise InvalidFieldError("report.issued_at: expected a number", field="report.issued_at")
        return cls(
            node_small_id=require_int(d.get("node_small_id"), field="report.node_small_id"),
            key_rotation_counter=require_int(d.get("key_rotation_counter"),
                                             field="report.key_rotation_counter"),
            rotation_nonce=require_int(d.get("rotation_nonce"), field="report.rotation_nonce"),
            public_key=b64decode(d.get("public_key"), field="report.public_key", size=32),
            device_type=require_int(d.get("device_type"), field="report.device_type",
                                    maximum=2**16 - 1),
            report_data=b64decode(d.get("report_data"), field="report.report_data", size=32),
            measurement=require_str(d.get("measurement"), field="report.measurement"),
            signer_address=require_str(d.get("signer_address"), field="report.signer_address"),
            issued_at=float(issued_at),
            boot_epoch=require_int(d.get("boot_epoch"), field="report.boot_epoch"),
        )


@dataclass(frozen=True, slots=True)
class AttestationEvidence:
    """A report, its canonical bytes, and the vendor's Sui-style signature over BLAKE3 of them."""

    report: AttestationReport
    vendor_signature: str

    def report_bytes(self) -> bytes:
        return dumps(self.report.to_dict())

    def to_dict(self) -> dict[str, object]:
        return {"evidence_type": "device", "report": self.report.to_dict(),
                "vendor_signature": self.vendor_signature}

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    def _repr_html_(self) -> str:
        return section("Attestation evidence (simulated TEE)", self.report._repr_html_(),
                       kv_table({"vendor signature": f"{self.vendor_signature[:24]}… "
                                                     f"({len(self.vendor_signature)} chars)"}))

    @classmethod
    def from_dict(cls, d: object) -> AttestationEvidence:
        try:
            if not isinstance(d, dict) or d.get("evidence_type") != "device":
                raise InvalidFieldError("evidence: expected a device evidence object",
                                        field="evidence")
            return cls(
                report=AttestationReport.from_dict(d.get("report")),
                vendor_signature=require_str(d.get("vendor_signature"),
                                             field="evidence.vendor_signature"),
            )
        except InvalidFieldError as exc:
            raise EvidenceFormatError(f"malformed attestation evidence: {exc.message}") from exc

    @classmethod
    def from_json(cls, body: bytes | str) -> AttestationEvidence:
        return cls.from_dict(loads(body, what="attestation evidence"))


class SimulatedTEE:
    """A simulated GPU TEE: it signs reports with a vendor key that verifiers trust."""

    def __init__(self, vendor: SuiSigner | None = None, *,
                 measurement: str = DEFAULT_MEASUREMENT) -> None:
        self.vendor = vendor or SuiSigner.generate(SignatureScheme.ED25519)
        self.measurement = measurement

    @property
    def vendor_address(self) -> str:
        return self.vendor.address

    def attest(self, *, node_small_id: int, key_rotation_counter: int, rotation_nonce: int,
               public_key: bytes, signer_address: str, now: float,
               device_type: int = NVIDIA_CC_GPU_DEVICE_SLOT,
               boot_epoch: int = 0) -> AttestationEvidence:
        report = AttestationReport(
            boot_epoch=boot_epoch,
            node_small_id=node_small_id,
            key_rotation_counter=key_rotation_counter,
            rotation_nonce=rotation_nonce,
            public_key=bytes(public_key),
            device_type=device_type,
            report_data=report_nonce(rotation_nonce, public_key, device_type),
            measurement=self.measurement,
            signer_address=signer_address,
            issued_at=now,
        )
        digest = blake3.blake3(dumps(report.to_dict())).digest()
        return AttestationEvidence(report, self.vendor.sign(digest).to_base64())


@dataclass(frozen=True, slots=True)
class AttestationPolicy:
    """What a verifier accepts: trusted vendor addresses, measurements, and freshness."""

    trusted_vendors: frozenset[str]
    measurements: frozenset[str] = frozenset({DEFAULT_MEASUREMENT})
    max_age_s: float | None = None

    @classmethod
    def trusting(cls, vendors: Iterable[str], *, measurements: Iterable[str] = (DEFAULT_MEASUREMENT,),
                 max_age_s: float | None = None) -> AttestationPolicy:
        return cls(frozenset(vendors), frozenset(measurements), max_age_s)


def verify_evidence(evidence: AttestationEvidence, policy: AttestationPolicy, *,
                    public_key: bytes | None = None, node_small_id: int | None = None,
                    now: float | None = None) -> AttestationReport:
    """Check evidence against a policy and, when given, the key and node it must bind.

    Raises an :class:`~atoma_lab.errors.AttestationError` subclass naming the failed check.
    """
    return _check(evidence, policy, public_key=public_key, node_small_id=node_small_id, now=now)[0]


def _check(evidence: AttestationEvidence, policy: AttestationPolicy, *, public_key: bytes | None,
           node_small_id: int | None, now: float | None) -> tuple[AttestationReport, str]:
    """:func:`verify_evidence`, returning the vendor's address beside the report."""
    report = evidence.report
    digest = blake3.blake3(evidence.report_bytes()).digest()
    try:
        sig = verify_sui_signature(evidence.vendor_signature, digest,
                                   field="evidence.vendor_signature")
    except AtomaLabError as exc:
        raise EvidenceSignatureError("vendor signature on the attestation report does not verify") \
            from exc
    if sig.address not in policy.trusted_vendors:
        raise UntrustedSignerError("attestation report is signed by an untrusted vendor key")
    expected = report_nonce(report.rotation_nonce, report.public_key, report.device_type)
    if not hmac.compare_digest(expected, report.report_data):
        raise ReportDataError("report_data does not bind the rotation nonce, key and device")
    if report.measurement not in policy.measurements:
        raise MeasurementError("node measurement is not in the policy's allowed list")
    if public_key is not None and not hmac.compare_digest(bytes(public_key), report.public_key):
        raise AttestedKeyMismatchError("the key presented is not the attested key")
    if node_small_id is not None and node_small_id != report.node_small_id:
        raise AttestedKeyMismatchError("the evidence belongs to another node")
    if policy.max_age_s is not None:
        if now is None:
            raise ValueError("now is required when the policy has max_age_s")
        if not 0 <= now - report.issued_at <= policy.max_age_s:
            raise StaleEvidenceError("attestation evidence is stale or from the future")
    return report, sig.address


class SimulatedVerifier:
    """The simulated TEE behind the :class:`~atoma_lab.crypto.attestation.base.AttestationVerifier`
    interface: :func:`verify_evidence` under ``policy``, its report as a :class:`VerifiedReport`."""

    tee = SIMULATED_TEE

    def __init__(self, policy: AttestationPolicy) -> None:
        self.policy = policy

    def accepts(self, evidence: object) -> bool:
        return isinstance(evidence, AttestationEvidence)

    def verify(self, evidence: object, *, now: float, public_key: bytes | None = None,
               node_small_id: int | None = None) -> VerifiedReport:
        if not isinstance(evidence, AttestationEvidence):
            raise EvidenceFormatError(f"the simulated TEE verifier takes simulated evidence, "
                                      f"not {type(evidence).__name__}")
        report, vendor = _check(evidence, self.policy, public_key=public_key,
                                node_small_id=node_small_id, now=now)
        until = None if self.policy.max_age_s is None else report.issued_at + self.policy.max_age_s
        return VerifiedReport(
            tee=SIMULATED_TEE, signer=vendor, measurements={"measurement": report.measurement},
            report_data=report.report_data, valid_from=report.issued_at, valid_until=until,
            status="OK", public_key=report.public_key, node_small_id=report.node_small_id,
            key_rotation_counter=report.key_rotation_counter, signer_address=report.signer_address,
            details={"device_type": report.device_type, "rotation_nonce": report.rotation_nonce})


def verifier_for(verifier: AttestationVerifier | None,
                 policy: AttestationPolicy | None) -> AttestationVerifier | None:
    """``verifier`` when there is one, else the simulated TEE's under ``policy`` (``None``
    without either): how a party configured with either checks evidence."""
    if verifier is not None:
        return verifier
    return None if policy is None else SimulatedVerifier(policy)
