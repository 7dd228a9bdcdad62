"""One Starlette app per service: every path goes to the service's ``handle`` unchanged.

The service decides routing, status codes and JSON error bodies, so HTTP answers equal the
in-process ones. Anything unexpected is a 500 with the JSON error shape, never a crash; CORS is
open (any origin, GET and POST), as on Atoma's services.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from atoma_lab.errors import AtomaLabError, BodyTooLargeError
from atoma_lab.transport.base import MAX_BODY_BYTES, Handler, Headers, Request, error_response

log = logging.getLogger("atoma_lab.server")


def asgi_app(handler: Handler, *, max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
    """An ASGI app that hands every request to ``handler``."""

    async def endpoint(req: StarletteRequest) -> StarletteResponse:
        try:
            declared = req.headers.get("content-length")
            if declared is not None and declared.isascii() and declared.isdigit() \
                    and int(declared) > max_body_bytes:
                raise BodyTooLargeError(f"body is {declared} bytes; the limit is {max_body_bytes}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in req.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    raise BodyTooLargeError(f"body exceeds the limit of {max_body_bytes} bytes")
                chunks.append(chunk)
            path = req.url.path + (f"?{req.url.query}" if req.url.query else "")
            ours = Request(req.method, path, Headers(dict(req.headers)), b"".join(chunks))
            resp = await handler(ours)
        except AtomaLabError as exc:
            resp = error_response(exc)
        except Exception:  # the one place a bug must become a 500 rather than a dropped socket
            log.exception("unhandled error serving %s %s", req.method, req.url.path)
            resp = error_response(AtomaLabError("internal server error"))
        return StarletteResponse(resp.body, status_code=resp.status, headers=dict(resp.headers))

    # Every standard method reaches the service, so a wrong one is its JSON 405 rather than
    # Starlette's plain-text one (CORS preflights are answered by the middleware first).
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]
    return Starlette(
        routes=[Route("/{path:path}", endpoint, methods=methods)],
        middleware=[Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"],
                               allow_headers=["*"])],
    )
