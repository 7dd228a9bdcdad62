"""One ASGI app per service: every path goes to the service's ``handle`` unchanged.

The service decides routing, status codes and JSON error bodies, so HTTP answers equal the
in-process ones. Anything unexpected is a 500 with the JSON error shape, never a crash; CORS is
open (any origin, GET and POST), as on Atoma's services.

Before a body byte is read, in this order: the header count and size (431, checked before
anything else looks at the headers), the declared ``Content-Length`` (413), then the service's
``precheck`` on the request's head (its route, and what it can refuse from headers alone: the
proxy's bearer token, a node's ``X-Signature``). Each refusal closes the connection, so an unread
body is never buffered. The body is then read within ``body_timeout_s`` (408) and
``max_body_bytes`` (413). A client that goes away mid-body costs one INFO line.

A client that goes away while its request is served (its connection closed: a proxy that timed
out, a user who pressed Ctrl-C) cancels the service's work: the handler's task is cancelled at
once (the proxy gives the request's units back and closes its connection to the node, whose own
server then cancels the model's work), and that too costs one INFO line.

The app speaks ASGI directly: one catch-all route needs no router, and the open CORS policy is
a few fixed headers (Starlette's ``CORSMiddleware`` with any origin, GET and POST, any header:
the same answers). Every request of every hop passes here, so each layer it does not cross is
time saved on every hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atoma_lab.encoding import parse_uint
from atoma_lab.errors import (
    AtomaLabError,
    BodyTooLargeError,
    HeadersTooLargeError,
    InvalidFieldError,
    RequestTimeoutError,
)
from atoma_lab.server.limits import ServerLimits
from atoma_lab.transport.base import Handler, Headers, Request, Response, error_response

log = logging.getLogger("atoma_lab.server")

#: The CORS policy: any origin, GET and POST, any header (preflights are answered here).
CORS_METHODS = ("GET", "POST")
CORS_MAX_AGE_S = 600
_PREFLIGHT_HEADERS = [
    (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
              b"Access-Control-Request-Private-Network"),
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", ", ".join(CORS_METHODS).encode()),
    (b"access-control-max-age", str(CORS_MAX_AGE_S).encode()),
]
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection"})

#: A service's check of a request's head (method, path, query, headers; no body yet): raises
#: the :class:`~atoma_lab.errors.AtomaLabError` to answer, or returns to let the body be read.
Precheck = Callable[[Request], None]


class _ClientGone(Exception):
    """The client disconnected before its body was complete."""


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has gone (after the body, the server answers ``receive`` only
    then, or when the answer is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _serve_while_connected(handler: Handler, request: Request,
                                 receive: Receive) -> Response | None:
    """``handler(request)``, cancelled if the client goes away first (then ``None``)."""
    work = asyncio.ensure_future(handler(request))
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not work.done():
            work.cancel()
        gone.cancel()
    if not work.cancelled() and work.done():
        return work.result()
    with contextlib.suppress(asyncio.CancelledError):
        await work  # let its clean-up (units given back, connections closed) run to the end
    return None


def header_refusal(raw: Iterable[tuple[bytes, bytes]], target_bytes: int,
                   limits: ServerLimits) -> HeadersTooLargeError | None:
    """The 431 for headers over ``limits`` (count, or bytes with the request target), else
    ``None``. Counts without building anything."""
    count = 0
    size = target_bytes
    for name, value in raw:
        count += 1
        size += len(name) + len(value)
    if count > limits.max_header_count:
        return HeadersTooLargeError(f"{count} headers; the limit is {limits.max_header_count}")
    if size > limits.max_header_bytes:
        return HeadersTooLargeError(f"{size} bytes of request target and headers; the limit is "
                                    f"{limits.max_header_bytes}")
    return None


def headers_from_asgi(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Our header map from an ASGI scope's raw pairs, in one pass (Starlette's ``Headers``
    looks each name up by scanning the list, so ``dict(request.headers)`` is quadratic)."""
    return Headers.from_pairs((name.decode("latin-1"), value.decode("latin-1"))
                              for name, value in raw)


def _declared_length(headers: Headers) -> int | None:
    """The declared body size; ``None`` when there is none or it is not a number (the HTTP
    parser refuses those); a number too long to convert counts as too large."""
    declared = (headers.get("content-length") or "").strip()
    if not (declared.isascii() and declared.isdigit()):
        return None
    try:
        return parse_uint(declared, field="Content-Length")
    except InvalidFieldError:
        return 2**64


