"""Serve several ASGI apps on loopback ports from one background thread (uvicorn)."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from atoma_lab.server.limits import ServerLimits
from atoma_lab.server.protocol import guarded_protocol
from atoma_lab.server.tls import ServerTls
from atoma_lab.transport.loop import BackgroundTasks, new_event_loop

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})  # served without allow_public


class ServerGroup(BackgroundTasks):
    """Start apps on ``(host, port)`` pairs (port 0 picks a free one), in one event loop thread.

    Binding anything but loopback needs ``allow_public=True``: a research box should not expose
    a simulator by accident. Every listener holds to ``limits`` (header size and time, idle
    time, open connections: :mod:`atoma_lab.server.protocol`); build its app with the same
    ``limits`` (:func:`~atoma_lab.server.app.asgi_app`) for the body's. With ``tls`` every
    listener speaks HTTPS (its URL ``https://``), and requires client certificates when
    ``tls.client_ca_file`` is set.
    """

    def __init__(self, apps: list[tuple[Any, str, int]], *, allow_public: bool = False,
                 on_stop: Callable[[], Awaitable[None]] | None = None,
                 limits: ServerLimits | None = None, tls: ServerTls | None = None) -> None:
        for _, host, _ in apps:
            if host not in LOOPBACK_HOSTS and not allow_public:
                raise ValueError(f"refusing to bind {host}: pass allow_public=True to serve beyond loopback")
        super().__init__()
        self.limits = limits or ServerLimits()
        self.tls = tls
        protocol = guarded_protocol(self.limits)
        ssl_options: dict[str, Any] = {} if tls is None else {
            "ssl_certfile": tls.certfile, "ssl_keyfile": tls.keyfile,
            "ssl_ca_certs": tls.client_ca_file, "ssl_cert_reqs": tls.cert_reqs}
        self._configs = [uvicorn.Config(app, host=host, port=port, log_level="warning",
                                        lifespan="off", access_log=False,
                                        timeout_keep_alive=math.ceil(self.limits.idle_timeout_s),
                                        loop="auto", http=protocol, **ssl_options)
                         for app, host, port in apps]
        self._servers = [uvicorn.Server(c) for c in self._configs]
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._on_stop = on_stop
        self.urls: list[str] = []

    def start(self, timeout_s: float = 30.0) -> list[str]:
        ready = threading.Event()
        errors: list[BaseException] = []

        async def serve(server: uvicorn.Server) -> None:
            try:
                await server.serve()
            except SystemExit as exc:  # uvicorn exits when it cannot bind (port in use, ...)
                raise RuntimeError(f"uvicorn could not start on {server.config.host}:"
                                   f"{server.config.port} (exit status {exc.code})") from None

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            tasks = [asyncio.create_task(serve(s)) for s in self._servers]
            while not all(s.started for s in self._servers):
                if any(t.done() for t in tasks):
                    for t in tasks:
                        if t.done() and t.exception() is not None:
                            errors.append(t.exception())  # type: ignore[arg-type]
                    if not errors:
                        errors.append(RuntimeError("a server stopped during start-up"))
                    ready.set()
                    return
                await asyncio.sleep(0.01)
            ready.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._on_stop is not None:
                await self._on_stop()

        self._thread = threading.Thread(target=lambda: new_event_loop().run_until_complete(main()),
                                        name="atoma-lab-servers", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise RuntimeError("servers did not start in time")
        if errors:
            self.stop()
            raise RuntimeError(f"server failed to start: {errors[0]!r}")
        self.urls = []
        for server in self._servers:
            sock = server.servers[0].sockets[0]
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            scheme = "http" if self.tls is None else "https"
            self.urls.append(f"{scheme}://{shown}:{port}")
        return self.urls

    def run(self, coro: Awaitable[Any], timeout_s: float | None = None) -> Any:
        """Run a coroutine in the servers' loop and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)  # type: ignore[arg-type]

    def stop(self, timeout_s: float = 10.0) -> None:
        self.cancel_background()
        for s in self._servers:
            s.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
