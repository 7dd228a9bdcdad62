"""The attestation interface: evidence in, a :class:`VerifiedReport` out, or an
:class:`~atoma_lab.errors.AttestationError` subclass naming the check that failed.

A verifier holds its policy (which signers, measurements, TCB statuses and ages it accepts) and
is called with the evidence, the time (``now``, Unix seconds: crypto/ reads no clock) and, when the
caller knows them, the key and node the evidence must attest. Implementations: the simulated TEE
(:mod:`.simulated`) and Intel TDX quotes (:mod:`.tdx`). :class:`VerifierSet` accepts any of
several kinds, so a network can be told to take either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import blake3

from atoma_lab.display.html import fingerprint, kv_table, section
from atoma_lab.errors import EvidenceFormatError

NVIDIA_CC_GPU_DEVICE_SLOT = 300  # device_type Atoma uses for an NVIDIA CC GPU (atoma-protocol.md §3)
REPORT_NONCE_SIZE = 32  # bytes, BLAKE3


def report_nonce(rotation_nonce: int, public_key: bytes,
                 device_type: int = NVIDIA_CC_GPU_DEVICE_SLOT) -> bytes:
    """Atoma's attestation report nonce: BLAKE3(nonce u64 LE ‖ key ‖ device_type u16 LE)."""
    if len(public_key) != 32:
        raise ValueError("public_key must be 32 bytes")
    data = rotation_nonce.to_bytes(8, "little") + bytes(public_key) + device_type.to_bytes(2, "little")
    return blake3.blake3(data).digest()


@dataclass(frozen=True, slots=True)
class NodeKeyClaims:
    """What a node says about the key it publishes. Evidence binds some of it (the simulated
    vendor signs all of it; a TDX quote's report data binds the nonce and the key)."""

    node_small_id: int
    key_rotation_counter: int
    rotation_nonce: int
    public_key: bytes
    signer_address: str
    device_type: int = NVIDIA_CC_GPU_DEVICE_SLOT


@dataclass(frozen=True, slots=True)
class VerifiedReport:
    """What a verifier vouches for once every check passed.

    ``signer`` says who signed the evidence (a vendor key's address; Intel's PCK certificate);
    ``valid_from``/``valid_until`` the window in which the evidence and its collateral hold
    (Unix seconds); ``status`` the platform's TCB status (``"OK"`` for the simulation). The node
    fields are set only where the evidence binds them: a TDX quote binds the key, not the node's
    Sui address, so ``signer_address`` stays ``None`` there.
    """

    tee: str
    signer: str
    measurements: Mapping[str, str | bytes]
    report_data: bytes
    valid_from: float | None
    valid_until: float | None
    status: str
    advisory_ids: tuple[str, ...] = ()
    public_key: bytes | None = None
    node_small_id: int | None = None
    key_rotation_counter: int | None = None
    signer_address: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)

    def holds_at(self, now: float) -> bool:
        """Whether ``now`` lies inside the report's validity window."""
        return ((self.valid_from is None or self.valid_from <= now)
                and (self.valid_until is None or now <= self.valid_until))

    def to_dict(self) -> dict[str, object]:
        """Plain values (bytes as hex) for display and JSON."""
        def plain(v: object) -> object:
            return v.hex() if isinstance(v, bytes) else v
        return {
            "tee": self.tee, "signer": self.signer,
            "measurements": {k: plain(v) for k, v in self.measurements.items()},
            "report_data": self.report_data.hex(), "valid_from": self.valid_from,
            "valid_until": self.valid_until, "status": self.status,
            "advisory_ids": list(self.advisory_ids),
            "public_key": plain(self.public_key), "node_small_id": self.node_small_id,
            "key_rotation_counter": self.key_rotation_counter,
            "signer_address": self.signer_address,
            "details": {k: plain(v) for k, v in self.details.items()},
        }

    def _repr_html_(self) -> str:
        rows: list[tuple[str, object]] = []
        for key, value in self.to_dict().items():
            if key == "public_key" and self.public_key is not None:
                rows.append(("public_key (fingerprint)", fingerprint(self.public_key)))
            elif isinstance(value, dict):
                rows.extend((f"{key}.{sub}", v) for sub, v in value.items())
            else:
                rows.append((key, value))
        return section(f"Verified attestation report ({self.tee})", kv_table(rows))


@runtime_checkable
class AttestationVerifier(Protocol):
    """Evidence in, a :class:`VerifiedReport` out, or an ``AttestationError`` subclass."""

    tee: str

    def accepts(self, evidence: object) -> bool:
        """Whether ``evidence`` is of the kind this verifier checks (not whether it verifies)."""
        ...

    def verify(self, evidence: object, *, now: float, public_key: bytes | None = None,
               node_small_id: int | None = None) -> VerifiedReport:
        """Check ``evidence`` at time ``now``; when given, it must attest ``public_key`` and
        ``node_small_id``."""
        ...


class VerifierSet:
    """Accepts evidence of any kind one of its verifiers takes, checked by that verifier."""

    def __init__(self, *verifiers: AttestationVerifier) -> None:
        if not verifiers:
            raise ValueError("a VerifierSet needs at least one verifier")
        self.verifiers = verifiers
        self.tee = "+".join(v.tee for v in verifiers)

    def accepts(self, evidence: object) -> bool:
        return any(v.accepts(evidence) for v in self.verifiers)

    def verify(self, evidence: object, *, now: float, public_key: bytes | None = None,
               node_small_id: int | None = None) -> VerifiedReport:
        for verifier in self.verifiers:
            if verifier.accepts(evidence):
                return verifier.verify(evidence, now=now, public_key=public_key,
                                       node_small_id=node_small_id)
        raise EvidenceFormatError(f"no verifier here takes {type(evidence).__name__} evidence "
                                  f"(accepted: {self.tee})")
