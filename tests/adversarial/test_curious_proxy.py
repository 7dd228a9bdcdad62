"""Security properties against a curious or lying proxy.

* What the proxy sees: every message to or from it (in-process capture), over a run of good and
  refused confidential requests, holds no input text and no vector in any form.
* A proxy that hands out its own X25519 key from ``/v1/nodes/lock`` and relays what it opens
  (a full man in the middle, re-sealing to the real node and back) reads everything from a
  client that trusts the lock answer, as Atoma's SDKs do, and the client notices nothing; a
  client that verifies attestation refuses the key before sealing anything.
* Private keys (X25519 secrets, derived AES keys, Sui and vendor signing seeds) appear in no log
  record at DEBUG, no repr or str of keys, contexts, services and networks, and no error body,
  in raw, hex or base64 form, over a run that includes failures.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from fakes import MODEL, expected_vectors
from services.test_capture import _leaks

from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.encoding import b64decode, b64encode
from atoma_lab.errors import AtomaLabError, AttestationError
from atoma_lab.lab.network import PROXY_ADDRESS
from atoma_lab.protocol.atoma import envelope
from atoma_lab.protocol.atoma.envelope import open_request, open_response, seal_request, seal_response
from atoma_lab.protocol.atoma.messages import ConfidentialComputeRequest, ConfidentialComputeResponse
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.services.routing import Router
from atoma_lab.transport.base import Request, Response
from atoma_lab.transport.intercept import InterceptTransport

from .support import CONF, LOCK, LONG_MODEL, SECRET, Adversary, start_adversary
from .test_bad_input_matrix import CASES

NODE_CASES = [c for c in CASES if c.stage == "node"]  # refused after the node decrypted
SECRET_INPUTS = [SECRET, "the patient's diagnosis is 77c1", "ünïcødé ✓ secret 4e2a"]


@pytest.fixture(scope="module")
def inproc() -> Iterator[Adversary]:
    with start_adversary("inprocess") as adversary:
        yield adversary


# ------------------------------------------------------------------------------------------------
# What a curious proxy sees
# ------------------------------------------------------------------------------------------------


def _sealed_refusal(a: Adversary, payload: dict[str, Any], *, model_name: str = MODEL,
                    lock_model: str = MODEL) -> Response:
    d = a.seal(a.lock(lock_model), orjson.dumps(payload), model_name=model_name)
    return a.post(CONF, orjson.dumps(d))


def test_the_proxy_never_sees_inputs_or_vectors(inproc: Adversary) -> None:
    a = inproc
    assert a.net.transport is not None
    start = len(a.net.transport.captured)
    client = a.net.client(verify_attestation=True)
    seen_vectors = []
    for options in ({}, {"encoding_format": "base64"}, {"dimensions": 8}):
        result = client.confidential_embeddings.create(input=SECRET_INPUTS, model=MODEL, **options)
        seen_vectors.append(result.to_numpy())
    np.testing.assert_array_equal(seen_vectors[0], expected_vectors(SECRET_INPUTS))
    np.testing.assert_array_equal(seen_vectors[2], expected_vectors(SECRET_INPUTS)[:, :8])
    # Refused after the node opened them: the errors must not echo the plaintext either.
    refusals = [
        _sealed_refusal(a, {"input": SECRET_INPUTS, "model": MODEL}, model_name=LONG_MODEL),
        _sealed_refusal(a, {"input": SECRET_INPUTS, "model": MODEL, "encoding_format": SECRET}),
        _sealed_refusal(a, {"input": SECRET_INPUTS, "model": MODEL, "dimensions": SECRET}),
        _sealed_refusal(a, {"input": [" ".join(SECRET_INPUTS * 8)], "model": LONG_MODEL},
                        model_name=LONG_MODEL, lock_model=LONG_MODEL),
        _sealed_refusal(a, {"input": SECRET_INPUTS, "model": "no/such"}, model_name="no/such"),
    ]
    assert [r.status for r in refusals] == [400, 400, 400, 400, 404]
    a.expire()
    messages = a.net.transport.captured[start:]
    to_proxy = [m for m in messages if m.address == PROXY_ADDRESS]
    to_nodes = [m for m in messages if m.address != PROXY_ADDRESS]
    # Everything the proxy received, answered, sent to a node or got back from one.
    assert sum(m.request.path == CONF for m in to_proxy) == 3 + len(refusals)
    assert sum(m.request.path == CONF for m in to_nodes) == 3 + len(refusals)
    for vectors in (expected_vectors(SECRET_INPUTS), expected_vectors(SECRET_INPUTS)[:, :8]):
        assert _leaks(messages, SECRET_INPUTS, vectors) == []
    client.close()


# ------------------------------------------------------------------------------------------------
# A proxy that hands out its own key
# ------------------------------------------------------------------------------------------------


class KeySwappingProxy:
    """Wraps a proxy's router: ``/v1/nodes/lock`` answers with the attacker's X25519 key; what
    the client seals to it is opened, re-sealed to the real node, and the node's answer opened
    and sealed back to the client under the client's key, with the node's own signature (the
    plaintext is unchanged, so its hash and signature still hold)."""

    def __init__(self, inner: Router, attacker: X25519KeyPair) -> None:
        self.inner = inner
        self.attacker = attacker
        self.real_keys: dict[int, bytes] = {}
        self.stolen: list[bytes] = []
        self.paths: list[str] = []

    def __getattr__(self, name: str) -> Any:  # paths, max_body_bytes, add: the real router's
        return getattr(self.inner, name)

    async def __call__(self, request: Request) -> Response:
        self.paths.append(request.path)
        if request.path == LOCK:
            return self._swap_key(await self.inner(request))
        if request.path == CONF:
            ccr = ConfidentialComputeRequest.from_json(request.body)
            if ccr.node_dh_public_key == self.attacker.public_bytes:
                return await self._relay(request, ccr)
        return await self.inner(request)

    def _swap_key(self, resp: Response) -> Response:
        if not resp.ok:
            return resp
        body = orjson.loads(resp.body)
        self.real_keys[body["stack_small_id"]] = b64decode(body["public_key"], field="public_key")
        body["public_key"] = b64encode(self.attacker.public_bytes)
        return Response.json(body, status=resp.status)

    async def _relay(self, request: Request, ccr: ConfidentialComputeRequest) -> Response:
        opened = open_request(ccr, self.attacker)
        self.stolen.append(opened.plaintext)
        resealed = seal_request(opened.plaintext, node_public_key=self.real_keys[ccr.stack_small_id],
                                stack_small_id=ccr.stack_small_id, model_name=ccr.model_name,
                                num_compute_units=ccr.num_compute_units, stream=ccr.stream)
        resp = await self.inner(Request("POST", CONF, request.headers, resealed.request.to_json()))
        if not resp.ok:
            return resp
        answer = ConfidentialComputeResponse.from_json(resp.body)
        clear = open_response(answer, resealed.context)
        self.stolen.append(clear.plaintext)
        back = seal_response(clear.plaintext, opened.context, usage=answer.usage)
        return Response.json(ConfidentialComputeResponse(
            back.nonce, back.ciphertext, back.response_hash, answer.signature, answer.usage,
        ).to_json())


@pytest.fixture
def lying_proxy(adversary: Adversary) -> Iterator[KeySwappingProxy]:
    proxy = adversary.net.proxy
    honest = proxy.router
    liar = KeySwappingProxy(honest, X25519KeyPair.generate())
    proxy.router = liar  # type: ignore[assignment]
    try:
        yield liar
    finally:
        proxy.router = honest
        adversary.expire()


def test_an_unverifying_client_is_read_by_a_key_swapping_proxy(
        adversary: Adversary, lying_proxy: KeySwappingProxy) -> None:
    """Atoma's SDKs trust the lock answer: the substitution succeeds and goes unnoticed."""
    client = adversary.net.client(verify_attestation=False)  # signature still checked
    result = client.confidential_embeddings.create(input=SECRET_INPUTS, model=MODEL)
    np.testing.assert_array_equal(result.to_numpy(), expected_vectors(SECRET_INPUTS))
    assert lying_proxy.paths.count(CONF) == 1
    request_plaintext, response_plaintext = lying_proxy.stolen
    assert SECRET.encode() in request_plaintext
    stolen_vectors = orjson.loads(response_plaintext)["data"]
    np.testing.assert_array_equal(np.array([d["embedding"] for d in stolen_vectors], np.float32),
                                  expected_vectors(SECRET_INPUTS))
    client.close()


