"""sentence-transformers with its ONNX backend, driven over stdin/stdout from the benchmark.

Runs in ``.venv-st-onnx`` (``make st-onnx-setup``: optimum-onnx pins transformers<4.58, which the
project's venv must not take). One JSON object per line in, one per line out:

* ``{"cmd": "load", "name": N, "kind": "onnx" | "onnx-int8", "model": FOLDER}``: loads
  ``SentenceTransformer(copy of FOLDER, backend="onnx")`` (exported to ONNX on first load, as a
  user gets it); ``onnx-int8`` then applies ``export_dynamic_quantized_onnx_model`` with the
  quantisation config the CPU's flags allow and loads that file. The copy is a temporary folder:
  the installed model folder is never written.
* ``{"cmd": "encode", "name": N}``: encodes the corpus (``encode(batch_size=32,
  normalize_embeddings=True)``) and answers ``{"seconds": ...}``, timed in this process.
* ``{"cmd": "vectors", "name": N, "out": PATH}``: saves the corpus's vectors as ``.npy``.
* ``{"cmd": "quit"}``.

Started as ``python st_worker.py CORPUS.json THREADS``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BATCH_SIZE = 32


def _quantization_config() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def main() -> int:
    corpus = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    threads = int(sys.argv[2])
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    torch.set_num_threads(threads)
    models: dict[str, Any] = {}
    scratch = Path(tempfile.mkdtemp(prefix="st-onnx-"))
    try:
        for line in sys.stdin:
            msg = json.loads(line)
            cmd = msg["cmd"]
            reply: dict[str, Any] = {"ok": True}
            if cmd == "quit":
                break
            if cmd == "load":
                folder = scratch / msg["name"]
                shutil.copytree(msg["model"], folder)
                start = time.perf_counter()
                model = SentenceTransformer(str(folder), backend="onnx", device="cpu")
                if msg["kind"] == "onnx-int8":
                    config = _quantization_config()
                    export_dynamic_quantized_onnx_model(model, config, str(folder))
                    model = SentenceTransformer(
                        str(folder), backend="onnx", device="cpu",
                        model_kwargs={"file_name": f"onnx/model_qint8_{config}.onnx"})
                    reply["quantization"] = config
                models[msg["name"]] = model
                reply["load_s"] = time.perf_counter() - start
            elif cmd == "encode":
                model = models[msg["name"]]
                start = time.perf_counter()
                model.encode(corpus, batch_size=BATCH_SIZE, normalize_embeddings=True,
                             convert_to_numpy=True)
                reply["seconds"] = time.perf_counter() - start
            elif cmd == "vectors":
                vectors = models[msg["name"]].encode(corpus, batch_size=BATCH_SIZE,
                                                     normalize_embeddings=True,
                                                     convert_to_numpy=True)
                np.save(msg["out"], np.asarray(vectors, dtype=np.float32))
            else:
                reply = {"ok": False, "error": f"unknown command {cmd!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
