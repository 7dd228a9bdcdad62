"""HTTP transports on httpx: async for services (the proxy reaching nodes), sync for clients."""

from __future__ import annotations

import httpx

from atoma_lab.errors import TransportError, TransportTimeoutError
from atoma_lab.services.http import Headers, Request, Response

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _request_kwargs(request: Request) -> dict[str, object]:
    headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
    return {"headers": headers, "content": request.body, "params": request.query or None}


def _response(resp: httpx.Response) -> Response:
    return Response(resp.status_code, resp.content, Headers(dict(resp.headers)))


class HttpTransport:
    """``send(base_url, request)`` over a pooled :class:`httpx.AsyncClient` (created lazily, in
    the event loop that uses it). Connection failures raise :class:`TransportError` (503),
    timeouts :class:`TransportTimeoutError` (504)."""

    def __init__(self, *, timeout_s: float = 60.0, max_connections: int = 100) -> None:
        self.timeout_s = timeout_s
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_connections)
        self._client: httpx.AsyncClient | None = None

    def _get(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, limits=self._limits)
        return self._client

    async def send(self, address: str, request: Request, timeout_s: float | None = None) -> Response:
        url = address.rstrip("/") + request.path
        try:
            resp = await self._get().request(
                request.method, url, timeout=timeout_s or self.timeout_s,
                **_request_kwargs(request),  # type: ignore[arg-type]
            )
        except httpx.TimeoutException as exc:
            raise TransportTimeoutError(f"{address} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach {address}: {type(exc).__name__}") from exc
        return _response(resp)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class HttpChannel:
    """A client's synchronous line to one server (the proxy), over :class:`httpx.Client`."""

    def __init__(self, base_url: str, *, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def request(self, request: Request) -> Response:
        try:
            resp = self._client.request(request.method, request.path,
                                        **_request_kwargs(request))  # type: ignore[arg-type]
        except httpx.TimeoutException as exc:
            raise TransportTimeoutError(f"{self.base_url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach {self.base_url}: {type(exc).__name__}") from exc
        return _response(resp)

    def close(self) -> None:
        self._client.close()
