"""The ASGI app and the loopback runner: routing errors are JSON, CORS is open, bugs are a JSON
500, bodies are bounded, and nothing binds beyond loopback unless asked."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from fakes import MODEL, error_of, network
from starlette.testclient import TestClient

from atoma_lab.encoding import loads
from atoma_lab.errors import InvalidFieldError
from atoma_lab.lab.network import Network
from atoma_lab.server import ServerGroup, asgi_app
from atoma_lab.services.routing import Router
from atoma_lab.transport.base import Request, Response


def _service() -> Router:
    router = Router()

    async def hello(request: Request) -> Response:
        return Response.json({"path": request.path, "query": request.query,
                              "body": request.body.decode("latin-1"),
                              "auth": request.headers.get("authorization")})

    async def bug(request: Request) -> Response:
        raise RuntimeError("a bug")

    async def refuse(request: Request) -> Response:
        raise InvalidFieldError("x: no", field="x")

    router.add("GET", "/hello", hello)
    router.add("POST", "/hello", hello)
    router.add("GET", "/bug", bug)
    router.add("POST", "/refuse", refuse)
    return router


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(asgi_app(_service(), max_body_bytes=1024), raise_server_exceptions=False) as c:
        yield c


def _json_error(resp: httpx.Response) -> tuple[int, str]:
    assert resp.headers["content-type"] == "application/json", resp.headers
    body = loads(resp.content)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return resp.status_code, body["error"]["code"]


def test_requests_reach_the_service_unchanged(client: TestClient) -> None:
    resp = client.post("/hello?a=1&b=x%20y", content=b"payload",
                       headers={"Authorization": "Bearer t"})
    assert resp.status_code == 200
    assert resp.json() == {"path": "/hello", "query": {"a": "1", "b": "x y"}, "body": "payload",
                           "auth": "Bearer t"}


@pytest.mark.parametrize("path", ["/nope", "/", "/hello/", "/HELLO", "/hello/x"])
def test_unknown_path_is_404_json(client: TestClient, path: str) -> None:
    assert _json_error(client.get(path)) == (404, "NOT_FOUND")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_wrong_method_is_405_json(client: TestClient, method: str) -> None:
    assert _json_error(client.request(method, "/hello")) == (405, "METHOD_NOT_ALLOWED")


def test_a_service_error_keeps_its_status_and_code(client: TestClient) -> None:
    assert _json_error(client.post("/refuse")) == (400, "INVALID_FIELD")


def test_a_bug_is_a_json_500(client: TestClient) -> None:
    resp = client.get("/bug")
    assert _json_error(resp) == (500, "INTERNAL_ERROR")
    assert "a bug" not in resp.text  # no internals leak


def test_cors_preflight(client: TestClient) -> None:
    resp = client.options("/hello", headers={"Origin": "https://notebook.example",
                                             "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "authorization"})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "POST" in resp.headers["access-control-allow-methods"]
    assert "authorization" in resp.headers["access-control-allow-headers"].lower()


def test_cors_header_on_simple_requests_and_errors(client: TestClient) -> None:
    origin = {"Origin": "https://notebook.example"}
    assert client.get("/hello", headers=origin).headers["access-control-allow-origin"] == "*"
    assert client.get("/nope", headers=origin).headers["access-control-allow-origin"] == "*"


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    assert _json_error(client.post("/hello", content=b"x" * 1025)) == (413, "BODY_TOO_LARGE")
    assert client.post("/hello", content=b"x" * 1024).status_code == 200


def test_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 200

    assert _json_error(client.post("/hello", content=chunks())) == (413, "BODY_TOO_LARGE")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_runner_refuses_public_binds(host: str) -> None:
    with pytest.raises(ValueError, match="allow_public"):
        ServerGroup([(asgi_app(_service()), host, 0)])
    ServerGroup([(asgi_app(_service()), host, 0)], allow_public=True)  # built, never started


def test_runner_refuses_a_mixed_group() -> None:
    with pytest.raises(ValueError):
        ServerGroup([(asgi_app(_service()), "127.0.0.1", 0), (asgi_app(_service()), "0.0.0.0", 0)])


# ------------------------------------------------------------------------------------------------
# Real sockets
# ------------------------------------------------------------------------------------------------


def base(net: Network) -> str:
    assert net.base_url is not None
    return net.base_url


@pytest.fixture(scope="module")
def http_net() -> Iterator[Network]:
    net = network(nodes=1, mode="http")
    yield net
    net.close()


@pytest.mark.integration
def test_runner_serves_on_loopback_ports() -> None:
    group = ServerGroup([(asgi_app(_service()), "127.0.0.1", 0), (asgi_app(_service()), "localhost", 0)])
    urls = group.start()
    try:
        assert len(set(urls)) == 2
        for url in urls:
            assert url.startswith("http://127.0.0.1:")
            assert httpx.get(url + "/hello").json()["path"] == "/hello"
    finally:
        group.stop()


@pytest.mark.integration
def test_runner_reports_a_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        group = ServerGroup([(asgi_app(_service()), "127.0.0.1", port)])
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="could not start"):
            group.start(timeout_s=10)
        assert time.monotonic() - t0 < 5  # reported at once, not after the timeout


@pytest.mark.integration
@pytest.mark.parametrize("method,path,expected", [
    ("GET", "/no/such/path", (404, "NOT_FOUND")),
    ("GET", "/v1/nodes/lock", (405, "METHOD_NOT_ALLOWED")),
    ("DELETE", "/v1/embeddings", (405, "METHOD_NOT_ALLOWED")),
    ("OPTIONS", "/health", (405, "METHOD_NOT_ALLOWED")),
    ("POST", "/health", (405, "METHOD_NOT_ALLOWED")),
])
def test_proxy_routing_errors_over_http(http_net: Network, method: str, path: str,
                                        expected: tuple[int, str]) -> None:
    resp = httpx.request(method, base(http_net) + path)
    assert resp.headers["content-type"] == "application/json"
    body = loads(resp.content)
    assert (resp.status_code, body["error"]["code"]) == expected


@pytest.mark.integration
def test_node_routing_errors_over_http(http_net: Network) -> None:
    node = http_net.node_urls[0]
    assert httpx.get(node + "/health").json() == {"status": "ok"}
    for method, path, status in (("GET", "/nope", 404), ("GET", "/v1/embeddings", 405)):
        resp = httpx.request(method, node + path)
        assert resp.status_code == status
        assert resp.headers["content-type"] == "application/json"


@pytest.mark.integration
def test_proxy_cors_over_http(http_net: Network) -> None:
    resp = httpx.options(base(http_net) + "/v1/confidential/embeddings",
                         headers={"Origin": "http://localhost:8888",
                                  "Access-Control-Request-Method": "POST",
                                  "Access-Control-Request-Headers": "authorization,content-type"})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "*"
    ok = httpx.get(base(http_net) + "/health", headers={"Origin": "http://localhost:8888"})
    assert ok.headers["access-control-allow-origin"] == "*"


@pytest.mark.integration
def test_too_large_body_over_http_is_413_and_the_server_keeps_serving(http_net: Network) -> None:
    router = http_net.proxy.router
    limit = router.max_body_bytes
    router.max_body_bytes = 2048
    try:
        from fakes import send

        resp = send(http_net, "POST", "/v1/confidential/embeddings", b"{" + b" " * 4096 + b"}")
        assert error_of(resp) == (413, "BODY_TOO_LARGE")
    finally:
        router.max_body_bytes = limit
    result = http_net.client().confidential_embeddings.create(input="still here", model=MODEL)
    assert result.usage.total_tokens == 4
