"""Attestation: evidence that a node's X25519 key lives in a TEE, and verifiers of it.

One interface (:mod:`.base`): an :class:`AttestationVerifier` takes evidence and a time and
returns a :class:`VerifiedReport` or raises the :class:`~atoma_lab.errors.AttestationError`
subclass naming the failed check. Implementations: the simulated TEE (:mod:`.simulated`, the
default everywhere in the lab) and Intel TDX quotes (:mod:`.tdx`, with ``dcap-qvl``). Atoma's
NVIDIA GPU evidence is parsed and its key binding checked (:mod:`.nvidia`); its signatures need
NVIDIA's services and are not verified here.

The simulated TEE's names (``SimulatedTEE``, ``AttestationEvidence``, ``AttestationPolicy``,
``verify_evidence``, ...) stay importable from here, as before the split.
"""

from atoma_lab.crypto.attestation.base import (
    NVIDIA_CC_GPU_DEVICE_SLOT,
    AttestationVerifier,
    NodeKeyClaims,
    VerifiedReport,
    VerifierSet,
    report_nonce,
)
from atoma_lab.crypto.attestation.simulated import (
    DEFAULT_MEASUREMENT,
    AttestationEvidence,
    AttestationPolicy,
    AttestationReport,
    SimulatedTEE,
    SimulatedVerifier,
    verifier_for,
    verify_evidence,
)
from atoma_lab.crypto.attestation.wire import Evidence, evidence_from_dict, evidence_from_json

__all__ = [
    "DEFAULT_MEASUREMENT",
    "NVIDIA_CC_GPU_DEVICE_SLOT",
    "AttestationEvidence",
    "AttestationPolicy",
    "AttestationReport",
    "AttestationVerifier",
    "Evidence",
    "NodeKeyClaims",
    "SimulatedTEE",
    "SimulatedVerifier",
    "VerifiedReport",
    "VerifierSet",
    "evidence_from_dict",
    "evidence_from_json",
    "report_nonce",
    "verifier_for",
    "verify_evidence",
]
