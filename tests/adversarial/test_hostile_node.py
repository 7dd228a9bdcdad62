"""A hostile node (issue 16, item 8): whatever a node answers, only the proxy's words and the
error table's statuses and codes reach the client, metric labels stay in a fixed set, and the
request's lock is released with nothing charged. The node's answers are forged on the way back
to the proxy, in-process and over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from fakes import MODEL
from prometheus_client.parser import text_string_to_metric_families

from atoma_lab.errors import error_codes
from atoma_lab.services.metrics import OTHER_CODE, code_label
from atoma_lab.transport.base import Headers, Request, Response
from atoma_lab.transport.intercept import InterceptTransport

from .support import CONF, PLAINTEXT, Adversary

PHISH = "Your API key expired. Re-enter it at http://evil.example/login"


@contextmanager
def node_answers(a: Adversary, status: int, body: bytes) -> Iterator[None]:
    """Every node answer to a POST becomes ``status`` with ``body`` until the block ends."""
    proxy = a.net.proxy
    inner = proxy.transport

    def forged(request: Request, response: Response) -> Response | None:
        # Only what nodes answer: over HTTP, ``net.send`` reaches the proxy on this transport too.
        if request.method != "POST" or request.address == a.net.proxy_address:
            return None
        return Response(status, body, Headers({"content-type": "application/json"}))

    proxy.transport = InterceptTransport(inner, after=forged)
    try:
        yield
    finally:
        proxy.transport = inner


def _error(code: str, message: str = PHISH) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def _confidential(a: Adversary) -> Response:
    return a.post(CONF, orjson.dumps(a.seal(a.lock(), PLAINTEXT)))


def _plain(a: Adversary) -> Response:
    return a.post("/v1/embeddings", {"input": ["a b"], "model": MODEL})


def _failure_labels(a: Adversary) -> set[str]:
    resp = a.post("/metrics", b"", method="GET", who=a.net.metrics_token)
    assert resp.status == 200
    return {s.labels["code"] for family in text_string_to_metric_families(resp.body.decode())
            for s in family.samples if family.name == "atoma_total_failed_requests"}


CASES = [
    # (node's status, node's body) -> what the client gets
    pytest.param(401, _error("AUTH_ERROR"), (502, "BAD_PEER_RESPONSE"), id="forged 401 AUTH_ERROR"),
    pytest.param(401, _error("PLEASE_LOG_IN_AT_EVIL"), (502, "BAD_PEER_RESPONSE"),
                 id="401 with an invented code"),
    pytest.param(402, _error("BALANCE_ERROR"), (502, "BAD_PEER_RESPONSE"),
                 id="a code only the proxy sends"),
    pytest.param(400, _error("MODEL_NOT_FOUND"), (502, "BAD_PEER_RESPONSE"),
                 id="a known code with the wrong status"),
    pytest.param(418, b"I am a teapot, visit http://evil.example", (502, "BAD_PEER_RESPONSE"),
                 id="no JSON"),
    pytest.param(302, _error("INVALID_FIELD"), (502, "BAD_PEER_RESPONSE"), id="a redirect"),
    pytest.param(400, _error("INVALID_FIELD", "input[0]: " + PHISH), (400, "INVALID_FIELD"),
                 id="a known refusal keeps its code, not its words"),
    pytest.param(413, _error("COMPUTE_UNITS_EXCEEDED", "http://evil.example: " + PHISH),
                 (413, "COMPUTE_UNITS_EXCEEDED"), id="a field-shaped lure is dropped"),
    pytest.param(500, _error("INTERNAL_ERROR"), (502, "NODE_ERROR"), id="a 5xx"),
    pytest.param(503, _error("MY_OWN_CODE"), (502, "NODE_ERROR"), id="a 5xx with an invented code"),
]


@pytest.mark.parametrize("route", ["confidential", "plain"])
@pytest.mark.parametrize("status,body,expected", CASES)
def test_a_nodes_words_never_reach_the_client(adversary: Adversary, route: str, status: int,
                                              body: bytes, expected: tuple[int, str]) -> None:
    a = adversary
    make = _confidential if route == "confidential" else _plain

    def forged(a: Adversary) -> Response:
        with node_answers(a, status, body):
            return make(a)

    resp = a.assert_refused(forged, *expected, stage="node")
    message = orjson.loads(resp.body)["error"]["message"]
    assert "evil" not in message and "API key" not in message and "teapot" not in message
    assert message.startswith("node ")
    assert _failure_labels(a) <= error_codes() | {OTHER_CODE}


def test_a_passed_on_refusal_names_its_field_and_node(adversary: Adversary) -> None:
    a = adversary
    with node_answers(a, 400, _error("INVALID_FIELD", "input[3]: " + PHISH)):
        resp = _plain(a)
    a.expire()
    message = orjson.loads(resp.body)["error"]["message"]
    assert message.startswith("node ") and "(input[3])" in message and "evil" not in message


@pytest.mark.parametrize("code,label", [("STALE_NODE_KEY", "STALE_NODE_KEY"),
                                        ("PLEASE_LOG_IN_AT_EVIL", OTHER_CODE),
                                        ("x" * 10_000, OTHER_CODE)])
def test_metric_labels_come_from_a_fixed_set(code: str, label: str) -> None:
    assert code_label(code) == label


def test_an_invented_code_leaves_no_label(adversary: Adversary) -> None:
    a = adversary

    def forged(a: Adversary) -> Any:
        with node_answers(a, 409, _error("BRAND_NEW_CODE_" + "Z" * 50)):
            return _confidential(a)

    a.assert_refused(forged, 502, "BAD_PEER_RESPONSE", stage="node")
    assert not any("BRAND_NEW" in label for label in _failure_labels(a))
