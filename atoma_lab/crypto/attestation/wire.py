"""Node key evidence on the wire: one JSON object whose ``evidence_type`` says its kind."""

from __future__ import annotations

from atoma_lab.crypto.attestation.simulated import AttestationEvidence
from atoma_lab.crypto.attestation.tdx import TdxEvidence
from atoma_lab.encoding import loads
from atoma_lab.errors import EvidenceFormatError

Evidence = AttestationEvidence | TdxEvidence
_KINDS: dict[str, type[AttestationEvidence] | type[TdxEvidence]] = {
    "device": AttestationEvidence,  # the simulated TEE's report (Atoma's tag for a GPU)
    TdxEvidence.EVIDENCE_TYPE: TdxEvidence,
}


def evidence_from_dict(d: object) -> Evidence:
    """The evidence object ``d`` describes, by its ``evidence_type``."""
    name = d.get("evidence_type") if isinstance(d, dict) else None
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise EvidenceFormatError(f"unknown evidence_type; known: {', '.join(sorted(_KINDS))}")
    return kind.from_dict(d)


def evidence_from_json(body: bytes | str) -> Evidence:
    return evidence_from_dict(loads(body, what="attestation evidence"))
