"""Intel TDX quotes: a strict parser of their layout, and a verifier behind the
:class:`~atoma_lab.crypto.attestation.base.AttestationVerifier` interface.

What the verifier checks, in order:

1. **Layout** (this module, no dependency): header (version 4 or 5, ECDSA-P256 attestation key,
   TEE type TDX), the TD report body, the signature data with its certification data (QE report,
   QE authentication data, the PCK certificate chain as canonical PEM); sizes must add up, and
   anything after the signature data must be zero padding.
2. **The pinned root**: the chain in the quote must end in the Intel SGX Root CA that atoma-lab
   pins (:data:`INTEL_SGX_ROOT_CA_PEM`), not merely in a certificate that names itself so.
3. **Signature chain and TCB** with ``dcap-qvl`` (Phala Network's Rust verifier, imported lazily;
   ``pip install 'atoma-lab[tdx]'``) against DCAP collateral the caller passes in (TCB info, QE
   identity, CRLs, as a PCCS serves them): the quote body's ECDSA signature by the attestation
   key, the QE report binding that key, the QE report's signature by the PCK certificate, the
   chain to the pinned root, the collateral's signatures and validity at ``now``, and the TCB
   level the platform reaches. No network: collateral is an argument.
4. **Policy** (:class:`TdxPolicy`): accepted TCB statuses and advisories, allow-lists for MRTD and
   the RTMRs, the collateral's maximum age, and what the 64 bytes of report data must be
   (a caller-given value, or a key binding rule over the node's nonce and X25519 key).

Layout of a quote (Intel TDX DCAP Quoting Library API, quote format v4/v5), offsets in bytes:
header 48 (version u16, attestation key type u16, TEE type u32, QE SVN u16, PCE SVN u16,
QE vendor id 16, user data 20); v4: TD report 584 at 48; v5: body type u16, body size u32, body;
then signature data length u32, ECDSA signature 64, attestation public key 64, certification data
(type u16 = 6, size u32): QE report 384, QE report signature 64, QE auth data (size u16, data),
certification data (type u16 = 5, size u32, PCK chain PEM).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from atoma_lab.crypto.attestation.base import NodeKeyClaims, VerifiedReport, report_nonce
from atoma_lab.encoding import b64decode, b64encode, dumps, loads, require_int, require_str
from atoma_lab.errors import (
    AttestationError,
    AttestedKeyMismatchError,
    CertificateChainError,
    CollateralError,
    EvidenceFormatError,
    EvidenceSignatureError,
    InvalidFieldError,
    MeasurementError,
    ReportDataError,
    StaleEvidenceError,
    TcbStatusError,
)

TDX_TEE = "tdx"
HEADER_SIZE = 48  # bytes, quote header v4/v5
TD_REPORT10_SIZE = 584  # bytes, TDREPORT body of TDX 1.0 (quote v4, v5 body type 2)
TD_REPORT15_SIZE = 648  # bytes, TDX 1.5 body: TD 1.0 + TEE_TCB_SVN2 (16) + MRSERVICETD (48)
QUOTE_VERSIONS = (4, 5)
TEE_TYPE_TDX = 0x81
ATTESTATION_KEY_ECDSA_P256 = 2
CERT_DATA_PCK_CHAIN = 5  # certification data type: PCK leaf, intermediate and root, PEM
CERT_DATA_QE_REPORT = 6  # certification data type: QE report certification data
BODY_TD10, BODY_TD15, BODY_TD15EX = 2, 3, 4  # quote v5 body types
ECDSA_SIGNATURE_SIZE = 64  # bytes, P-256 r ‖ s
ECDSA_KEY_SIZE = 64  # bytes, P-256 x ‖ y
QE_REPORT_SIZE = 384  # bytes, SGX enclave report
REPORT_DATA_SIZE = 64  # bytes, TD report data
MEASUREMENT_SIZE = 48  # bytes, SHA-384 registers (MRTD, RTMRs)
MEASUREMENT_NAMES = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mr_seam")
# TCB statuses in Intel's TCB info (and dcap-qvl's names for them).
TCB_STATUSES = frozenset({
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked",
})
SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"  # Intel SGX extension in PCK certificates
FMSPC_OID = "1.2.840.113741.1.13.1.4"  # its FMSPC entry (6 bytes)

# Intel SGX Root CA, the trust anchor of every PCK chain, as Intel publishes it at
# certificates.trustedservices.intel.com (the same certificate is built into dcap-qvl).
# SHA-256 of its DER: 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3.
INTEL_SGX_ROOT_CA_PEM = b"""-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
"""
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


# ------------------------------------------------------------------------------------ parsing
@dataclass(frozen=True, slots=True)
class QuoteField:
    """One field of a quote: where it lies and what it holds (for showing a quote apart)."""

    name: str
    offset: int
    size: int
    value: bytes

    @property
    def as_int(self) -> int:
        return int.from_bytes(self.value, "little")


class _Reader:
    def __init__(self, data: bytes, fields: list[QuoteField], *, base: int = 0,
                 where: str = "quote") -> None:
        self.data, self.pos, self.base, self.where, self.fields = data, 0, base, where, fields

    def take(self, name: str, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise EvidenceFormatError(f"{self.where} is truncated in {name} (needs {size} bytes "
                                      f"at offset {self.base + self.pos})")
        value = self.data[self.pos:self.pos + size]
        self.fields.append(QuoteField(name, self.base + self.pos, size, value))
        self.pos += size
        return value

    def u16(self, name: str) -> int:
        return int(struct.unpack("<H", self.take(name, 2))[0])

    def u32(self, name: str) -> int:
        return int(struct.unpack("<I", self.take(name, 4))[0])

    def certification(self, name: str, expected_type: int, kind: str, what: str) -> int:
        """A certification-data header: its u16 type must be ``expected_type`` and its u32 size
        must cover exactly the bytes that follow; returns that size."""
        found = self.u16(f"{name}.type")
        if found != expected_type:
            raise EvidenceFormatError(f"{name} data type {found} is not {kind} ({expected_type})")
        size = self.u32(f"{name}.size")
        if size != len(self.rest()):
            raise EvidenceFormatError(f"{what} claims {size} bytes, {len(self.rest())} follow")
        return size

    def rest(self) -> bytes:
        return self.data[self.pos:]


@dataclass(frozen=True, slots=True)
class TdReport:
    """The TD report a quote signs: who runs (MRTD, RTMRs), on what (MRSEAM, TCB SVN), and the
    64 bytes of report data the TD chose."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None  # TDX 1.5 bodies
    mr_service_td: bytes | None = None  # TDX 1.5 bodies
    extension: bytes = b""  # the rest of a TDX 1.5 "ex" body (quote v5 body type 4), kept raw

    def measurements(self) -> dict[str, bytes]:
        return {"mrtd": self.mr_td, "rtmr0": self.rtmrs[0], "rtmr1": self.rtmrs[1],
                "rtmr2": self.rtmrs[2], "rtmr3": self.rtmrs[3], "mr_seam": self.mr_seam}


