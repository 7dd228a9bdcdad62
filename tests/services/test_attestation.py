"""Attestation and signatures end to end: a client that verifies attestation refuses a key the
proxy made up before sealing anything to it; the proxy refuses node answers signed by the wrong
key; the client catches a response whose hash or signature was changed on the way."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fakes import MODEL, error_of, expected_vectors, money, send, with_body

from atoma_lab.crypto.attestation import AttestationPolicy, SimulatedTEE
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.errors import (
    AttestationError,
    HashMismatchError,
    NodeKeyMismatchError,
    PeerProtocolError,
    ServiceUnavailableError,
    SignatureError,
)
from atoma_lab.lab.network import Network
from atoma_lab.protocol.atoma.envelope import open_request
from atoma_lab.protocol.atoma.messages import ConfidentialComputeRequest
from atoma_lab.transport.base import Request, Response
from atoma_lab.transport.intercept import InterceptTransport

CONF = "/v1/confidential/embeddings"
LOCK = "/v1/nodes/lock"
SECRET = "attested secret 91c2"


def _swap_lock_key(attacker: X25519KeyPair) -> Callable[[Request, Response], Response | None]:
    def after(request: Request, response: Response) -> Response | None:
        if request.path == LOCK and response.ok:
            body = orjson.loads(response.body)
            body["public_key"] = base64.b64encode(attacker.public_bytes).decode()
            return with_body(response, body)
        return None
    return after


def test_verified_client_works_on_an_honest_network(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=2, mode=mode)
    client = net.client(verify_attestation=True)
    result = client.confidential_embeddings.create(input=[SECRET, "b"], model=MODEL)
    assert result.to_numpy().tobytes() == expected_vectors([SECRET, "b"]).tobytes()
    assert "attest" in result.trace.stages_ms
    assert set(client.verified_nodes) == {(result.node_small_id, net.nodes[
        result.node_small_id - 1].public_key)}  # type: ignore[operator]
    # A request sealed to a key verified before does not fetch the evidence again; one sealed to
    # a key seen for the first time does. Three requests over two nodes reuse a key at least once.
    fetched: list[str] = []
    serve_evidence = net.proxy.router.route("GET", "/v1/nodes/attestation")

    async def counting(request: Request) -> Response:
        fetched.append(request.query.get("node_small_id", ""))
        return await serve_evidence(request)

    net.proxy.router.add("GET", "/v1/nodes/attestation", counting)
    reused = 0
    for text in ("c", "c2", "c3"):
        known = set(client.verified_nodes)
        before = len(fetched)
        again = client.confidential_embeddings.create(input=text, model=MODEL)
        key = (again.node_small_id, net.nodes[again.node_small_id - 1].public_key)  # type: ignore[operator]
        assert len(fetched) - before == (0 if key in known else 1)
        assert key in client.verified_nodes
        reused += key in known
    assert reused >= 1
    # After a rotation the new key is verified afresh.
    net.rotate(result.node_small_id - 1)  # type: ignore[operator]
    client.confidential_embeddings.create(input="d", model=MODEL)
    assert len(client.verified_nodes) >= 2
    client.close()


def test_a_key_made_up_by_the_proxy_is_caught_before_sealing(make_net: Callable[..., Network],
                                                              mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    client = net.client(verify_attestation=True)
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    hook = InterceptTransport(client.transport, after=_swap_lock_key(X25519KeyPair.generate()))
    client.transport = hook
    before = money(net)
    with pytest.raises(AttestationError):
        client.confidential_embeddings.create(input=SECRET, model=MODEL)
    assert CONF not in hook.paths()  # nothing was sealed to the made-up key, nothing sent
    assert money(net) == before
    client.close()


def test_in_process_fault_on_the_proxy_is_caught_too(make_net: Callable[..., Network]) -> None:
    from atoma_lab.lab.network import PROXY_ADDRESS
    from atoma_lab.transport.inprocess import Fault

    net = make_net(nodes=1)
    attacker = X25519KeyPair.generate()

    def tamper(resp: Response) -> Response:
        body = orjson.loads(resp.body) if resp.ok else None
        if isinstance(body, dict) and "stack_small_id" in body and "public_key" in body:
            body["public_key"] = base64.b64encode(attacker.public_bytes).decode()
            return with_body(resp, body)
        return resp

    assert net.transport is not None
    net.transport.inject(PROXY_ADDRESS, Fault(tamper_response=tamper))
    client = net.client(verify_attestation=True)
    with pytest.raises(AttestationError):
        client.confidential_embeddings.create(input=SECRET, model=MODEL)
    assert not [m for m in net.transport.captured if m.request.path == CONF]


def test_without_attestation_the_made_up_key_reads_the_request(make_net: Callable[..., Network]) -> None:
    """Why a client should verify: a lying proxy can open what is sealed to its own key."""
    net = make_net(nodes=1)
    attacker = X25519KeyPair.generate()
    client = net.client(verify_attestation=False)
    hook = InterceptTransport(client.transport, after=_swap_lock_key(attacker))
    client.transport = hook
    with pytest.raises(NodeKeyMismatchError):  # the honest node refuses it, twice
        client.confidential_embeddings.create(input=SECRET, model=MODEL)
    stolen = [r for r, _ in hook.seen if r.path == CONF]
    assert len(stolen) == 2
    opened = open_request(ConfidentialComputeRequest.from_json(stolen[0].body), attacker)
    assert SECRET.encode() in opened.plaintext


def test_evidence_from_an_untrusted_vendor_is_refused_by_the_client(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    client = net.client(attestation_policy=AttestationPolicy.trusting([SuiSigner.generate().address]),
                        verify_attestation=True)
    with pytest.raises(AttestationError):
        client.confidential_embeddings.create(input=SECRET, model=MODEL)


def test_the_proxy_refuses_keys_attested_by_an_untrusted_vendor(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=2, prices=[1, 2])
    net.nodes[0].tee = SimulatedTEE()  # a vendor nobody trusts
    net.rotate(0)
    assert net.client(verify_attestation=True).confidential_embeddings.create(
        input="x", model=MODEL).node_small_id == 2


def _resign_node_with(net: Network, index: int, signer: SuiSigner) -> None:
    """The node signs with another key than the one the proxy registered for it."""
    net.nodes[index].signer = signer


@pytest.mark.parametrize("route", ["confidential", "plain"])
def test_node_answer_signed_by_another_key_is_502(make_net: Callable[..., Network], mode: str,
                                                  route: str) -> None:
    net = make_net(nodes=1, mode=mode)
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    before = money(net)
    _resign_node_with(net, 0, SuiSigner.generate())
    if route == "confidential":
        lock = client.nodes.lock(MODEL)
        from atoma_lab.protocol.atoma.envelope import seal_request

        body = seal_request(b'{"input":"x","model":"' + MODEL.encode() + b'"}',
                            node_public_key=lock.public_key, stack_small_id=lock.stack_small_id,
                            model_name=MODEL).request.to_json()
        resp = send(net, "POST", CONF, body)
    else:
        resp = send(net, "POST", "/v1/embeddings", {"input": "x", "model": MODEL})
    assert error_of(resp) == (502, "BAD_PEER_RESPONSE")
    assert money(net) == before
    assert net.ledger.open_locks() == []
    assert all(s.locked_compute_units == 0 for s in net.ledger.stacks())
    # The client sees the same as a PeerProtocolError.
    with pytest.raises(PeerProtocolError):
        client.embeddings.create(input="x", model=MODEL)
    client.close()


def _node_tamper(net: Network, change: Callable[[dict[str, Any]], None]) -> None:
    """In-process: change the node's answers on the wire (before the proxy sees them)."""
    from atoma_lab.transport.inprocess import Fault

    def tamper(resp: Response) -> Response:
        if not resp.ok:
            return resp
        body = orjson.loads(resp.body)
        change(body)
        return with_body(resp, body)

    assert net.transport is not None
    net.transport.inject(net.node_urls[0], Fault(tamper_response=tamper))


