"""The hardened profile through the services: the same route takes both envelopes as a network
allows, each client chooses its own, and what the hardened profile adds (replay window, usage
and response bound to the request, pinned node signature) holds end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from fakes import (
    MODEL,
    error_of,
    expected_units,
    expected_vectors,
    money,
    send,
    settlements,
    with_body,
)

from atoma_lab.client import AtomaLabClient
from atoma_lab.errors import InvalidFieldError, PeerProtocolError, SignatureError
from atoma_lab.lab.network import Network
from atoma_lab.protocol import hardened
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.transport.base import Request, Response
from atoma_lab.transport.intercept import InterceptTransport

CONF = "/v1/confidential/embeddings"
TEXTS = ["hardened one", "hardened two words"]


def _hardened_body(net: Network, text: str = "sealed by hand") -> bytes:
    lock = net.client().nodes.lock(MODEL)
    plaintext = CreateEmbeddingRequest(input=text, model=MODEL).to_json()
    return hardened.seal_hardened_request(plaintext, node_public_key=lock.public_key, model_name=MODEL,
                                 stack_small_id=lock.stack_small_id,
                                 now=net.proxy.clock()).request.to_json()


def _refused_uncharged(net: Network, body: bytes, status: int, code: str) -> None:
    """``body`` sent to the confidential route is refused with ``status`` and ``code``, nothing
    is charged and no lock is left open."""
    before = money(net)
    assert error_of(send(net, "POST", CONF, body)) == (status, code)
    assert money(net) == before
    assert net.ledger.open_locks() == []


def _atoma_body(net: Network, text: str = "sealed by hand") -> bytes:
    lock = net.client().nodes.lock(MODEL)
    plaintext = CreateEmbeddingRequest(input=text, model=MODEL).to_json()
    return seal_request(plaintext, node_public_key=lock.public_key,
                        stack_small_id=lock.stack_small_id, model_name=MODEL).request.to_json()


@pytest.mark.parametrize("profile", ["hardened", "hpke"])
def test_both_profiles_give_the_same_answer(make_net: Callable[..., Network], mode: str,
                                            profile: str) -> None:
    net = make_net(nodes=1, mode=mode)
    atoma = net.client().confidential_embeddings.create(input=TEXTS, model=MODEL)
    client = net.client(profile=profile)
    assert client.verify_attestation  # the hardened clients check attestation by default
    got = client.confidential_embeddings.create(input=TEXTS, model=MODEL)
    np.testing.assert_array_equal(got.to_numpy(), expected_vectors(TEXTS))
    np.testing.assert_array_equal(got.to_numpy(), atoma.to_numpy())
    assert got.usage.total_tokens == atoma.usage.total_tokens == expected_units(TEXTS)
    assert got.raw["request"]["profile"] == (hardened.PROFILE if profile == "hardened"
                                             else hardened.PROFILE_HPKE)
    assert got.raw["response"]["profile"] == got.raw["request"]["profile"]
    assert "plaintext_body_hash" not in got.raw["request"]  # nothing about the input in clear
    assert [r["units_charged"] for r in settlements(net)] == [expected_units(TEXTS)] * 2


def test_a_hardened_only_network_refuses_atoma_requests(make_net: Callable[..., Network],
                                                        mode: str) -> None:
    net = make_net(nodes=1, mode=mode, profiles=[hardened.PROFILE])
    assert net.client(profile="hardened").confidential_embeddings.create(
        input="ok", model=MODEL).usage.total_tokens == expected_units("ok")
    before = money(net)
    assert error_of(send(net, "POST", CONF, _atoma_body(net))) == (400, "INVALID_FIELD")
    with pytest.raises(InvalidFieldError) as exc:
        net.client().confidential_embeddings.create(input="downgraded", model=MODEL)
    # The node's own words stay with the proxy (issue 16, item 8): the code and who refused.
    assert exc.value.code == "INVALID_FIELD" and "node 1 refused" in exc.value.message
    assert money(net) == before
    assert net.ledger.open_locks() == []


def test_a_network_limited_to_one_hardened_variant_refuses_the_other(
        make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, profiles=[hardened.PROFILE_HPKE])
    assert net.client(profile="hpke").confidential_embeddings.create(
        input="ok", model=MODEL).usage.total_tokens == expected_units("ok")
    before = money(net)
    with pytest.raises(InvalidFieldError):
        net.client(profile="hardened").confidential_embeddings.create(input="x", model=MODEL)
    assert money(net) == before
    assert net.ledger.open_locks() == []


def test_an_atoma_only_network_refuses_hardened_requests(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, profiles=["atoma"])
    body = _hardened_body(net)
    _refused_uncharged(net, body, 400, "INVALID_FIELD")


def test_a_hardened_replay_is_refused_and_not_charged(make_net: Callable[..., Network],
                                                      mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    body = _hardened_body(net)
    assert send(net, "POST", CONF, body).status == 200
    net.client().nodes.lock(MODEL)  # a lock of the attacker's own is open
    _refused_uncharged(net, body, 409, "REPLAYED_REQUEST")


def test_an_old_hardened_request_is_refused(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    lock = net.client().nodes.lock(MODEL)
    plaintext = CreateEmbeddingRequest(input="late", model=MODEL).to_json()
    body = hardened.seal_hardened_request(plaintext, node_public_key=lock.public_key, model_name=MODEL,
                                 stack_small_id=lock.stack_small_id,
                                 now=net.proxy.clock() - 3600).request.to_json()
    before = money(net)
    assert error_of(send(net, "POST", CONF, body)) == (409, "REPLAYED_REQUEST")
    assert money(net) == before


def test_without_replay_protection_atoma_serves_and_charges_a_replay(
        make_net: Callable[..., Network]) -> None:
    """As Atoma's node does: the same bytes twice are served and charged twice."""
    net = make_net(nodes=1, replay_protection=False)
    body = _atoma_body(net, "charged twice")
    assert send(net, "POST", CONF, body).status == 200
    net.client().nodes.lock(MODEL)
    assert send(net, "POST", CONF, body).status == 200
    assert [r["units_charged"] for r in settlements(net)] == [expected_units("charged twice")] * 2


