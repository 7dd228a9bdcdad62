"""Scale-out runs: how many confidential requests a network of N nodes serves under each node
policy, with the fake engine given a device's capacity so that the nodes, not the host, are
the bottleneck.

    run = measure_scale(nodes=4, node_policy="least-loaded", mode="http", fake_tokens_per_s=200)
    run.throughput_rps, run.p99_ms, run.node_requests, run.concentration, run.ledger.exact
    sweep = scale_sweep(node_counts=(1, 2, 4), modes=("inprocess", "http", "ray"))
    sweep.to_frame()       # one row per run; sweep.speedup(run) against one node

Each run builds its own network (``build_network``: in-process; over loopback HTTP exactly as
``atoma-lab serve`` runs it; or ``mode="ray"``, each node an actor with its own fake engine and
the proxy in this process, on the Ray instance this process is connected to, else a local one
started then, or the cluster named by ``ray_address=``), one user per concurrent client (as
separate programs would be), a warm-up of one request per client, then ``requests``
confidential requests timed by :func:`~atoma_lab.lab.load.run_load`. Every answer must arrive
(a failure raises), and the ledger (in this process in every mode) is checked afterwards:
units charged equal the usage the clients were told, nothing is left locked.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from atoma_lab.display import kv_table, progress, table
from atoma_lab.display import to_frame as frame_of
from atoma_lab.lab.load import LoadResult, run_load
from atoma_lab.lab.network import Network, build_network
from atoma_lab.services.ledger import Ledger
from atoma_lab.services.policy import NODE_POLICIES

DEFAULT_FAKE_TOKENS_PER_S = 200.0  # per node: a few dozen short requests a second
DEFAULT_CONCURRENCY = 32  # clients


def scale_inputs(n: int) -> list[str]:
    """``n`` short texts of 5 to 17 fake-engine tokens (11 on average)."""
    return [f"scale request {i} " + "word " * (i % 13) for i in range(n)]


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """The books after a run: what was charged against what the clients were told they used."""

    units_charged: int
    usage_tokens: int
    open_locks: int
    locked_units: int
    computed_units: int  # ``already_computed_units`` summed over the stacks

    @property
    def exact(self) -> bool:
        return (self.units_charged == self.usage_tokens == self.computed_units
                and self.open_locks == 0 and self.locked_units == 0)


def check_ledger(ledger: Ledger, usage_tokens: int) -> LedgerCheck:
    """Compare the ledger with ``usage_tokens``, the usage all answered requests reported."""
    stacks = ledger.stacks()
    return LedgerCheck(
        units_charged=sum(int(s["units_charged"]) for s in ledger.settlements()),  # type: ignore[call-overload]
        usage_tokens=usage_tokens, open_locks=len(ledger.open_locks()),
        locked_units=sum(s.locked_compute_units for s in stacks),
        computed_units=sum(s.already_computed_units for s in stacks))


@dataclass
class ScaleRun:
    """One network size under one policy: its load run, where the requests went, its books."""

    mode: str
    nodes: int
    policy: str
    fake_tokens_per_s: float | None
    load: LoadResult
    node_requests: dict[int, int]  # timed requests answered by each node (every node listed)
    ledger: LedgerCheck

    @property
    def throughput_rps(self) -> float:
        return self.load.throughput_rps

    @property
    def p50_ms(self) -> float:
        return self.load.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.load.percentile_ms(99)

    @property
    def concentration(self) -> float:
        """The share of the requests the busiest node served (1.0: one node did everything)."""
        total = sum(self.node_requests.values())
        return max(self.node_requests.values()) / total if total else float("nan")

    @property
    def nodes_used(self) -> int:
        return sum(1 for n in self.node_requests.values() if n)

    def row(self) -> dict[str, Any]:
        return {"mode": self.mode, "nodes": self.nodes, "policy": self.policy,
                "requests": self.load.requests, "concurrency": self.load.concurrency,
                "throughput_rps": self.throughput_rps, "p50_ms": self.p50_ms,
                "p99_ms": self.p99_ms, "nodes_used": self.nodes_used,
                "concentration": self.concentration, "ledger_exact": self.ledger.exact}

    def _repr_html_(self) -> str:
        return kv_table({**self.row(), **{f"node {n}": c for n, c in self.node_requests.items()}},
                        title="scale run")

    def __repr__(self) -> str:
        return (f"ScaleRun({self.mode}, nodes={self.nodes}, {self.policy}: "
                f"{self.throughput_rps:.1f} req/s, p50 {self.p50_ms:.0f} ms, "
                f"p99 {self.p99_ms:.0f} ms, {self.nodes_used} node(s) used)")


class ScaleSetup:
    """A network ready for a scale run: built, one user per client, warmed up (one request per
    client). :meth:`run` times a load on it; :meth:`result` checks the books. Close it (or use
    it as a context manager) when done. :func:`measure_scale` does all three."""

    def __init__(self, *, nodes: int, node_policy: str = "least-loaded", mode: str = "inprocess",
                 fake_tokens_per_s: float | None = DEFAULT_FAKE_TOKENS_PER_S,
                 concurrency: int = DEFAULT_CONCURRENCY, timeout_s: float = 600.0,
                 **network_options: Any) -> None:
        from atoma_lab.inference import FAKE_MODEL

        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.nodes, self.policy, self.mode = nodes, node_policy, mode
        self.fake_tokens_per_s, self.concurrency, self.timeout_s = (
            fake_tokens_per_s, concurrency, timeout_s)
        self.model: str = network_options.setdefault("model", FAKE_MODEL)
        self.net: Network = build_network(nodes=nodes, mode=mode,  # type: ignore[arg-type]
                                          node_policy=node_policy,
                                          fake_tokens_per_s=fake_tokens_per_s, **network_options)
        self._answered: list[Any] = []
        try:
            keys = [self.net.add_user(f"scale-client-{i}") for i in range(concurrency)]
            self._turn = itertools.cycle(keys)
            self._turn_lock = threading.Lock()
            self.run(scale_inputs(concurrency), what="warm-up")
        except BaseException:
            self.net.close()
            raise

    def _client(self) -> Any:
        with self._turn_lock:
            key = next(self._turn)
        return self.net.client(api_key=key)

    def run(self, inputs: Sequence[str], *, what: str = "run") -> LoadResult:
        """Send ``inputs`` (one request each) from the clients; ``RuntimeError`` if any failed
        (a scaling figure over lost requests would mean nothing)."""
        load = run_load(self._client, inputs, concurrency=self.concurrency, model=self.model,
                        timeout_s=self.timeout_s, show_progress=False)
        if load.errors:
            i, exc = next(iter(load.errors.items()))
            raise RuntimeError(f"{len(load.errors)} request(s) of the {what} failed "
                               f"({self.nodes} node(s), {self.policy}, {self.mode}); "
                               f"request {i}: {exc!r}")
        self._answered += load.results
        return load

    def result(self, load: LoadResult) -> ScaleRun:
        """``load`` (a :meth:`run`) with where its requests went and the books so far."""
        served = Counter(r.node_small_id for r in load.results if r is not None)
        usage = sum(r.usage.total_tokens for r in self._answered if r is not None)
        return ScaleRun(mode=self.mode, nodes=self.nodes, policy=self.policy,
                        fake_tokens_per_s=self.fake_tokens_per_s, load=load,
                        node_requests={n.node_small_id: served.get(n.node_small_id, 0)
                                       for n in self.net.nodes},
                        ledger=check_ledger(self.net.ledger, usage))

    def close(self) -> None:
        self.net.close()

    def __enter__(self) -> ScaleSetup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def measure_scale(*, nodes: int, node_policy: str = "least-loaded", mode: str = "inprocess",
                  fake_tokens_per_s: float | None = DEFAULT_FAKE_TOKENS_PER_S,
                  requests: int = 200, concurrency: int = DEFAULT_CONCURRENCY,
                  inputs: Sequence[str] | None = None, timeout_s: float = 600.0,
                  **network_options: Any) -> ScaleRun:
    """Build a network of ``nodes`` fake-engine nodes under ``node_policy``, send ``requests``
    confidential requests from ``concurrency`` clients (one user each), and return what
    happened. ``network_options`` go to :func:`~atoma_lab.lab.network.build_network`.
    Raises ``RuntimeError`` when a request failed."""
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be at least 1")
    texts = list(inputs) if inputs is not None else scale_inputs(requests)
    if len(texts) != requests:
        raise ValueError("give one input per request")
    with ScaleSetup(nodes=nodes, node_policy=node_policy, mode=mode,
                    fake_tokens_per_s=fake_tokens_per_s, concurrency=concurrency,
                    timeout_s=timeout_s, **network_options) as setup:
        return setup.result(setup.run(texts))


SWEEP_COLUMNS = ("mode", "nodes", "policy", "requests", "concurrency", "throughput_rps",
                 "speedup", "ideal", "p50_ms", "p99_ms", "nodes_used", "concentration",
                 "ledger_exact")


@dataclass
class ScaleSweep:
    """Runs over node counts, policies and modes."""

    runs: list[ScaleRun] = field(default_factory=list)

    def baseline(self, run: ScaleRun) -> ScaleRun | None:
        """The one-node run of ``run``'s mode (same policy if there is one: with a single
        node every policy places alike)."""
        ones = [r for r in self.runs if r.mode == run.mode and r.nodes == 1]
        same = [r for r in ones if r.policy == run.policy]
        return (same or ones)[0] if ones else None

    def speedup(self, run: ScaleRun) -> float:
        """``run``'s throughput over its mode's one-node throughput (ideal: ``run.nodes``)."""
        base = self.baseline(run)
        return float("nan") if base is None else run.throughput_rps / base.throughput_rps

    def rows(self) -> list[dict[str, Any]]:
        return [{**r.row(), "speedup": self.speedup(r), "ideal": float(r.nodes)} for r in self.runs]

    def to_frame(self) -> Any:
        """:meth:`rows` as a :class:`pandas.DataFrame`."""
        return frame_of(self.rows(), SWEEP_COLUMNS)

    def _repr_html_(self) -> str:
        return table(self.rows(), SWEEP_COLUMNS, title="scale-out sweep")


def scale_sweep(*, node_counts: Iterable[int] = (1, 2, 4),
                policies: Iterable[str] = NODE_POLICIES,
                modes: Iterable[str] = ("inprocess", "http"), show_progress: bool = True,
                **options: Any) -> ScaleSweep:
    """:func:`measure_scale` for each mode, node count and policy (``options`` go to it), with a
    bar of the runs done. One node is run once per mode: with one node every policy places
    alike."""
    sweep = ScaleSweep()
    policies = list(policies)
    plan = [(mode, nodes, policy) for mode in modes for nodes in node_counts
            for policy in (policies[:1] if nodes == 1 else policies)]
    with progress(total=len(plan), desc="scale runs", unit="run", show=show_progress) as bar:
        for mode, nodes, policy in plan:
            sweep.runs.append(measure_scale(nodes=nodes, node_policy=policy, mode=mode,
                                            **options))
            bar.update(1)
    return sweep


__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_FAKE_TOKENS_PER_S",
    "SWEEP_COLUMNS",
    "LedgerCheck",
    "ScaleRun",
    "ScaleSetup",
    "ScaleSweep",
    "check_ledger",
    "measure_scale",
    "scale_inputs",
    "scale_sweep",
]
