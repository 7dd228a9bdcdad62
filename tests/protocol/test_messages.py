"""The negative matrix of wire parsing, and the shapes Atoma's peers write.

Binary fields are strict standard base64 with padding (atoma-protocol.md, conventions), of a fixed
decoded size where Atoma fixes one (section 1.4, step 4; section 2.3). Each bad input must raise
the exact error class, name the field in ``exc.field``, and never echo the value.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from atoma_lab.errors import (
    AtomaLabError,
    InvalidEncodingError,
    InvalidFieldError,
    InvalidJSONError,
    InvalidLengthError,
    MissingFieldError,
    PeerProtocolError,
)
from atoma_lab.protocol import (
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    CreateEmbeddingRequest,
    CreateEmbeddingResponse,
    NodesCreateLockRequest,
    NodesCreateLockResponse,
    Usage,
)
from atoma_lab.protocol.wire import wire_names

CANARY = "zzcanary9q7zz"  # an offending value that must never appear in a message


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _filler(size: int) -> bytes:
    """``size`` bytes whose base64 is full of ``+`` and ``/`` (so URL-safe re-encoding differs)."""
    return (b"\xfb\xef\xbe\xff\xff\xff" * (size // 6 + 1))[:size]


def valid_request() -> dict[str, Any]:
    return {
        "ciphertext": _b64(_filler(40)),
        "stack_small_id": 7,
        "nonce": _b64(_filler(12)),
        "salt": _b64(_filler(16)),
        "client_dh_public_key": _b64(_filler(32)),
        "node_dh_public_key": _b64(_filler(32)),
        "plaintext_body_hash": _b64(_filler(32)),
        "stream": False,
        "model_name": "m",
        "num_compute_units": 8192,
    }


def valid_response() -> dict[str, Any]:
    return {
        "nonce": _b64(_filler(12)),
        "ciphertext": _b64(_filler(40)),
        "response_hash": _b64(_filler(32)),
        "signature": _b64(b"\x00" + _filler(96)),
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }


def valid_lock_response() -> dict[str, Any]:
    return {"public_key": _b64(_filler(32)), "node_small_id": 3, "stack_entry_digest": None,
            "stack_small_id": 42}


Model = Any
MODELS: dict[str, tuple[Model, Callable[[], dict[str, Any]]]] = {
    "request": (ConfidentialComputeRequest, valid_request),
    "response": (ConfidentialComputeResponse, valid_response),
    "lock_response": (NodesCreateLockResponse, valid_lock_response),
}

# (model, field, decoded size or None for "at least the 16-byte tag", required)
BINARY_FIELDS = [
    ("request", "ciphertext", None, True),
    ("request", "nonce", 12, True),
    ("request", "salt", 16, True),
    ("request", "client_dh_public_key", 32, True),
    ("request", "node_dh_public_key", 32, True),
    ("request", "plaintext_body_hash", 32, True),
    ("response", "nonce", 12, True),
    ("response", "ciphertext", None, True),
    ("response", "response_hash", 32, False),
    ("lock_response", "public_key", 32, True),
]


def _parse(model: str, body: dict[str, Any]) -> Any:
    cls, _ = MODELS[model]
    return cls.from_json(json.dumps(body))


def _expect(model: str, body: dict[str, Any], error: type[AtomaLabError], field: str,
            offending: object = None) -> AtomaLabError:
    with pytest.raises(AtomaLabError) as info:
        _parse(model, body)
    exc = info.value
    assert type(exc) is error, f"{type(exc).__name__} instead of {error.__name__}: {exc}"
    assert exc.field == field
    assert exc.status == 400
    _assert_not_echoed(exc, offending)
    return exc


def _assert_not_echoed(exc: BaseException, offending: object) -> None:
    needles = [CANARY]
    if isinstance(offending, str) and len(offending) >= 6:
        needles.append(offending.strip())
    elif isinstance(offending, int) and not isinstance(offending, bool) and abs(offending) > 10**6:
        needles.append(str(offending))
    for text in (str(exc), repr(exc), exc.to_dict()["error"]["message"]):  # type: ignore[attr-defined]
        for needle in needles:
            assert needle not in text, f"message echoes the value: {text!r}"


def _binary_cases() -> list[Any]:
    cases = []
    for model, field, size, required in BINARY_FIELDS:
        exact = size if size is not None else 40
        good = _b64(_filler(exact))
        short = _b64(_filler(size - 1 if size else 15))
        variants: list[tuple[str, object, type[AtomaLabError]]] = [
            ("truncated", short, InvalidLengthError),
            ("empty", "", InvalidLengthError),
            ("non_base64", "*" * len(good), InvalidEncodingError),
            ("non_base64_canary", CANARY + "!!!", InvalidEncodingError),
            ("url_safe", good.translate(str.maketrans("+/", "-_")), InvalidEncodingError),
            ("leading_space", " " + good, InvalidEncodingError),
            ("trailing_newline", good + "\n", InvalidEncodingError),
            ("inner_newline", good[:8] + "\n" + good[8:], InvalidEncodingError),
            ("four_spaces", good[:8] + "    " + good[8:], InvalidEncodingError),
            ("crlf_pairs", good[:4] + "\r\n\r\n" + good[4:], InvalidEncodingError),
            ("non_ascii", "é" + good[1:], InvalidEncodingError),
            ("padding_in_middle", "AA==" + good, InvalidEncodingError),
            ("int", 987654321, InvalidFieldError),
            ("list", [CANARY], InvalidFieldError),
            ("object", {CANARY: 1}, InvalidFieldError),
            ("bool", True, InvalidFieldError),
        ]
        if size is not None:
            variants.append(("extra_byte", _b64(_filler(size + 1)), InvalidLengthError))
        if "=" in good:
            variants.append(("unpadded", good.rstrip("="), InvalidEncodingError))
            # Same length, but the unused bits of the last symbol are set: not canonical.
            last = good.rstrip("=")[-1]
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            bumped = alphabet[alphabet.index(last) ^ 1]
            pad = len(good) - len(good.rstrip("="))
            variants.append(
                ("trailing_bits", good[: -pad - 1] + bumped + "=" * pad, InvalidEncodingError)
            )
        if required:
            variants.append(("null", None, MissingFieldError))
        for name, value, error in variants:
            cases.append(pytest.param(model, field, value, error, id=f"{model}.{field}-{name}"))
    return cases


@pytest.mark.parametrize(("model", "field", "value", "error"), _binary_cases())
def test_binary_field_negative_matrix(
    model: str, field: str, value: object, error: type[AtomaLabError]
) -> None:
    body = MODELS[model][1]()
    body[field] = value
    _expect(model, body, error, field, offending=value)


@pytest.mark.parametrize(
    ("model", "field"), [(m, f) for m, f, _, required in BINARY_FIELDS if required]
)
def test_missing_required_binary_field(model: str, field: str) -> None:
    body = MODELS[model][1]()
    del body[field]
    _expect(model, body, MissingFieldError, field)


def test_valid_bodies_parse_and_write_back() -> None:
    for model, (cls, factory) in MODELS.items():
        body = factory()
        parsed = cls.from_json(json.dumps(body))
        assert json.loads(parsed.to_json()) == body, model
    assert _parse("request", valid_request()).ciphertext == _filler(40)


def test_ciphertext_may_be_longer_than_the_tag_but_not_shorter() -> None:
    for model in ("request", "response"):
        for size in (16, 17, 1000):
            body = MODELS[model][1]()
            body["ciphertext"] = _b64(bytes(size))
            assert len(_parse(model, body).ciphertext) == size


def test_optional_response_hash_may_be_null_or_absent() -> None:
    body = valid_response()
    body["response_hash"] = None
    assert _parse("response", body).response_hash is None
    del body["response_hash"]
    assert _parse("response", body).response_hash is None
    assert "response_hash" not in json.loads(_parse("response", body).to_json())


# ------------------------------------------------------------------------------------------------
# Integers and other scalar fields
# ------------------------------------------------------------------------------------------------

BAD_INTEGERS = [
    pytest.param(-1, id="negative"),
    pytest.param(-987654321987, id="large-negative"),
    pytest.param(1.0, id="integral-float"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(2**64, id="2^64"),  # JSON parsers read it as a float
    pytest.param(10**30, id="huge"),
    pytest.param("7", id="string"),
    pytest.param([7], id="list"),
    pytest.param({"v": 7}, id="object"),
]
INT_FIELDS = [
    ("request", "stack_small_id", True),
    ("request", "num_compute_units", False),
    ("lock_response", "node_small_id", True),
    ("lock_response", "stack_small_id", True),
]


@pytest.mark.parametrize("value", BAD_INTEGERS)
@pytest.mark.parametrize(("model", "field", "required"), INT_FIELDS)
def test_bad_integers(model: str, field: str, required: bool, value: object) -> None:
    body = MODELS[model][1]()
    body[field] = value
    _expect(model, body, InvalidFieldError, field, offending=value)


@pytest.mark.parametrize(("model", "field", "required"), INT_FIELDS)
def test_integer_bounds_and_absence(model: str, field: str, required: bool) -> None:
    body = MODELS[model][1]()
    for ok in (0, 1, 2**53 + 1, 2**64 - 1):
        body[field] = ok
        assert getattr(_parse(model, body), field) == ok
    for absent in ("null", "missing"):
        body = MODELS[model][1]()
        if absent == "null":
            body[field] = None
        else:
            del body[field]
        if required:
            _expect(model, body, MissingFieldError, field)
        else:
            assert getattr(_parse(model, body), field) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("usage.prompt_tokens", -1),
        ("usage.prompt_tokens", 1.5),
        ("usage.prompt_tokens", "3"),
        ("usage.total_tokens", True),
        ("usage.total_tokens", 2**64),
        ("usage.completion_tokens", -5),
    ],
)
def test_bad_usage_counts(field: str, value: object) -> None:
    body = valid_response()
    body["usage"][field.split(".")[1]] = value
    _expect("response", body, InvalidFieldError, field, offending=value)


@pytest.mark.parametrize("field", ["usage.prompt_tokens", "usage.total_tokens"])
def test_missing_usage_counts(field: str) -> None:
    body = valid_response()
    del body["usage"][field.split(".")[1]]
    _expect("response", body, MissingFieldError, field)


def test_usage_with_completion_tokens_round_trips() -> None:
    body = valid_response()
    body["usage"] = {"prompt_tokens": 1, "total_tokens": 3, "completion_tokens": 2}
    assert _parse("response", body).usage == Usage(1, 3, 2)
    body["usage"] = [1, 2]
    _expect("response", body, InvalidFieldError, "usage")


@pytest.mark.parametrize(
    ("model", "field", "value", "error"),
    [
        ("request", "model_name", 5, InvalidFieldError),
        ("request", "model_name", [CANARY], InvalidFieldError),
        ("request", "model_name", None, MissingFieldError),
        ("request", "stream", "true", InvalidFieldError),
        ("request", "stream", 1, InvalidFieldError),
        ("request", "stream", CANARY, InvalidFieldError),
        ("response", "signature", 5, InvalidFieldError),
        ("response", "signature", [CANARY], InvalidFieldError),
        ("lock_response", "stack_entry_digest", 5, InvalidFieldError),
    ],
)
def test_bad_scalar_fields(model: str, field: str, value: object,
                           error: type[AtomaLabError]) -> None:
    body = MODELS[model][1]()
    body[field] = value
    _expect(model, body, error, field, offending=value)


def test_missing_model_name() -> None:
    body = valid_request()
    del body["model_name"]
    _expect("request", body, MissingFieldError, "model_name")


def test_optional_request_fields_may_be_null_or_absent() -> None:
    body = valid_request()
    body["stream"] = None
    body["num_compute_units"] = None
    parsed = _parse("request", body)
    assert parsed.stream is None and parsed.num_compute_units is None
    out = json.loads(parsed.to_json())
    assert "stream" not in out and "num_compute_units" not in out


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[1, 2]", InvalidFieldError),
        (b'"text"', InvalidFieldError),
        (b"42", InvalidFieldError),
        (b"null", InvalidFieldError),
        (b"{", InvalidJSONError),
        (b"", InvalidJSONError),
        (b'{"a": NaN}', InvalidJSONError),
        (b'{"a": "\xff\xfe"}', InvalidJSONError),
        (b"[" * 100 + b"]" * 100, InvalidJSONError),
    ],
)
def test_not_an_object(model: str, body: bytes, error: type[AtomaLabError]) -> None:
    cls, _ = MODELS[model]
    with pytest.raises(AtomaLabError) as info:
        cls.from_json(body)
    assert type(info.value) is error
    assert info.value.status == 400


@pytest.mark.parametrize("model", sorted(MODELS))
def test_unknown_fields_are_ignored(model: str) -> None:
    cls, factory = MODELS[model]
    body = factory()
    plain = cls.from_json(json.dumps(body))
    body.update({"max_completion_tokens": 5, "extra": {"nested": [1, 2]}, "x-unknown": None})
    parsed = cls.from_json(json.dumps(body))
    assert parsed == plain
    assert "extra" not in json.loads(parsed.to_json())


# The body Atoma's Python SDK 0.1.3 really sends (captured from its httpx request): sorted keys,
# ``num_compute_units: null`` and ``stream: false``.
SDK_WIRE_REQUEST = (
    b'{"ciphertext":"6QZthIyL8wEMN1uAVXrsw8wDgLTJmpTchIrsp0Zh7OZesYw53mbgz6xICghABfVzshdf3g==",'
    b'"client_dh_public_key":"ZIeBi8lZ1V9be6A3TM9yledexncTRBKKS7JKBhcNO04=","model_name":"m",'
    b'"node_dh_public_key":"wLiuGEbjnYt11CvC/Barx7S3gOHn2cB66s/Wc0t7kBU=",'
    b'"nonce":"rIQiJaheZ6/Az3hS","num_compute_units":null,'
    b'"plaintext_body_hash":"cX/CTdwXTfZlSZkmyzgw5xpMd4GOFU1EpEemgTnbj+8=",'
    b'"salt":"RPixrJc1SuiVXITeA7DG4g==","stack_small_id":42,"stream":false}'
)


def test_python_sdk_wire_request_parses() -> None:
    request = ConfidentialComputeRequest.from_json(SDK_WIRE_REQUEST)
    assert request.stack_small_id == 42
    assert request.num_compute_units is None
    assert request.stream is False
    assert request.model_name == "m"
    assert len(request.ciphertext) == 52  # {"input":["héllo","b"],"model":"m"} + tag
    # Written back in the Rust struct's order, nulls left out.
    assert list(json.loads(request.to_json())) == [
        "ciphertext", "stack_small_id", "nonce", "salt", "client_dh_public_key",
        "node_dh_public_key", "plaintext_body_hash", "stream", "model_name",
    ]


def test_lock_response_wire_form() -> None:
    key = _filler(32)
    response = NodesCreateLockResponse(public_key=key, node_small_id=3, stack_small_id=42)
    assert response.to_json() == (
        b'{"public_key":"' + _b64(key).encode() + b'","node_small_id":3,'
        b'"stack_entry_digest":null,"stack_small_id":42}'
    )
    with_digest = valid_lock_response()
    with_digest["stack_entry_digest"] = "8VxhxPBiAyxKTTZ4CwVLHDoxhbHSDy3wB6UxGYBjSUvB"
    assert _parse("lock_response", with_digest).stack_entry_digest == with_digest[
        "stack_entry_digest"]


def test_lock_request_defaults_and_bounds() -> None:
    request = NodesCreateLockRequest.from_json(b'{"model":"m"}')
    assert request.effective_max_num_tokens == 8192
    assert request.effective_timeout_s == 5
    assert request.to_json() == b'{"model":"m"}'
    for body, field in [
        (b"{}", "model"),
        (b'{"model":""}', "model"),
        (b'{"model":5}', "model"),
        (b'{"model":"m","max_num_tokens":0}', "max_num_tokens"),
        (b'{"model":"m","max_num_tokens":-1}', "max_num_tokens"),
        (b'{"model":"m","timeout":1.5}', "timeout"),
        (b'{"model":"m","timeout":true}', "timeout"),
    ]:
        with pytest.raises(InvalidFieldError) as info:
            NodesCreateLockRequest.from_json(body)
        assert info.value.field == field, body


# ------------------------------------------------------------------------------------------------
# CreateEmbeddingRequest (the plaintext)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "hello",
        "héllo wörld 世界 🙂",
        ["a", "b", "c"],
        [1, 2, 3],
        [0, 2**32 - 1],
        [[1, 2], [3]],
        ["x"] * 2048,
        [[1]] * 2048,
        [7] * 2049,  # one input of 2049 tokens: the 2048 limit counts inputs, not tokens
    ],
    ids=["str", "unicode", "strs", "tokens", "token-bounds", "token-lists", "2048-strs",
         "2048-token-lists", "2049-tokens-one-input"],
)
def test_embedding_input_variants(value: object) -> None:
    body = {"input": value, "model": "m"}
    parsed = CreateEmbeddingRequest.from_json(json.dumps(body, ensure_ascii=False))
    assert parsed.input == value
    assert json.loads(parsed.to_json()) == body
    expected_inputs = [value] if isinstance(value, str) or isinstance(value[0], int) else value
    assert parsed.inputs() == expected_inputs
    assert parsed.is_tokens == (not isinstance(expected_inputs[0], str))


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (["x"] * 2049, "input"),
        ([[1]] * 2049, "input"),
        ([], "input"),
        ([[]], "input[0]"),
        ([[1], []], "input[1]"),
        (["a", 1], "input[1]"),
        (["a", None], "input[1]"),
        (["a", ["b"]], "input[1]"),
        ([1, "a"], "input[1]"),
        ([1, [2]], "input[1]"),
        ([1, True], "input[1]"),
        ([1, 2.5], "input[1]"),
        ([[1], 2], "input[1]"),
        ([[1], "a"], "input[1]"),
        ([[1, "a"]], "input[0][1]"),
        ([[1, -1]], "input[0][1]"),
        ([["a"]], "input[0][0]"),
        ([True], "input[0]"),
        ([1.5], "input[0]"),
        ([None], "input[0]"),
        ([{"a": 1}], "input[0]"),
        ([-1], "input[0]"),
        ([2**32], "input[0]"),
        (None, "input"),
        (5, "input"),
        ({"text": CANARY}, "input"),
        (True, "input"),
    ],
)
def test_bad_embedding_inputs(value: object, field: str) -> None:
    body = json.dumps({"input": value, "model": "m"})
    with pytest.raises(InvalidFieldError) as info:
        CreateEmbeddingRequest.from_json(body)
    assert type(info.value) is InvalidFieldError
    assert info.value.field == field
    _assert_not_echoed(info.value, value)


def test_mixed_input_message_does_not_echo_the_value() -> None:
    with pytest.raises(InvalidFieldError) as info:
        CreateEmbeddingRequest.from_dict({"input": [1, CANARY], "model": "m"})
    _assert_not_echoed(info.value, CANARY)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("encoding_format", "FLOAT", InvalidFieldError),
        ("encoding_format", "", InvalidFieldError),
        ("encoding_format", "int8", InvalidFieldError),
        ("encoding_format", CANARY, InvalidFieldError),
        ("encoding_format", 1, InvalidFieldError),
        ("encoding_format", ["float"], InvalidFieldError),
        ("dimensions", 0, InvalidFieldError),
        ("dimensions", -1, InvalidFieldError),
        ("dimensions", -987654321987, InvalidFieldError),
        ("dimensions", True, InvalidFieldError),
        ("dimensions", False, InvalidFieldError),
        ("dimensions", 1.5, InvalidFieldError),
        ("dimensions", 384.0, InvalidFieldError),
        ("dimensions", "384", InvalidFieldError),
        ("dimensions", 2**32, InvalidFieldError),
        ("model", "", InvalidFieldError),
        ("model", 5, InvalidFieldError),
        ("model", [CANARY], InvalidFieldError),
        ("user", 5, InvalidFieldError),
        ("user", {CANARY: 1}, InvalidFieldError),
    ],
)
def test_bad_embedding_request_fields(field: str, value: object,
                                      error: type[AtomaLabError]) -> None:
    body = {"input": "x", "model": "m", field: value}
    with pytest.raises(AtomaLabError) as info:
        CreateEmbeddingRequest.from_json(json.dumps(body))
    assert type(info.value) is error
    assert info.value.field == field
    _assert_not_echoed(info.value, value)


@pytest.mark.parametrize("missing", ["input", "model"])
def test_missing_embedding_request_fields(missing: str) -> None:
    body = {"input": "x", "model": "m"}
    del body[missing]
    with pytest.raises(MissingFieldError) as info:
        CreateEmbeddingRequest.from_json(json.dumps(body))
    assert info.value.field == missing


def test_good_optional_embedding_fields() -> None:
    for fmt in ("float", "base64", None):
        assert CreateEmbeddingRequest("x", "m", encoding_format=fmt).encoding_format == fmt
    for dims in (1, 384, 2**32 - 1, None):
        assert CreateEmbeddingRequest("x", "m", dimensions=dims).dimensions == dims


def test_embedding_request_ignores_unknown_fields() -> None:
    body = {"input": "x", "model": "m", "max_completion_tokens": 4096, "truncate": True,
            "extra": {"a": [1]}}
    parsed = CreateEmbeddingRequest.from_json(json.dumps(body))
    assert parsed.to_json() == b'{"input":"x","model":"m"}'


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, b'{"input":"x","model":"m"}'),
        ({"user": "u"}, b'{"input":"x","model":"m","user":"u"}'),
        ({"encoding_format": "float"}, b'{"input":"x","model":"m","encoding_format":"float"}'),
        ({"user": "u", "dimensions": 3, "encoding_format": "base64"},
         b'{"input":"x","model":"m","dimensions":3,"encoding_format":"base64","user":"u"}'),
    ],
)
def test_embedding_request_key_order_matches_the_python_sdk(
    kwargs: dict[str, Any], expected: bytes
) -> None:
    """The SDK's pydantic model declares input, model, dimensions, encoding_format, user
    (atoma-protocol.md section 2.5); ``tests/sdk`` checks the same against the SDK itself."""
    assert CreateEmbeddingRequest("x", "m", **kwargs).to_json() == expected


def test_embedding_request_json_is_compact_raw_utf8() -> None:
    text = 'héllo 世界 🙂 "q" back\\slash /path\ttab\n\x01\x1f\u2028'
    out = CreateEmbeddingRequest(text, "m").to_json()
    assert out == (
        '{"input":"héllo 世界 🙂 \\"q\\" back\\\\slash /path\\ttab\\n\\u0001\\u001f\u2028",'
        '"model":"m"}'
    ).encode("utf-8")
    assert CreateEmbeddingRequest.from_json(out).input == text


# ------------------------------------------------------------------------------------------------
# CreateEmbeddingResponse
# ------------------------------------------------------------------------------------------------


def _vectors() -> np.ndarray:
    rng = np.random.default_rng(20250826)
    vectors = rng.standard_normal((4, 384)).astype(np.float32)
    vectors[0, :8] = [0.0, -0.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1e-8, 12345.678]
    return vectors


def _response_body(vectors: np.ndarray, fmt: str, order: list[int] | None = None) -> bytes:
    order = list(range(len(vectors))) if order is None else order
    data = []
    for i in order:
        vec = vectors[i]
        embedding: object = (_b64(vec.astype("<f4").tobytes()) if fmt == "base64"
                             else [float(x) for x in vec])
        data.append({"object": "embedding", "embedding": embedding, "index": i})
    return json.dumps({"object": "list", "data": data, "model": "m",
                       "usage": {"prompt_tokens": 9, "total_tokens": 9}}).encode()


def test_float_and_base64_responses_give_the_same_vectors() -> None:
    vectors = _vectors()
    as_float = CreateEmbeddingResponse.from_json(_response_body(vectors, "float")).to_numpy()
    as_b64 = CreateEmbeddingResponse.from_json(_response_body(vectors, "base64")).to_numpy()
    assert as_float.dtype == as_b64.dtype == np.float32
    assert as_float.shape == as_b64.shape == vectors.shape
    # Bit for bit, so -0.0 and subnormals count.
    assert np.array_equal(as_float.view(np.uint32), vectors.view(np.uint32))
    assert np.array_equal(as_b64.view(np.uint32), vectors.view(np.uint32))


def test_response_vectors_are_ordered_by_index() -> None:
    vectors = _vectors()
    parsed = CreateEmbeddingResponse.from_json(_response_body(vectors, "base64", [2, 0, 3, 1]))
    assert [e.index for e in parsed.data] == [2, 0, 3, 1]
    assert np.array_equal(parsed.to_numpy(), vectors)
    assert parsed.usage.total_tokens == 9
    assert parsed.model == "m"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b.update(data={"x": 1}), id="data-not-list"),
        pytest.param(lambda b: b.pop("data"), id="data-missing"),
        pytest.param(lambda b: b["data"].append(CANARY), id="item-not-object"),
        pytest.param(lambda b: b["data"][0].pop("index"), id="index-missing"),
        pytest.param(lambda b: b["data"][0].update(index=-1), id="index-negative"),
        pytest.param(lambda b: b["data"][0].update(index=True), id="index-bool"),
        pytest.param(lambda b: b["data"][0].update(embedding=_b64(bytes(6))), id="b64-not-f32"),
        pytest.param(lambda b: b["data"][0].update(embedding=CANARY + "!!"), id="b64-invalid"),
        pytest.param(lambda b: b["data"][0].update(embedding=[0.5, CANARY]), id="float-str"),
        pytest.param(lambda b: b["data"][0].update(embedding=[0.5, True]), id="float-bool"),
        pytest.param(lambda b: b["data"][0].update(embedding=[0.5, None]), id="float-null"),
        pytest.param(lambda b: b["data"][0].update(embedding={"v": 1}), id="embedding-object"),
        pytest.param(lambda b: b.pop("model"), id="model-missing"),
        pytest.param(lambda b: b.update(model=[CANARY]), id="model-not-str"),
        pytest.param(lambda b: b.pop("usage"), id="usage-missing"),
        pytest.param(lambda b: b["usage"].pop("total_tokens"), id="usage-total-missing"),
        pytest.param(lambda b: b["usage"].update(prompt_tokens=-3), id="usage-negative"),
    ],
)
def test_malformed_embedding_response_is_the_peers_fault(mutate: Callable[[dict], None]) -> None:
    body = json.loads(_response_body(_vectors()[:1, :4], "float"))
    mutate(body)
    with pytest.raises(PeerProtocolError) as info:
        CreateEmbeddingResponse.from_json(json.dumps(body))
    assert info.value.status == 502
    _assert_not_echoed(info.value, CANARY)


def test_trusted_constructors_equal_the_checked_ones() -> None:
    """``trusted`` takes every field in wire order, as the checked constructor would set them."""
    request = ConfidentialComputeRequest(
        ciphertext=bytes(range(20)), stack_small_id=3, nonce=b"n" * 12, salt=b"s" * 16,
        client_dh_public_key=b"c" * 32, node_dh_public_key=b"k" * 32,
        plaintext_body_hash=b"h" * 32, model_name="m", stream=True, num_compute_units=77)
    values = [getattr(request, name) for name in wire_names(request)]
    assert ConfidentialComputeRequest.trusted(*values) == request
    response = ConfidentialComputeResponse(
        nonce=b"n" * 12, ciphertext=bytes(range(20)), response_hash=b"r" * 32, signature="sig",
        usage=Usage(prompt_tokens=2, total_tokens=2))
    values = [getattr(response, name) for name in wire_names(response)]
    built = ConfidentialComputeResponse.trusted(*values)
    assert built == response and built.to_json() == response.to_json()
    with pytest.raises(AttributeError):  # still frozen
        built.nonce = b"x" * 12  # type: ignore[misc]
