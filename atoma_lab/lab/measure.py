"""Measurements the notebooks plot: cost of each crypto step against payload size, the envelope
against raw pyca calls, ``openssl speed`` as a reference, and embedding latency against batch size
and input length. The package measures; notebooks only orchestrate and draw. The sweeps show a
progress bar (:func:`~atoma_lab.display.progressbar.progress`) unless told ``show_progress=False``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from atoma_lab.crypto.aead import AesGcmKey
from atoma_lab.crypto.attestation import (
    AttestationEvidence,
    AttestationPolicy,
    SimulatedTEE,
    verify_evidence,
)
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.kdf import derive_key
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.display.progressbar import progress
from atoma_lab.encoding import b64decode, b64encode, dumps, loads
from atoma_lab.lab.notebook.vectors import synthetic_texts
from atoma_lab.protocol import hardened
from atoma_lab.protocol.atoma.envelope import open_request, open_response, seal_request, seal_response
from atoma_lab.protocol.atoma.messages import ConfidentialComputeRequest, ConfidentialComputeResponse

DEFAULT_SIZES = (64, 1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20)  # bytes


@dataclass(frozen=True, slots=True)
class Timing:
    """Per-call time of a function: median and minimum over ``repeat`` runs of ``number`` calls."""

    median_ns: float
    min_ns: float
    number: int
    repeat: int


def time_call(fn: Callable[[], Any], *, repeat: int = 5, min_time_s: float = 0.02) -> Timing:
    """Time ``fn`` like :mod:`timeit`: calibrate ``number`` so one run lasts ``min_time_s``."""
    number = 1
    while True:
        t0 = time.perf_counter_ns()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter_ns() - t0
        if elapsed >= min_time_s * 1e9 or number >= 1 << 20:
            break
        number *= 2 if elapsed == 0 else max(2, min(10, int(min_time_s * 1e9 / max(elapsed, 1))))
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter_ns() - t0) / number)
    return Timing(float(np.median(runs)), float(min(runs)), number, repeat)


def crypto_costs(sizes: Iterable[int] = DEFAULT_SIZES, *, repeat: int = 5,
                 min_time_s: float = 0.02, show_progress: bool = True) -> list[dict[str, Any]]:
    """One row per (operation, payload size): ``op``, ``size``, ``median_ns``, ``min_ns``,
    ``gb_per_s``. Size-independent steps (X25519, HKDF) are reported at every size so that a
    plot shows where they stop mattering."""
    sizes = list(sizes)
    rows: list[dict[str, Any]] = []
    node = X25519KeyPair.generate()
    peer = X25519KeyPair.generate().public_bytes
    key, nonce, salt = secrets.token_bytes(32), secrets.token_bytes(12), secrets.token_bytes(16)
    aead = AesGcmKey(key)
    shared = node.exchange(peer)
    for size in progress(sizes, desc="crypto costs", unit="size", show=show_progress):
        data = secrets.token_bytes(size)
        ct = aead.encrypt(nonce, data)
        text = b64encode(data)
        floats = np.random.default_rng(size).standard_normal(max(1, size // 4)).astype(np.float32)
        as_list = floats.tolist()
        ops: dict[str, Callable[[], Any]] = {
            "x25519 keygen": X25519KeyPair.generate,
            "x25519 exchange": partial(node.exchange, peer),
            "hkdf-sha256": partial(derive_key, shared, salt),
            "aes-256-gcm encrypt": partial(aead.encrypt, nonce, data),
            "aes-256-gcm decrypt": partial(aead.decrypt, nonce, ct),
            "blake2b-256": partial(blake2b_256, data),
            "base64 encode": partial(b64encode, data),
            "base64 decode": partial(b64decode, text, field="x"),
            "json floats (json.dumps)": partial(json.dumps, as_list),
            "json floats (orjson+numpy)": partial(dumps, floats),
        }
        for op, fn in ops.items():
            t = time_call(fn, repeat=repeat, min_time_s=min_time_s)
            nbytes = size
            rows.append({"op": op, "size": size, "median_ns": t.median_ns, "min_ns": t.min_ns,
                         "gb_per_s": nbytes / t.median_ns})
    return rows


# What one confidential round trip (request and response of the same size) must compute on the
# client and the node together, whoever implements Atoma's wire: a client key, one exchange and
# one HKDF per side, each payload sealed and opened once, BLAKE2b of each plaintext on both sides,
# and each ciphertext base64-encoded by its sender and decoded by its receiver.
PROTOCOL_WORK: dict[str, int] = {
    "x25519 keygen": 1, "x25519 exchange": 2, "hkdf-sha256": 2,
    "aes-256-gcm encrypt": 2, "aes-256-gcm decrypt": 2, "blake2b-256": 4,
}
WIRE_WORK: dict[str, int] = {**PROTOCOL_WORK, "base64 encode": 2, "base64 decode": 2}


def protocol_floor(costs: Iterable[dict[str, Any]], work: dict[str, int] | None = None
                   ) -> dict[int, float]:
    """Per payload size, the nanoseconds of the primitives a round trip cannot avoid: the sum of
    ``work`` (operation -> calls, :data:`WIRE_WORK` by default, :data:`PROTOCOL_WORK` without the
    wire's base64) times their median cost in ``costs`` (rows of :func:`crypto_costs`). This is
    the envelope's true bound: AES-GCM alone is a small part of it."""
    work = WIRE_WORK if work is None else work
    by_size: dict[int, dict[str, float]] = {}
    for row in costs:
        by_size.setdefault(int(row["size"]), {})[str(row["op"])] = float(row["median_ns"])
    out = {}
    for size, ops in sorted(by_size.items()):
        missing = sorted(set(work) - set(ops))
        if missing:
            raise ValueError(f"costs at {size} bytes lack {', '.join(missing)}")
        out[size] = sum(calls * ops[op] for op, calls in work.items())
    return out


def openssl_versions() -> dict[str, str | None]:
    """The OpenSSL that ``cryptography`` bundles (what atoma-lab's AES-GCM runs on) and the
    system's ``openssl`` command (``None`` where it is missing): references to label as such."""
    from cryptography.hazmat.backends.openssl.backend import backend

    system = None
    exe = shutil.which("openssl")
    if exe is not None:
        done = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=30,
                              check=False)
        system = done.stdout.strip() or None if done.returncode == 0 else None
    return {"cryptography": backend.openssl_version_text(), "system": system}


