"""atoma_lab.encoding: strict base64, strict JSON parsing and serde-compact output.

serde-compact rules: atoma-protocol.md section 2.6 (serde_json 1.0.87 with preserve_order).
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoma_lab.encoding import (
    MAX_JSON_DEPTH,
    b64decode,
    b64encode,
    loads,
    parse_uint,
    require_int,
    require_str,
    serde_compact,
    serde_compact_slow,
)
from atoma_lab.errors import (
    AtomaLabError,
    InvalidEncodingError,
    InvalidFieldError,
    InvalidJSONError,
    InvalidLengthError,
)

# ----------------------------------------------------------------------------------------------
# b64decode: the strictness matrix
# ----------------------------------------------------------------------------------------------

E = TypeVar("E", bound=AtomaLabError)

VALID_B64 = [
    ("", b""),
    ("AA==", b"\x00"),
    ("QQ==", b"A"),
    ("QUI=", b"AB"),
    ("QUJD", b"ABC"),
    ("QUJDQUJD", b"ABCABC"),
    ("+/8=", b"\xfb\xff"),
    ("////", b"\xff\xff\xff"),
]

INVALID_B64 = {
    # unpadded
    "unpadded-1": "QQ",
    "unpadded-2": "QUI",
    "unpadded-key": base64.b64encode(bytes(range(32))).decode().rstrip("="),
    # URL-safe alphabet
    "urlsafe-minus-underscore": "-_8=",
    "urlsafe-minus": "AB-D",
    "urlsafe-underscore": "AB_D",
    # whitespace and newlines, with lengths that are and are not multiples of 4
    "trailing-newline": "QUJD\n",
    "trailing-crlf": "QUJD\r\n",
    "inner-space": "QU J",
    "leading-tab": "\tQUJ",
    "newline-in-quad": "QUJ\n",
    "mime-line-break": "QUJDQUJD\nQUJD",
    "leading-space": " QUJD",
    # non-canonical trailing bits
    "trailing-bits-QR": "QR==",
    "trailing-bits-QUJ": "QUJ=",
    "trailing-bits-AB": "AB==",
    # padding in the wrong place or too much of it
    "pad-only": "====",
    "pad-3": "Q===",
    "pad-leading": "=QQQ",
    "pad-inner": "QQ=A",
    "pad-then-data": "QQ==QUJD",
    "pad-group-after-data": "QUJD====",
    "pad-group-after-key": base64.b64encode(bytes(range(33))).decode() + "====",
    # characters outside the alphabet
    "asterisk": "QU*D",
    "nul": "QUJ\x00",
    "non-ascii": "QUJé",
    "fullwidth": "ＱＵＪＤ",
    "dot": "QUJ.",
}


@pytest.mark.parametrize(("text", "data"), VALID_B64, ids=[t or "empty" for t, _ in VALID_B64])
def test_b64decode_valid(text, data):
    assert b64decode(text, field="f") == data
    assert b64decode(text, field="f", size=len(data)) == data
    assert b64encode(data) == text


def _b64decode_error(error: type[E], value: object, field: str, **options: Any) -> E:
    """The error ``b64decode`` raises for ``value``: exactly of class ``error``, naming ``field``."""
    with pytest.raises(error) as info:
        b64decode(value, field=field, **options)
    err = info.value
    assert type(err) is error
    assert err.field == field
    return err


@pytest.mark.parametrize("text", list(INVALID_B64.values()), ids=list(INVALID_B64))
def test_b64decode_rejects_non_standard_base64(text):
    err = _b64decode_error(InvalidEncodingError, text, "client_dh_public_key")
    assert err.code == "INVALID_BASE64" and err.status == 400
    assert "client_dh_public_key" in str(err)
    if len(text.strip()) >= 3:
        assert text not in str(err) and text.strip() not in str(err)


@pytest.mark.parametrize(("size", "actual"), [(32, 31), (32, 33), (32, 0), (12, 16), (16, 12)])
def test_b64decode_wrong_size(size, actual):
    text = base64.b64encode(bytes(range(actual))).decode()
    err = _b64decode_error(InvalidLengthError, text, "node_dh_public_key", size=size)
    assert err.code == "INVALID_LENGTH" and err.status == 400
    assert str(size) in str(err) and str(actual) in str(err)
    if text:
        assert text not in str(err)


@pytest.mark.parametrize(
    "value",
    [b"QUJD", bytearray(b"QUJD"), None, 1234, 12.5, ["QUJD"], {"v": "QUJD"}, True],
    ids=lambda v: type(v).__name__,
)
def test_b64decode_non_string(value):
    err = _b64decode_error(InvalidFieldError, value, "nonce")
    assert "QUJD" not in str(err)


def test_b64decode_error_never_repeats_a_secret_value():
    key = bytes(range(100, 132))
    good = base64.b64encode(key).decode()
    assert "+" in good or "/" in good
    for bad in (good.rstrip("="), good.replace("/", "_").replace("+", "-"), good + "\n",
                good[:-2] + "!=", good + "===="):
        with pytest.raises(InvalidEncodingError) as info:
            b64decode(bad, field="ciphertext")
        message = str(info.value) + repr(info.value) + str(info.value.to_dict())
        assert good[:16] not in message and key.hex()[:16] not in message


def test_b64decode_errors_are_chained_not_bare():
    with pytest.raises(InvalidEncodingError) as info:
        b64decode("QU*D", field="f")
    assert info.value.__cause__ is not None  # raise ... from binascii.Error


@given(st.binary(max_size=200))
@settings(deadline=None)
def test_b64_roundtrip(data):
    text = b64encode(data)
    assert text == base64.b64encode(data).decode()
    assert b64decode(text, field="f", size=len(data)) == data


@given(st.text(alphabet="ABQRab01+/-_= \n", max_size=16))
@settings(max_examples=500, deadline=None)
def test_b64decode_accepts_only_the_canonical_encoding(text):
    """Strict means unique: whatever decodes re-encodes to exactly the same text."""
    try:
        data = b64decode(text, field="f")
    except InvalidEncodingError:
        return
    assert b64encode(data) == text


# ----------------------------------------------------------------------------------------------
# loads
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'"\xff"', id="invalid-utf8"),
        pytest.param(b'{"a":"\xc3"}', id="truncated-utf8"),
        pytest.param(b'{"a":"\xed\xa0\x80"}', id="utf8-surrogate"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"[NaN]", id="nan-in-list"),
        pytest.param(b'{"x":Infinity}', id="infinity"),
        pytest.param(b"-Infinity", id="minus-infinity"),
        pytest.param(b"1e400", id="overflow-to-infinity"),
        pytest.param(b'{"a":1}x', id="trailing-garbage"),
        pytest.param(b"{} {}", id="two-documents"),
        pytest.param(b"1 2", id="two-numbers"),
        pytest.param(b"", id="empty"),
        pytest.param(b"{'a': 1}", id="single-quotes"),
        pytest.param(b'{"a":1,}', id="trailing-comma"),
    ],
)
def test_loads_rejects_invalid_json(body):
    with pytest.raises(InvalidJSONError) as info:
        loads(body)
    assert type(info.value) is InvalidJSONError
    assert info.value.code == "INVALID_JSON" and info.value.status == 400


def test_loads_error_does_not_quote_the_body():
    body = b'{"input":"confidential text here","model":' + b"NaN}"
    with pytest.raises(InvalidJSONError) as info:
        loads(body, what="request body")
    assert "confidential" not in str(info.value)
    assert "request body" in str(info.value)


def _nested_lists(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _nested_dicts(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _nested_mixed(depth: int) -> bytes:
    opens = "".join("[" if i % 2 else '{"k":' for i in range(depth))
    closes = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return (opens + "0" + closes).encode()


@pytest.mark.parametrize("nest", [_nested_lists, _nested_dicts, _nested_mixed])
def test_loads_depth_limit(nest):
    assert loads(nest(MAX_JSON_DEPTH)) is not None
    with pytest.raises(InvalidJSONError):
        loads(nest(MAX_JSON_DEPTH + 1))
    with pytest.raises(InvalidJSONError):
        loads(nest(5000))  # far past orjson's own limit: still our error, not RecursionError


def test_loads_depth_counts_the_deepest_branch():
    wide = b"[" + b",".join([_nested_lists(3)] * 50) + b"," + _nested_lists(MAX_JSON_DEPTH) + b"]"
    with pytest.raises(InvalidJSONError):
        loads(wide)


def test_loads_valid_keeps_key_order_and_types():
    value = loads(b'{"b":1,"a":[1,2.5,"x",null,true],"c":{"z":0,"y":-0.0}}\n')
    assert list(value) == ["b", "a", "c"]
    assert list(value["c"]) == ["z", "y"]
    assert value["a"] == [1, 2.5, "x", None, True]
    assert isinstance(value["b"], int) and math.copysign(1.0, value["c"]["y"]) < 0
    assert loads('{"s":"é"}') == {"s": "é"}  # str input is fine too


# ----------------------------------------------------------------------------------------------
# serde_compact: the section 2.6 examples, exactly
# ----------------------------------------------------------------------------------------------

FLOAT_EXAMPLES = [
    # from atoma-protocol.md section 2.6
    (1.0, "1.0"),
    (2500.0, "2500.0"),
    (1e15, "1000000000000000.0"),
    (12345.678, "12345.678"),
    (1e-5, "0.00001"),
    (0.0023064255, "0.0023064255"),
    (1e-6, "1e-6"),
    (1e16, "1e16"),
    (1.2345678901234568e17, "1.2345678901234568e17"),
    (-0.0, "-0.0"),
    (-0.009327292, "-0.009327292"),
    (1e-8, "1e-8"),
    # the same rules at their edges
    (0.0, "0.0"),
    (0.1, "0.1"),
    (100.0, "100.0"),
    (9999999999999998.0, "9999999999999998.0"),
    (1.5e16, "1.5e16"),
    (0.000123, "0.000123"),
    (1.23e-5, "0.0000123"),
    (1.2e-6, "1.2e-6"),
    (-1e-7, "-1e-7"),
    (1e17, "1e17"),
    (1.23e22, "1.23e22"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e308"),
    (-2.5e-300, "-2.5e-300"),
]


@pytest.mark.parametrize(("value", "text"), FLOAT_EXAMPLES, ids=[t for _, t in FLOAT_EXAMPLES])
def test_serde_float_examples(value, text):
    assert serde_compact(value) == text.encode()
    assert serde_compact_slow(value) == text.encode()
    assert serde_compact([value]) == f"[{text}]".encode()
    assert serde_compact({"v": value}) == f'{{"v":{text}}}'.encode()


STRING_EXAMPLES = [
    ("\b\f\n\r\t", r'"\b\f\n\r\t"'),
    ("\x1f", r'"\u001f"'),
    ("\x00\x01\x0b\x0e", r'"\u0000\u0001\u000b\u000e"'),
    ('say "hi"', r'"say \"hi\""'),
    ("back\\slash", r'"back\\slash"'),
    ("a/b", '"a/b"'),
    ("\x7f", '"\x7f"'),
    ("é", '"é"'),
    ("日本語", '"日本語"'),
    ("😀", '"😀"'),
    ("\u2028\u2029", '"\u2028\u2029"'),
]


@pytest.mark.parametrize(("value", "text"), STRING_EXAMPLES, ids=[t for _, t in STRING_EXAMPLES])
def test_serde_string_examples(value, text):
    expected = text.encode("utf-8")  # raw UTF-8, no \u escapes for non-ASCII
    assert serde_compact(value) == expected
    assert serde_compact_slow(value) == expected


def test_serde_hex_escapes_are_lower_case():
    out = serde_compact("\x1a\x1b\x1c\x1d\x1e\x1f")
    assert out == rb'"\u001a\u001b\u001c\u001d\u001e\u001f"'
    assert out == serde_compact_slow("\x1a\x1b\x1c\x1d\x1e\x1f")


def test_serde_structure():
    value = {"b": 1, "a": [True, False, None, -3, 2**63 - 1, -(2**63), 2**64 - 1], "é": {}}
    expected = '{"b":1,"a":[true,false,null,-3,9223372036854775807,-9223372036854775808,'
    expected += '18446744073709551615],"é":{}}'
    assert serde_compact(value) == expected.encode()
    assert serde_compact_slow(value) == expected.encode()
    assert serde_compact([]) == b"[]" and serde_compact({}) == b"{}"


def test_serde_keeps_insertion_order_and_swap_remove():
    """Keys stay in the order received; removing the last two keys leaves the order unchanged."""
    body = {"object": "list", "data": [], "model": "m", "usage": {}, "extra": 1}
    assert serde_compact(body) == b'{"object":"list","data":[],"model":"m","usage":{},"extra":1}'
    del body["usage"], body["extra"]
    assert serde_compact(body) == b'{"object":"list","data":[],"model":"m"}'


def test_serde_of_an_embeddings_response():
    response = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": [0.0023064255, -0.009327292, 1e-8, 0.5],
                  "index": 0}],
        "model": "intfloat/multilingual-e5-large-instruct",
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
    expected = (
        b'{"object":"list","data":[{"object":"embedding","embedding":'
        b'[0.0023064255,-0.009327292,1e-8,0.5],"index":0}],'
        b'"model":"intfloat/multilingual-e5-large-instruct",'
        b'"usage":{"prompt_tokens":5,"total_tokens":5}}'
    )
    assert serde_compact(response) == expected
    assert serde_compact_slow(response) == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1.0, math.nan]], ids=repr)
def test_serde_refuses_nan_and_infinity(value):
    with pytest.raises(ValueError):
        serde_compact_slow(value)
    with pytest.raises(ValueError):
        serde_compact(value)


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object()], ids=lambda v: type(v).__name__)
def test_serde_refuses_non_json_types(value):
    with pytest.raises(TypeError):
        serde_compact_slow(value)
    with pytest.raises(TypeError):
        serde_compact(value)


# ----------------------------------------------------------------------------------------------
# serde_compact == serde_compact_slow on generated JSON values
# ----------------------------------------------------------------------------------------------

I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
# All of Unicode except lone surrogates (not representable in UTF-8), control characters included.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_SPECIAL = "\x00\x01\x08\x09\x0a\x0c\x0d\x1f\x7f\"\\/é\u2028"  # escapes and near-escapes
TEXT_WITH_CONTROLS = st.one_of(TEXT, st.text(st.sampled_from(_SPECIAL), max_size=10))
SCALARS = st.one_of(st.none(), st.booleans(), I64, FINITE, TEXT_WITH_CONTROLS)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(TEXT_WITH_CONTROLS, children, max_size=6),
    ),
    max_leaves=40,
)


@given(JSON)
@settings(max_examples=400, deadline=None)
def test_serde_fast_path_equals_reference(value):
    fast = serde_compact(value)
    assert fast == serde_compact_slow(value)
    assert orjson.loads(fast) == value  # and it is JSON that means the same value


@given(st.dictionaries(TEXT, I64, min_size=2, max_size=10))
@settings(deadline=None)
def test_serde_preserves_generated_key_order(value):
    parsed = orjson.loads(serde_compact(value))
    assert list(parsed) == list(value)


_EXPONENT = re.compile(r"^-?[1-9](\.[0-9]*[1-9])?e-?[1-9][0-9]*$")
_FIXED = re.compile(r"^-?(0|[1-9][0-9]*)\.[0-9]+$")


def _shortest_digits(x: float) -> str:
    """The significant digits of Python's shortest round-trip repr (same digits as ryu)."""
    mantissa = repr(abs(x)).split("e")[0]
    return mantissa.replace(".", "").strip("0")


