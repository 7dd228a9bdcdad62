"""Atoma's NVIDIA GPU evidence: parsed, and its key binding checked; **not** verified.

An Atoma node binds its new X25519 key into an NVIDIA confidential-computing attestation by the
nonce it asks the GPU to sign: ``BLAKE3(rotation nonce u64 LE ‖ key ‖ device_type u16 LE)`` with
``device_type = 300`` (atoma-protocol.md §3). It submits a zlib-compressed JSON array of
``{"evidence_type": "device" | "nvswitch", "evidence": b64, "certificate": b64}``: each
``evidence`` an attestation report as NVML returns it, each ``certificate`` the device's PEM
certificate chain.

An NVML attestation report is an SPDM 1.1 ``GET_MEASUREMENTS`` request (37 bytes: version, code
0xE0, param1, param2, nonce 32, slot id) followed by the ``MEASUREMENTS`` response (version, code
0x60, param1, param2, number of blocks, record length u24 LE, the measurement blocks, the
responder's nonce 32, opaque data length u16 LE and opaque data as (type u16, size u16, value)
fields, then the signature: ECDSA P-384, 96 bytes on Hopper). Layout per DMTF DSP0274 (SPDM
1.1) and NVIDIA's published local GPU verifier.

What this module does: take that structure apart strictly (every length must add up) and check
that the nonce in each report's request is the one that binds the claimed key. What it does not
do: verify the report's signature and the certificate chain to NVIDIA's root, check revocation
(NVIDIA's OCSP service) and compare the measurements with NVIDIA's reference values (RIMs from
NVIDIA's RIM service). Those need NVIDIA's online services; offline, a structurally sound report
with the right nonce may still be forged.
"""

from __future__ import annotations

import hmac
import zlib
from dataclasses import dataclass

import orjson
from cryptography import x509

from atoma_lab.crypto.attestation.base import NVIDIA_CC_GPU_DEVICE_SLOT, report_nonce
from atoma_lab.encoding import b64decode, b64encode
from atoma_lab.errors import (
    CertificateChainError,
    EvidenceFormatError,
    InvalidFieldError,
    ReportDataError,
)

SPDM_GET_MEASUREMENTS = 0xE0  # request code, DSP0274
SPDM_MEASUREMENTS = 0x60  # response code, DSP0274
SPDM_REQUEST_SIZE = 37  # bytes: version, code, param1, param2, nonce 32, slot id
SPDM_NONCE_SIZE = 32  # bytes
HOPPER_SIGNATURE_SIZE = 96  # bytes, ECDSA P-384 r ‖ s
MAX_EVIDENCE_SIZE = 4 * 1024 * 1024  # bytes: a decompressed evidence list is refused above this
EVIDENCE_TYPES = ("device", "nvswitch")
# Opaque data field types named in NVIDIA's verifier that this module shows by name.
OPAQUE_FIELD_NAMES = {3: "driver_version", 6: "vbios_version", 15: "chip_sku", 17: "project",
                      18: "project_sku", 20: "fwid"}


@dataclass(frozen=True, slots=True)
class MeasurementBlock:
    """One SPDM measurement block (DMTF measurement specification)."""

    index: int
    specification: int
    value_type: int
    value: bytes


@dataclass(frozen=True, slots=True)
class OpaqueField:
    type: int
    value: bytes

    @property
    def name(self) -> str:
        return OPAQUE_FIELD_NAMES.get(self.type, f"type_{self.type}")