def _td_report(r: _Reader, size: int, body_type: int) -> TdReport:
    start = r.pos
    f = {name: r.take(f"td.{name}", n) for name, n in (
        ("tee_tcb_svn", 16), ("mr_seam", 48), ("mr_signer_seam", 48), ("seam_attributes", 8),
        ("td_attributes", 8), ("xfam", 8), ("mr_td", 48), ("mr_config_id", 48), ("mr_owner", 48),
        ("mr_owner_config", 48), ("rtmr0", 48), ("rtmr1", 48), ("rtmr2", 48), ("rtmr3", 48),
        ("report_data", 64))}
    svn2 = service = None
    if body_type in (BODY_TD15, BODY_TD15EX):
        svn2, service = r.take("td.tee_tcb_svn2", 16), r.take("td.mr_service_td", 48)
    extension = r.take("td.extension", size - (r.pos - start)) if body_type == BODY_TD15EX else b""
    return TdReport(
        tee_tcb_svn=f["tee_tcb_svn"], mr_seam=f["mr_seam"], mr_signer_seam=f["mr_signer_seam"],
        seam_attributes=f["seam_attributes"], td_attributes=f["td_attributes"], xfam=f["xfam"],
        mr_td=f["mr_td"], mr_config_id=f["mr_config_id"], mr_owner=f["mr_owner"],
        mr_owner_config=f["mr_owner_config"],
        rtmrs=(f["rtmr0"], f["rtmr1"], f["rtmr2"], f["rtmr3"]), report_data=f["report_data"],
        tee_tcb_svn2=svn2, mr_service_td=service, extension=extension)


