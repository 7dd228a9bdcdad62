"""Exact-path routing of a service's requests to its handlers; errors become JSON responses."""

from __future__ import annotations

from atoma_lab.errors import (
    AtomaLabError,
    BodyTooLargeError,
    MethodNotAllowedError,
    NotFoundError,
)
from atoma_lab.transport.base import MAX_BODY_BYTES, Handler, Request, Response, error_response


class Router:
    """Exact-path routing to handlers; unknown paths are 404, wrong methods 405; every
    :class:`AtomaLabError` a handler raises becomes its JSON error response."""

    def __init__(self, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._routes: dict[tuple[str, str], Handler] = {}
        self.max_body_bytes = max_body_bytes

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method.upper(), path)] = handler

    def route(self, method: str, path: str) -> Handler:
        """The handler of ``method path`` (``KeyError`` if there is none)."""
        return self._routes[(method.upper(), path)]

    @property
    def paths(self) -> list[tuple[str, str]]:
        return sorted(self._routes)

    async def __call__(self, request: Request) -> Response:
        try:
            if len(request.body) > self.max_body_bytes:
                raise BodyTooLargeError(
                    f"body is {len(request.body)} bytes; the limit is {self.max_body_bytes}"
                )
            method = request.method.upper()
            handler = self._routes.get((method, request.path))
            if handler is None and method == "HEAD":  # HEAD is GET without the body (RFC 9110)
                get = self._routes.get(("GET", request.path))
                if get is not None:
                    resp = await get(request)
                    return Response(resp.status, b"", resp.headers)
            if handler is None:
                if any(p == request.path for _, p in self._routes):
                    raise MethodNotAllowedError(f"{request.method} is not allowed on {request.path}")
                raise NotFoundError(f"no route {request.path}")
            return await handler(request)
        except AtomaLabError as exc:
            return error_response(exc)


__all__ = ["Router"]
