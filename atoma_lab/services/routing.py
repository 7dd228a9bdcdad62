"""Exact-path routing of a service's requests to its handlers; errors become JSON responses."""

from __future__ import annotations

from collections.abc import Callable

from atoma_lab.errors import (
    AtomaLabError,
    BodyTooLargeError,
    MethodNotAllowedError,
    NotFoundError,
)
from atoma_lab.transport.base import MAX_BODY_BYTES, Handler, Request, Response, error_response

#: What a route can refuse from a request's head alone (no body): raises the error to answer.
Guard = Callable[[Request], None]


class Router:
    """Exact-path routing to handlers; unknown paths are 404, wrong methods 405; every
    :class:`AtomaLabError` a handler raises becomes its JSON error response.

    A route's ``guard`` sees the request before its handler; :meth:`check_head` runs the routing
    and the guard on a head whose body has not been read, so the HTTP server can refuse
    (404, 405, 401, ...) without reading a body, and in-process callers get the same answers.
    """

    def __init__(self, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._routes: dict[tuple[str, str], tuple[Handler, Guard | None]] = {}
        self._paths: set[str] = set()
        self.max_body_bytes = max_body_bytes

    def add(self, method: str, path: str, handler: Handler, *, guard: Guard | None = None) -> None:
        self._routes[(method.upper(), path)] = (handler, guard)
        self._paths.add(path)

    def route(self, method: str, path: str) -> Handler:
        """The handler of ``method path`` (``KeyError`` if there is none)."""
        return self._routes[(method.upper(), path)][0]

    @property
    def paths(self) -> list[tuple[str, str]]:
        return sorted(self._routes)

    def _lookup(self, request: Request) -> tuple[Handler, Guard | None, bool]:
        """The handler and guard of ``request``, and whether it is a HEAD answered by GET."""
        method = request.method.upper()
        found = self._routes.get((method, request.path))
        if found is not None:
            return found[0], found[1], False
        if method == "HEAD":  # HEAD is GET without the body (RFC 9110)
            found = self._routes.get(("GET", request.path))
            if found is not None:
                return found[0], found[1], True
        if request.path in self._paths:
            raise MethodNotAllowedError(f"{request.method} is not allowed on {request.path}")
        raise NotFoundError(f"no route {request.path}")

    def check_head(self, request: Request) -> None:
        """Refuse ``request`` from its method, path and headers alone (its route, its guard)."""
        _, guard, _ = self._lookup(request)
        if guard is not None:
            guard(request)

    async def __call__(self, request: Request) -> Response:
        try:
            if len(request.body) > self.max_body_bytes:
                raise BodyTooLargeError(
                    f"body is {len(request.body)} bytes; the limit is {self.max_body_bytes}"
                )
            handler, guard, head_only = self._lookup(request)
            if guard is not None:
                guard(request)
            resp = await handler(request)
            return Response(resp.status, b"", resp.headers) if head_only else resp
        except AtomaLabError as exc:
            return error_response(exc)


__all__ = ["Guard", "Router"]