@dataclass(frozen=True, slots=True, repr=False)
class TdxQuote:
    """A TDX quote taken apart. :meth:`parse` is strict: it refuses what it cannot account for,
    byte for byte (only zero padding may follow the signature data)."""

    raw: bytes
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int
    td: TdReport
    signature: bytes
    attestation_key: bytes
    qe_report: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain: tuple[bytes, ...]  # DER, leaf first
    pck_subjects: tuple[str, ...]  # common names along the chain, leaf first
    fmspc: str  # the platform's FMSPC (upper-case hex), from the PCK certificate: it names the
    # TCB info (collateral) that applies
    padding: int
    fields: tuple[QuoteField, ...]

    @classmethod
    def parse(cls, raw: bytes) -> TdxQuote:
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise TypeError("a quote is bytes")
        raw = bytes(raw)
        fields: list[QuoteField] = []
        r = _Reader(raw, fields)
        version = r.u16("header.version")
        if version not in QUOTE_VERSIONS:
            raise EvidenceFormatError(f"quote version {version} is not a TDX DCAP version (4 or 5)")
        key_type = r.u16("header.attestation_key_type")
        if key_type != ATTESTATION_KEY_ECDSA_P256:
            raise EvidenceFormatError(f"attestation key type {key_type} is not ECDSA-P256 (2)")
        tee_type = r.u32("header.tee_type")
        if tee_type != TEE_TYPE_TDX:
            raise EvidenceFormatError(f"TEE type {tee_type:#x} is not TDX (0x81)")
        qe_svn, pce_svn = r.u16("header.qe_svn"), r.u16("header.pce_svn")
        qe_vendor_id, user_data = r.take("header.qe_vendor_id", 16), r.take("header.user_data", 20)
        if version == 4:
            body_type, body_size = BODY_TD10, TD_REPORT10_SIZE
        else:
            body_type, body_size = r.u16("body.type"), r.u32("body.size")
            expected = {BODY_TD10: TD_REPORT10_SIZE, BODY_TD15: TD_REPORT15_SIZE}.get(body_type)
            if body_type == BODY_TD15EX:
                if body_size < TD_REPORT15_SIZE:
                    raise EvidenceFormatError(f"TD 1.5 ex body of {body_size} bytes is too short")
            elif expected is None:
                raise EvidenceFormatError(f"quote v5 body type {body_type} is not a TD report")
            elif body_size != expected:
                raise EvidenceFormatError(f"TD report body type {body_type} has {body_size} bytes, "
                                          f"not {expected}")
        td = _td_report(r, body_size, body_type)
        sig_len = r.u32("signature_data.size")
        sig_data = r.take("signature_data", sig_len)
        fields.pop()  # described field by field below
        padding = r.rest()
        if padding.strip(b"\0"):
            raise EvidenceFormatError(f"{len(padding)} bytes after the signature data are not zero "
                                      "padding")
        s = _Reader(sig_data, fields, base=r.pos - sig_len, where="signature data")
        signature = s.take("signature.ecdsa", ECDSA_SIGNATURE_SIZE)
        attestation_key = s.take("signature.attestation_key", ECDSA_KEY_SIZE)
        s.certification("certification", CERT_DATA_QE_REPORT,
                        "QE report certification data", "certification data")
        qe_report = s.take("qe.report", QE_REPORT_SIZE)
        qe_report_signature = s.take("qe.report_signature", ECDSA_SIGNATURE_SIZE)
        qe_auth_data = s.take("qe.auth_data", s.u16("qe.auth_data.size"))
        chain_size = s.certification("pck", CERT_DATA_PCK_CHAIN, "a PCK certificate chain",
                                     "PCK chain")
        pck_chain, subjects, fmspc = _strict_pem_chain(s.take("pck.chain", chain_size))
        return cls(raw=raw, version=version, attestation_key_type=key_type, tee_type=tee_type,
                   qe_svn=qe_svn, pce_svn=pce_svn, qe_vendor_id=qe_vendor_id, user_data=user_data,
                   body_type=body_type, td=td, signature=signature,
                   attestation_key=attestation_key, qe_report=qe_report,
                   qe_report_signature=qe_report_signature, qe_auth_data=qe_auth_data,
                   pck_chain=pck_chain, pck_subjects=subjects, fmspc=fmspc,
                   padding=len(padding), fields=tuple(fields))

    @property
    def report_data(self) -> bytes:
        return self.td.report_data

    def measurements(self) -> dict[str, bytes]:
        return self.td.measurements()

    def to_rows(self) -> list[tuple[str, int, int, str]]:
        """``(field, offset, size, value)`` rows; values in hex (PEM as its certificate names)."""
        rows = []
        for f in self.fields:
            if f.name == "pck.chain":
                value = " / ".join(self.pck_subjects)
            elif f.size <= 4 and not f.name.startswith(("td.", "header.qe_vendor")):
                value = str(f.as_int) if f.size != 4 or "tee_type" not in f.name else hex(f.as_int)
            else:
                value = f.value.hex()
            rows.append((f.name, f.offset, f.size, value))
        return rows

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td style='text-align:left'>{html.escape(n)}</td><td>{o}</td><td>{s}</td>"
            f"<td style='text-align:left'><code>{html.escape(v[:96] + ('…' if len(v) > 96 else ''))}"
            f"</code></td></tr>" for n, o, s, v in self.to_rows())
        return ("<table><tr><th>field</th><th>offset</th><th>size</th><th>value</th></tr>"
                f"{body}</table>")

    def __repr__(self) -> str:
        return (f"TdxQuote(version={self.version}, body_type={self.body_type}, "
                f"size={len(self.raw)}, mrtd={self.td.mr_td.hex()[:16]}…)")


