"""``kill -9`` of the proxy process under load, then a restart on the same ledger file: no
unit that a client was charged for is lost, nothing stays in flight, every unit still locked
belongs to an open lock that will expire, and the books add up (stack usage = settlements,
balance = what the stacks cost). Also the ``serve`` command's scale-out flags, end to end."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from cluster import FAKE, Service, free_port, start_cluster

from atoma_lab.client import AtomaLabClient
from atoma_lab.errors import AtomaLabError
from atoma_lab.inference import FakeEngine
from atoma_lab.server.standalone import vendor_policy
from atoma_lab.services.ledger import STACK_SIZE_TO_BUY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_KEY = "atl-crash-key"
WORKERS = 8
MAX_REQUESTS = 600  # bounds the load whatever happens
KILL_AFTER = 40  # answered requests before the kill
TEXTS = [f"crash test request {i} " + "word " * (i % 9) for i in range(MAX_REQUESTS)]
BALANCE = 10**12  # the default user's starting balance (ProxyServer's default)


def _tokens(i: int) -> int:
    return FakeEngine().tokenize([TEXTS[i]]).total_tokens


class Load:
    """Workers sending confidential requests until told to stop (or their bound is reached)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.answered: dict[int, tuple[int, int]] = {}  # request -> (stack, usage)
        self.failed: list[int] = []
        self.sent = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(WORKERS)]

    def _next(self) -> int | None:
        with self._lock:
            if self.stop.is_set() or self.sent >= MAX_REQUESTS:
                return None
            self.sent += 1
            return self.sent - 1

    def _work(self) -> None:
        with AtomaLabClient(self.base_url, api_key=API_KEY, timeout_s=10) as client:
            while (i := self._next()) is not None:
                try:
                    r = client.confidential_embeddings.create(input=TEXTS[i], model=FAKE)
                except (AtomaLabError, OSError):
                    with self._lock:
                        self.failed.append(i)
                    continue
                assert r.stack_small_id is not None
                with self._lock:
                    self.answered[i] = (r.stack_small_id, r.usage.total_tokens)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def wait_for(self, answered: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.answered) < answered:
            assert time.monotonic() < deadline, f"only {len(self.answered)} answers in {timeout_s} s"
            time.sleep(0.01)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)
            assert not t.is_alive()


def _books(path: Path) -> dict[str, object]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return {
            "stacks": [dict(r) for r in db.execute("SELECT * FROM stacks")],
            "locks": [dict(r) for r in db.execute("SELECT * FROM locks")],
            "settlements": [dict(r) for r in db.execute("SELECT * FROM settlements")],
            "balance": db.execute("SELECT balance_usdc FROM users WHERE name='default'")
                         .fetchone()[0],
        }


def test_kill_9_of_the_proxy_under_load_loses_no_charged_unit(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    cluster = start_cluster(nodes=2, api_key=API_KEY,
                            node_args={i: ["--fake-tokens-per-s", "4000"] for i in (1, 2)},
                            proxy_args=["--ledger", str(ledger), "--health-interval-s", "0.5"])
    restarted: Service | None = None
    try:
        load = Load(cluster.base_url)
        load.start()
        try:
            load.wait_for(KILL_AFTER, timeout_s=120)
            cluster.proxy.kill()  # SIGKILL while requests are in flight
            killed_at = len(load.answered)
        finally:
            load.finish()
        assert load.failed, "the kill should have cut some requests"
        answered = dict(load.answered)

        port = int(cluster.base_url.rsplit(":", 1)[1])
        args = ["proxy", "--port", str(port), "--api-key", API_KEY, "--ledger", str(ledger)]
        for url in cluster.node_urls:
            args += ["--node", url]
        restarted = Service(*args)
        assert restarted.value("ATOMA_LAB_BASE_URL") == cluster.base_url
        with AtomaLabClient(cluster.base_url, api_key=API_KEY, verify_attestation=True,
                            attestation_policy=vendor_policy()) as client:
            after = client.confidential_embeddings.create(input="after the restart", model=FAKE)
        assert after.usage.total_tokens > 0
        assert httpx.get(f"{cluster.base_url}/health", timeout=10).status_code == 200
    finally:
        if restarted is not None:
            restarted.stop()
        cluster.stop()

    books = _books(ledger)
    assert killed_at >= KILL_AFTER
    stacks, locks, settlements = books["stacks"], books["locks"], books["settlements"]
    assert isinstance(stacks, list) and isinstance(locks, list) and isinstance(settlements, list)
    charged = [s for s in settlements if s["outcome"] == "charged"]
    # Every answer a client got was charged (after the restart's one, which comes last).
    told = sum(usage for _, usage in answered.values()) + after.usage.total_tokens
    total_charged = sum(s["units_charged"] for s in charged)
    lost = sorted(set(range(load.sent)) - set(answered))
    assert total_charged >= told
    # What was charged beyond that is at most the cut requests' usage (settled, answer lost).
    assert total_charged - told <= sum(_tokens(i) for i in lost)
    assert len(answered) + 1 <= len(charged) <= len(answered) + 1 + len(lost)
    for stack in stacks:
        on_it = [s for s in charged if s["stack_small_id"] == stack["stack_small_id"]]
        told_on_it = sum(u for sid, u in answered.values() if sid == stack["stack_small_id"])
        assert stack["already_computed_units"] == sum(s["units_charged"] for s in on_it)
        assert stack["already_computed_units"] >= told_on_it
        # Units still locked are exactly those of open locks (in flight ones were given back
        # by the restart); they return when those locks expire.
        held = [lk for lk in locks if lk["stack_small_id"] == stack["stack_small_id"]]
        assert all(lk["state"] == "open" for lk in held)
        assert stack["locked_compute_units"] == sum(lk["max_num_tokens"] for lk in held)
    assert books["balance"] == BALANCE - len(stacks) * STACK_SIZE_TO_BUY // 1_000_000


def test_serve_takes_the_node_policy_and_a_fake_capacity() -> None:
    serve = Service("serve", "--port", str(free_port()), "--nodes", "2", "--model", FAKE,
                    "--api-key", API_KEY, "--node-policy", "atoma", "--fake-tokens-per-s", "1000")
    try:
        base_url = serve.value("ATOMA_LAB_BASE_URL")
        assert any("node policy atoma, 1000 tokens/s per node" in line for line in serve.lines)
        nodes: list[int] = []

        def send() -> None:
            with AtomaLabClient(base_url, api_key=API_KEY) as client:
                for _ in range(3):
                    nodes.append(client.confidential_embeddings.create(
                        input="a b c", model=FAKE).node_small_id or 0)

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert nodes == [1] * 12  # Atoma's rule: the one user stays on its stack's node
    finally:
        serve.stop()