@given(FINITE)
@settings(max_examples=1000, deadline=None)
def test_serde_float_layout_rules(x):
    text = serde_compact(x).decode()
    assert text == serde_compact_slow(x).decode()
    assert float(text) == x and math.copysign(1.0, float(text)) == math.copysign(1.0, x)
    if x == 0:
        assert text in ("0.0", "-0.0")
        return
    if 1e-5 <= abs(x) < 1e16:
        assert _FIXED.match(text), text  # decimal point, never an exponent
    else:
        assert _EXPONENT.match(text), text  # d[.ddd]e<exp>: no '+', no leading zeros
    digits = text.lstrip("-").split("e")[0].replace(".", "").strip("0")
    assert digits == _shortest_digits(x)


# ----------------------------------------------------------------------------------------------
# require_int / require_str
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None, [1]], ids=repr)
def test_require_int_rejects_non_integers(value):
    with pytest.raises(InvalidFieldError) as info:
        require_int(value, field="stack_small_id")
    assert info.value.field == "stack_small_id"


def test_require_int_range():
    assert require_int(0, field="n") == 0
    assert require_int(2**64 - 1, field="n") == 2**64 - 1
    for bad in (-1, 2**64):
        with pytest.raises(InvalidFieldError):
            require_int(bad, field="n")
    assert require_int(-5, field="n", minimum=-5, maximum=5) == -5
    with pytest.raises(InvalidFieldError):
        require_int(6, field="n", minimum=-5, maximum=5)


