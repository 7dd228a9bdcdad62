"""Start and stop an infinity-emb server (``infinity_emb v2``) on 127.0.0.1 from its own venv.

infinity-emb brings its own sentence-transformers and transformers, so it lives in
``.venv-infinity`` (``make infinity-setup``). Its interpreter is ``$ATOMA_LAB_INFINITY_PYTHON``,
else ``<repo>/.venv-infinity/bin/python``. Tests skip without it, except under CI (``CI=true``),
where its absence is a failure: ``make test`` installs it. Used by tests/backends and
benchmarks/test_backends.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
PYTHON_ENV = "ATOMA_LAB_INFINITY_PYTHON"
DEFAULT_PYTHON = REPO / ".venv-infinity" / "bin" / "python"
READY_TIMEOUT_S = 120.0  # process start to a healthy server (measured here: about 10 s)
STOP_TIMEOUT_S = 10.0


def infinity_python() -> tuple[Path | None, str]:
    """The interpreter with infinity-emb installed, or ``None`` and why not."""
    configured = os.environ.get(PYTHON_ENV)
    python = Path(configured) if configured else DEFAULT_PYTHON
    where = f"{PYTHON_ENV}={configured}" if configured else str(DEFAULT_PYTHON)
    if not python.exists():
        return None, f"no infinity-emb interpreter at {where} (run `make infinity-setup`)"
    found = subprocess.run(
        [str(python), "-c", "import importlib.util, sys; "
                            "sys.exit(importlib.util.find_spec('infinity_emb') is None)"],
        capture_output=True, timeout=60, check=False)
    if found.returncode != 0:
        return None, f"{where} has no infinity_emb (run `make infinity-setup`)"
    return python, ""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class InfinityServer:
    """``infinity_emb v2`` serving the model folder ``model_dir`` as ``served_name``, offline,
    on the CPU, bound to 127.0.0.1 only. ``url`` is its OpenAI API root (``/embeddings``)."""

    def __init__(self, python: Path, model_dir: Path, served_name: str, *,
                 batch_size: int = 32) -> None:
        self.python = python
        self.model_dir = model_dir
        self.served_name = served_name
        self.batch_size = batch_size
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives with the server; __exit__ closes it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        self.port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        command = [str(self.python), "-m", "infinity_emb.cli", "v2",
                   "--model-id", str(self.model_dir), "--served-model-name", self.served_name,
                   "--host", "127.0.0.1", "--port", str(self.port), "--engine", "torch",
                   "--device", "cpu", "--no-bettertransformer", "--no-model-warmup",
                   "--batch-size", str(self.batch_size)]
        self._proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=env, cwd=tempfile.gettempdir())
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"infinity_emb exited with {self._proc.returncode}:\n"
                                       f"{self.log_tail()}")
                try:
                    if client.get(self.url + "/health").status_code == 200:
                        return self.url
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"infinity_emb was not ready within {timeout_s:g} s:\n"
                                       f"{self.log_tail()}")
                time.sleep(0.25)

    def log_tail(self, chars: int = 4000) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-chars:]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def __enter__(self) -> InfinityServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()
