"""The confidential envelope against raw pyca ``cryptography`` doing the same work, same run.

Groups:

* ``envelope``: ``seal_request`` + ``open_request`` (client X25519 keygen and exchange, HKDF,
  AES-256-GCM, BLAKE2b; node exchange, HKDF, AES-256-GCM, BLAKE2b) and ``seal_response`` +
  ``open_response`` (AES-256-GCM and BLAKE2b each side under the request's key), at 1 KiB,
  64 KiB and 1 MiB, each next to the raw pyca calls;
* ``aead``: atoma-lab's ``AesGcmKey`` against pyca's ``AESGCM``.

The ``envelope`` pairs run interleaved: each round of one member comes after a round of the other
(each with a fresh setup), so both see the same load and the same cache state; ``paired`` is the
median over rounds of atoma-lab / raw, and is what the target is judged on. Every pair asserts
its result once before timing. ``extra_info`` carries ``pair``, ``role``
(``ours`` / ``baseline``) and ``target`` (1.15, ``max``) for ``python -m atoma_lab.tools.benchreport``;
the ratios atoma-lab / raw (median, and of minima) are also printed at the end of the module.
Timing is reported, never asserted.

    .venv/bin/python -m pytest benchmarks/test_envelope.py --benchmark-only
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bench_support import interleaved, paired_ratio, pool_rounds, pooled, show
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from atoma_lab.crypto.aead import AesGcmKey
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.protocol import open_request, open_response, seal_request, seal_response

SIZES = {"1KiB": 1 << 10, "64KiB": 1 << 16, "1MiB": 1 << 20}
# Interleaved rounds per member of an envelope pair (each round has a fresh single-use context).
PEDANTIC_ROUNDS = {"1KiB": 3000, "64KiB": 600, "1MiB": 60}
TARGET_RATIO = 1.15

_SHA256 = hashes.SHA256()
_NODE = X25519KeyPair.generate()
_NODE_PUBLIC = _NODE.public_bytes
_NODE_RAW = X25519PrivateKey.from_private_bytes(_NODE.private_bytes())

# (group, operation, size) -> {"atoma-lab": seconds, "raw": seconds}
_MEDIANS: dict[tuple[str, str, str], dict[str, float]] = {}
_MINIMA: dict[tuple[str, str, str], dict[str, float]] = {}


def _plaintext(size: str) -> bytes:
    return os.urandom(SIZES[size])


_LABEL = {"request": "seal_request+open_request", "response": "seal_response+open_response",
          "encrypt": "AES-256-GCM encrypt", "decrypt": "AES-256-GCM decrypt"}


_ROLE = {"atoma-lab": "ours", "raw": "baseline"}


def _pair_name(op: str, size: str) -> str:
    return f"{_LABEL[op]} {size}"


def _record(benchmark: Any, group: str, op: str, size: str, impl: str) -> None:
    """Tag the benchmark for ``atoma_lab.tools.benchreport`` (pair, role, target) and keep its times."""
    benchmark.extra_info.update({
        "pair": _pair_name(op, size),
        "role": _ROLE[impl],
        "target": TARGET_RATIO,
        "target_kind": "max",
    })
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    medians = _MEDIANS.setdefault((group, op, size), {})
    minima = _MINIMA.setdefault((group, op, size), {})
    medians[impl] = benchmark.stats.stats.median
    minima[impl] = benchmark.stats.stats.min
    if impl == "atoma-lab" and "raw" in minima:
        # The median ratio is benchreport's; the ratio of minima and the paired ratio (median
        # over interleaved rounds) are steadier on a busy machine.
        benchmark.extra_info["ratio_of_min"] = minima["atoma-lab"] / minima["raw"]


Setup = Callable[[], tuple[Any, ...]]


def _time_pair(benchmark: Any, op: str, size: str, impl: str,
               members: dict[str, tuple[Callable[..., bytes], Setup]]) -> None:
    """Time ``impl`` with the other member run (and timed) before each round, then record."""
    other_impl = "raw" if impl == "atoma-lab" else "atoma-lab"
    (fn, setup), (other, other_setup) = members[impl], members[other_impl]
    other_s = interleaved(benchmark, fn, other, rounds=PEDANTIC_ROUNDS[size], setup=setup,
                          other_setup=other_setup, warmup_rounds=5)
    _record(benchmark, "envelope", op, size, impl)
    pool_rounds(benchmark, ("envelope", _pair_name(op, size)), _ROLE[impl], other_s,
                name="paired_ratio", figure=paired_ratio)


@pytest.fixture(scope="module", autouse=True)
def _ratio_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print atoma-lab / raw for every pair measured in this run (median, min and paired)."""
    yield
    rows = [(key, m) for key, m in _MEDIANS.items() if "atoma-lab" in m and "raw" in m]
    if not rows:
        return
    lines = [
        "",
        f"atoma-lab / raw pyca, same run (target <= {TARGET_RATIO:.2f}x on the paired ratio "
        "where the pair ran interleaved, else on the median)",
        f"{'group':<10}{'operation':<10}{'size':>7}{'raw median':>14}{'atoma-lab':>12}"
        f"{'ratio':>8}{'ratio(min)':>12}{'paired':>9}",
    ]
    for (group, op, size), m in rows:
        ratio = m["atoma-lab"] / m["raw"]
        ratio_min = _MINIMA[(group, op, size)]["atoma-lab"] / _MINIMA[(group, op, size)]["raw"]
        paired = pooled((group, _pair_name(op, size)))
        judged = paired_ratio(paired) if paired else ratio
        flag = "" if judged <= TARGET_RATIO else "  above target"
        shown = f"{judged:>8.3f}x" if paired else f"{'-':>9}"
        lines.append(f"{group:<10}{op:<10}{size:>7}{m['raw'] * 1e6:>12.1f}us"
                     f"{m['atoma-lab'] * 1e6:>10.1f}us{ratio:>7.3f}x{ratio_min:>11.3f}x"
                     f"{shown}{flag}")
    show(request, lines)