def test_node_answer_with_a_forged_usage_is_refused(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    before = money(net)

    def inflate(body: dict[str, Any]) -> None:
        if "usage" in body and "ciphertext" in body:
            body["usage"]["total_tokens"] = 10**6
    _node_tamper(net, inflate)
    with pytest.raises(PeerProtocolError):
        client.confidential_embeddings.create(input="x", model=MODEL)
    assert money(net) == before


def test_node_lying_about_usage_within_the_lock_is_caught_by_the_client(
        make_net: Callable[..., Network]) -> None:
    """The clear usage is not signed: a node may bill more than it did. The proxy cannot tell;
    the client compares it with the sealed usage and refuses the answer."""
    net = make_net(nodes=1)
    client = net.client()

    def inflate(body: dict[str, Any]) -> None:
        if "usage" in body and "ciphertext" in body:
            body["usage"]["total_tokens"] += 5
    _node_tamper(net, inflate)
    with pytest.raises(PeerProtocolError, match="usage"):
        client.confidential_embeddings.create(input="x", model=MODEL)


def test_tampered_response_hash_is_caught_by_the_client(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    client = net.client()

    def after(request: Request, response: Response) -> Response | None:
        if request.path == CONF and response.ok:
            body = orjson.loads(response.body)
            body["response_hash"] = base64.b64encode(blake2b_256(b"other")).decode()
            return with_body(response, body)
        return None
    client.transport = InterceptTransport(client.transport, after=after)
    with pytest.raises(HashMismatchError):
        client.confidential_embeddings.create(input=SECRET, model=MODEL)


def test_node_signing_a_wrong_hash_is_caught_by_the_client(make_net: Callable[..., Network]) -> None:
    """The node's signature verifies, so the proxy passes it on; the hash does not match the
    plaintext, which only the client can see."""
    net = make_net(nodes=1)
    node = net.nodes[0]

    def lie(body: dict[str, Any]) -> None:
        if "response_hash" in body and "ciphertext" in body:
            digest = blake2b_256(b"not the response")
            body["response_hash"] = base64.b64encode(digest).decode()
            body["signature"] = node.signer.sign(digest).to_base64()
    _node_tamper(net, lie)
    client = net.client()
    with pytest.raises(HashMismatchError):
        client.confidential_embeddings.create(input=SECRET, model=MODEL)


def test_signature_swapped_by_the_proxy_is_caught_by_a_verifying_client(
        make_net: Callable[..., Network], mode: str) -> None:
    """A valid signature by the wrong key: only a client that knows the attested node's address
    can tell."""
    net = make_net(nodes=1, mode=mode)
    impostor = SuiSigner.generate()

    def after(request: Request, response: Response) -> Response | None:
        if request.path == CONF and response.ok:
            body = orjson.loads(response.body)
            digest = base64.b64decode(body["response_hash"])
            body["signature"] = impostor.sign(digest).to_base64()
            return with_body(response, body)
        return None
    trusting = net.client()
    trusting.transport = InterceptTransport(trusting.transport, after=after)
    trusting.confidential_embeddings.create(input="x", model=MODEL)  # any valid signature passes
    verifying = net.client(verify_attestation=True)
    verifying.transport = InterceptTransport(verifying.transport, after=after)
    with pytest.raises(SignatureError):
        verifying.confidential_embeddings.create(input="x", model=MODEL)


def test_missing_signature_is_refused_unless_the_client_opts_out(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)

    def after(request: Request, response: Response) -> Response | None:
        if request.path == CONF and response.ok:
            body = orjson.loads(response.body)
            del body["signature"]
            return with_body(response, body)
        return None
    strict = net.client()
    strict.transport = InterceptTransport(strict.transport, after=after)
    with pytest.raises(PeerProtocolError):
        strict.confidential_embeddings.create(input="x", model=MODEL)
    lax = net.client(verify_signature=False)
    lax.transport = InterceptTransport(lax.transport, after=after)
    assert lax.confidential_embeddings.create(input="x", model=MODEL).usage.total_tokens == 3


@pytest.mark.parametrize("change", ["drop_hash", "bad_b64_hash", "not_json", "no_usage",
                                    "bad_usage", "not_an_object"])
def test_malformed_node_answers_are_502_and_free(make_net: Callable[..., Network], change: str) -> None:
    from atoma_lab.transport.inprocess import Fault

    net = make_net(nodes=1)
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    before = money(net)

    def tamper(resp: Response) -> Response:
        if change == "not_json":
            return Response(200, b"<html>oops</html>", resp.headers)
        if change == "not_an_object":
            return Response(200, b"[1, 2]", resp.headers)
        body = orjson.loads(resp.body)
        if change == "drop_hash":
            del body["response_hash"]
        elif change == "bad_b64_hash":
            body["response_hash"] = "!!!!"
        elif change == "bad_usage":
            body["usage"]["total_tokens"] = "many"
        else:
            del body["usage"]
        return with_body(resp, body)

    assert net.transport is not None
    net.transport.inject(net.node_urls[0], Fault(tamper_response=tamper))
    for route, payload in ((CONF, None), ("/v1/embeddings", {"input": "x", "model": MODEL})):
        if payload is None:
            with pytest.raises(PeerProtocolError):
                client.confidential_embeddings.create(input="x", model=MODEL)
        else:
            resp = send(net, "POST", route, payload)
            assert error_of(resp) == (502, "BAD_PEER_RESPONSE")
    assert money(net) == before
    assert net.ledger.open_locks() == []


@pytest.mark.parametrize("usage", [{"prompt_tokens": 1, "total_tokens": "many"},
                                   {"prompt_tokens": 1, "total_tokens": -1},
                                   {"prompt_tokens": 1, "total_tokens": 10**9}, None, 7])
def test_plain_answer_signed_by_the_node_with_bad_usage_is_502(make_net: Callable[..., Network],
                                                                usage: object) -> None:
    """Signed and hashed correctly by the node, but its usage is unusable or above the lock."""
    from atoma_lab.encoding import serde_compact

    net = make_net(nodes=1)
    node = net.nodes[0]
    client = net.client()
    client.embeddings.create(input="warm up", model=MODEL)
    before = money(net)

    def resign(body: dict[str, Any]) -> None:
        body.pop("signature"), body.pop("response_hash")
        body["usage"] = usage
        digest = blake2b_256(serde_compact(body))
        body["signature"] = node.signer.sign(digest).to_base64()
        body["response_hash"] = base64.b64encode(digest).decode()
    _node_tamper(net, resign)
    resp = send(net, "POST", "/v1/embeddings", {"input": "x", "model": MODEL})
    assert error_of(resp) == (502, "BAD_PEER_RESPONSE")
    assert money(net) == before
    assert net.ledger.open_locks() == []


# ------------------------------------------------------------------ the verifier interface
def _tdx_verifier() -> Any:
    """A TDX verifier holding dcap-qvl's sample collateral: it takes no simulated evidence."""
    from crypto.vectors import VECTORS_DIR, load_vectors

    from atoma_lab.crypto.attestation.tdx import (
        ExpectedReportData,
        TdxCollateral,
        TdxPolicy,
        TdxVerifier,
    )

    v = load_vectors("tdx_quotes", kind="verifies")[0]
    return TdxVerifier(TdxPolicy(ExpectedReportData(v["report_data"])),
                       TdxCollateral.from_json((VECTORS_DIR / v["collateral"]).read_text()))


def test_the_proxy_accepts_keys_through_its_verifier(make_net: Callable[..., Network]) -> None:
    from atoma_lab.crypto.attestation import SimulatedVerifier, VerifierSet

    net = make_net(nodes=1)
    tdx = _tdx_verifier()
    net.proxy.attestation_verifier = tdx  # a network told to take TDX evidence only
    net.rotate(0)
    node = net.proxy.ledger.node(1)
    assert node is not None and not node.attestation_valid
    with pytest.raises(ServiceUnavailableError):
        net.client().confidential_embeddings.create(input="x", model=MODEL)
    net.proxy.attestation_verifier = VerifierSet(SimulatedVerifier(net.attestation_policy()), tdx)
    net.rotate(0)  # either kind now: the simulated node's new key is taken
    node = net.proxy.ledger.node(1)
    assert node is not None and node.attestation_valid
    assert net.client().confidential_embeddings.create(input="x", model=MODEL).node_small_id == 1


def test_the_client_verifies_through_its_verifier(make_net: Callable[..., Network]) -> None:
    from atoma_lab.crypto.attestation import SimulatedVerifier, VerifierSet
    from atoma_lab.errors import EvidenceFormatError

    net = make_net(nodes=1)
    tdx = _tdx_verifier()
    either = net.client(attestation_verifier=VerifierSet(SimulatedVerifier(net.attestation_policy()),
                                                         tdx), verify_attestation=True)
    result = either.confidential_embeddings.create(input=SECRET, model=MODEL)
    (verified,) = either.verified_nodes.values()
    assert verified.sui_address == net.nodes[0].signer.address
    assert result.node_small_id == 1
    only_tdx = net.client(attestation_verifier=tdx, verify_attestation=True)
    hook = InterceptTransport(only_tdx.transport)
    only_tdx.transport = hook
    with pytest.raises(EvidenceFormatError):
        only_tdx.confidential_embeddings.create(input=SECRET, model=MODEL)
    assert CONF not in hook.paths()  # refused before anything was sealed