def test_a_verifying_client_refuses_the_swapped_key_before_sealing(
        adversary: Adversary, lying_proxy: KeySwappingProxy) -> None:
    client = adversary.net.client(verify_attestation=True)
    with pytest.raises(AttestationError):
        client.confidential_embeddings.create(input=SECRET_INPUTS, model=MODEL)
    assert LOCK in lying_proxy.paths
    assert CONF not in lying_proxy.paths
    assert lying_proxy.stolen == []
    client.close()


# ------------------------------------------------------------------------------------------------
# No private key in logs, reprs or error bodies
# ------------------------------------------------------------------------------------------------


def _seed(signer: SuiSigner) -> bytes:
    ed = signer._ed
    assert ed is not None
    return ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())


def forms(secret: bytes) -> list[bytes]:
    """Raw, hex (both cases) and base64 (standard, URL-safe, unpadded) renderings."""
    b64 = base64.b64encode(secret)
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), b64,
            base64.urlsafe_b64encode(secret), b64.rstrip(b"=")]


@pytest.fixture
def recorded_secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[bytes]]:
    """Every X25519 key pair generated and every AES key derived while the test runs."""
    found: dict[str, list[bytes]] = {"x25519": [], "aes": []}
    generate = X25519KeyPair.generate
    derive = envelope.derive_key

    def recording_generate(cls: type[X25519KeyPair]) -> X25519KeyPair:
        pair = generate()
        found["x25519"].append(pair.private_bytes())
        return pair

    def recording_derive(shared: bytes, salt: bytes, **kw: Any) -> bytes:
        key = derive(shared, salt, **kw)
        found["aes"].append(key)
        return key

    monkeypatch.setattr(X25519KeyPair, "generate", classmethod(recording_generate))
    monkeypatch.setattr(envelope, "derive_key", recording_derive)
    return found