def _tampering_client(net: Network, profile: str,
                      tamper: Callable[[dict[str, Any]], None]) -> AtomaLabClient:
    """A client whose proxy rewrites the confidential answer's JSON on its way back."""

    def after(request: Request, response: Response) -> Response | None:
        if request.path != CONF or response.status != 200:
            return None
        body = orjson.loads(response.body)
        tamper(body)
        return with_body(response, body)

    return AtomaLabClient(api_key=net.api_key,
                          transport=InterceptTransport(net.client_transport(), after=after),
                          profile=profile, attestation_policy=net.attestation_policy())


def _inflate_usage(body: dict[str, Any]) -> None:
    body["usage"]["prompt_tokens"] += 100
    body["usage"]["total_tokens"] += 100


def test_clear_usage_is_bound_in_the_hardened_profile(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    with pytest.raises(SignatureError):  # bound: the node's receipt no longer verifies
        _tampering_client(net, "hardened", _inflate_usage).confidential_embeddings.create(
            input="x", model=MODEL)
    with pytest.raises(PeerProtocolError):  # Atoma's profile: only our client's extra check
        _tampering_client(net, "atoma", _inflate_usage).confidential_embeddings.create(
            input="x", model=MODEL)


def test_a_response_to_another_request_is_refused(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    other = net.client(profile="hardened").confidential_embeddings.create(input="other",
                                                                         model=MODEL)
    stolen = other.raw["response"]

    def swap(body: dict[str, Any]) -> None:
        body.clear()
        body.update(stolen)

    with pytest.raises(PeerProtocolError, match="another request"):
        _tampering_client(net, "hardened", swap).confidential_embeddings.create(
            input="mine", model=MODEL)


def test_the_proxy_refuses_a_hardened_answer_it_cannot_verify(
        make_net: Callable[..., Network]) -> None:
    """A node answer whose signature does not cover it is a 502 and charges nothing."""
    from atoma_lab.transport.inprocess import Fault

    net = make_net(nodes=1)
    assert net.transport is not None
    client = net.client(profile="hardened")
    client.confidential_embeddings.create(input="warm", model=MODEL)

    def tamper(resp: Response) -> Response:
        body = orjson.loads(resp.body)
        body["usage"]["total_tokens"] = 1
        return with_body(resp, body)

    net.transport.inject(net.node_urls[0], Fault(tamper_response=tamper))
    body = _hardened_body(net)
    _refused_uncharged(net, body, 502, "BAD_PEER_RESPONSE")


def test_a_rotated_key_is_one_retry_in_the_hardened_profile(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    client = net.client(profile="hardened")
    client.confidential_embeddings.create(input="warm", model=MODEL)
    body = _hardened_body(net, "sealed to the old key")
    net.rotate(0)
    net.client().nodes.lock(MODEL)
    assert error_of(send(net, "POST", CONF, body)) == (409, "STALE_NODE_KEY")
    assert client.confidential_embeddings.create(input="x", model=MODEL).attempts == 1


def test_profile_options_are_checked() -> None:
    with pytest.raises(ValueError):
        AtomaLabClient("http://127.0.0.1:9", api_key="k", profile="tls")
    with pytest.raises(ValueError):  # the hardened profile verifies attestation: needs a policy
        AtomaLabClient("http://127.0.0.1:9", api_key="k", profile="hardened")