# ------------------------------------------------------------------------------------------------
# envelope: request (client seals, node opens)
# ------------------------------------------------------------------------------------------------


def _raw_client_key(salt: bytes) -> tuple[bytes, bytes]:
    """Client side: an ephemeral key, the node key from its 32 bytes, the AES key."""
    client = X25519PrivateKey.generate()
    shared = client.exchange(X25519PublicKey.from_public_bytes(_NODE_PUBLIC))
    key = HKDF(algorithm=_SHA256, length=32, salt=salt, info=b"").derive(shared)
    return client.public_key().public_bytes_raw(), key


def _raw_node_key(client_public: bytes, salt: bytes) -> bytes:
    """Node side: the same AES key from the client's 32 public bytes."""
    shared = _NODE_RAW.exchange(X25519PublicKey.from_public_bytes(client_public))
    return HKDF(algorithm=_SHA256, length=32, salt=salt, info=b"").derive(shared)


def _raw_request_round_trip(plaintext: bytes) -> bytes:
    # Client: key agreement, seal, hash. Node: key agreement, open, check the hash.
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    client_public, key = _raw_client_key(salt)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, None)
    body_hash = hashlib.blake2b(plaintext, digest_size=32).digest()
    opened = AESGCM(_raw_node_key(client_public, salt)).decrypt(nonce, ciphertext, None)
    if not hmac.compare_digest(hashlib.blake2b(opened, digest_size=32).digest(), body_hash):
        raise AssertionError("hash mismatch")
    return opened


def _atoma_request_round_trip(plaintext: bytes) -> bytes:
    sealed = seal_request(plaintext, node_public_key=_NODE_PUBLIC, stack_small_id=1,
                          model_name="m")
    return open_request(sealed.request, _NODE).plaintext


def _plaintext_only(plaintext: bytes) -> Setup:
    return lambda: (plaintext,)


# ------------------------------------------------------------------------------------------------
# envelope: response (node seals, client opens); contexts are single use, so one per round
# ------------------------------------------------------------------------------------------------


_RESPONSE_SETUP_REQUEST = b'{"input":"x","model":"m"}'


def _atoma_response_setup(plaintext: bytes) -> Setup:
    def setup() -> tuple[Any, ...]:
        sealed = seal_request(_RESPONSE_SETUP_REQUEST, node_public_key=_NODE_PUBLIC,
                              stack_small_id=1, model_name="m")
        opened = open_request(sealed.request, _NODE)
        return plaintext, opened.context, sealed.context

    return setup