def envelope_vs_raw(sizes: Iterable[int] = DEFAULT_SIZES, *, repeat: int = 5,
                    min_time_s: float = 0.02, show_progress: bool = True) -> list[dict[str, Any]]:
    """The envelope's request round trip (seal + open) against the raw pyca calls doing the
    same work, per size: ``size``, ``envelope_ns``, ``raw_ns``, ``ratio``."""
    node = X25519KeyPair.generate()
    node_raw = X25519PrivateKey.from_private_bytes(node.private_bytes())
    node_pub = node_raw.public_key()
    sha = hashes.SHA256()
    rows = []
    sizes = list(sizes)
    for size in progress(sizes, desc="envelope vs raw", unit="size", show=show_progress):
        data = secrets.token_bytes(size)

        def ours(data: bytes = data) -> bytes:
            sealed = seal_request(data, node_public_key=node.public_bytes, stack_small_id=1,
                                  model_name="m")
            opened = open_request(sealed.request, node)
            resp = seal_response(data, opened.context)
            return open_response(resp, sealed.context).plaintext

        def raw(data: bytes = data) -> bytes:
            client = X25519PrivateKey.generate()
            salt, n1, n2 = secrets.token_bytes(16), secrets.token_bytes(12), secrets.token_bytes(12)
            k = HKDF(algorithm=sha, length=32, salt=salt, info=b"").derive(client.exchange(node_pub))
            digest = hashlib.blake2b(data, digest_size=32).digest()
            ct = AESGCM(k).encrypt(n1, data, None)
            k2 = HKDF(algorithm=sha, length=32, salt=salt, info=b"").derive(
                node_raw.exchange(client.public_key()))
            pt = AESGCM(k2).decrypt(n1, ct, None)
            assert hashlib.blake2b(pt, digest_size=32).digest() == digest
            ct2 = AESGCM(k2).encrypt(n2, pt, None)
            out = AESGCM(k).decrypt(n2, ct2, None)
            assert hashlib.blake2b(out, digest_size=32).digest() == digest
            return out

        assert ours() == raw() == data
        t_ours = time_call(ours, repeat=repeat, min_time_s=min_time_s)
        t_raw = time_call(raw, repeat=repeat, min_time_s=min_time_s)
        rows.append({"size": size, "envelope_ns": t_ours.median_ns, "raw_ns": t_raw.median_ns,
                     "ratio": t_ours.median_ns / t_raw.median_ns})
    return rows


