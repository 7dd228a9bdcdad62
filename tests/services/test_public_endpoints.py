"""What the proxy answers without a user's token (issue 16, item 9): ``/v1/stacks`` only to the
node a stack is assigned to (signed look-ups, no enumeration), ``/metrics`` only to the metrics
token and with no per-user label, ``/openapi.json`` without the models (tested with the
document in ``tests/adversarial/test_openapi.py``)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from fakes import MODEL, error_of, send
from prometheus_client.parser import text_string_to_metric_families

from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.errors import ServiceUnavailableError
from atoma_lab.lab.network import PROXY_ADDRESS, Network
from atoma_lab.protocol.lookup import stack_lookup_digest
from atoma_lab.services.node import ProxyStackDirectory
from atoma_lab.transport.base import Response


def _lookup(net: Network, stack_small_id: int, node_small_id: int | None,
            signer: SuiSigner | None) -> Response:
    headers = {}
    if node_small_id is not None and signer is not None:
        headers = {"x-node-small-id": str(node_small_id),
                   "x-signature": signer.sign(stack_lookup_digest(node_small_id,
                                                                  stack_small_id)).to_base64()}
    return send(net, "GET", f"/v1/stacks?stack_small_id={stack_small_id}", token=None,
                extra_headers=headers)


def test_a_stack_is_told_only_to_its_node(make_net: Callable[..., Network], mode: str) -> None:
    net = make_net(nodes=2, mode=mode)
    lock = net.client().nodes.lock(MODEL)
    sid = lock.stack_small_id
    mine = next(n for n in net.nodes if n.node_small_id == lock.node_small_id)
    other = next(n for n in net.nodes if n is not mine)
    ok = _lookup(net, sid, mine.node_small_id, mine.signer)
    assert ok.status == 200
    assert orjson.loads(ok.body) == {"stack_small_id": sid, "owner_address": net.proxy.address,
                         "node_small_id": mine.node_small_id}
    # Anyone else: unsigned, another node, an impostor, an unknown node id.
    assert error_of(_lookup(net, sid, None, None)) == (401, "AUTH_ERROR")
    assert error_of(send(net, "GET", f"/v1/stacks?stack_small_id={sid}")) == (401, "AUTH_ERROR")
    assert error_of(_lookup(net, sid, other.node_small_id, other.signer)) == (
        404, "STACK_NOT_FOUND")
    assert error_of(_lookup(net, sid, mine.node_small_id, SuiSigner.generate())) == (
        401, "INVALID_SIGNATURE")
    assert error_of(_lookup(net, sid, 4242, mine.signer)) == (401, "AUTH_ERROR")
    # A signature for one stack does not open another.
    forged = {"x-node-small-id": str(mine.node_small_id),
              "x-signature": mine.signer.sign(stack_lookup_digest(
                  mine.node_small_id, sid + 1)).to_base64()}
    resp = send(net, "GET", f"/v1/stacks?stack_small_id={sid}", token=None, extra_headers=forged)
    assert error_of(resp) == (401, "INVALID_SIGNATURE")


def test_counting_up_enumerates_nothing(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    client = net.client()
    for _ in range(3):
        client.confidential_embeddings.create(input="x", model=MODEL)
    answers = {_lookup(net, i, None, None).status for i in range(1, 20)}
    assert answers == {401}


def test_a_node_elsewhere_signs_its_lookups(make_net: Callable[..., Network]) -> None:
    """:class:`ProxyStackDirectory` (what a standalone node uses) over the in-process wire."""
    net = make_net(nodes=1)
    lock = net.client().nodes.lock(MODEL)
    node = net.nodes[0]
    assert net.transport is not None
    signed = ProxyStackDirectory(net.transport, PROXY_ADDRESS, node.node_small_id,
                                 signer=node.signer)
    assert net.run(signed(lock.stack_small_id)) == net.proxy.address
    unsigned = ProxyStackDirectory(net.transport, PROXY_ADDRESS, node.node_small_id)
    with pytest.raises(ServiceUnavailableError):
        net.run(unsigned(lock.stack_small_id))


def test_metrics_need_the_metrics_token_and_carry_no_user(make_net: Callable[..., Network],
                                                          mode: str) -> None:
    net = make_net(nodes=1, mode=mode)
    client = net.client()
    client.confidential_embeddings.create(input="counted", model=MODEL)
    assert error_of(send(net, "GET", "/metrics", token=None)) == (401, "AUTH_ERROR")
    assert error_of(send(net, "GET", "/metrics")) == (401, "AUTH_ERROR")  # a user's token
    assert error_of(send(net, "GET", "/metrics", token="wrong")) == (401, "AUTH_ERROR")
    resp = send(net, "GET", "/metrics", token=net.metrics_token)
    assert resp.status == 200
    labels = {name for family in text_string_to_metric_families(resp.body.decode())
              for sample in family.samples for name in sample.labels}
    assert labels <= {"model", "code", "privacy_level", "le"}
    assert net.api_key.encode() not in resp.body


def test_a_proxy_without_a_metrics_token_answers_nobody(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1)
    net.proxy.metrics_token = None
    assert error_of(send(net, "GET", "/metrics", token=net.metrics_token)) == (401, "AUTH_ERROR")