def _atoma_response_round_trip(plaintext: bytes, node_context: Any, client_context: Any) -> bytes:
    response = seal_response(plaintext, node_context)
    return open_response(response, client_context).plaintext


def _raw_response_setup(plaintext: bytes) -> Setup:
    def setup() -> tuple[Any, ...]:
        # The same work as atoma-lab's setup, in raw calls: agree the request's key on both
        # sides and use each cipher once for the request. A lighter setup would leave the caches
        # warmer for the timed round than atoma-lab's and favour the baseline (measured: 6.4 us
        # a round after a bare AESGCM(key), 7.9 us after the key agreement).
        salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
        client_public, key = _raw_client_key(salt)
        client_aead = AESGCM(key)
        ciphertext = client_aead.encrypt(nonce, _RESPONSE_SETUP_REQUEST, None)
        node_aead = AESGCM(_raw_node_key(client_public, salt))
        node_aead.decrypt(nonce, ciphertext, None)
        return plaintext, node_aead, client_aead

    return setup


def _raw_response_round_trip(plaintext: bytes, node_aead: AESGCM, client_aead: AESGCM) -> bytes:
    nonce = secrets.token_bytes(12)
    ciphertext = node_aead.encrypt(nonce, plaintext, None)
    response_hash = hashlib.blake2b(plaintext, digest_size=32).digest()
    opened = client_aead.decrypt(nonce, ciphertext, None)
    if not hmac.compare_digest(hashlib.blake2b(opened, digest_size=32).digest(), response_hash):
        raise AssertionError("hash mismatch")
    return opened


# operation -> impl -> (a round trip, what makes the setup of each round from the plaintext)
_ROUND_TRIPS: dict[str, dict[str, tuple[Callable[..., bytes], Callable[[bytes], Setup]]]] = {
    "request": {"raw": (_raw_request_round_trip, _plaintext_only),
                "atoma-lab": (_atoma_request_round_trip, _plaintext_only)},
    "response": {"raw": (_raw_response_round_trip, _raw_response_setup),
                 "atoma-lab": (_atoma_response_round_trip, _atoma_response_setup)},
}


@pytest.mark.benchmark(group="envelope")
@pytest.mark.parametrize("impl", ["raw", "atoma-lab"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("op", list(_ROUND_TRIPS))
def test_seal_open(benchmark: Any, op: str, impl: str, size: str) -> None:
    plaintext = _plaintext(size)
    members = {name: (fn, make_setup(plaintext))
               for name, (fn, make_setup) in _ROUND_TRIPS[op].items()}
    for fn, setup in members.values():
        assert fn(*setup()) == plaintext
    _time_pair(benchmark, op, size, impl, members)


# ------------------------------------------------------------------------------------------------
# aead: atoma-lab's AesGcmKey against pyca's AESGCM
# ------------------------------------------------------------------------------------------------

_AEAD_KEY = os.urandom(32)
_AEAD_NONCE = os.urandom(12)  # one nonce for timing only: nothing sealed here is ever sent


@pytest.mark.benchmark(group="aead")
@pytest.mark.parametrize("impl", ["raw", "atoma-lab"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("op", ["encrypt", "decrypt"])
def test_aead(benchmark: Any, op: str, impl: str, size: str) -> None:
    plaintext = _plaintext(size)
    raw, ours = AESGCM(_AEAD_KEY), AesGcmKey(_AEAD_KEY)
    ciphertext = raw.encrypt(_AEAD_NONCE, plaintext, None)
    calls: dict[tuple[str, str], Callable[[], bytes]] = {
        ("encrypt", "raw"): lambda: raw.encrypt(_AEAD_NONCE, plaintext, None),
        ("encrypt", "atoma-lab"): lambda: ours.encrypt(_AEAD_NONCE, plaintext),
        ("decrypt", "raw"): lambda: raw.decrypt(_AEAD_NONCE, ciphertext, None),
        ("decrypt", "atoma-lab"): lambda: ours.decrypt(_AEAD_NONCE, ciphertext),
    }
    fn = calls[op, impl]
    assert fn() == (ciphertext if op == "encrypt" else plaintext)
    benchmark(fn)
    _record(benchmark, "aead", op, size, impl)