def profile_round_trip(profile: str, data: bytes, node: X25519KeyPair, signer: SuiSigner,
                       guard: hardened.ReplayGuard | None = None) -> bytes:
    """One request and response through ``profile`` ("atoma" or "hardened") as the wire carries
    them: seal, JSON out and in, open on the node, sealed and signed answer, JSON out and in,
    opened and signature-checked on the client. Returns the response plaintext."""
    if profile == "atoma":
        sealed = seal_request(data, node_public_key=node.public_bytes, stack_small_id=1,
                              model_name="m")
        wire = ConfidentialComputeRequest.from_json(sealed.request.to_json())
        opened = open_request(wire, node)
        answer = ConfidentialComputeResponse.from_json(
            seal_response(data, opened.context, signer=signer).to_json())
        return open_response(answer, sealed.context, require_signature=True,
                             expected_signer_address=signer.address).plaintext
    now = time.time()
    sealed_h = hardened.seal_hardened_request(data, node_public_key=node.public_bytes, model_name="m",
                                     stack_small_id=1, now=now)
    wire_h = hardened.parse_request(loads(sealed_h.request.to_json()))
    assert isinstance(wire_h, hardened.HardenedRequest)
    opened_h = hardened.open_hardened_request(wire_h, node, guard=guard or hardened.ReplayGuard(), now=now)
    answer_h = hardened.parse_response(loads(hardened.seal_hardened_response(
        data, opened_h.context, signer=signer).to_json()))
    return hardened.open_hardened_response(answer_h, sealed_h.context,
                                  expected_signer_address=signer.address).plaintext


def profile_costs(sizes: Iterable[int] = (1 << 10, 64 << 10, 1 << 20), *, repeat: int = 5,
                  min_time_s: float = 0.02, show_progress: bool = True) -> list[dict[str, Any]]:
    """Atoma's profile against the hardened one, one request round trip each (both signed), per
    plaintext size: ``size``, ``atoma_ns``, ``hardened_ns``, ``ratio`` (hardened / Atoma)."""
    node, signer = X25519KeyPair.generate(), SuiSigner.generate()
    guard = hardened.ReplayGuard()
    rows = []
    sizes = list(sizes)
    for size in progress(sizes, desc="profile costs", unit="size", show=show_progress):
        data = secrets.token_bytes(size)
        assert profile_round_trip("atoma", data, node, signer) == data
        assert profile_round_trip("hardened", data, node, signer, guard) == data
        t_atoma = time_call(partial(profile_round_trip, "atoma", data, node, signer),
                            repeat=repeat, min_time_s=min_time_s)
        t_hard = time_call(partial(profile_round_trip, "hardened", data, node, signer, guard),
                           repeat=repeat, min_time_s=min_time_s)
        rows.append({"size": size, "atoma_ns": t_atoma.median_ns, "hardened_ns": t_hard.median_ns,
                     "ratio": t_hard.median_ns / t_atoma.median_ns})
    return rows


def attested_node_key(*, now: float | None = None) -> tuple[bytes, AttestationPolicy, bytes]:
    """A fresh node key's attestation evidence as it travels (JSON), a policy trusting its
    simulated vendor, and the key: what a client verifies once per node key."""
    tee = SimulatedTEE()
    node = X25519KeyPair.generate()
    evidence = tee.attest(node_small_id=1, key_rotation_counter=1, rotation_nonce=7,
                          public_key=node.public_bytes, signer_address=SuiSigner.generate().address,
                          now=time.time() if now is None else now)
    return evidence.to_json(), AttestationPolicy.trusting([tee.vendor_address], max_age_s=3600), \
        node.public_bytes


def verify_node_key(wire: bytes, policy: AttestationPolicy, public_key: bytes) -> Any:
    """The client's check of :func:`attested_node_key`'s evidence (parse and verify)."""
    return verify_evidence(AttestationEvidence.from_json(wire), policy, public_key=public_key,
                           node_small_id=1, now=time.time())


