"""The transport seam: the message shapes services speak, and the one :class:`Transport`
protocol every way of delivering them implements (as httpx's ``BaseTransport``).

A service is an ``async`` function from :class:`Request` to :class:`Response`. A transport
delivers a request to the service at ``request.address`` and returns its answer: in-process
(:class:`~atoma_lab.transport.inprocess.InProcessTransport`), over HTTP
(:class:`~atoma_lab.transport.http.HttpTransport`), through an attacker's hooks
(:class:`~atoma_lab.transport.intercept.InterceptTransport`) or on another thread's event loop
(:class:`~atoma_lab.transport.loop.LoopTransport`). The proxy reaches its nodes through one, and a
client its proxy. The ASGI server turns HTTP into these objects and back. Errors become
responses in one place, :func:`error_response`, from the status and code each
:class:`~atoma_lab.errors.AtomaLabError` carries, so every mode answers byte for byte alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl

from atoma_lab.encoding import dumps, loads, parse_uint
from atoma_lab.errors import (
    AtomaLabError,
    AuthenticationError,
    InvalidFieldError,
    ResponseTooLargeError,
)

JSON = "application/json"
MAX_BODY_BYTES = 64 * 1024 * 1024  # bytes; Atoma allows 1 GiB, a research box wants less
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # bytes of an answer's body, when nothing tighter is known


class Headers(dict[str, str]):
    """Case-insensitive header map (keys stored lower-case)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__()
        for k, v in (items or {}).items():
            self[k] = v

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def copy(self) -> Headers:
        return Headers(self)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        """One pass over ``(name, value)`` pairs as they came on the wire; of a repeated name the
        first value counts (as Starlette's and httpx's ``get`` return)."""
        out = cls()
        for name, value in pairs:
            key = name.lower()
            if not dict.__contains__(out, key):
                dict.__setitem__(out, key, value)
        return out


@dataclass(slots=True)
class Request:
    """An HTTP-shaped request. ``path`` has no query string; ``query`` holds it parsed.

    ``address`` and ``timeout_s`` tell a transport where the request goes and how long it may
    take: ``address`` is a base URL (``http://127.0.0.1:8080``) or an in-process name
    (``inproc://proxy``); empty, the transport's own default (if it has one) applies.
    ``timeout_s`` ``None`` means the transport's default. ``max_response_bytes`` bounds the
    answer's body (``None``: the transport's default); a larger answer is
    :class:`~atoma_lab.errors.ResponseTooLargeError` (502), read no further. ``lane`` keeps a
    kind of traffic on connections (and a queue) of its own at each peer: the proxy's health
    probes use ``"probe"``, so that requests stuck at a node do not hold them up. A server
    receiving a request leaves all of these unset.
    """

    method: str
    path: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    query: dict[str, str] = field(default_factory=dict)
    address: str = ""
    timeout_s: float | None = None
    max_response_bytes: int | None = None
    lane: str = ""

    def __post_init__(self) -> None:
        if "?" in self.path:
            self.path, _, qs = self.path.partition("?")
            self.query.update(parse_qsl(qs))
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)

    def __repr__(self) -> str:  # sizes, never the body (it may be plaintext)
        where = f" to {self.address}" if self.address else ""
        return f"<Request {self.method} {self.path}{where}, {len(self.body)} bytes>"

    def json(self) -> Any:
        return loads(self.body)

    def query_int(self, name: str) -> int:
        """The non-negative integer query parameter ``name``, or :class:`InvalidFieldError`."""
        raw = self.query.get(name, "")
        if not (raw.isascii() and raw.isdigit()):
            raise InvalidFieldError(f"{name}: expected an integer query parameter", field=name)
        return parse_uint(raw, field=name)

    def bearer_token(self) -> str:
        """The token of ``Authorization: Bearer <token>`` or :class:`AuthenticationError`."""
        value = self.headers.get("authorization")
        if not value or not value.startswith("Bearer ") or not value[7:].strip():
            raise AuthenticationError("missing or malformed Authorization: Bearer header")
        return value[7:].strip()


@dataclass(slots=True)
class Response:
    """An HTTP-shaped response."""

    status: int
    body: bytes = b""
    headers: Headers = field(default_factory=Headers)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)

    def __repr__(self) -> str:  # sizes, never the body (it may be plaintext)
        return f"<Response {self.status}, {len(self.body)} bytes>"

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        h = Headers(headers)
        h["content-type"] = JSON
        return cls(status, payload if isinstance(payload, bytes) else dumps(payload), h)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error_code(self) -> str | None:
        """The ``error.code`` of a JSON error body, if there is one."""
        try:
            value = loads(self.body)
        except AtomaLabError:
            return None
        if isinstance(value, dict) and isinstance(value.get("error"), dict):
            code = value["error"].get("code")
            return code if isinstance(code, str) else None
        return None


Handler = Callable[[Request], Awaitable[Response]]


@runtime_checkable
class Transport(Protocol):
    """How one party reaches another: ``await transport.handle(request)``.

    The request says where it goes (``request.address``), how long it may take
    (``request.timeout_s``) and how large its answer may be (``request.max_response_bytes``). A
    transport raises :class:`~atoma_lab.errors.TransportError` (503) when the message cannot be
    delivered, :class:`~atoma_lab.errors.TransportTimeoutError` (504) when it is not answered in
    time, :class:`~atoma_lab.errors.ResponseTooLargeError` (502) for an answer over its bound and
    :class:`~atoma_lab.errors.PeerBusyError` (503) when it refuses to queue more for that peer;
    any other answer the peer gives, error statuses included, is a :class:`Response`. ``aclose`` releases
    what the transport holds (pooled connections); a transport may be used again afterwards.
    """

    async def handle(self, request: Request) -> Response: ...

    async def aclose(self) -> None: ...


def bounded(request: Request, response: Response, *, peer: str) -> Response:
    """``response``, or :class:`~atoma_lab.errors.ResponseTooLargeError` (502) when its body is
    over ``request.max_response_bytes`` (for transports that hold a whole answer before they
    can measure it)."""
    limit = request.max_response_bytes
    if limit is not None and len(response.body) > limit:
        raise ResponseTooLargeError(f"{peer} answered {request.method} {request.path} with "
                                    f"{len(response.body)} bytes; the limit is {limit}")
    return response


def error_response(exc: AtomaLabError) -> Response:
    """The one mapping from an error to HTTP: its status and ``{"error": {code, message}}``."""
    return Response.json(exc.to_dict(), status=exc.status)
