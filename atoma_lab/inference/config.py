"""Read a sentence-transformers model folder's configuration (no torch here).

A sentence-transformers folder describes its pipeline in ``modules.json``: a ``Transformer``
(the Hugging Face model, in the folder itself or a sub-folder), a ``Pooling`` module (its
``config.json`` names the pooling mode) and, for most embedding models, a ``Normalize`` module.
``sentence_bert_config.json`` carries ``max_seq_length`` and ``do_lower_case``;
``config_sentence_transformers.json`` carries the named ``prompts`` and ``default_prompt_name``.

A plain Hugging Face folder (no ``modules.json``) gets sentence-transformers' own defaults for it:
mean pooling over the last hidden state, no prompt, the tokenizer's length limit.

Modules this engine cannot run (``Dense``, ``LayerNorm``, custom code, ...) raise
:class:`~atoma_lab.errors.ModelLoadError` instead of being skipped: skipping one would give
vectors that silently differ from the model's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from atoma_lab.errors import ModelLoadError

PoolingMode = Literal["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]

# sentence-transformers' order of concatenation when several modes are on (Pooling.POOLING_MODES).
POOLING_MODES: tuple[PoolingMode, ...] = (
    "cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken",
)
# Legacy boolean keys of ``1_Pooling/config.json`` (sentence-transformers < 5) and their modes.
_LEGACY_POOLING_KEYS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_MODE_ALIASES: dict[str, PoolingMode] = {
    "cls": "cls", "cls_token": "cls", "max": "max", "max_tokens": "max", "mean": "mean",
    "mean_tokens": "mean", "mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "mean_sqrt_len": "mean_sqrt_len_tokens", "weightedmean": "weightedmean",
    "weightedmean_tokens": "weightedmean", "lasttoken": "lasttoken", "last_token": "lasttoken",
    "last-token": "lasttoken",
}
_TRANSFORMER_TYPES = ("Transformer",)
_POOLING_TYPES = ("Pooling",)
_NORMALIZE_TYPES = ("Normalize",)


@dataclass(frozen=True)
class SentenceTransformerConfig:
    """What the engine needs to know about a model folder beyond the Hugging Face model itself."""

    transformer_dir: Path
    """Folder holding the Hugging Face ``config.json``, weights and tokenizer."""
    pooling_modes: tuple[PoolingMode, ...] = ("mean",)
    """Pooling modes, concatenated in this order (sentence-transformers' order)."""
    normalize: bool = False
    """Whether the model ends in a ``Normalize`` module."""
    max_seq_length: int | None = None
    """``sentence_bert_config.json``'s limit in tokens (special tokens included), if any."""
    do_lower_case: bool = False
    """Lower-case text before tokenising (``sentence_bert_config.json``)."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Named prompts prepended to text (``config_sentence_transformers.json``)."""
    default_prompt_name: str | None = None
    """The prompt applied when the caller names none."""
    include_prompt: bool = True
    """Whether prompt tokens take part in pooling (``1_Pooling/config.json``)."""
    embedding_dimension: int | None = None
    """``1_Pooling/config.json``'s word embedding dimension, if stated."""
    is_sentence_transformers: bool = False
    """Whether the folder has a ``modules.json``."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path.name} in {path.parent}: {exc}") from exc


def _type_is(module_type: str, names: tuple[str, ...]) -> bool:
    return module_type.rsplit(".", 1)[-1] in names


def _pooling_modes(cfg: dict[str, Any], where: Path) -> tuple[PoolingMode, ...]:
    raw = cfg.get("pooling_mode")
    modes: set[PoolingMode] = set()
    if raw is not None:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(m, str) for m in items):
            raise ModelLoadError(f"{where}: pooling_mode must be a string or a list of strings")
        for m in items:
            if m not in _MODE_ALIASES:
                raise ModelLoadError(f"{where}: unknown pooling mode {m!r}")
            modes.add(_MODE_ALIASES[m])
    else:
        for key, mode in _LEGACY_POOLING_KEYS.items():
            if cfg.get(key):
                modes.add(mode)
    if not modes:
        raise ModelLoadError(f"{where}: no pooling mode is switched on")
    return tuple(m for m in POOLING_MODES if m in modes)


def read_sentence_transformers_config(folder: Path | str) -> SentenceTransformerConfig:
    """Read the sentence-transformers files of ``folder`` (defaults where they are absent).

    Raises :class:`ModelLoadError` when ``folder`` is not a directory, a file is not valid JSON,
    or ``modules.json`` lists a module the engine cannot run.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ModelLoadError(f"model folder {root} does not exist or is not a directory")

    transformer_dir = root
    pooling_modes: tuple[PoolingMode, ...] = ("mean",)
    include_prompt = True
    embedding_dimension: int | None = None
    normalize = False
    modules_path = root / "modules.json"
    is_st = modules_path.is_file()
    if is_st:
        modules = _read_json(modules_path)
        if not isinstance(modules, list):
            raise ModelLoadError(f"{modules_path}: expected a list of modules")
        seen_transformer = False
        for module in sorted(modules, key=lambda m: m.get("idx", 0) if isinstance(m, dict) else 0):
            if not isinstance(module, dict) or not isinstance(module.get("type"), str):
                raise ModelLoadError(f"{modules_path}: each module needs a 'type'")
            mtype: str = module["type"]
            mpath = root / str(module.get("path", ""))
            if _type_is(mtype, _TRANSFORMER_TYPES):
                if seen_transformer:
                    raise ModelLoadError(f"{modules_path}: more than one Transformer module")
                seen_transformer = True
                transformer_dir = mpath
            elif _type_is(mtype, _POOLING_TYPES):
                pcfg_path = mpath / "config.json"
                pcfg = _read_json(pcfg_path) if pcfg_path.is_file() else {}
                if not isinstance(pcfg, dict):
                    raise ModelLoadError(f"{pcfg_path}: expected an object")
                pooling_modes = _pooling_modes(pcfg, pcfg_path)
                include_prompt = bool(pcfg.get("include_prompt", True))
                dim = pcfg.get("word_embedding_dimension", pcfg.get("embedding_dimension"))
                embedding_dimension = dim if isinstance(dim, int) else None
            elif _type_is(mtype, _NORMALIZE_TYPES):
                normalize = True
            else:
                raise ModelLoadError(
                    f"{root}: module {mtype!r} in modules.json is not supported by this engine "
                    "(it runs Transformer -> Pooling -> Normalize pipelines)"
                )
        if not seen_transformer:
            raise ModelLoadError(f"{modules_path}: no Transformer module")

    max_seq_length: int | None = None
    do_lower_case = False
    for candidate in (transformer_dir / "sentence_bert_config.json", root / "sentence_bert_config.json"):
        if candidate.is_file():
            sbert = _read_json(candidate)
            if not isinstance(sbert, dict):
                raise ModelLoadError(f"{candidate}: expected an object")
            msl = sbert.get("max_seq_length")
            if msl is not None and (isinstance(msl, bool) or not isinstance(msl, int) or msl < 1):
                raise ModelLoadError(f"{candidate}: max_seq_length must be a positive integer")
            max_seq_length = msl
            do_lower_case = bool(sbert.get("do_lower_case", False))
            break

    prompts: dict[str, str] = {}
    default_prompt_name: str | None = None
    st_cfg_path = root / "config_sentence_transformers.json"
    if st_cfg_path.is_file():
        st_cfg = _read_json(st_cfg_path)
        if not isinstance(st_cfg, dict):
            raise ModelLoadError(f"{st_cfg_path}: expected an object")
        raw_prompts = st_cfg.get("prompts") or {}
        if not isinstance(raw_prompts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_prompts.items()
        ):
            raise ModelLoadError(f"{st_cfg_path}: prompts must map names to strings")
        prompts = dict(raw_prompts)
        dpn = st_cfg.get("default_prompt_name")
        if dpn is not None:
            if not isinstance(dpn, str) or dpn not in prompts:
                raise ModelLoadError(
                    f"{st_cfg_path}: default_prompt_name {dpn!r} is not one of the prompts"
                )
            default_prompt_name = dpn

    return SentenceTransformerConfig(
        transformer_dir=transformer_dir,
        pooling_modes=pooling_modes,
        normalize=normalize,
        max_seq_length=max_seq_length,
        do_lower_case=do_lower_case,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
        include_prompt=include_prompt,
        embedding_dimension=embedding_dimension,
        is_sentence_transformers=is_st,
    )


__all__ = [
    "POOLING_MODES",
    "PoolingMode",
    "SentenceTransformerConfig",
    "read_sentence_transformers_config",
]