class _Cursor:
    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def take(self, name: str, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise EvidenceFormatError(f"{self.where} is truncated in {name}")
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def uint(self, name: str, size: int) -> int:
        return int.from_bytes(self.take(name, size), "little")

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


@dataclass(frozen=True, slots=True, repr=False)
class GpuAttestationReport:
    """An NVML attestation report taken apart (request, response, signature)."""

    raw: bytes
    spdm_version: int
    request_param1: int
    request_param2: int
    nonce: bytes  # the requester's nonce: what binds the node's key
    slot_id: int
    response_param1: int
    response_param2: int
    blocks: tuple[MeasurementBlock, ...]
    responder_nonce: bytes
    opaque: tuple[OpaqueField, ...]
    signature: bytes

    @classmethod
    def parse(cls, raw: bytes, *, signature_size: int = HOPPER_SIGNATURE_SIZE) -> GpuAttestationReport:
        raw = bytes(raw)
        c = _Cursor(raw, "GPU attestation report")
        version = c.uint("request.version", 1)
        if c.uint("request.code", 1) != SPDM_GET_MEASUREMENTS:
            raise EvidenceFormatError("report does not start with an SPDM GET_MEASUREMENTS request")
        param1, param2 = c.uint("request.param1", 1), c.uint("request.param2", 1)
        nonce = c.take("request.nonce", SPDM_NONCE_SIZE)
        slot_id = c.uint("request.slot_id", 1)
        if c.uint("response.version", 1) != version:
            raise EvidenceFormatError("SPDM response version differs from the request's")
        if c.uint("response.code", 1) != SPDM_MEASUREMENTS:
            raise EvidenceFormatError("SPDM response is not MEASUREMENTS")
        rparam1, rparam2 = c.uint("response.param1", 1), c.uint("response.param2", 1)
        count = c.uint("response.number_of_blocks", 1)
        record = _Cursor(c.take("response.measurement_record",
                                c.uint("response.record_length", 3)), "measurement record")
        blocks = []
        while record.left:
            index, spec = record.uint("block.index", 1), record.uint("block.specification", 1)
            m = _Cursor(record.take("block.measurement", record.uint("block.size", 2)),
                        f"measurement block {index}")
            value_type = m.uint("dmtf.value_type", 1)
            value = m.take("dmtf.value", m.uint("dmtf.value_size", 2))
            if m.left:
                raise EvidenceFormatError(f"measurement block {index} has {m.left} stray bytes")
            blocks.append(MeasurementBlock(index, spec, value_type, value))
        if len(blocks) != count:
            raise EvidenceFormatError(f"response announces {count} measurement blocks, "
                                      f"its record holds {len(blocks)}")
        responder_nonce = c.take("response.nonce", SPDM_NONCE_SIZE)
        o = _Cursor(c.take("response.opaque_data", c.uint("response.opaque_length", 2)),
                    "opaque data")
        opaque = []
        while o.left:
            kind = o.uint("opaque.type", 2)
            opaque.append(OpaqueField(kind, o.take(f"opaque field {kind}", o.uint("opaque.size", 2))))
        if c.left != signature_size:
            raise EvidenceFormatError(f"{c.left} bytes follow the opaque data; the signature is "
                                      f"{signature_size}")
        return cls(raw=raw, spdm_version=version, request_param1=param1, request_param2=param2,
                   nonce=nonce, slot_id=slot_id, response_param1=rparam1, response_param2=rparam2,
                   blocks=tuple(blocks), responder_nonce=responder_nonce, opaque=tuple(opaque),
                   signature=c.take("signature", signature_size))

    def opaque_text(self, name: str) -> str | None:
        """An opaque field as text (NUL-terminated ASCII), by name; ``None`` if absent."""
        for f in self.opaque:
            if f.name == name:
                return f.value.split(b"\0", 1)[0].decode("ascii", "replace")
        return None

    def __repr__(self) -> str:
        return (f"GpuAttestationReport(spdm_version={self.spdm_version:#x}, "
                f"blocks={len(self.blocks)}, opaque_fields={len(self.opaque)}, "
                f"driver_version={self.opaque_text('driver_version')!r})")


@dataclass(frozen=True, slots=True)
class GpuEvidence:
    """One entry of Atoma's evidence list: a GPU's (or NVSwitch's) report and certificate chain."""

    evidence_type: str
    report: GpuAttestationReport
    certificate_chain: tuple[str, ...]  # subjects, leaf first (parsed, not verified)
    raw_evidence: bytes
    raw_certificate: bytes


def _b64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceFormatError(f"{name} is not a base64 string")
    try:
        return b64decode(value, field=name)
    except InvalidFieldError as exc:
        raise EvidenceFormatError(f"{name} is not strict base64") from exc


def parse_atoma_evidence(compressed: bytes, *,
                         signature_size: int = HOPPER_SIGNATURE_SIZE) -> tuple[GpuEvidence, ...]:
    """Atoma's ``compressed_evidence``: zlib, then a JSON array of evidence objects."""
    d = zlib.decompressobj()
    try:
        text = d.decompress(bytes(compressed), MAX_EVIDENCE_SIZE)
    except zlib.error as exc:
        raise EvidenceFormatError("compressed evidence is not zlib data") from exc
    if d.unconsumed_tail or not d.eof or d.unused_data:
        raise EvidenceFormatError("compressed evidence is truncated, too large or followed by data")
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise EvidenceFormatError("evidence list is not JSON") from exc
    if not isinstance(items, list) or not items:
        raise EvidenceFormatError("evidence is not a non-empty JSON array")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("evidence_type") not in EVIDENCE_TYPES:
            raise EvidenceFormatError(f"evidence[{i}]: expected an object with evidence_type "
                                      f"in {EVIDENCE_TYPES}")
        report_raw = _b64(item.get("evidence"), f"evidence[{i}].evidence")
        cert_raw = _b64(item.get("certificate"), f"evidence[{i}].certificate")
        try:
            certs = x509.load_pem_x509_certificates(cert_raw)
            subjects = tuple(c.subject.rfc4514_string() for c in certs)
        except ValueError as exc:
            raise CertificateChainError(f"evidence[{i}].certificate is not a PEM chain") from exc
        out.append(GpuEvidence(item["evidence_type"],
                               GpuAttestationReport.parse(report_raw, signature_size=signature_size),
                               subjects, report_raw, cert_raw))
    return tuple(out)


def encode_atoma_evidence(items: list[tuple[str, bytes, bytes]]) -> bytes:
    """``[(evidence_type, report, certificate chain PEM), ...]`` as Atoma compresses it."""
    return zlib.compress(orjson.dumps([
        {"evidence_type": kind, "evidence": b64encode(report),
         "certificate": b64encode(chain)} for kind, report, chain in items]))


def check_key_binding(evidence: tuple[GpuEvidence, ...] | list[GpuEvidence], *,
                      rotation_nonce: int, public_key: bytes,
                      device_type: int = NVIDIA_CC_GPU_DEVICE_SLOT) -> bytes:
    """Every report's request nonce must be Atoma's report nonce for this rotation and key, as
    the proxy recomputes it. Returns that nonce; raises :class:`ReportDataError` otherwise.

    This is the binding only: it says the reports were requested for this key, not that an
    NVIDIA GPU produced them (see the module's docstring)."""
    if not evidence:
        raise EvidenceFormatError("no GPU evidence")
    expected = report_nonce(rotation_nonce, public_key, device_type)
    for i, item in enumerate(evidence):
        if not hmac.compare_digest(item.report.nonce, expected):
            raise ReportDataError(f"evidence[{i}] ({item.evidence_type}): the report's nonce does "
                                  "not bind this rotation nonce and key")
    return expected


__all__ = [
    "GpuAttestationReport",
    "GpuEvidence",
    "MeasurementBlock",
    "OpaqueField",
    "check_key_binding",
    "encode_atoma_evidence",
    "parse_atoma_evidence",
]