class CrashingEmbedder:
    """An engine with a bug (not an AtomaLabError): the service logs it and answers 500."""

    def __init__(self, models: Any) -> None:
        self.models = models

    async def embed(self, request: CreateEmbeddingRequest) -> Any:
        raise RuntimeError("engine bug")


def _run_with_failures(a: Adversary, record: Callable[[Any], None]) -> list[bytes]:
    """Good requests, a key rotation, and every node-stage refusal of the matrix; returns the
    error bodies seen."""
    bodies = []
    client = a.net.client(verify_attestation=True)
    record(client)
    for inputs in (SECRET_INPUTS, "one more"):
        result = client.confidential_embeddings.create(input=inputs, model=MODEL)
        record(result)
    a.net.rotate(0)
    record(client.confidential_embeddings.create(input=SECRET_INPUTS, model=MODEL))
    for case in NODE_CASES:
        resp = case.make(a)
        assert resp.status == case.status, case.name
        bodies.append(resp.body)
    node = a.net.nodes[0]
    engine = node.embedder
    node.embedder = CrashingEmbedder(engine.models)  # type: ignore[assignment]
    try:  # a bug in the node: logged with its traceback, a 502 for the client
        with pytest.raises(AtomaLabError) as crashed:
            client.confidential_embeddings.create(input=SECRET_INPUTS, model=MODEL)
        assert crashed.value.status == 502
    finally:
        node.embedder = engine
    try:  # a client-side failure too: a forged response hash
        hooked = a.net.client()
        hooked.transport = InterceptTransport(hooked.transport, after=lambda req, resp: Response(
            resp.status, resp.body.replace(b'"response_hash":"', b'"response_hash":"A', 1)
            if req.path == CONF else resp.body, resp.headers))
        hooked.confidential_embeddings.create(input="x", model=MODEL)
    except AtomaLabError as exc:
        bodies += [str(exc).encode(), repr(exc).encode(), orjson.dumps(exc.to_dict())]
    else:
        raise AssertionError("the forged response was accepted")
    if a.net.transport is not None:
        bodies += [m.response.body for m in a.net.transport.captured
                   if m.response is not None and m.response.status >= 400]
    client.close()
    a.expire()
    return bodies


def test_no_private_key_in_logs_reprs_or_error_bodies(
        adversary: Adversary, recorded_secrets: dict[str, list[bytes]],
        caplog: pytest.LogCaptureFixture) -> None:
    a = adversary
    caplog.set_level(logging.DEBUG)
    objects: list[Any] = []
    sealed = seal_request(b'{"input":"x","model":"m"}', node_public_key=a.net.nodes[0].public_key,
                          stack_small_id=1, model_name="m")
    opened = open_request(sealed.request, a.net.nodes[0].current.pair)
    objects += [sealed, sealed.context, opened, opened.context,
                seal_response(b"{}", opened.context)]
    bodies = _run_with_failures(a, objects.append)
    objects += [a.net, a.net.proxy, a.net.proxy.signer, a.net.ledger, a.net.tee, a.net.tee.vendor,
                a.client, *a.net.nodes]
    for node in a.net.nodes:
        objects += [node.current, node.current.pair, node.signer, node.evidence]
    secrets = {
        "node x25519": [n.current.pair.private_bytes() for n in a.net.nodes],
        "node sui seed": [_seed(n.signer) for n in a.net.nodes],
        "proxy sui seed": [a.net.ledger.proxy_signing_seed(), _seed(a.net.proxy.signer)],
        "vendor seed": [_seed(a.net.tee.vendor)],
        "generated x25519": recorded_secrets["x25519"],
        "derived aes": recorded_secrets["aes"],
    }
    assert len(secrets["generated x25519"]) >= 4 and len(secrets["derived aes"]) >= 4
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logs = [formatter.format(r).encode("utf-8", "replace") for r in caplog.records]
    assert logs, "the run logged nothing at DEBUG: the check would be blind"
    places = {"log": logs,
              "repr": [f"{o!r} {o!s}".encode("utf-8", "replace") for o in objects],
              "error body": bodies}
    leaks = [f"{what} in a {where}"
             for what, values in secrets.items() for secret in values for form in forms(secret)
             for where, blobs in places.items() for blob in blobs if form in blob]
    assert leaks == []
    token = a.net.api_key.encode()
    assert not [b for b in logs + bodies if token in b]


def test_the_secret_search_would_find_a_leak() -> None:
    key = X25519KeyPair.generate().private_bytes()
    for form in forms(key):
        assert form in b"prefix " + form + b" suffix"
    assert forms(key)[1].decode() == key.hex()
    assert b64decode(forms(key)[3].decode(), field="k", size=32) == key