async def _read_body(receive: Receive, limit: int, timeout_s: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLargeError(f"body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError as exc:
        raise RequestTimeoutError(f"the body did not arrive within {timeout_s} s") from exc


async def _send(send: Send, resp: Response, *, origin: bool, close: bool = False) -> None:
    """``resp`` as ASGI messages: its headers (those of the connection are the server's), the
    body's length, the CORS headers, and ``connection: close`` when the body was not (all)
    read (the server then ends the connection after a bounded drain)."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()
               if k not in _HOP_BY_HOP]
    if not (resp.status < 200 or resp.status in (204, 304)):
        headers.append((b"content-length", b"%d" % len(resp.body)))
    if origin:
        headers.append((b"access-control-allow-origin", b"*"))
    headers.append((b"vary", b"Origin"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    await send({"type": "http.response.body", "body": resp.body})


async def _preflight(send: Send, head: Headers) -> None:
    """A CORS preflight's answer: 200, or 400 naming what the policy does not allow."""
    headers = list(_PREFLIGHT_HEADERS)
    failures = []
    if head.get("access-control-request-method") not in CORS_METHODS:
        failures.append("method")
    requested = head.get("access-control-request-headers")
    if requested is not None:  # any header is allowed: name back the ones asked for
        headers.append((b"access-control-allow-headers", requested.encode("latin-1")))
    if "access-control-request-private-network" in head:
        failures.append("private-network")
    body = b"Disallowed CORS " + ", ".join(failures).encode() if failures else b"OK"
    headers += [(b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 400 if failures else 200,
                "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop; answer the server's (or a test client's) lifespan events."""
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def asgi_app(handler: Handler, *, precheck: Precheck | None = None,
             limits: ServerLimits | None = None, max_body_bytes: int | None = None) -> ASGIApp:
    """An ASGI app that hands every request to ``handler``, within ``limits`` (default
    :class:`ServerLimits`; ``max_body_bytes`` overrides its body limit), after ``precheck``."""
    limits = limits or ServerLimits()
    body_limit = limits.max_body_bytes if max_body_bytes is None else max_body_bytes

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await _lifespan(receive, send)
            elif kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        # The header caps come before anything reads a header.
        raw = scope["headers"]
        query = scope.get("query_string") or b""
        refusal = header_refusal(raw, len(scope.get("raw_path") or b"") + len(query), limits)
        if refusal is not None:
            log.info("refused %s %s: %s", scope.get("method"), scope.get("path"), refusal.message)
            await _send(send, error_response(refusal), origin=False, close=True)
            return
        method = scope["method"]
        path = scope["path"] + ("?" + query.decode("latin-1") if query else "")
        head = Request(method, path, headers_from_asgi(raw), b"")
        origin = "origin" in head.headers
        if origin and method == "OPTIONS" and "access-control-request-method" in head.headers:
            await _preflight(send, head.headers)
            return
        declared = _declared_length(head.headers)
        body_coming = bool(declared) or "transfer-encoding" in head.headers
        try:
            if declared is not None and declared > body_limit:
                raise BodyTooLargeError(f"body is {declared} bytes; the limit is {body_limit}")
            if precheck is not None:
                precheck(head)
        except AtomaLabError as exc:
            await _send(send, error_response(exc), origin=origin, close=body_coming)
            return
        try:
            head.body = await _read_body(receive, body_limit, limits.body_timeout_s)
        except _ClientGone:
            log.info("client went away while sending %s %s", method, scope["path"])
            await _send(send, Response(400), origin=origin)  # nobody reads it
            return
        except AtomaLabError as exc:
            await _send(send, error_response(exc), origin=origin, close=True)
            return
        try:
            served = await _serve_while_connected(handler, head, receive)
            if served is None:
                log.info("client went away before the answer to %s %s; its work was cancelled",
                         method, scope["path"])
                return  # nobody is there to read an answer
            resp = served
        except AtomaLabError as exc:
            resp = error_response(exc)
        except Exception:  # the one place a bug must become a 500 rather than a dropped socket
            log.exception("unhandled error serving %s %s", method, scope["path"])
            resp = error_response(AtomaLabError("internal server error"))
        await _send(send, resp, origin=origin)

    return app


__all__ = ["Precheck", "asgi_app", "header_refusal", "headers_from_asgi"]
