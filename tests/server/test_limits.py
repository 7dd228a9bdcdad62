"""Listener limits (issue 16, items 1, 5 and 10): header count and size, a body refused before
it is read, header, body and idle timeouts, the connection cap, and a client that goes away
mid-body. Raw sockets on 127.0.0.1 send what an HTTP client would refuse to; every loop is
bounded in count and time. Attack sizes are scaled down to what shows each bound (a cap of 100
headers needs 5,000, not 40,000)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from rawhttp import connect, read_until_closed, status_and_code
from starlette.testclient import TestClient

from atoma_lab.errors import AuthenticationError
from atoma_lab.server import ServerGroup, ServerLimits, asgi_app
from atoma_lab.server.app import headers_from_asgi
from atoma_lab.services.routing import Router
from atoma_lab.transport.base import Headers, Request, Response

TOKEN = "right-token"


def _router() -> Router:
    router = Router()

    async def hello(request: Request) -> Response:
        return Response.json({"ok": True, "body_bytes": len(request.body)})

    def needs_token(request: Request) -> None:
        if request.bearer_token() != TOKEN:
            raise AuthenticationError("invalid API token")

    router.add("GET", "/health", hello)
    router.add("POST", "/echo", hello)
    router.add("POST", "/private", hello, guard=needs_token)
    return router


@contextmanager
def serving(limits: ServerLimits | None = None) -> Iterator[int]:
    """A listener on a free loopback port; yields the port."""
    router = _router()
    group = ServerGroup([(asgi_app(router, precheck=router.check_head, limits=limits),
                          "127.0.0.1", 0)], limits=limits)
    url = group.start()[0]
    try:
        yield int(url.rsplit(":", 1)[1])
    finally:
        group.stop()


def get_health(port: int) -> int:
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return status_and_code(read_until_closed(sock))[0]


# ------------------------------------------------------------------------------------------------
# Item 1: the header map, and header caps
# ------------------------------------------------------------------------------------------------


class _CountingPairs:
    """Raw header pairs that count how often they are walked."""

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self.pairs = pairs
        self.walks = 0

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        self.walks += 1
        return iter(self.pairs)


def test_the_header_map_is_one_dict_built_in_one_pass() -> None:
    """Starlette's ``Headers`` scans its list for each name, so ``dict(request.headers)`` walked
    it once per header (quadratic: 40,000 headers froze the loop for 11 s). Ours walks the raw
    pairs once into a dict (hashed look-ups); of a repeated name the first value counts."""
    n = 5000
    raw = _CountingPairs([(b"x-h%d" % i, b"v") for i in range(n)]
                         + [(b"authorization", b"Bearer first"), (b"Authorization", b"Bearer 2")])
    headers = headers_from_asgi(raw)
    assert raw.walks == 1
    assert isinstance(headers, dict) and isinstance(headers, Headers)
    assert len(headers) == n + 1
    assert headers["x-h4999"] == "v" and headers.get("AUTHORIZATION") == "Bearer first"


def test_the_app_refuses_too_many_headers_before_anything_reads_them() -> None:
    """Any ASGI server (here Starlette's test client, without the guarded protocol): 431 JSON."""
    limits = ServerLimits(max_header_count=100, max_header_bytes=4096)
    with TestClient(asgi_app(_router(), limits=limits)) as client:
        few = {f"x-h{i}": "v" for i in range(90)}
        assert client.get("/health", headers=few).status_code == 200
        many = {f"x-h{i}": "v" for i in range(150)}
        resp = client.get("/health", headers=many)
        assert resp.status_code == 431 and resp.json()["error"]["code"] == "HEADERS_TOO_LARGE"
        big = client.get("/health", headers={"x-big": "v" * 5000})
        assert big.status_code == 431 and big.json()["error"]["code"] == "HEADERS_TOO_LARGE"


@pytest.mark.integration
def test_a_header_flood_is_431_at_the_cap_and_others_keep_being_served(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="atoma_lab.server")
    with serving() as port:  # the default limits: 100 headers
        flood = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
        with connect(port) as attacker:
            attacker.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n" + flood[:200])
            assert get_health(port) == 200  # a slow flood holds nobody up
            # Refused at the 101st header, perhaps before the rest arrived.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                attacker.sendall(flood[200:] + b"\r\n")
            answer = read_until_closed(attacker)
        assert status_and_code(answer) == (431, "HEADERS_TOO_LARGE")
        assert "more than 100 headers" in caplog.text  # refused at the cap, not at the end
        assert get_health(port) == 200


@pytest.mark.integration
def test_an_endless_header_is_cut_at_the_size_cap(caplog: pytest.LogCaptureFixture) -> None:
    """One header that never ends: refused once its bytes pass the cap (nothing buffers it)."""
    caplog.set_level(logging.INFO, logger="atoma_lab.server")
    limits = ServerLimits(max_header_bytes=8 * 1024)
    with serving(limits) as port, connect(port) as attacker:
        attacker.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(1000):  # at most 1 MiB; the server hangs up after 16 KiB
                attacker.sendall(b"a" * 1024)
                time.sleep(0.002)
        assert "more than 8192 bytes of headers" in caplog.text
        assert get_health(port) == 200


# ------------------------------------------------------------------------------------------------
# Item 5: refused before the body, timeouts, connection cap
# ------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_an_unauthenticated_body_is_refused_before_it_is_read() -> None:
    """Headers declaring 50 MB and 1 KiB of body: the 401 arrives while 99.99% of the body is
    still unsent; the connection then closes (after a bounded drain), the server keeps serving."""
    limits = ServerLimits(body_timeout_s=1.0)
    with serving(limits) as port, connect(port) as attacker:
        attacker.sendall(b"POST /private HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer wrong\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
                         + b"x" * 1024)
        first = attacker.recv(65536)
        assert status_and_code(first) == (401, "AUTH_ERROR")
        assert b"connection: close" in first.lower()
        t0 = time.monotonic()
        assert read_until_closed(attacker) == b""  # closed without reading the other 49.99 MB
        assert time.monotonic() - t0 < 8  # the drain lasts at most body_timeout_s
        assert get_health(port) == 200


@pytest.mark.integration
def test_a_declared_length_over_the_limit_is_413_before_the_body() -> None:
    limits = ServerLimits(max_body_bytes=1000)
    with serving(limits) as port, connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
        assert status_and_code(sock.recv(65536)) == (413, "BODY_TOO_LARGE")


@pytest.mark.integration
def test_a_refused_body_that_is_sent_in_full_still_gets_its_answer() -> None:
    """A client that keeps sending after the refusal (no early read) reads the answer once its
    body is in: the server drops the rest instead of resetting the connection."""
    limits = ServerLimits(max_body_bytes=1000)
    with serving(limits) as port, connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n"
                     + b"y" * 300_000)
        assert status_and_code(read_until_closed(sock)) == (413, "BODY_TOO_LARGE")


