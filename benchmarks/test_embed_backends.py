"""One table of every embedding backend, measured in one run, interleaved (group ``embed-backends``).

On the 512 seeded texts of 4-120 words (``make_corpus()``), same model, same threads, 32 rows
per forward for sentence-transformers (its default batch size) and the engine's own token
budget, each round runs every backend once, in an order that rotates from round to
round:

* peers: sentence-transformers torch fp32 (the baseline), its bf16 weights (where the CPU runs
  bf16 natively), its ONNX backend fp32 and its ONNX dynamic int8
  (``export_dynamic_quantized_onnx_model`` with the config the CPU's flags allow), both in
  ``.venv-st-onnx`` (``make st-onnx-setup``) and timed in that process; infinity-emb (torch)
  over loopback HTTP from ``.venv-infinity``;
* ours: the engine exact on torch and on ONNX Runtime, fast and int8 (``runtime="auto"``: the
  paths this machine has, as :meth:`~atoma_lab.inference.TransformersEngine.describe` says),
  and ``atoma-lab serve --runtime onnx`` answering one plain ``/v1/embeddings`` request with
  all 512 texts over HTTP.

Each row: texts/s, the paired ratio to sentence-transformers torch and to the fastest peer at
least as good (median and range over rounds), min cosine and max abs difference to
sentence-transformers torch. The targets of issue 15 are judged on paired ratios and printed.
The table goes to ``build/bench/embed-backends.json`` (``ATOMA_LAB_BENCH_TABLE_JSON``), which
notebook 03 plots, and into the benchmark's ``extra_info`` for ``benchreport``.
``ATOMA_LAB_BENCH_TABLE_ROUNDS`` (default 5) sets the rounds.

    ATOMA_LAB_ST_ONNX_PYTHON=.venv-st-onnx/bin/python .venv/bin/python -m pytest \\
        benchmarks/test_embed_backends.py --benchmark-only -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")
httpx = pytest.importorskip("httpx")

from backends.infinity_server import InfinityServer, infinity_python  # noqa: E402
from bench_support import show  # noqa: E402
from cluster import Service, free_port  # noqa: E402

from atoma_lab.inference import DEFAULT_MODEL, resolve_model  # noqa: E402
from atoma_lab.inference.corpus import make_corpus  # noqa: E402
from atoma_lab.inference.hardware import CpuInfo  # noqa: E402
from atoma_lab.inference.transformers_engine import (  # noqa: E402
    TransformersEngine,
    cpu_has_native_bf16,
)
from atoma_lab.lab.backends import (  # noqa: E402
    Backend,
    BackendTable,
    engine_backend,
    measure_backends,
    sentence_transformers_backend,
    timed,
)

REPO = Path(__file__).resolve().parents[1]

ROUNDS = int(os.environ.get("ATOMA_LAB_BENCH_TABLE_ROUNDS", "5"))
THREADS = int(os.environ.get("ATOMA_LAB_BENCH_THREADS", str(os.cpu_count() or 1)))
BATCH_SIZE = 32
CORPUS = make_corpus()
OUT = Path(os.environ.get("ATOMA_LAB_BENCH_TABLE_JSON", REPO / "build" / "bench"
                          / "embed-backends.json"))
ST_ONNX_ENV = "ATOMA_LAB_ST_ONNX_PYTHON"
BASELINE = "sentence-transformers torch fp32"
ST_ONNX = "sentence-transformers ONNX fp32"
ST_INT8 = "sentence-transformers ONNX int8"
ST_BF16 = "sentence-transformers bf16 weights"
SERVE_HTTP = "atoma-lab serve --runtime onnx, HTTP"
API_KEY = "atl-bench-key"


class PeerProcess:
    """``benchmarks/peers/st_worker.py`` in the reference venv, one JSON line per command."""

    def __init__(self, python: str, corpus_file: Path) -> None:
        self.proc = subprocess.Popen(
            [python, str(REPO / "benchmarks" / "peers" / "st_worker.py"), str(corpus_file),
             str(THREADS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, cwd=REPO)

    def ask(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the sentence-transformers worker died on {msg}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"the worker refused {msg}: {reply}")
        return dict(reply)

    def backend(self, name: str, kind: str, model_dir: Path, tmp: Path) -> Backend:
        load = self.ask(cmd="load", name=name, kind=kind, model=str(model_dir))

        def vectors() -> np.ndarray:
            out = tmp / f"{kind}.npy"
            self.ask(cmd="vectors", name=name, out=str(out))
            return np.load(out)

        note = f"quantisation {load['quantization']}" if "quantization" in load else ""
        return Backend(name, "peer", lambda: float(self.ask(cmd="encode", name=name)["seconds"]),
                       vectors, note)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the worker ends at the end of its input
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _http_backend(name: str, role: Any, url: str, model: str, headers: dict[str, str],
                  note: str = "") -> Backend:
    client = httpx.Client(timeout=600, headers=headers)
    body = {"model": model, "input": CORPUS}

    def post() -> np.ndarray:
        resp = client.post(url, json=body)
        resp.raise_for_status()
        return np.asarray([d["embedding"] for d in resp.json()["data"]], dtype=np.float32)

    return Backend(name, role, timed(post), post, note)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    torch.set_num_threads(THREADS)
    tmp = tmp_path_factory.mktemp("backends")
    model_dir = resolve_model(DEFAULT_MODEL)
    corpus_file = tmp / "corpus.json"
    corpus_file.write_text(json.dumps(CORPUS), encoding="utf-8")
    backends: list[Backend] = []
    not_run: dict[str, str] = {}
    closers: list[Callable[[], None]] = []
    try:
        model = st.SentenceTransformer(str(model_dir), device="cpu")
        backends.append(sentence_transformers_backend(BASELINE, model, CORPUS,
                                                      batch_size=BATCH_SIZE))
        if CpuInfo.detect().native_bf16 and cpu_has_native_bf16():
            bf16 = st.SentenceTransformer(str(model_dir), device="cpu").to(torch.bfloat16)
            backends.append(sentence_transformers_backend(ST_BF16, bf16, CORPUS,
                                                          batch_size=BATCH_SIZE))
        else:
            not_run[ST_BF16] = "no native bf16 on this CPU (emulated bf16 is several times slower)"

        python = os.environ.get(ST_ONNX_ENV) or str(REPO / ".venv-st-onnx" / "bin" / "python")
        if Path(python).exists():
            peer = PeerProcess(python, corpus_file)
            closers.append(peer.close)
            backends.append(peer.backend(ST_ONNX, "onnx", model_dir, tmp))
            backends.append(peer.backend(ST_INT8, "onnx-int8", model_dir, tmp))
        else:
            not_run[ST_ONNX] = not_run[ST_INT8] = f"no {python} (make st-onnx-setup)"

        inf_python, why = infinity_python()
        if inf_python is not None:
            server = InfinityServer(inf_python, model_dir, DEFAULT_MODEL)
            server.start()
            closers.append(lambda: server.__exit__(None, None, None))
            backends.append(_http_backend("infinity-emb torch, HTTP", "peer",
                                          f"{server.url}/embeddings", DEFAULT_MODEL, {}))
        else:
            not_run["infinity-emb torch, HTTP"] = why
        not_run["infinity-emb optimum ONNX"] = ("not installed: .venv-infinity carries "
                                                "infinity-emb[server,torch] only")

        def engine(**kw: Any) -> TransformersEngine:
            # The engine's defaults: micro-batches under its token budget, no row cap.
            return TransformersEngine(model_dir, model_name=DEFAULT_MODEL, device="cpu", **kw)

        for name, kw in (("atoma-lab exact, torch", {"runtime": "torch"}),
                         ("atoma-lab exact, onnx", {"runtime": "onnx"}),
                         ("atoma-lab fast", {"runtime": "auto", "mode": "fast"}),
                         ("atoma-lab int8, onnx", {"runtime": "onnx", "mode": "int8"})):
            eng = engine(**kw)
            label = f"{name} ({eng.choice.path})" if kw.get("mode") == "fast" else name
            backends.append(engine_backend(label, eng, CORPUS))

        serve = Service("serve", "--port", str(free_port()), "--runtime", "onnx",
                        "--api-key", API_KEY)
        closers.append(serve.stop)
        base_url = serve.value("ATOMA_LAB_BASE_URL", timeout_s=300)
        backends.append(_http_backend(SERVE_HTTP, "ours", f"{base_url}/v1/embeddings",
                                      DEFAULT_MODEL, {"Authorization": f"Bearer {API_KEY}"},
                                      "plain /v1/embeddings, 512 texts in one request"))
        yield {"backends": backends, "not_run": not_run}
    finally:
        for close in reversed(closers):
            close()


def _targets(t: BackendTable) -> list[tuple[str, str, str, float]]:
    """(what, ours, versus, target) of issue 15, for the rows this run has."""
    names = {r.name for r in t.rows}
    out: list[tuple[str, str, str, float]] = []
    if ST_ONNX in names:
        for r in t.rows:
            if r.role == "ours" and r.quality == "exact" and r.name != SERVE_HTTP:
                out.append((f"{r.name} vs {ST_ONNX}", r.name, ST_ONNX, 1.2))
        if SERVE_HTTP in names:
            out.append((f"{SERVE_HTTP} vs {ST_ONNX} in-process", SERVE_HTTP, ST_ONNX, 1.0))
    st_good = [r for r in t.rows if r.role == "peer" and r.name.startswith("sentence-")
               and r.min_cosine >= 0.999]
    best = max(st_good, key=lambda r: r.vs_baseline.median, default=None)
    for r in t.rows:
        if r.name.startswith("atoma-lab fast") and best is not None:
            out.append((f"{r.name} vs {best.name}", r.name, best.name, 1.3))
            for exact in (x for x in t.rows if x.role == "ours" and x.quality == "exact"
                          and x.name not in (SERVE_HTTP, r.name)
                          and not x.name.startswith("atoma-lab fast")):
                out.append((f"{r.name} vs {exact.name} (never slower)", r.name, exact.name,
                            1.0))
    return out


@pytest.mark.benchmark(group="embed-backends")
def test_backend_table(benchmark: Any, table: dict[str, Any],
                       request: pytest.FixtureRequest) -> None:
    backends: list[Backend] = table["backends"]
    result: dict[str, BackendTable] = {}

    def measure() -> None:
        result["table"] = measure_backends(
            backends, baseline=BASELINE, texts=len(CORPUS), rounds=ROUNDS, threads=THREADS,
            not_run=table["not_run"], progress=lambda m: print(m, file=sys.stderr, flush=True))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    t = result["table"]
    for r in t.rows:  # the assertion before the figures: every backend embeds the same model
        assert r.min_cosine > 0.9, r
    saved = t.save(OUT)
    targets = [(what, t.paired(ours, versus), t.fastest(ours, versus), target)
               for what, ours, versus, target in _targets(t)]
    lines = ["", t.to_markdown(), "",
             "targets (paired median [range] over rounds; fastest rounds beside):"]
    for what, spread, fastest, target in targets:
        verdict = "met" if spread.median >= target else "MISSED"
        lines.append(f"  {what}: {spread}, fastest rounds {fastest:.2f}x (target >= {target}x) "
                     f"{verdict}")
    lines += ["", "notes:"] + [f"  {r.name}: {r.note}" for r in t.rows if r.note]
    lines.append(f"  written to {saved}")
    show(request, lines)
    benchmark.extra_info["backend_table"] = t.to_json()
    benchmark.extra_info["targets"] = [
        {"what": w, "median": s.median, "low": s.low, "high": s.high, "fastest": f,
         "target": tg} for w, s, f, tg in targets]