def _strict_pem_chain(blob: bytes) -> tuple[tuple[bytes, ...], tuple[str, ...], str]:
    """The PCK chain as DER (leaf first), its common names and the leaf's FMSPC. The PEM must be
    exactly the canonical encoding of its certificates (one terminating NUL allowed): no byte of
    it goes unchecked."""
    text = blob[:-1] if blob.endswith(b"\0") else blob
    try:
        certs = x509.load_pem_x509_certificates(text)
    except ValueError as exc:
        raise CertificateChainError("the PCK certificate chain in the quote does not parse") from exc
    canonical = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    if canonical != text:
        raise CertificateChainError("the PCK certificate chain in the quote is not canonical PEM")
    if len(certs) < 2:
        raise CertificateChainError("the PCK certificate chain needs a leaf and its issuers")
    try:
        subjects = tuple(_common_name(c) for c in certs)
        fmspc = _fmspc(certs[0]).hex().upper()
    except (ValueError, x509.DuplicateExtension) as exc:  # a name or extension that does not parse
        raise CertificateChainError("a certificate in the PCK chain is malformed") from exc
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in certs), subjects, fmspc


def _check_chain(chain: tuple[bytes, ...], root_der: bytes) -> None:
    """Each certificate signed by the next, the last the pinned root itself. dcap-qvl checks the
    chain again (with validity and revocation); checking it here first means a changed byte in a
    certificate is reported as the chain's fault, not as a missing collateral for its FMSPC."""
    if chain[-1] != root_der:
        raise CertificateChainError("the quote's certificate chain does not end in the pinned root CA")
    certs = [x509.load_der_x509_certificate(der) for der in chain]
    for child, issuer in itertools.pairwise(certs):
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            raise CertificateChainError(f"{_common_name(child)} is not signed by "
                                        f"{_common_name(issuer)}") from exc


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) items of a DER sequence's content; definite lengths only."""
    out, i = [], 0
    while i < len(data):
        if i + 2 > len(data):
            raise ValueError("DER item truncated")
        tag, length = data[i], data[i + 1]
        i += 2
        if length & 0x80:
            n = length & 0x7F
            if n == 0 or n > 4 or i + n > len(data):
                raise ValueError("unsupported DER length")
            length = int.from_bytes(data[i:i + n], "big")
            i += n
        if i + length > len(data):
            raise ValueError("DER item truncated")
        out.append((tag, data[i:i + length]))
        i += length
    return out