@pytest.mark.integration
@pytest.mark.parametrize(("limits", "start"), [
    pytest.param(ServerLimits(header_timeout_s=0.5), b"GET /health HTTP/1.1\r\n", id="headers"),
    pytest.param(ServerLimits(body_timeout_s=0.5),
                 b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc", id="body"),
])
def test_a_request_trickled_in_is_408_after_its_timeout(limits: ServerLimits, start: bytes) -> None:
    """Slowloris: headers that never end, or a body that never completes, one byte every
    0.05 s, are cut once the header or body timeout is up (a deadline, not an idle timeout: the
    trickle would keep an idle timer from ever firing); the server serves on."""
    with serving(limits) as port, connect(port) as sock:
        t0 = time.monotonic()
        sock.sendall(start)
        for _ in range(200):  # one byte every 0.05 s, for at most 10 s
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
        answer = read_until_closed(sock)
        elapsed = time.monotonic() - t0
        assert status_and_code(answer) == (408, "REQUEST_TIMEOUT")
        assert 0.4 < elapsed < 8  # the deadline, then a drain; a trickle never cut: over 10 s
        assert get_health(port) == 200


@pytest.mark.integration
def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() -> None:
    limits = ServerLimits(header_timeout_s=0.3)
    with serving(limits) as port, connect(port) as sock:
        t0 = time.monotonic()
        assert read_until_closed(sock) == b""
        assert 0.2 < time.monotonic() - t0 < 8


@pytest.mark.integration
def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    limits = ServerLimits(idle_timeout_s=0.3)
    with serving(limits) as port, connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        t0 = time.monotonic()
        answer = read_until_closed(sock)  # the answer, then the close once idle
        assert status_and_code(answer)[0] == 200
        assert 0.2 < time.monotonic() - t0 < 8


@pytest.mark.integration
def test_connections_over_the_cap_get_503_and_the_server_stays_healthy() -> None:
    limits = ServerLimits(max_connections=4, header_timeout_s=30.0)
    with serving(limits) as port:
        idle = [connect(port) for _ in range(4)]
        try:
            time.sleep(0.2)  # the server has accepted them
            with connect(port) as extra:
                assert status_and_code(read_until_closed(extra)) == (503, "SERVICE_UNAVAILABLE")
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 5
        while True:  # the closed ones leave; a real request gets through again
            try:
                if get_health(port) == 200:
                    break
            except (ValueError, IndexError, ConnectionError):
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)


# ------------------------------------------------------------------------------------------------
# Item 10: a client that goes away mid-body
# ------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_client_gone_mid_body_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with serving() as port:
        with connect(port) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nab")
            time.sleep(0.2)  # the app is reading the body
        deadline = time.monotonic() + 5
        while "went away" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get_health(port) == 200
    lines = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in caplog.text and "unhandled" not in caplog.text