def attestation_cost(*, repeat: int = 5, min_time_s: float = 0.02) -> dict[str, float]:
    """What a client pays to verify a node key's attestation (vendor signature, measurement,
    freshness, key binding) once, and then per request from its cache (a dict lookup), in ns."""
    wire, policy, key = attested_node_key()
    cache = {(1, key): verify_node_key(wire, policy, key)}
    first = time_call(partial(verify_node_key, wire, policy, key), repeat=repeat,
                      min_time_s=min_time_s)
    cached = time_call(partial(cache.get, (1, key)), repeat=repeat, min_time_s=min_time_s)
    return {"verify_ns": first.median_ns, "cached_ns": cached.median_ns}


def embedding_sweep(impls: Mapping[str, Callable[[list[str]], Any]], *, batches: Sequence[int],
                    words: Sequence[int], count_tokens: Callable[[list[str]], Iterable[int]],
                    repeat: int = 1, min_time_s: float = 0.0, seed: int = 0,
                    show_progress: bool = True) -> list[dict[str, Any]]:
    """Latency and throughput of each embedding implementation in ``impls`` (a name and a
    function embedding a list of texts) against batch size and input length.

    For each ``words`` (words per text, about a token each) and ``batches`` (texts per call),
    the same synthetic texts go to every implementation, timed with :func:`time_call` after one
    warm-up call per shape. One row per (implementation, words, batch): ``impl``, ``words``,
    ``batch``, ``tokens`` (``count_tokens`` summed), ``latency ms`` (median), ``texts/s``,
    ``tokens/s``.
    """
    points = [(w, b) for w in words for b in batches]
    rows = []
    for w, batch in progress(points, desc="embedding sweep", unit="point", show=show_progress):
        texts = synthetic_texts(batch, w, seed=seed + batch * 1000 + w)
        tokens = int(sum(count_tokens(texts)))
        for impl, embed in impls.items():
            embed(texts)  # warm-up: the first call of a shape pays for allocator and kernels
            t = time_call(partial(embed, texts), repeat=repeat, min_time_s=min_time_s)
            seconds = t.median_ns / 1e9
            rows.append({"impl": impl, "words": w, "batch": batch, "tokens": tokens,
                         "latency ms": t.median_ns / 1e6, "texts/s": batch / seconds,
                         "tokens/s": tokens / seconds})
    return rows


_SPEED_LINE = re.compile(r"^(?P<name>aes-256-gcm|AES-256-GCM)\s+(?P<rates>.+)$", re.IGNORECASE)


def parse_openssl_speed(output: str, sizes: list[int]) -> dict[int, float]:
    """Bytes per second for each block size from ``openssl speed -evp aes-256-gcm`` output
    (its numbers are in 1000s of bytes per second, with a ``k`` suffix)."""
    for line in output.splitlines():
        m = _SPEED_LINE.match(line.strip())
        if m:
            rates = [float(r.rstrip("k")) * 1000 for r in m.group("rates").split()]
            if len(rates) != len(sizes):
                raise ValueError(f"expected {len(sizes)} rates, got {len(rates)}")
            return dict(zip(sizes, rates, strict=True))
    raise ValueError("no AES-256-GCM line in openssl speed output")


def openssl_speed(sizes: Iterable[int] = (1 << 10, 16 << 10, 64 << 10), *,
                  seconds: int = 1) -> dict[int, float] | None:
    """AES-256-GCM bytes/s from the system ``openssl speed``, or ``None`` if the tool is missing.
    One size per run, since ``-bytes`` takes one size. It times the system's OpenSSL, which may
    be older or newer than the one ``cryptography`` bundles (:func:`openssl_versions`): a
    reference for AES-GCM alone, not a ceiling for atoma-lab."""
    exe = shutil.which("openssl")
    if exe is None:
        return None
    out: dict[int, float] = {}
    for size in sizes:
        done = subprocess.run([exe, "speed", "-evp", "aes-256-gcm", "-seconds", str(seconds),
                               "-bytes", str(size)], capture_output=True, text=True, timeout=60,
                              check=False)
        if done.returncode != 0:
            return None
        out.update(parse_openssl_speed(done.stdout, [size]))
    return out


__all__ = ["DEFAULT_SIZES", "PROTOCOL_WORK", "WIRE_WORK", "Timing", "crypto_costs",
           "embedding_sweep", "envelope_vs_raw", "openssl_speed", "openssl_versions", "parse_openssl_speed",
           "protocol_floor", "time_call"]
