"""Negative matrix: every bad request is a specific 4xx with Atoma's JSON error body, never a
500, and is charged nothing.

Each case takes a fresh lock, sends one crafted request, then lets the lock expire: the books
must then equal what they were before the lock. Failures the node detects must also give the
lock back at once (it was consumed, and released without charge).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from fakes import MODEL, FakeClock, error_of, full_state, network, send, settlements

from atoma_lab.client import AtomaLabClient
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.encoding import loads
from atoma_lab.lab.network import Network
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.protocol.atoma.messages import NodesCreateLockResponse
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.transport.base import Response

SECRET = "confidential input 7f3a"
PLAINTEXT = CreateEmbeddingRequest(input=[SECRET, "second"], model=MODEL).to_json()
CONF = "/v1/confidential/embeddings"
FIELDS = ["ciphertext", "stack_small_id", "nonce", "salt", "client_dh_public_key",
          "node_dh_public_key", "plaintext_body_hash", "model_name"]
B64_FIELDS = {"ciphertext": None, "nonce": 12, "salt": 16, "client_dh_public_key": 32,
              "node_dh_public_key": 32, "plaintext_body_hash": 32}
# X25519 points of small order (RFC 7748 section 6.1; libsodium's blocklist), canonical and not.
LOW_ORDER_POINTS = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@dataclass
class Env:
    net: Network
    clock: FakeClock
    client: AtomaLabClient

    def lock(self) -> NodesCreateLockResponse:
        return self.client.nodes.lock(MODEL)

    def sealed(self, lock: NodesCreateLockResponse, plaintext: bytes = PLAINTEXT, *,
               model_name: str = MODEL, node_key: bytes | None = None) -> dict[str, Any]:
        s = seal_request(plaintext, node_public_key=node_key or lock.public_key,
                         stack_small_id=lock.stack_small_id, model_name=model_name)
        return s.request.to_dict()

    def expire(self) -> None:
        self.clock.advance(3600)
        self.net.ledger.prune_expired(self.clock())


@pytest.fixture(scope="module", params=["inprocess",
                                        pytest.param("http", marks=pytest.mark.integration)])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    clock = FakeClock()
    net = network(nodes=1, mode=request.param, clock=clock)
    client = net.client()
    client.confidential_embeddings.create(input="warm up", model=MODEL)  # the stack exists
    yield Env(net, clock, client)
    client.close()
    net.close()


def expect_refused(env: Env, make: Callable[[NodesCreateLockResponse], Response],
                   status: int, code: str | None, *, consumed: bool) -> dict[str, Any]:
    """Lock, send the crafted request, check the answer and that nothing was charged."""
    net = env.net
    before, n_settled = full_state(net), len(settlements(net))
    lock = env.lock()
    resp = make(lock)
    got_status, got_code = error_of(resp)
    assert (got_status, got_code if code is not None else None) == (status, code), resp.body
    message = loads(resp.body)["error"]["message"]
    assert SECRET not in message
    # A lock the node's refusal consumed is released at once; otherwise it is still open.
    assert len(net.ledger.open_locks()) == (0 if consumed else 1)
    env.expire()
    assert full_state(net) == before
    new = settlements(net)[n_settled:]
    assert all(r["units_charged"] == 0 for r in new), new
    assert len(new) == (1 if consumed else 0)
    if consumed:
        assert new[0]["outcome"] == got_code
    return {"status": got_status, "code": got_code, "message": message}


def post(env: Env, body: dict[str, Any] | bytes, token: str | None = "default") -> Response:
    return send(env.net, "POST", CONF, body if isinstance(body, bytes) else orjson.dumps(body),
                token=token)


def post_changed(env: Env, field: str,
                 change: Callable[[Any], Any]) -> Callable[[NodesCreateLockResponse], Response]:
    """A request for :func:`expect_refused`: a well-sealed envelope whose ``field`` is replaced by
    ``change(its value)`` (``None`` where the envelope has no such field)."""
    def make(lk: NodesCreateLockResponse) -> Response:
        d = env.sealed(lk)
        d[field] = change(d.get(field))
        return post(env, d)
    return make


# ------------------------------------------------------------------------------------------------
# Authentication
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_bad_token_is_401(env: Env, token: str | None) -> None:
    expect_refused(env, lambda lk: post(env, env.sealed(lk), token=token), 401, "AUTH_ERROR",
                   consumed=False)


@pytest.mark.parametrize("scheme", ["Basic {}", "bearer {}", "Bearer", "Token {}", "{}"])
def test_wrong_auth_scheme_is_401(env: Env, scheme: str) -> None:
    def make(lk: NodesCreateLockResponse) -> Response:
        return send(env.net, "POST", CONF, orjson.dumps(env.sealed(lk)), token=None,
                    extra_headers={"authorization": scheme.format(env.net.api_key)})
    expect_refused(env, make, 401, "AUTH_ERROR", consumed=False)


@pytest.mark.parametrize("path,method", [("/v1/nodes/lock", "POST"), ("/v1/embeddings", "POST"),
                                         ("/v1/models", "GET")])
def test_every_user_route_needs_a_token(env: Env, path: str, method: str) -> None:
    before = full_state(env.net)
    body = {"model": MODEL, "input": "x"}
    for token in (None, "wrong-token"):
        assert error_of(send(env.net, method, path, body, token=token)) == (401, "AUTH_ERROR")
    assert full_state(env.net) == before


# ------------------------------------------------------------------------------------------------
# Malformed envelopes (refused by the proxy before the lock is touched)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b'{"ciphertext": ', b"\xff\xfe", b"", b"{'a': 1}",
                                 b'{"a": NaN}', b"[" * 200 + b"]" * 200])
def test_malformed_json_is_400(env: Env, raw: bytes) -> None:
    expect_refused(env, lambda lk: post(env, raw), 400, "INVALID_JSON", consumed=False)


@pytest.mark.parametrize("raw", [b"[]", b"1", b'"x"', b"null"])
def test_json_that_is_not_an_object_is_400(env: Env, raw: bytes) -> None:
    expect_refused(env, lambda lk: post(env, raw), 400, "INVALID_FIELD", consumed=False)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("how", ["absent", "null"])
def test_missing_field_is_400(env: Env, field: str, how: str) -> None:
    def make(lk: NodesCreateLockResponse) -> Response:
        d = env.sealed(lk)
        if how == "absent":
            del d[field]
        else:
            d[field] = None
        return post(env, d)
    expect_refused(env, make, 400, "MISSING_FIELD", consumed=False)


def _recode(value: str, how: str) -> str:
    if how == "unpadded":
        return value.rstrip("=") if value.endswith("=") else value[:-1]
    if how == "urlsafe":
        return "-" + value[1:]
    if how == "whitespace":
        return value[:4] + "\n" + value[4:]
    if how == "padding_only":
        return value + "===="
    raise AssertionError(how)


@pytest.mark.parametrize("field", sorted(B64_FIELDS))
@pytest.mark.parametrize("how", ["unpadded", "urlsafe", "whitespace", "padding_only"])
def test_non_standard_base64_is_400(env: Env, field: str, how: str) -> None:
    make = post_changed(env, field, lambda value: _recode(value, how))
    expect_refused(env, make, 400, "INVALID_BASE64", consumed=False)


@pytest.mark.parametrize("field,size", [("nonce", 11), ("nonce", 13), ("salt", 15), ("salt", 32),
                                        ("client_dh_public_key", 31), ("node_dh_public_key", 33),
                                        ("plaintext_body_hash", 16), ("plaintext_body_hash", 64),
                                        ("ciphertext", 15), ("ciphertext", 0)])
def test_wrong_sizes_are_400(env: Env, field: str, size: int) -> None:
    make = post_changed(env, field, lambda _: base64.b64encode(bytes(range(size))).decode())
    expect_refused(env, make, 400, "INVALID_LENGTH", consumed=False)


@pytest.mark.parametrize("field,value", [
    ("stack_small_id", "1"), ("stack_small_id", -1), ("stack_small_id", 1.5),
    ("stack_small_id", True), ("model_name", 7), ("stream", "yes"), ("num_compute_units", -1),
    ("num_compute_units", "8192"), ("ciphertext", 12), ("nonce", ["a"]),
])
def test_wrong_types_are_400(env: Env, field: str, value: object) -> None:
    make = post_changed(env, field, lambda _: value)
    expect_refused(env, make, 400, "INVALID_FIELD", consumed=False)


def test_too_large_body_is_413(env: Env) -> None:
    router = env.net.proxy.router
    limit = router.max_body_bytes
    router.max_body_bytes = 4096
    try:
        make = post_changed(env, "padding", lambda _: "x" * 5000)
        expect_refused(env, make, 413, "BODY_TOO_LARGE", consumed=False)
    finally:
        router.max_body_bytes = limit


# ------------------------------------------------------------------------------------------------
# Envelopes the node refuses (the lock was consumed; it must come back uncharged)
# ------------------------------------------------------------------------------------------------


def _flip(value: str, index: int = 0) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("field,index", [("ciphertext", 0), ("ciphertext", -1), ("nonce", 0),
                                         ("salt", 5), ("client_dh_public_key", 3)])
def test_tampered_envelope_is_400_decryption_failed(env: Env, field: str, index: int) -> None:
    make = post_changed(env, field, lambda value: _flip(value, index))
    expect_refused(env, make, 400, "DECRYPTION_FAILED", consumed=True)


def test_truncated_ciphertext_is_400_decryption_failed(env: Env) -> None:
    make = post_changed(env, "ciphertext",
                        lambda value: base64.b64encode(base64.b64decode(value)[:-1]).decode())
    expect_refused(env, make, 400, "DECRYPTION_FAILED", consumed=True)


def test_wrong_plaintext_body_hash_is_400(env: Env) -> None:
    other_hash = base64.b64encode(blake2b_256(b"something else")).decode()
    make = post_changed(env, "plaintext_body_hash", lambda _: other_hash)
    expect_refused(env, make, 400, "HASH_MISMATCH", consumed=True)


def test_model_name_differing_from_the_sealed_model_is_400(env: Env) -> None:
    def make(lk: NodesCreateLockResponse) -> Response:
        return post(env, env.sealed(lk, model_name="some/other-model"))
    expect_refused(env, make, 400, "MODEL_MISMATCH", consumed=True)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_client_key_is_400(env: Env, point: bytes) -> None:
    make = post_changed(env, "client_dh_public_key", lambda _: base64.b64encode(point).decode())
    expect_refused(env, make, 400, "INVALID_PUBLIC_KEY", consumed=True)


def test_key_that_is_not_the_nodes_is_409(env: Env) -> None:
    def make(lk: NodesCreateLockResponse) -> Response:
        return post(env, env.sealed(lk, node_key=bytes(range(1, 33))))
    expect_refused(env, make, 409, "STALE_NODE_KEY", consumed=True)


@pytest.mark.parametrize("plaintext,code,status", [
    (b"not json at all", "INVALID_JSON", 400),
    (b'{"model": "' + MODEL.encode() + b'"}', "MISSING_FIELD", 400),
    (b'{"input": [], "model": "' + MODEL.encode() + b'"}', "INVALID_FIELD", 400),
    (b'{"input": 5, "model": "' + MODEL.encode() + b'"}', "INVALID_FIELD", 400),
    (b'{"input": "x", "model": "' + MODEL.encode() + b'", "encoding_format": "hex"}',
     "INVALID_FIELD", 400),
])
def test_bad_sealed_request_is_4xx(env: Env, plaintext: bytes, code: str, status: int) -> None:
    def make(lk: NodesCreateLockResponse) -> Response:
        return post(env, env.sealed(lk, plaintext))
    expect_refused(env, make, status, code, consumed=True)


def test_sealed_model_the_node_does_not_serve_is_404(env: Env) -> None:
    other = CreateEmbeddingRequest(input="x", model="no/such-model").to_json()

    def make(lk: NodesCreateLockResponse) -> Response:
        return post(env, env.sealed(lk, other, model_name="no/such-model"))
    expect_refused(env, make, 404, "MODEL_NOT_FOUND", consumed=True)


# ------------------------------------------------------------------------------------------------
# The sweep: every field flipped, truncated, re-encoded or swapped
# ------------------------------------------------------------------------------------------------


def _mutations(d: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for field in [*FIELDS, "stream", "num_compute_units"]:
        yield f"{field}=delete", ("delete", field)
        for value in (None, 0, -1, 2**64 - 1, 1.0, "", "AAAA", [], {}, True, "é" * 8):
            yield f"{field}={value!r}"[:40], ("set", field, value)
        if field in B64_FIELDS:
            raw = base64.b64decode(d[field])
            yield f"{field}+byte", ("set", field, base64.b64encode(raw + b"\0").decode())
            yield f"{field}-byte", ("set", field, base64.b64encode(raw[:-1]).decode())
            yield f"{field}^last", ("set", field, _flip(d[field], -1))
    for a, b in [("nonce", "salt"), ("client_dh_public_key", "node_dh_public_key"),
                 ("ciphertext", "plaintext_body_hash")]:
        yield f"swap {a},{b}", ("swap", a, b)


def test_mutation_sweep_is_never_a_500_and_never_charged(env: Env) -> None:
    net = env.net
    lock = env.lock()
    template = env.sealed(lock)
    env.expire()
    problems = []
    seen_codes = set()
    for name, op in _mutations(template):
        before, n_settled = full_state(net), len(settlements(net))
        lock = env.lock()
        d = env.sealed(lock)
        if op[0] == "delete":
            d.pop(op[1], None)
        elif op[0] == "set":
            d[op[1]] = op[2]
        else:
            d[op[1]], d[op[2]] = d[op[2]], d[op[1]]
        resp = post(env, d)
        env.expire()
        if resp.ok:
            # Only harmless changes may pass: a boolean stream, or a bigger unit count.
            if op[1] not in ("stream", "num_compute_units"):
                problems.append(f"{name}: accepted")
            continue
        try:
            status, code = error_of(resp)
            seen_codes.add(code)
        except AssertionError as exc:
            problems.append(f"{name}: not a JSON error body ({exc})")
            continue
        if not 400 <= status < 500:
            problems.append(f"{name}: status {status} {code}")
        if full_state(net) != before:
            problems.append(f"{name}: books changed")
        if any(r["units_charged"] for r in settlements(net)[n_settled:]):
            problems.append(f"{name}: charged")
    assert problems == []
    assert {"MISSING_FIELD", "INVALID_BASE64", "INVALID_LENGTH", "INVALID_FIELD",
            "DECRYPTION_FAILED", "STALE_NODE_KEY", "STACK_NOT_FOUND"} <= seen_codes


def test_unknown_fields_are_ignored(env: Env) -> None:
    lock = env.lock()
    d = env.sealed(lock)
    d["x_unknown"] = {"nested": [1, 2]}
    resp = post(env, d)
    assert resp.status == 200


# ------------------------------------------------------------------------------------------------
# The plain route
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body,status,code", [
    (b"{", 400, "INVALID_JSON"),
    (b"[]", 400, "INVALID_FIELD"),
    (orjson.dumps({"model": MODEL}), 400, "MISSING_FIELD"),
    (orjson.dumps({"input": "x"}), 400, "MISSING_FIELD"),
    (orjson.dumps({"input": [], "model": MODEL}), 400, "INVALID_FIELD"),
    (orjson.dumps({"input": [1, "a"], "model": MODEL}), 400, "INVALID_FIELD"),
    (orjson.dumps({"input": "x", "model": MODEL, "dimensions": 0}), 400, "INVALID_FIELD"),
    (orjson.dumps({"input": "x", "model": "no/such-model"}), 404, "MODEL_NOT_FOUND"),
    (orjson.dumps({"input": ["x"] * 2049, "model": MODEL}), 400, "INVALID_FIELD"),
])
def test_plain_route_errors_are_4xx_and_free(env: Env, body: bytes, status: int, code: str) -> None:
    before = full_state(env.net)
    n_settled = len(settlements(env.net))
    resp = send(env.net, "POST", "/v1/embeddings", body)
    assert error_of(resp) == (status, code)
    env.expire()
    assert full_state(env.net) == before
    assert all(r["units_charged"] == 0 for r in settlements(env.net)[n_settled:])


def test_plain_input_larger_than_a_stack_is_400(make_net: Callable[..., Network]) -> None:
    net = make_net(nodes=1, stack_size=100)
    before = full_state(net)
    resp = send(net, "POST", "/v1/embeddings", {"input": "x" * 200, "model": MODEL})
    assert error_of(resp) == (400, "INVALID_FIELD")
    assert full_state(net) == before


# ------------------------------------------------------------------------------------------------
# Odd numbers where a service parses digits itself
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query,status", [("node_small_id=%C2%B2", 400), ("node_small_id=x", 400),
                                          ("node_small_id=", 400), ("", 400),
                                          ("node_small_id=18446744073709551615", 404),
                                          ("node_small_id=18446744073709551616", 400),
                                          ("node_small_id=99999999999999999999999", 400),
                                          ("node_small_id=" + "9" * 5000, 400),
                                          ("node_small_id=424242", 404)])
def test_attestation_lookup_with_odd_ids_is_4xx(env: Env, query: str, status: int) -> None:
    resp = send(env.net, "GET", "/v1/nodes/attestation?" + query, token=None)
    assert error_of(resp)[0] == status


@pytest.mark.parametrize("header,value,expected", [
    ("x-stack-small-id", "²", (400, "INVALID_FIELD")),
    ("x-stack-small-id", "-1", (400, "INVALID_FIELD")),
    ("x-stack-small-id", "18446744073709551615", (404, "STACK_NOT_FOUND")),
    ("x-stack-small-id", "99999999999999999999999", (400, "INVALID_FIELD")),
    ("x-stack-small-id", "9" * 5000, (400, "INVALID_FIELD")),
    ("x-num-compute-units", "²", None),
    ("x-num-compute-units", "9" * 5000, (400, "INVALID_FIELD")),
])
def test_node_plain_route_with_odd_headers(env: Env, header: str, value: str,
                                           expected: tuple[int, str] | None) -> None:
    """A request to the node, signed by the proxy as the node requires."""
    from atoma_lab.encoding import serde_compact
    from atoma_lab.transport.base import Headers, Request

    net = env.net
    stack = net.ledger.stacks()[0]
    body = {"input": "x", "model": MODEL}
    h = Headers({"content-type": "application/json",
                 "x-signature": net.proxy.signer.sign(blake2b_256(serde_compact(body))).to_base64(),
                 "x-stack-small-id": str(stack.stack_small_id)})
    h[header] = value
    # Straight into the service (httpx would refuse a non-ASCII header value).
    resp = net.run(net.nodes[0].handle(Request("POST", "/v1/embeddings", h, orjson.dumps(body))))
    if expected is None:
        assert resp.status == 200
    else:
        assert error_of(resp) == expected