def test_require_str():
    assert require_str("", field="model") == ""
    assert require_str("m", field="model", allow_empty=False) == "m"
    with pytest.raises(InvalidFieldError) as info:
        require_str("", field="model", allow_empty=False)
    assert info.value.field == "model"
    for bad in (None, 1, b"m", ["m"]):
        with pytest.raises(InvalidFieldError):
            require_str(bad, field="model")


# ----------------------------------------------------------------------------------------------
# Numbers too long to convert (issue 16, item 10)
# ----------------------------------------------------------------------------------------------


def test_a_field_beyond_a_double_is_an_invalid_field_naming_it() -> None:
    with pytest.raises(InvalidFieldError) as exc:
        loads(b'{"model": "m", "stack_small_id": ' + b"9" * 5000 + b"}")
    assert exc.value.code == "INVALID_FIELD" and exc.value.field == "stack_small_id"
    assert "9999" not in exc.value.message


@pytest.mark.parametrize("body", [
    '{"model": "modèle-ünïcødé-日本語", "stack_small_id": '.encode() + b"9" * 5000 + b"}",
    '{"model": "modèle-ünïcødé-日本語", "stack_small_id": ' + "9" * 5000 + "}",
])
def test_a_field_beyond_a_double_after_non_ascii_text_is_still_named(body: bytes | str) -> None:
    # orjson reports the position in characters; bytes and text name the same field.
    with pytest.raises(InvalidFieldError) as exc:
        loads(body)
    assert exc.value.code == "INVALID_FIELD" and exc.value.field == "stack_small_id"


@pytest.mark.parametrize("text,value", [("0", 0), ("18446744073709551615", 2**64 - 1)])
def test_parse_uint_takes_u64(text: str, value: int) -> None:
    assert parse_uint(text, field="n") == value


@pytest.mark.parametrize("text", ["", "-1", "+1", "1.0", "²", " 1", "18446744073709551616",
                                  "0" * 21, "9" * 5000])
def test_parse_uint_refuses_before_converting(text: str) -> None:
    with pytest.raises(InvalidFieldError) as exc:
        parse_uint(text, field="X-Stack-Small-Id")
    assert exc.value.field == "X-Stack-Small-Id"
