"""What the hardened profile adds to the plain route and to node errors (issue 16, items 11 and
12), against a curious proxy->node link and a curious proxy:

* a captured plain proxy->node request replays to a hardened node not at all (409
  ``REPLAYED_REQUEST``), and its ``X-Stack-Small-Id`` and ``X-Num-Compute-Units`` cannot be
  changed (401); Atoma's form still serves where a node takes Atoma's profile, as Atoma's node
  does;
* a node's error to a hardened request reaches the proxy as 400 ``SEALED_ERROR`` and a sealed
  part only the client opens (it raises the node's own error); Atoma's profile keeps its errors
  in clear. Nothing is charged either way."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable

import orjson
import pytest
from fakes import MODEL, error_of, send, settlements

from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.encoding import serde_compact
from atoma_lab.errors import ComputeUnitsExceededError, SealedNodeError
from atoma_lab.lab.network import Network
from atoma_lab.protocol import hardened
from atoma_lab.protocol.hardened.plain import plain_request_digest
from atoma_lab.transport.base import Headers, Request, Response
from atoma_lab.transport.intercept import InterceptTransport

PLAIN = "/v1/embeddings"
CONF = "/v1/confidential/embeddings"
BINDING = ("x-request-id", "x-request-timestamp", "x-request-signature")
HARDENED_ONLY = (hardened.PROFILE,)


def _spy(net: Network) -> InterceptTransport:
    """Record what the proxy sends its nodes (and what they answer) from now on."""
    spy = InterceptTransport(net.proxy.transport)
    net.proxy.transport = spy
    return spy


def _to_node(net: Network, spy: InterceptTransport, path: str) -> tuple[Request, Response]:
    return next((r, a) for r, a in reversed(spy.seen) if r.path == path
                and r.address != net.proxy_address)


def _resend(net: Network, spy: InterceptTransport, request: Request, **headers: str | None) -> Response:
    """``request`` sent again to its node, past the proxy, with ``headers`` changed (``None``:
    removed)."""
    changed = Headers(request.headers)
    for name, value in headers.items():
        key = name.replace("_", "-")
        if value is None:
            changed.pop(key, None)
        else:
            changed[key] = value
    return net.run(spy.inner.handle(dataclasses.replace(request, headers=changed)))


def _served(net: Network) -> int:
    return int(net.nodes[0].metrics.completed._value.get())


# ------------------------------------------------------------------------------------------------
# Item 11: the plain route
# ------------------------------------------------------------------------------------------------


def test_a_captured_plain_request_does_not_replay_to_a_hardened_node(
        make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=1, mode=mode, profiles=HARDENED_ONLY)
    spy = _spy(net)
    n_settled = len(settlements(net))
    assert send(net, "POST", PLAIN, {"input": ["a b"], "model": MODEL}).status == 200
    captured, _ = _to_node(net, spy, PLAIN)
    assert all(name in captured.headers for name in BINDING)
    served = _served(net)
    assert error_of(_resend(net, spy, captured)) == (409, "REPLAYED_REQUEST")
    stack = int(captured.headers["x-stack-small-id"])
    units = int(captured.headers["x-num-compute-units"])
    for change in ({"x_num_compute_units": str(units * 1000)},
                   {"x_stack_small_id": str(stack + 1)},
                   {"x_request_id": "00" * 16}):
        assert error_of(_resend(net, spy, captured, **change)) == (401, "INVALID_SIGNATURE")
    stripped: dict[str, str | None] = {name.replace("-", "_"): None for name in BINDING}
    assert error_of(_resend(net, spy, captured, **stripped)) == (400, "MISSING_HEADER")
    assert _served(net) == served  # none of them was embedded
    assert [r["units_charged"] > 0 for r in settlements(net)[n_settled:]] == [True]  # the one


def test_an_old_plain_request_is_refused_even_when_new_to_the_node(
        make_net: Callable[..., Network]) -> None:
    """A binding signed by the proxy's key with a timestamp outside the node's replay window
    (its id never seen) is refused: the node need not remember ids for ever."""
    net = make_net(nodes=1, profiles=HARDENED_ONLY)
    spy = _spy(net)
    assert send(net, "POST", PLAIN, {"input": ["a b"], "model": MODEL}).status == 200
    captured, _ = _to_node(net, spy, PLAIN)
    old = int(net.proxy.clock()) - 3600
    request_id = bytes(range(16))
    digest = plain_request_digest(blake2b_256(serde_compact(orjson.loads(captured.body))),
                                  stack_small_id=int(captured.headers["x-stack-small-id"]),
                                  num_compute_units=int(captured.headers["x-num-compute-units"]),
                                  request_id=request_id, timestamp=old)
    resp = _resend(net, spy, captured, x_request_id=request_id.hex(),
                   x_request_timestamp=str(old),
                   x_request_signature=net.proxy.signer.sign(digest).to_base64())
    assert error_of(resp) == (409, "REPLAYED_REQUEST")


@pytest.mark.parametrize("profiles,replay_served", [
    (("atoma", *hardened.PROFILES), False), (("atoma",), True)],
    ids=["both profiles", "Atoma's profile only"])
def test_atomas_plain_route_stays_available(make_net: Callable[..., Network],
                                            profiles: tuple[str, ...],
                                            replay_served: bool) -> None:
    """A node that takes Atoma's profile serves Atoma's form (no binding), replays included,
    as Atoma's node does; one that also takes the hardened profiles refuses a replay of the
    bound form, which cannot be turned into Atoma's (the binding's signature is another)."""
    net = make_net(nodes=1, profiles=profiles)
    spy = _spy(net)
    assert send(net, "POST", PLAIN, {"input": ["a b"], "model": MODEL}).status == 200
    captured, _ = _to_node(net, spy, PLAIN)
    replay = _resend(net, spy, captured)
    assert replay.status == 200 if replay_served else error_of(replay) == (409, "REPLAYED_REQUEST")
    stripped: dict[str, str | None] = {name.replace("-", "_"): None for name in BINDING}
    for _ in range(2):
        assert _resend(net, spy, captured, **stripped).status == 200  # Atoma's form


# ------------------------------------------------------------------------------------------------
# Item 12: node errors
# ------------------------------------------------------------------------------------------------

TOO_MANY = ["three words here", "and three more"]  # 10 tokens with the special ones


def test_a_hardened_error_is_sealed_to_the_client(make_net: Callable[..., Network],
                                                  mode: str) -> None:
    """Over its units: the client raises the node's 413 ``COMPUTE_UNITS_EXCEEDED`` with the
    node's words; the proxy saw 400 ``SEALED_ERROR`` and nothing of them; nothing charged."""
    net = make_net(nodes=1, mode=mode, profiles=HARDENED_ONLY)
    spy = _spy(net)
    to_proxy = InterceptTransport(net.client_transport())
    client = net.client(profile="hardened", transport=to_proxy)
    n_settled = len(settlements(net))
    with pytest.raises(ComputeUnitsExceededError) as exc:
        client.confidential_embeddings.create(input=TOO_MANY, model=MODEL, max_num_tokens=3)
    assert exc.value.status == 413 and "10" in exc.value.message
    _, node_answer = _to_node(net, spy, CONF)
    _, proxy_answer = next((r, a) for r, a in reversed(to_proxy.seen) if r.path == CONF)
    for answer in (node_answer, proxy_answer):
        body = orjson.loads(answer.body)
        assert (answer.status, body["error"]["code"]) == (400, "SEALED_ERROR")
        assert b"10" not in orjson.dumps(body["error"]) and b"compute units" not in answer.body
        assert "sealed_error" in body
    new = settlements(net)[n_settled:]
    assert [(r["units_charged"], r["outcome"]) for r in new] == [(0, "SEALED_ERROR")]
    assert client.confidential_embeddings.create(input=TOO_MANY, model=MODEL).usage.total_tokens == 10
    client.close()


