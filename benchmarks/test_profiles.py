"""The hardened profile's cost per request against Atoma's, and what attestation costs a client.

Groups (``extra_info`` carries ``pair`` and ``role`` for ``python -m atoma_lab.tools.benchreport``):

* ``profile``: one request and its response through each profile as the wire carries them
  (``atoma_lab.lab.measure.profile_round_trip``: seal, JSON out and in, open on the node, sealed and
  signed answer, JSON out and in, opened with the signature pinned), at 1 KiB, 64 KiB and 1 MiB;
  Atoma's profile is the baseline, so the reported speed-up is Atoma / hardened (below 1: the
  hardened profile costs more);
* ``attestation``: verifying a node key's evidence (vendor signature, measurement, freshness,
  key binding) against the client's cache lookup that every later request of that key pays.

Both members of a pair are checked once before timing. Timing is reported, never asserted.

    .venv/bin/python -m pytest benchmarks/test_profiles.py --benchmark-only
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from atoma_lab.crypto.attestation import AttestationPolicy
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.lab.measure import attested_node_key, profile_round_trip, verify_node_key
from atoma_lab.protocol import hardened

SIZES = {"1KiB": 1 << 10, "64KiB": 1 << 16, "1MiB": 1 << 20}
NODE, SIGNER = X25519KeyPair.generate(), SuiSigner.generate()
GUARD = hardened.ReplayGuard()


@pytest.mark.benchmark(group="profile")
@pytest.mark.parametrize("profile", ["atoma", "hardened"])
@pytest.mark.parametrize("size", list(SIZES))
def test_profile_round_trip(benchmark: Any, profile: str, size: str) -> None:
    data = os.urandom(SIZES[size])
    assert profile_round_trip(profile, data, NODE, SIGNER, GUARD) == data
    benchmark(profile_round_trip, profile, data, NODE, SIGNER, GUARD)
    benchmark.extra_info.update({"pair": f"request round trip, {size}",
                                 "role": "baseline" if profile == "atoma" else "ours"})


@pytest.fixture(scope="module")
def evidence() -> tuple[bytes, AttestationPolicy, bytes]:
    return attested_node_key()


@pytest.mark.benchmark(group="attestation")
@pytest.mark.parametrize("step", ["cached", "verify"])
def test_attestation(benchmark: Any, evidence: tuple[bytes, AttestationPolicy, bytes],
                     step: str) -> None:
    wire, policy, key = evidence
    report = verify_node_key(wire, policy, key)
    assert report.public_key == key
    if step == "verify":
        benchmark(verify_node_key, wire, policy, key)
    else:
        cache = {(1, key): report}
        assert cache.get((1, key)) is report
        benchmark(cache.get, (1, key))
    benchmark.extra_info.update({"pair": "node key attestation, per request",
                                 "role": "ours" if step == "cached" else "baseline"})
