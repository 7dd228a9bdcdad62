"""Wire encodings: strict standard base64 and serde-compact JSON.

Atoma's Rust services decode base64 with the ``base64`` crate's ``STANDARD`` engine: the ``+/``
alphabet, ``=`` padding required, no whitespace, and the unused trailing bits of the last symbol
must be zero (atoma-protocol.md, conventions). :func:`b64decode` is exactly that strict.

JSON that is hashed or signed by Atoma is written by Rust ``serde_json`` with ``preserve_order``
("serde-compact", atoma-protocol.md section 2.6). :func:`serde_compact` reproduces those bytes from
a parsed Python value, floats included.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

import orjson

from atoma_lab.errors import InvalidEncodingError, InvalidFieldError, InvalidJSONError, InvalidLengthError

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: i for i, c in enumerate(_B64_ALPHABET)}

MAX_JSON_DEPTH = 64  # levels; orjson itself refuses more than 1024, we refuse far earlier


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object, *, field: str, size: int | None = None) -> bytes:
    """Decode strict standard base64 (RFC 4648 section 4, padded, canonical).

    Raises :class:`InvalidFieldError` when ``text`` is not a string, :class:`InvalidEncodingError`
    for anything but canonical padded ``+/`` base64 (URL-safe, unpadded, whitespace, non-zero
    trailing bits), and :class:`InvalidLengthError` when ``size`` is given and the decoded length
    differs. Messages name ``field`` and sizes only, never the value.
    """
    if not isinstance(text, str):
        raise InvalidFieldError(f"{field}: expected a base64 string", field=field)
    raw = text.encode("ascii", "replace")
    if len(raw) % 4:
        raise InvalidEncodingError(
            f"{field}: not standard base64 with padding (length {len(raw)} is not a multiple of 4)",
            field=field,
        )
    try:
        data = binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error as exc:
        raise InvalidEncodingError(f"{field}: not standard base64 with padding", field=field) from exc
    if raw.endswith(b"==="):  # CPython's strict mode lets a whole "====" group follow the data
        raise InvalidEncodingError(f"{field}: not standard base64 with padding", field=field)
    if raw:
        # Canonical form: the bits the last symbol carries beyond the data must be zero.
        pad = 2 if raw.endswith(b"==") else 1 if raw.endswith(b"=") else 0
        if pad:
            last = _B64_VALUE[raw[-1 - pad]]
            if last & (0x0F if pad == 2 else 0x03):
                raise InvalidEncodingError(
                    f"{field}: non-canonical base64 (trailing bits set)", field=field
                )
    if size is not None and len(data) != size:
        raise InvalidLengthError(
            f"{field}: expected {size} bytes, got {len(data)}", field=field
        )
    return data


# ----------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------


def loads(body: bytes | str, *, what: str = "body") -> Any:
    """Parse JSON strictly (UTF-8, no NaN, bounded nesting) or raise :class:`InvalidJSONError`."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        field = _key_before(body, exc.pos) if str(exc).startswith("number is infinity") else None
        if field is not None:  # e.g. a 5,000-digit id: that field is wrong, not the JSON
            raise InvalidFieldError(f"{field}: a number beyond the range of a 64-bit integer "
                                    "or a double", field=field) from exc
        # orjson's message quotes no input beyond a position, but keep ours fixed.
        raise InvalidJSONError(f"{what} is not valid UTF-8 JSON") from exc
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise InvalidJSONError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return value


_KEY_BEFORE = re.compile(r'"([A-Za-z0-9_.\-]{1,64})"\s*:\s*$')