def _oid_content(dotted: str) -> bytes:
    """The DER content octets of an object identifier."""
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([parts[0] * 40 + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        while p > 0x7F:
            p >>= 7
            chunk.append(0x80 | (p & 0x7F))
        out.extend(reversed(chunk))
    return bytes(out)


_FMSPC_OID_CONTENT = _oid_content(FMSPC_OID)


def _fmspc(cert: x509.Certificate) -> bytes:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
        value = ext.value.value  # type: ignore[attr-defined]  # an UnrecognizedExtension's DER
        ((tag, content),) = _der_items(value)
        if tag != 0x30:
            raise ValueError("the SGX extension is not a SEQUENCE")
        for entry_tag, entry in _der_items(content):
            items = _der_items(entry) if entry_tag == 0x30 else []
            if len(items) == 2 and items[0] == (0x06, _FMSPC_OID_CONTENT):
                if len(items[1][1]) != 6:
                    break
                return items[1][1]
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError) as exc:
        raise CertificateChainError("the PCK certificate carries no readable SGX extension") \
            from exc
    raise CertificateChainError("the PCK certificate's SGX extension names no 6-byte FMSPC")


# ------------------------------------------------------------------------------- collateral
_REQUIRED_COLLATERAL = ("pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain",
                        "tcb_info", "tcb_info_signature", "qe_identity_issuer_chain",
                        "qe_identity", "qe_identity_signature")
_ISO_UTC = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?Z\Z")


def iso_utc_to_unix(text: str) -> int:
    """``2025-06-19T10:16:03Z`` -> Unix seconds (crypto/ reads no clock and imports no datetime)."""
    m = _ISO_UTC.match(text)
    if m is None:
        raise ValueError(f"not an ISO 8601 UTC time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    # Days from civil (H. Hinnant's algorithm): proleptic Gregorian calendar.
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second


@dataclass(frozen=True, slots=True, repr=False)
class TdxCollateral:
    """DCAP collateral as a PCCS serves it (dcap-qvl's ``QuoteCollateralV3`` JSON): the CRLs,
    the TCB info and QE identity with their signatures and issuer chains. Passed in by the
    caller; nothing here fetches it."""

    json_text: str
    fmspc: str
    tcb_info_issued: int
    tcb_info_next_update: int
    qe_identity_issued: int
    qe_identity_next_update: int

    @classmethod
    def from_json(cls, text: str | bytes) -> TdxCollateral:
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise CollateralError("collateral is not a JSON object")
            missing = [k for k in _REQUIRED_COLLATERAL if not isinstance(doc.get(k), str)]
            if missing:
                raise CollateralError(f"collateral lacks {', '.join(missing)}")
            tcb, qe = json.loads(doc["tcb_info"]), json.loads(doc["qe_identity"])
            fmspc = tcb["fmspc"]
            if not isinstance(fmspc, str) or len(bytes.fromhex(fmspc)) != 6:
                raise CollateralError("collateral's TCB info names no 6-byte FMSPC")
            return cls(
                json_text=text.decode() if isinstance(text, bytes) else text,
                fmspc=fmspc.upper(),
                tcb_info_issued=iso_utc_to_unix(tcb["issueDate"]),
                tcb_info_next_update=iso_utc_to_unix(tcb["nextUpdate"]),
                qe_identity_issued=iso_utc_to_unix(qe["issueDate"]),
                qe_identity_next_update=iso_utc_to_unix(qe["nextUpdate"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CollateralError(f"collateral is malformed: {type(exc).__name__}") from exc

    def __repr__(self) -> str:
        return (f"TdxCollateral(fmspc={self.fmspc}, tcb_info_issued={self.tcb_info_issued}, "
                f"tcb_info_next_update={self.tcb_info_next_update})")


# ------------------------------------------------------------------------------ the policy
class ReportDataRule(Protocol):
    """What the 64 bytes of report data must be, given the node's claims (``None`` for a bare
    quote)."""

    name: str

    def expected(self, claims: NodeKeyClaims | None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ExpectedReportData:
    """Report data must equal this caller-given value (64 bytes)."""

    value: bytes
    name: ClassVar[str] = "expected value"

    def __post_init__(self) -> None:
        if len(self.value) != REPORT_DATA_SIZE:
            raise ValueError("expected report data is 64 bytes")

    def expected(self, claims: NodeKeyClaims | None) -> bytes:
        return self.value


@dataclass(frozen=True, slots=True)
class KeyBinding:
    """Report data must bind the node's rotation nonce and X25519 key under a named hash.

    ``"blake3"``: Atoma's report nonce, BLAKE3(nonce u64 LE ‖ key ‖ device_type u16 LE), in the
    first 32 bytes and zeros after. ``"sha512"``: SHA-512(nonce u64 LE ‖ key), all 64 bytes.
    """

    hash: str = "blake3"
    HASHES: ClassVar[tuple[str, ...]] = ("blake3", "sha512")

    def __post_init__(self) -> None:
        if self.hash not in self.HASHES:
            raise ValueError(f"hash must be one of {self.HASHES}")

    @property
    def name(self) -> str:
        return f"{self.hash} key binding"

    def expected(self, claims: NodeKeyClaims | None) -> bytes:
        if claims is None:
            raise ValueError("a key binding needs the node's claims (TdxEvidence), not a bare quote")
        if self.hash == "blake3":
            return report_nonce(claims.rotation_nonce, claims.public_key, claims.device_type) \
                + bytes(REPORT_DATA_SIZE - 32)
        return hashlib.sha512(claims.rotation_nonce.to_bytes(8, "little")
                              + bytes(claims.public_key)).digest()


@dataclass(frozen=True, slots=True)
class TdxPolicy:
    """What a TDX verifier accepts.

    ``report_data``: the rule the report data must satisfy (required: a quote whose report data
    nobody checks binds nothing). ``accepted_tcb_statuses``: Intel's TCB statuses taken (default
    only ``UpToDate``). ``rejected_advisories``: Intel SA ids refused even under an accepted
    status. ``measurements``: allow-lists by register (``mrtd``, ``rtmr0``..``rtmr3``,
    ``mr_seam``); a register not named is not checked. ``max_collateral_age_s``: how old the TCB
    info and QE identity may be at ``now``, counted from the older of their issue dates.
    """

    report_data: ReportDataRule
    accepted_tcb_statuses: frozenset[str] = frozenset({"UpToDate"})
    rejected_advisories: frozenset[str] = frozenset()
    measurements: Mapping[str, frozenset[bytes]] = field(default_factory=dict)
    max_collateral_age_s: float | None = None

    def __post_init__(self) -> None:
        unknown = set(self.accepted_tcb_statuses) - TCB_STATUSES
        if unknown:
            raise ValueError(f"unknown TCB statuses {sorted(unknown)}; known: {sorted(TCB_STATUSES)}")
        for name, allowed in self.measurements.items():
            if name not in MEASUREMENT_NAMES:
                raise ValueError(f"unknown measurement {name!r}; one of {MEASUREMENT_NAMES}")
            if any(len(v) != MEASUREMENT_SIZE for v in allowed):
                raise ValueError(f"{name} values are {MEASUREMENT_SIZE} bytes")


# ------------------------------------------------------------------------------ evidence
@dataclass(frozen=True, slots=True)
class TdxEvidence:
    """A node's key claims beside a TDX quote whose report data binds them (on the wire:
    ``{"evidence_type": "tdx_quote", "report": {claims}, "quote": b64}``)."""

    report: NodeKeyClaims
    quote: bytes
    EVIDENCE_TYPE: ClassVar[str] = "tdx_quote"

    def to_dict(self) -> dict[str, object]:
        c = self.report
        report: dict[str, object] = {
            "device_type": c.device_type, "key_rotation_counter": c.key_rotation_counter,
            "node_small_id": c.node_small_id, "public_key": b64encode(c.public_key),
            "rotation_nonce": c.rotation_nonce, "signer_address": c.signer_address}
        if c.boot_epoch:  # optional: the quote binds the key and nonce, not the node's boot
            report["boot_epoch"] = c.boot_epoch
        return {"evidence_type": self.EVIDENCE_TYPE, "quote": b64encode(self.quote),
                "report": report}

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: object) -> TdxEvidence:
        try:
            if not isinstance(d, dict) or d.get("evidence_type") != cls.EVIDENCE_TYPE:
                raise InvalidFieldError("evidence: expected a TDX quote evidence object",
                                        field="evidence")
            r = d.get("report")
            if not isinstance(r, dict):
                raise InvalidFieldError("report: expected an object", field="report")
            claims = NodeKeyClaims(
                node_small_id=require_int(r.get("node_small_id"), field="report.node_small_id"),
                key_rotation_counter=require_int(r.get("key_rotation_counter"),
                                                 field="report.key_rotation_counter"),
                rotation_nonce=require_int(r.get("rotation_nonce"), field="report.rotation_nonce"),
                public_key=b64decode(r.get("public_key"), field="report.public_key", size=32),
                signer_address=require_str(r.get("signer_address"), field="report.signer_address"),
                device_type=require_int(r.get("device_type"), field="report.device_type",
                                        maximum=2**16 - 1),
                boot_epoch=require_int(r.get("boot_epoch", 0), field="report.boot_epoch"))
            return cls(claims, b64decode(d.get("quote"), field="evidence.quote"))
        except InvalidFieldError as exc:
            raise EvidenceFormatError(f"malformed TDX evidence: {exc.message}") from exc

    @classmethod
    def from_json(cls, body: bytes | str) -> TdxEvidence:
        return cls.from_dict(loads(body, what="attestation evidence"))


# ------------------------------------------------------------------------------ verifying
# dcap-qvl reports every failure as ValueError with a message; these fragments (dcap-qvl 0.7)
# say which check failed. First match wins, so the specific come before the general.
_DCAP_ERRORS: tuple[tuple[str, type[AttestationError]], ...] = (
    ("quote_collateral", CollateralError),  # "Signature is invalid for tcb_info in ..."
    ("expired", StaleEvidenceError),  # "TCBInfo expired", "QE Identity expired"
    ("in the future", StaleEvidenceError),  # "... issue date is in the future"
    ("CertExpired", StaleEvidenceError),
    ("CertNotValidYet", StaleEvidenceError),
    ("CrlExpired", StaleEvidenceError),  # webpki: a CRL past its nextUpdate
    ("CrlNotValidYet", StaleEvidenceError),
    ("ISV enclave report signature is invalid", EvidenceSignatureError),
    ("QE report hash mismatch", EvidenceSignatureError),
    ("Signature is invalid for qe_report", EvidenceSignatureError),
    ("No matching TCB level", TcbStatusError),
    ("TCB status is invalid", TcbStatusError),
    ("is rejected by policy", TcbStatusError),
    ("QE ISVSVN", TcbStatusError),
    ("QE report validation", TcbStatusError),
    ("Debug mode is enabled", MeasurementError),
    ("TD profiling is enabled", MeasurementError),
    ("TD attributes", MeasurementError),
    ("certificate chain", CertificateChainError),
    ("PCK certificate", CertificateChainError),
    ("Certificate chain", CertificateChainError),
    ("Fmspc mismatch", CollateralError),
    ("TCB info in the collateral", CollateralError),
    ("TCB Info", CollateralError),
    ("TCBInfo", CollateralError),
    ("QE Identity", CollateralError),
    ("QEIdentity", CollateralError),
    ("CRL", CollateralError),
    ("collateral", CollateralError),
    ("Failed to decode quote", EvidenceFormatError),
    ("Unsupported", EvidenceFormatError),
    ("Unknown QE vendor ID", EvidenceFormatError),
    ("must have version", EvidenceFormatError),
)


def dcap_error(message: str) -> AttestationError:
    """dcap-qvl's failure message as the AttestationError subclass naming the failed check."""
    text = " | ".join(line.strip() for line in message.splitlines() if line.strip())
    for fragment, cls in _DCAP_ERRORS:
        if fragment in text:
            return cls(f"TDX quote refused by dcap-qvl: {text}")
    return AttestationError(f"TDX quote refused by dcap-qvl: {text}")


def _report_body(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    report = claims["report"]
    (body,) = report.values()
    while "base" in body:
        body = body["base"]
    return body


class TdxVerifier:
    """Verifies TDX quotes (bare, or as :class:`TdxEvidence`) against caller-given collateral.

    ``collateral``: one :class:`TdxCollateral`, or several keyed by FMSPC (the quote's PCK
    certificate says which applies). ``root_ca_pem``: the pinned trust anchor (Intel's by
    default).
    """

    tee = TDX_TEE

    def __init__(self, policy: TdxPolicy, collateral: TdxCollateral | Mapping[str, TdxCollateral],
                 *, root_ca_pem: bytes = INTEL_SGX_ROOT_CA_PEM) -> None:
        self.policy = policy
        if isinstance(collateral, TdxCollateral):
            collateral = {collateral.fmspc: collateral}
        self.collateral = {k.upper(): v for k, v in collateral.items()}
        self.root_ca_der = x509.load_pem_x509_certificate(root_ca_pem).public_bytes(
            serialization.Encoding.DER)
        self._dcap: Any = None

    def accepts(self, evidence: object) -> bool:
        return isinstance(evidence, TdxEvidence | bytes)

    def _dcap_qvl(self) -> Any:
        if self._dcap is None:
            try:
                import dcap_qvl
            except ImportError as exc:  # an optional extra
                raise ImportError("TDX verification needs dcap-qvl: "
                                  "pip install 'atoma-lab[tdx]'") from exc
            self._dcap = (dcap_qvl, dcap_qvl.QuoteVerifier(self.root_ca_der))
        return self._dcap

    def verify(self, evidence: object, *, now: float, public_key: bytes | None = None,
               node_small_id: int | None = None) -> VerifiedReport:
        if isinstance(evidence, TdxEvidence):
            claims: NodeKeyClaims | None = evidence.report
            raw = evidence.quote
        elif isinstance(evidence, bytes):
            if public_key is not None or node_small_id is not None:
                raise ValueError("a bare quote names no key or node; pass TdxEvidence")
            claims, raw = None, evidence
        else:
            raise EvidenceFormatError(f"the TDX verifier takes a quote or TdxEvidence, "
                                      f"not {type(evidence).__name__}")
        if now < 0:
            raise ValueError("now is Unix seconds")
        quote = TdxQuote.parse(raw)
        _check_chain(quote.pck_chain, self.root_ca_der)
        fmspc = quote.fmspc
        collateral = self.collateral.get(fmspc)
        if collateral is None:
            raise CollateralError(f"no collateral for FMSPC {fmspc}")
        report = self._verify_signatures(quote, collateral, int(now))
        p = self.policy
        status, advisories = report["tcb"]["status"], tuple(report["tcb"]["advisory_ids"])
        if status not in p.accepted_tcb_statuses:
            raise TcbStatusError(f"TCB status {status} is not accepted "
                                 f"(accepted: {', '.join(sorted(p.accepted_tcb_statuses))})")
        rejected = sorted(set(advisories) & p.rejected_advisories)
        if rejected:
            raise TcbStatusError(f"advisories {', '.join(rejected)} apply and are refused")
        if p.max_collateral_age_s is not None:
            issued = min(collateral.tcb_info_issued, collateral.qe_identity_issued)
            if now - issued > p.max_collateral_age_s:
                raise StaleEvidenceError(f"collateral issued {now - issued:.0f} s before now is "
                                         f"older than {p.max_collateral_age_s:.0f} s")
        measured = quote.measurements()
        for name, allowed in p.measurements.items():
            if measured[name] not in allowed:
                raise MeasurementError(f"{name} is not on the policy's allow-list")
        if not hmac.compare_digest(quote.report_data, p.report_data.expected(claims)):
            raise ReportDataError(f"report data does not match the {p.report_data.name}")
        if claims is not None:
            if public_key is not None and not hmac.compare_digest(bytes(public_key),
                                                                  claims.public_key):
                raise AttestedKeyMismatchError("the key presented is not the attested key")
            if node_small_id is not None and node_small_id != claims.node_small_id:
                raise AttestedKeyMismatchError("the evidence belongs to another node")
        subjects = quote.pck_subjects
        platform = report["platform"]
        return VerifiedReport(
            tee=TDX_TEE, signer=f"{subjects[0]} (FMSPC {fmspc}) under {subjects[-1]}",
            measurements=dict(measured), report_data=quote.report_data,
            valid_from=float(report["latest_issue_date"]),
            # The last second at which every item surely holds: a CRL lapses at its nextUpdate,
            # TCB info and QE identity one second after theirs.
            valid_until=float(report["earliest_expiration_date"] - 1),
            status=status, advisory_ids=advisories,
            public_key=None if claims is None else claims.public_key,
            node_small_id=None if claims is None else claims.node_small_id,
            key_rotation_counter=None if claims is None else claims.key_rotation_counter,
            details={"quote_version": quote.version, "body_type": quote.body_type, "fmspc": fmspc,
                     "tcb_date": platform["tcb_level"]["tcbDate"],
                     "qe_tcb_status": report["qe"]["tcb_level"]["tcbStatus"],
                     "td_attributes": quote.td.td_attributes, "xfam": quote.td.xfam,
                     "report_data_rule": p.report_data.name})

    def _verify_signatures(self, quote: TdxQuote, collateral: TdxCollateral,
                           now_s: int) -> dict[str, Any]:
        """dcap-qvl's verification (signatures, chain, collateral at ``now``, TCB level), with
        no policy of its own (``claims_only``): the policy is ours, applied after."""
        dcap_qvl, verifier = self._dcap_qvl()
        try:
            dcap_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral.json_text)
        except ValueError as exc:
            raise CollateralError(f"collateral is malformed: {exc}") from exc
        try:
            claims = verifier.verify_with_policy(quote.raw, dcap_collateral, now_s,
                                                 dcap_qvl.QuotePolicy.claims_only(now_s))
        except ValueError as exc:
            # The claims API drops the cause ("Failed to verify certificate chain" alone); the
            # one-shot API keeps it (CrlExpired, UnknownIssuer, ...): ask it what failed.
            message = str(exc)
            try:
                dcap_qvl.verify_with_root_ca(quote.raw, dcap_collateral, self.root_ca_der, now_s)
            except ValueError as detailed:
                message = str(detailed)
            raise dcap_error(message) from exc
        report: dict[str, Any] = json.loads(claims.to_json())
        # Two parsers, one quote: dcap-qvl's reading must be ours, field for field.
        body = _report_body(report)
        mine = {"mr_td": quote.td.mr_td, "rt_mr0": quote.td.rtmrs[0], "rt_mr1": quote.td.rtmrs[1],
                "rt_mr2": quote.td.rtmrs[2], "rt_mr3": quote.td.rtmrs[3],
                "mr_seam": quote.td.mr_seam, "report_data": quote.td.report_data}
        if any(body.get(k) != v.hex() for k, v in mine.items()):
            raise EvidenceFormatError("dcap-qvl and atoma-lab read the quote's TD report apart "
                                      "differently")
        return report


__all__ = [
    "INTEL_SGX_ROOT_CA_PEM",
    "INTEL_SGX_ROOT_CA_SHA256",
    "TCB_STATUSES",
    "ExpectedReportData",
    "KeyBinding",
    "QuoteField",
    "ReportDataRule",
    "TdReport",
    "TdxCollateral",
    "TdxEvidence",
    "TdxPolicy",
    "TdxQuote",
    "TdxVerifier",
    "dcap_error",
    "iso_utc_to_unix",
]
