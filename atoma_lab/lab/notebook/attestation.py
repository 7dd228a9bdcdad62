"""The attestation notebook's helpers: the published TDX samples, and a bit-flip sweep."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from atoma_lab.crypto.attestation.tdx import TdxCollateral, TdxQuote, iso_utc_to_unix
from atoma_lab.errors import AttestationError
from atoma_lab.lab.notebook.sdk import repo_root

TDX_SAMPLES = "tests/vectors/tdx_quotes.json"  # dcap-qvl's published samples (the file names its source)


@dataclass(frozen=True)
class TdxSample:
    """One published sample quote, its collateral, and times inside and after its validity."""

    name: str
    quote: bytes
    collateral: TdxCollateral
    verify_at: float
    expired_at: float
    source: str


def tdx_sample(name: str = "v4_td10") -> TdxSample:
    """A sample from :data:`TDX_SAMPLES` of this checkout."""
    samples = repo_root() / TDX_SAMPLES
    vectors = samples.parent
    doc = json.loads(samples.read_text())
    (v,) = [v for v in doc["vectors"] if v["name"] == name]
    return TdxSample(name, (vectors / v["quote"]).read_bytes(),
                     TdxCollateral.from_json((vectors / v["collateral"]).read_text()),
                     float(iso_utc_to_unix(v["verify_at"])),
                     float(iso_utc_to_unix(v["expired_at"])), doc["source"])


def flip_sweep(verifier: Any, quote: bytes, *, now: float,
               offsets: Iterable[int]) -> list[dict[str, Any]]:
    """Flip the low bit of each byte at ``offsets`` and verify: one row per flip with the field
    it hit and the error class that refused it (``"ACCEPTED"`` if none did)."""
    fields = TdxQuote.parse(quote).fields
    rows = []
    for offset in offsets:
        changed = bytearray(quote)
        changed[offset] ^= 0x01
        try:
            verifier.verify(bytes(changed), now=now)
            outcome = "ACCEPTED"
        except AttestationError as exc:
            outcome = type(exc).__name__
        field = next((f.name for f in fields if f.offset <= offset < f.offset + f.size), "padding")
        rows.append({"offset": offset, "field": field, "error": outcome})
    return rows