def _key_before(body: bytes | str, pos: int) -> str | None:
    """The object key right before character ``pos`` of a JSON document, if there is one."""
    # orjson counts ``pos`` in characters, not bytes: slice the text, not the raw bytes.
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    match = _KEY_BEFORE.search(text[max(0, pos - 80):pos])
    return match.group(1) if match else None


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (orjson; numpy arrays serialised natively, without per-float Python)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def _serde_float(x: float) -> str:
    """Format an f64 the way serde_json (ryu ``format64``) does."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError("serde_json cannot represent NaN or infinity")
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp_text = repr(abs(x)).partition("e")
    exp = int(exp_text) if exp_text else 0
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # value = 0.digits * 10**kk
    leading_zeros = len(int_part + frac_part) - len((int_part + frac_part).lstrip("0"))
    kk = len(int_part) + exp - leading_zeros
    digits = digits.rstrip("0") or "0"
    n = len(digits)
    if kk - n >= 0 and kk <= 16:
        out = digits + "0" * (kk - n) + ".0"
    elif 0 < kk <= 16:
        out = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        out = "0." + "0" * (-kk) + digits
    elif n == 1:
        out = f"{digits}e{kk - 1}"
    else:
        out = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + out


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _serde_str(s: str) -> str:
    out = []
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _serde_write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_serde_float(value))
    elif isinstance(value, str):
        out.append(_serde_str(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, (k, v) in enumerate(value.items()):
            if i:
                out.append(",")
            if not isinstance(k, str):
                raise TypeError("JSON object keys must be strings")
            out.append(_serde_str(k))
            out.append(":")
            _serde_write(v, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _serde_write(v, out)
        out.append("]")
    else:
        raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


def serde_compact(value: Any) -> bytes:
    """The bytes Rust ``serde_json::Value::to_string()`` (``preserve_order``) writes for ``value``.

    Keys keep their insertion order. Used wherever Atoma hashes or signs re-serialised JSON
    (the plain route's request signature and response hash).
    """
    try:
        fast = orjson.dumps(value)
    except TypeError:
        fast = None
    # orjson writes the same compact form (shortest round-trip floats, raw UTF-8, lower-case
    # \u00XX escapes) except that it puts a '+' in positive exponents (1e+16 where serde writes
    # 1e16), and that it writes NaN and infinities as null where the reference raises. Only
    # then, or for values orjson refuses, fall back to the exact formatter.
    if fast is not None and b"e+" not in fast and b"null" not in fast:
        return fast
    return serde_compact_slow(value)


def serde_compact_slow(value: Any) -> bytes:
    """Pure-Python reference implementation of :func:`serde_compact` (used to cross-check it)."""
    out: list[str] = []
    _serde_write(value, out)
    return "".join(out).encode("utf-8")


def require_int(value: object, *, field: str, minimum: int = 0, maximum: int = 2**64 - 1) -> int:
    """A JSON integer in ``[minimum, maximum]`` (bools are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFieldError(f"{field}: expected an integer", field=field)
    if not minimum <= value <= maximum:
        raise InvalidFieldError(f"{field}: must be between {minimum} and {maximum}", field=field)
    return value


def parse_uint(text: str, *, field: str, maximum: int = 2**64 - 1) -> int:
    """A non-negative decimal integer written in ASCII digits (a header or a query parameter), at
    most ``maximum``. Its length is checked before Python converts it: ``int()`` of thousands of
    digits is slow, and refused (``ValueError``) beyond 4,300."""
    if not (text.isascii() and text.isdigit()):
        raise InvalidFieldError(f"{field}: expected a non-negative integer", field=field)
    if len(text) > len(str(maximum)) or int(text) > maximum:
        raise InvalidFieldError(f"{field}: must be between 0 and {maximum}", field=field)
    return int(text)


def require_str(value: object, *, field: str, allow_empty: bool = True) -> str:
    """A JSON string."""
    if not isinstance(value, str):
        raise InvalidFieldError(f"{field}: expected a string", field=field)
    if not allow_empty and not value:
        raise InvalidFieldError(f"{field}: must not be empty", field=field)
    return value


__all__ = [
    "MAX_JSON_DEPTH",
    "b64decode",
    "b64encode",
    "dumps",
    "loads",
    "parse_uint",
    "require_int",
    "require_str",
    "serde_compact",
]
