"""A proxy and nodes as separate processes on loopback (``atoma-lab node`` / ``atoma-lab proxy``),
for the standalone-service tests. Every wait is bounded; every process is ended on exit."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
FAKE = "atoma-lab/fake-embedder"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pump_lines(stream: IO[str] | None, *, into: queue.Queue[str | None] | None = None,
               keep: list[str] | None = None) -> None:
    """Read a subprocess's ``stream`` on a daemon thread: each line is appended to ``keep`` and
    put on ``into``, then ``None`` is put when the stream ends."""
    assert stream is not None

    def pump() -> None:
        for line in stream:
            if keep is not None:
                keep.append(line)
            if into is not None:
                into.put(line)
        if into is not None:
            into.put(None)

    threading.Thread(target=pump, daemon=True).start()


class Service:
    """One ``atoma-lab`` subprocess; its output lines are collected on a thread."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "atoma_lab.cli", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, cwd=REPO)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        pump_lines(self.proc.stdout, into=self._queue, keep=self.lines)

    def value(self, name: str, timeout_s: float = 60.0) -> str:
        """The value of the ``NAME=value`` line the service prints when it is ready."""
        while True:
            try:
                line = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise RuntimeError(f"atoma-lab {' '.join(self.args)} printed no {name}:\n"
                                   + "".join(self.lines[-40:]))
            if line.startswith(name + "="):
                return line.strip().split("=", 1)[1]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    proxy: Service
    nodes: list[Service]
    base_url: str
    api_key: str
    node_urls: list[str] = field(default_factory=list)

    def stop(self) -> None:
        for s in [self.proxy, *self.nodes]:
            s.stop()


def start_cluster(*, nodes: int = 2, model: str = FAKE, api_key: str = "atl-cluster-key",
                  node_args: dict[int, list[str]] | None = None,
                  proxy_args: list[str] = ()) -> Cluster:  # type: ignore[assignment]
    """``nodes`` node processes (ids 1..n) and a proxy process in front of them."""
    proxy_port = free_port()
    services: list[Service] = []
    try:
        for i in range(1, nodes + 1):
            services.append(Service("node", "--port", "0", "--node-id", str(i), "--model", model,
                                    "--proxy", f"http://127.0.0.1:{proxy_port}",
                                    *(node_args or {}).get(i, [])))
        urls = [s.value("ATOMA_LAB_NODE_URL") for s in services]
        args = ["proxy", "--port", str(proxy_port), "--api-key", api_key, *proxy_args]
        for url in urls:
            args += ["--node", url]
        proxy = Service(*args)
        services.append(proxy)
        base_url = proxy.value("ATOMA_LAB_BASE_URL")
    except BaseException:
        for s in services:
            s.stop()
        raise
    return Cluster(proxy, services[:-1], base_url, api_key, urls)
