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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

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


def _starlette(resp: Response, *, close: bool = False) -> StarletteResponse:
    headers = dict(resp.headers)
    if close:  # the body was not (all) read: end the connection (after a bounded drain)
        headers["connection"] = "close"
    return StarletteResponse(resp.body, status_code=resp.status, headers=headers)


def asgi_app(handler: Handler, *, precheck: Precheck | None = None,
             limits: ServerLimits | None = None, max_body_bytes: int | None = None) -> ASGIApp:
    """An ASGI app that hands every request to ``handler``, within ``limits`` (default
    :class:`ServerLimits`; ``max_body_bytes`` overrides its body limit), after ``precheck``."""
    limits = limits or ServerLimits()
    body_limit = limits.max_body_bytes if max_body_bytes is None else max_body_bytes

    async def endpoint(req: StarletteRequest) -> StarletteResponse:
        path = req.url.path + (f"?{req.url.query}" if req.url.query else "")
        head = Request(req.method, path, headers_from_asgi(req.scope["headers"]), b"")
        declared = _declared_length(head.headers)
        body_coming = bool(declared) or "transfer-encoding" in head.headers
        try:
            if declared is not None and declared > body_limit:
                raise BodyTooLargeError(f"body is {declared} bytes; the limit is {body_limit}")
            if precheck is not None:
                precheck(head)
        except AtomaLabError as exc:
            return _starlette(error_response(exc), close=body_coming)
        try:
            head.body = await _read_body(req.receive, body_limit, limits.body_timeout_s)
        except _ClientGone:
            log.info("client went away while sending %s %s", req.method, req.url.path)
            return StarletteResponse(b"", status_code=400)  # nobody reads it
        except AtomaLabError as exc:
            return _starlette(error_response(exc), close=True)
        try:
            served = await _serve_while_connected(handler, head, req.receive)
            if served is None:
                log.info("client went away before the answer to %s %s; its work was cancelled",
                         req.method, req.url.path)
                return StarletteResponse(b"", status_code=499)  # nobody reads it
            resp = served
        except AtomaLabError as exc:
            resp = error_response(exc)
        except Exception:  # the one place a bug must become a 500 rather than a dropped socket
            log.exception("unhandled error serving %s %s", req.method, req.url.path)
            resp = error_response(AtomaLabError("internal server error"))
        return _starlette(resp)

    # Every standard method reaches the service, so a wrong one is its JSON 405 rather than
    # Starlette's plain-text one (CORS preflights are answered by the middleware first).
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]
    inner = Starlette(
        routes=[Route("/{path:path}", endpoint, methods=methods)],
        middleware=[Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"],
                               allow_headers=["*"])],
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # the header caps come before anything reads a header
            target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            refusal = header_refusal(scope["headers"], target, limits)
            if refusal is not None:
                log.info("refused %s %s: %s", scope.get("method"), scope.get("path"),
                         refusal.message)
                await _starlette(error_response(refusal), close=True)(scope, receive, send)
                return
        await inner(scope, receive, send)

    return app


__all__ = ["Precheck", "asgi_app", "header_refusal", "headers_from_asgi"]
