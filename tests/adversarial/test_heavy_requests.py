"""Heavy requests (issue 16, items 1, 5, 7, 10 and 13): requests built to cost the services
time or memory, or to turn a parse into a 500. Each must be refused with its status and code
before the costly work, leave the books and the node keys as they were (the checks of
:meth:`Adversary.assert_refused`), and leave the network serving. Sizes are scaled down to what
shows each bound."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import orjson
import pytest
from fakes import MODEL
from rawhttp import connect, read_until_closed, status_and_code

from atoma_lab.errors import InputTooLongError, InvalidFieldError
from atoma_lab.inference.serving import MAX_CHARS_PER_TOKEN
from atoma_lab.protocol.openai import MAX_INPUT_CHARS, CreateEmbeddingRequest, check_input_chars
from atoma_lab.transport.base import Response

from .support import CONF, LOCK, LONG_MAX_TOKENS, LONG_MODEL, Adversary

PLAIN = "/v1/embeddings"
HUGE = "9" * 5000  # digits: int() of these is refused by Python (more than 4,300 digits)
NODE_CHAR_BOUND = MAX_CHARS_PER_TOKEN * LONG_MAX_TOKENS  # the long model's bound per input


def _sealed(a: Adversary, plaintext: bytes, model: str = MODEL,
            edit: Any = None) -> Response:
    d = a.seal(a.lock(model), plaintext, model_name=model)
    body = orjson.dumps(d)
    return a.post(CONF, body if edit is None else edit(body, d))


def _plaintext(inputs: Any, model: str = MODEL) -> bytes:
    return orjson.dumps({"input": inputs, "model": model})


# ------------------------------------------------------------------------------------------------
# Item 10: numbers too long to convert are 400, never 500
# ------------------------------------------------------------------------------------------------


def _huge_stack_id(body: bytes, d: dict[str, Any]) -> bytes:
    return body.replace(b'"stack_small_id":%d' % d["stack_small_id"],
                        b'"stack_small_id":' + HUGE.encode())


@pytest.mark.parametrize("make", [
    pytest.param(lambda a: _sealed(a, _plaintext(["x"]), edit=_huge_stack_id),
                 id="conf: 5,000-digit stack_small_id"),
    pytest.param(lambda a: a.post(LOCK, b'{"model":"%s","max_num_tokens":%s}'
                                  % (MODEL.encode(), HUGE.encode())),
                 id="lock: 5,000-digit max_num_tokens"),
    pytest.param(lambda a: a.post(f"/v1/nodes/attestation?node_small_id={HUGE}", b"",
                                  method="GET", who=None),
                 id="attestation: 5,000-digit node_small_id"),
    pytest.param(lambda a: a.post(f"/v1/stacks?stack_small_id={HUGE}", b"", method="GET",
                                  who=None), id="stacks: 5,000-digit stack_small_id"),
])
def test_a_number_too_long_to_convert_is_400(adversary: Adversary, make: Any) -> None:
    resp = adversary.assert_refused(make, 400, "INVALID_FIELD")
    assert HUGE[:40] not in resp.body.decode()


# ------------------------------------------------------------------------------------------------
# Item 7: text is bounded before anyone tokenises it
# ------------------------------------------------------------------------------------------------


def test_an_input_over_the_global_cap_is_refused_by_the_proxy(adversary: Adversary) -> None:
    big = "a" * (MAX_INPUT_CHARS + 1)
    resp = adversary.assert_refused(
        lambda a: a.post(PLAIN, {"input": ["ok", big], "model": MODEL}), 400, "INPUT_TOO_LONG")
    assert orjson.loads(resp.body)["error"]["message"].startswith("input[1]:")


def _count_tokenising(adversary: Adversary, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    engine = adversary.net.nodes[1].embedder.engine  # type: ignore[attr-defined]
    calls: list[int] = []
    tokenize = engine.tokenize

    def counted(inputs: Any, **kwargs: Any) -> Any:
        calls.append(len(inputs))
        return tokenize(inputs, **kwargs)

    monkeypatch.setattr(engine, "tokenize", counted)
    return calls


@pytest.mark.parametrize("route", ["confidential", "plain"])
def test_an_input_over_the_models_bound_is_refused_before_tokenising(
        adversary: Adversary, monkeypatch: pytest.MonkeyPatch, route: str) -> None:
    """The long model reads 16 tokens: 64 characters a token is its bound per input. Longer
    text (truncation on or off) is refused by the node before its tokeniser sees any of it."""
    calls = _count_tokenising(adversary, monkeypatch)
    long_text = "x" * (NODE_CHAR_BOUND + 1)  # one "word": a tokeniser would read it all
    inputs = ["fits", long_text]
    if route == "confidential":
        def make(a: Adversary) -> Response:
            return _sealed(a, _plaintext(inputs, LONG_MODEL), LONG_MODEL)
    else:
        def make(a: Adversary) -> Response:
            return a.post(PLAIN, {"input": inputs, "model": LONG_MODEL})
    resp = adversary.assert_refused(make, 400, "INPUT_TOO_LONG", "node")
    assert calls == []
    if route == "plain":  # the node names the input; the proxy passes the name on
        assert "(input[1])" in orjson.loads(resp.body)["error"]["message"]
    at_bound = ["x" * NODE_CHAR_BOUND]
    result = adversary.client.embeddings.create(input=at_bound, model=LONG_MODEL)
    assert result.usage.total_tokens == 3 and calls == [1]  # one word, truncation on
    adversary.expire()


def test_a_requests_total_text_is_bounded() -> None:
    check_input_chars(["a" * 10] * 10, max_input_chars=10, max_request_chars=100)
    with pytest.raises(InputTooLongError) as exc:
        check_input_chars(["a" * 10] * 11, max_input_chars=10, max_request_chars=100)
    assert exc.value.code == "INPUT_TOO_LONG" and exc.value.field == "input"
    with pytest.raises(InputTooLongError) as too_long:
        check_input_chars(["a", "a" * 11], max_input_chars=10, max_request_chars=100)
    assert too_long.value.field == "input[1]"
    check_input_chars([[1, 2, 3]] * 50, max_input_chars=1, max_request_chars=1)  # token ids


# ------------------------------------------------------------------------------------------------
# Item 13: what the client sends, and what comes back about it
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["confidential", "plain"])
def test_a_lone_surrogate_is_a_typed_error_naming_the_input(adversary: Adversary,
                                                            route: str) -> None:
    a = adversary
    a.expire()
    books = a.books()
    api = a.client.confidential_embeddings if route == "confidential" else a.client.embeddings
    with pytest.raises(InvalidFieldError) as exc:
        api.create(input=["fine", "bad \ud800 text"], model=MODEL)
    assert exc.value.field == "input[1]" and "input[1]" in exc.value.message
    with pytest.raises(InvalidFieldError) as exc:
        CreateEmbeddingRequest(input="x", model="m\udfff").to_json()
    assert exc.value.field == "model"
    with pytest.raises(InvalidFieldError) as exc:
        a.client.nodes.lock("m\udfff")
    assert exc.value.field == "model"
    assert a.books() == books  # refused before any lock was taken


def test_an_unbounded_model_name_is_cut_in_the_error(adversary: Adversary) -> None:
    name = "m" * 100_000
    resp = adversary.assert_refused(lambda a: a.post(LOCK, {"model": name}), 404,
                                    "MODEL_NOT_FOUND")
    message = orjson.loads(resp.body)["error"]["message"]
    assert len(message) < 300 and "100000 characters" in message


# ------------------------------------------------------------------------------------------------
# Items 1 and 5 against the proxy's own listener
# ------------------------------------------------------------------------------------------------


def _proxy_socket(a: Adversary) -> socket.socket:
    assert a.net.base_url is not None
    host, port = a.net.base_url.removeprefix("http://").rsplit(":", 1)
    return connect(int(port), host=host)


def test_a_header_flood_at_the_proxy_is_431(adversary: Adversary) -> None:
    if adversary.net.mode != "http":
        pytest.skip("headers are an HTTP listener's matter")

    def flood(a: Adversary) -> Response:
        with _proxy_socket(a) as sock:
            headers = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
            t0 = time.monotonic()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
            raw = read_until_closed(sock)
            assert time.monotonic() - t0 < 10
        head, _, body = raw.partition(b"\r\n\r\n")
        return Response(int(head.split(b" ", 2)[1]), body,
                        {"content-type": "application/json"})

    adversary.assert_refused(flood, 431, "HEADERS_TOO_LARGE")


@pytest.mark.parametrize("path", [CONF, PLAIN, LOCK])
def test_an_unauthenticated_body_at_the_proxy_is_refused_before_it_is_read(
        adversary: Adversary, path: str) -> None:
    if adversary.net.mode != "http":
        pytest.skip("the body's arrival is an HTTP listener's matter")

    def big_body(a: Adversary) -> Response:
        with _proxy_socket(a) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\n"
                         "Content-Type: application/json\r\nContent-Length: 60000000\r\n\r\n"
                         .encode() + b'{"input": "' + b"x" * 4096)
            first = sock.recv(65536)  # before the other 59.99 MB were sent
            assert status_and_code(first) == (401, "AUTH_ERROR")
            assert b"connection: close" in first.lower()  # closed, the body unread
        body = first.partition(b"\r\n\r\n")[2]
        return Response(401, body, {"content-type": "application/json"})

    adversary.assert_refused(big_body, 401, "AUTH_ERROR")