def test_a_sealed_error_names_the_field_only_to_the_client(make_net: Callable[..., Network]) -> None:
    """A sealed body whose second input is not a string: the node's "input[1]" reaches the
    client sealed; the proxy's answer names no field."""
    net = make_net(nodes=1, profiles=HARDENED_ONLY)
    lock = net.client().nodes.lock(MODEL)
    plaintext = orjson.dumps({"input": ["fine", 5], "model": MODEL})
    sealed = hardened.seal_hardened_request(plaintext, node_public_key=lock.public_key, model_name=MODEL,
                                   stack_small_id=lock.stack_small_id, now=net.proxy.clock())
    resp = send(net, "POST", CONF, sealed.request.to_json())
    assert error_of_sealed(resp) == (400, "SEALED_ERROR")
    assert b"input[1]" not in resp.body
    opened = hardened.open_hardened_response(
        hardened.parse_response(orjson.loads(resp.body)["sealed_error"]), sealed.context,
        expected_signer_address=net.nodes[0].sui_address)
    detail = orjson.loads(opened.plaintext)
    assert detail["status"] == 400 and detail["error"]["message"].startswith("input[1]")


def error_of_sealed(resp: Response) -> tuple[int, str]:
    body = orjson.loads(resp.body)
    assert set(body) == {"error", "sealed_error"}
    return resp.status, body["error"]["code"]


def test_atomas_profile_keeps_clear_errors(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    with pytest.raises(ComputeUnitsExceededError) as exc:
        net.client().confidential_embeddings.create(input=TOO_MANY, model=MODEL, max_num_tokens=3)
    assert exc.value.status == 413


@pytest.mark.parametrize("forge", ["another request's", "with usage", "not a response"])
def test_the_proxy_passes_on_only_a_sealed_error_that_verifies(
        make_net: Callable[..., Network], forge: str) -> None:
    """A node whose sealed part does not answer this request, carries usage, or is no
    response at all: the proxy drops it, and the client gets the proxy's error alone."""
    net = make_net(nodes=1, profiles=HARDENED_ONLY)
    inner = net.proxy.transport

    def after(request: Request, response: Response) -> Response | None:
        if request.path != CONF or response.ok:
            return None
        body = orjson.loads(response.body)
        sealed = body["sealed_error"]
        if forge == "another request's":
            sealed["request_hash"] = base64.b64encode(bytes(32)).decode()
        elif forge == "with usage":
            sealed["usage"] = {"prompt_tokens": 1, "total_tokens": 1}
        else:
            body["sealed_error"] = {"anything": "at all"}
        return Response(response.status, orjson.dumps(body), response.headers)

    net.proxy.transport = InterceptTransport(inner, after=after)
    client = net.client(profile="hardened")
    with pytest.raises(SealedNodeError) as exc:
        client.confidential_embeddings.create(input=TOO_MANY, model=MODEL, max_num_tokens=3)
    assert (exc.value.status, exc.value.code) == (400, "SEALED_ERROR")
    client.close()
