"""Node key rotation: the proxy stops handing out the old key, requests sealed to it are 409,
the client retries once transparently, a grace window serves requests already in flight, and
only the node itself can announce its new key."""

from __future__ import annotations

import base64
from collections.abc import Callable

import orjson
import pytest
from fakes import (
    MODEL,
    FakeClock,
    error_of,
    expected_units,
    money,
    send,
    settlements,
)

from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.errors import NodeKeyMismatchError
from atoma_lab.lab.network import Network
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.transport.base import Headers, Request, Response
from atoma_lab.transport.intercept import InterceptTransport

PLAINTEXT = CreateEmbeddingRequest(input="rotate me", model=MODEL).to_json()
CONF = "/v1/confidential/embeddings"


def test_lock_never_hands_out_the_old_key(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    node = net.nodes[0]
    client = net.client()
    old = node.public_key
    assert client.nodes.lock(MODEL).public_key == old
    counter = node.key_rotation_counter
    evidence = net.rotate(0)
    assert node.public_key != old and node.key_rotation_counter == counter + 1
    assert evidence.report.public_key == node.public_key
    for _ in range(5):
        assert client.nodes.lock(MODEL, max_num_tokens=10).public_key == node.public_key
    record = net.ledger.node(1)
    assert record is not None and record.public_key == node.public_key
    assert record.key_rotation_counter == counter + 1 and record.attestation_valid
    # The public attestation endpoint shows the new key too.
    info = orjson.loads(send(net, "GET", "/v1/nodes/attestation?node_small_id=1", token=None).body)
    assert info["key_rotation_counter"] == counter + 1
    client.close()


def test_request_sealed_to_the_old_key_is_409(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    lock = client.nodes.lock(MODEL)
    body = seal_request(PLAINTEXT, node_public_key=lock.public_key,
                        stack_small_id=lock.stack_small_id, model_name=MODEL).request.to_json()
    net.rotate(0)
    before = money(net)
    resp = send(net, "POST", CONF, body)
    assert error_of(resp) == (409, "STALE_NODE_KEY")
    assert money(net) == before
    assert net.ledger.open_locks() == []
    assert net.ledger.stack(lock.stack_small_id).locked_compute_units == 0
    client.close()


def _rotate_before_first_send(net: Network, *, publish: bool = True) -> Callable[[Request], None]:
    """A hook that rotates node 0 between the client's lock and its first sealed send."""
    done: list[bool] = []

    def before(request: Request) -> None:
        if request.path == CONF and not done:
            done.append(True)
            net.rotate(0, publish=publish)
    return before


def test_client_retries_once_after_a_rotation(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    client = net.client()
    hook = InterceptTransport(client.transport, before=_rotate_before_first_send(net))
    client.transport = hook
    old = net.nodes[0].public_key
    result = client.confidential_embeddings.create(input="rotate me", model=MODEL)
    assert result.attempts == 2
    assert result.usage.total_tokens == expected_units("rotate me")
    statuses = [(r.path, resp.status) for r, resp in hook.seen]
    assert statuses == [("/v1/nodes/lock", 200), (CONF, 409), ("/v1/nodes/lock", 200), (CONF, 200)]
    sealed_to = [orjson.loads(r.body)["node_dh_public_key"] for r, _ in hook.seen if r.path == CONF]
    assert [base64.b64decode(k) for k in sealed_to] == [old, net.nodes[0].public_key]
    # Charged exactly once; the first lock came back.
    assert sum(s.already_computed_units for s in net.ledger.stacks()) == result.usage.total_tokens
    assert net.ledger.open_locks() == []
    assert all(s.locked_compute_units == 0 for s in net.ledger.stacks())
    client.close()


def test_the_proxy_learns_an_unannounced_key_from_the_409(make_net: Callable[..., Network],
                                                          mode: str) -> None:
    """A node rotated without telling the proxy: its 409 makes the proxy fetch the node's
    attested key, so the client's one retry goes through, charged once."""
    net = make_net(nodes=1, mode=mode)
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)
    net.rotate(0, publish=False)
    result = client.confidential_embeddings.create(input="x", model=MODEL)
    assert result.attempts == 2
    record = net.ledger.node(1)
    assert record is not None and record.public_key == net.nodes[0].public_key
    assert [r["outcome"] for r in settlements(net)][-2:] == ["STALE_NODE_KEY", "charged"]


def test_client_gives_up_after_the_second_409(make_net: Callable[..., Network],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose new key the proxy cannot learn: the retry gets the old key again."""
    net = make_net(nodes=1)
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)

    async def cannot_learn(node_small_id: int) -> bool:
        return True

    monkeypatch.setattr(net.proxy, "refresh_node", cannot_learn)
    net.rotate(0, publish=False)
    before = money(net)
    with pytest.raises(NodeKeyMismatchError) as exc:
        client.confidential_embeddings.create(input="x", model=MODEL)
    assert exc.value.status == 409
    assert money(net) == before
    assert net.ledger.open_locks() == []
    # Once the key is published, requests go through again.
    net.publish_key(0)
    assert client.confidential_embeddings.create(input="x", model=MODEL).attempts == 1


def test_unpublished_rotation_then_publish_between_lock_and_send(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    client = net.client()
    net.rotate(0, publish=False)
    done: list[bool] = []

    def before(request: Request) -> None:
        if request.path == CONF and not done:
            done.append(True)
            net.publish_key(0)
    client.transport = InterceptTransport(client.transport, before=before)
    result = client.confidential_embeddings.create(input="x", model=MODEL)
    assert result.attempts == 2


def test_grace_window_serves_requests_in_flight(make_net: Callable[..., Network], mode: str) -> None:
    clock = FakeClock()
    net = make_net(nodes=1, mode=mode, grace_window_s=30, clock=clock)
    client = net.client()
    hook = InterceptTransport(client.transport, before=_rotate_before_first_send(net))
    client.transport = hook
    old = net.nodes[0].public_key
    result = client.confidential_embeddings.create(input="in flight", model=MODEL)
    assert result.attempts == 1  # served under the old key
    assert net.nodes[0].public_key != old
    # New locks get the new key only.
    assert client.nodes.lock(MODEL, max_num_tokens=5).public_key == net.nodes[0].public_key
    # After the window, the old key is gone.
    lock = client.nodes.lock(MODEL, timeout=120)
    body = seal_request(PLAINTEXT, node_public_key=old, stack_small_id=lock.stack_small_id,
                        model_name=MODEL).request.to_json()
    clock.advance(29)
    assert send(net, "POST", CONF, body).status == 200  # still within the window
    lock = client.nodes.lock(MODEL, timeout=120)
    body = seal_request(PLAINTEXT, node_public_key=old, stack_small_id=lock.stack_small_id,
                        model_name=MODEL).request.to_json()
    clock.advance(2)
    assert error_of(send(net, "POST", CONF, body)) == (409, "STALE_NODE_KEY")
    client.close()


def test_without_grace_window_the_old_key_dies_at_once(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, grace_window_s=0)
    client = net.client()
    hook = InterceptTransport(client.transport, before=_rotate_before_first_send(net))
    client.transport = hook
    assert client.confidential_embeddings.create(input="x", model=MODEL).attempts == 2


def _announcement(net: Network, signer: SuiSigner | None) -> tuple[bytes, Headers]:
    node = net.nodes[0]
    node.rotate_key()
    body = node.evidence.to_json()
    h = Headers({"content-type": "application/json"})
    if signer is not None:
        h["x-signature"] = signer.sign(blake2b_256(body)).to_base64()
    return body, h


def _post_announcement(net: Network, body: bytes, h: Headers) -> Response:
    return send(net, "POST", "/v1/nodes/attestation", body, token=None, extra_headers=dict(h))


@pytest.mark.parametrize("who", ["stranger", "proxy", "other node", "missing", "garbage"])
def test_announcement_with_a_bad_signature_is_refused(make_net: Callable[..., Network], mode: str,
                                                      who: str) -> None:
    net = make_net(nodes=2, mode=mode)
    before = net.ledger.node(1)
    signer = {"stranger": SuiSigner.generate(), "proxy": net.proxy.signer,
              "other node": net.nodes[1].signer, "missing": None, "garbage": None}[who]
    body, h = _announcement(net, signer)
    if who == "garbage":
        h["x-signature"] = "AAAA"
    resp = _post_announcement(net, body, h)
    status, code = error_of(resp)
    assert status in (400, 401), (status, code)
    assert net.ledger.node(1) == before  # the old key is still the published one
    assert net.client().nodes.lock(MODEL).public_key != net.nodes[0].public_key


def test_announcement_signed_over_other_bytes_is_refused(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    before = net.ledger.node(1)
    body, h = _announcement(net, net.nodes[0].signer)
    # Same signature, but the body was re-serialised with a space: the signature covers bytes.
    tampered = body.replace(b'"device"', b' "device"', 1)
    assert error_of(_post_announcement(net, tampered, h))[0] == 401
    assert net.ledger.node(1) == before


def test_announcement_by_the_node_is_accepted(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    body, h = _announcement(net, net.nodes[0].signer)
    resp = _post_announcement(net, body, h)
    assert resp.status == 200
    assert orjson.loads(resp.body) == {"node_small_id": 1, "valid": True}
    assert net.client().nodes.lock(MODEL).public_key == net.nodes[0].public_key


def test_an_old_announcement_replayed_changes_nothing(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    node = net.nodes[0]
    old_body = node.evidence.to_json()
    old_sig = node.signer.sign(blake2b_256(old_body)).to_base64()
    net.rotate(0)
    current = net.ledger.node(1)
    resp = _post_announcement(net, old_body, Headers({"x-signature": old_sig}))
    assert resp.status == 200
    assert net.ledger.node(1) == current
    assert net.client().nodes.lock(MODEL).public_key == node.public_key


def test_announcement_for_an_unknown_node_is_404(make_net: Callable[..., Network]) -> None:
    from atoma_lab.crypto.attestation import SimulatedTEE
    from atoma_lab.crypto.keys import X25519KeyPair

    net = make_net(nodes=1)
    signer = SuiSigner.generate()
    evidence = SimulatedTEE().attest(node_small_id=99, key_rotation_counter=1, rotation_nonce=1,
                                     public_key=X25519KeyPair.generate().public_bytes,
                                     signer_address=signer.address, now=0.0)
    body = evidence.to_json()
    h = Headers({"x-signature": signer.sign(blake2b_256(body)).to_base64()})
    assert error_of(_post_announcement(net, body, h))[0] == 404
    assert [n.node_small_id for n in net.ledger.nodes()] == [1]


@pytest.mark.parametrize("body", [b"", b"{}", b"[]", b'{"evidence_type": "device"}', b"\xff"])
def test_malformed_announcement_is_4xx(make_net: Callable[..., Network], body: bytes) -> None:
    net = make_net(nodes=1)
    before = net.ledger.nodes()
    resp = _post_announcement(net, body, Headers({"x-signature": "AAAA"}))
    assert 400 <= error_of(resp)[0] < 500
    assert net.ledger.nodes() == before


def test_health_checks_pick_up_keys_and_node_state(make_net: Callable[..., Network]) -> None:
    """With a probe every 50 ms: an unannounced key reaches the proxy, a node that drops
    connections goes out of rotation and comes back when it answers again."""
    import time

    from atoma_lab.transport.inprocess import Fault

    net = make_net(nodes=2, health_interval_s=0.05)
    assert net.transport is not None

    def wait_for(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline, "the health checks never got there"
            time.sleep(0.02)

    net.rotate(0, publish=False)
    wait_for(lambda: net.ledger.node(1).public_key == net.nodes[0].public_key)  # type: ignore[union-attr]
    net.transport.inject(net.node_urls[1], Fault(drop=True))
    wait_for(lambda: not net.ledger.node(2).healthy)  # type: ignore[union-attr]
    assert {net.client().nodes.lock(MODEL).node_small_id for _ in range(3)} == {1}
    net.transport.inject(net.node_urls[1], None)
    wait_for(lambda: net.ledger.node(2).healthy)  # type: ignore[union-attr]
