"""Embedding engines, batching and the OpenAI mapping.

Importing this package is light: torch and transformers load only when a
:class:`TransformersEngine` is built (:func:`load_engine`, :func:`node_embedder`), httpx only
when :class:`RemoteEmbedder` or :func:`remote_embedder` (an embedding server over HTTP) is used.

>>> engine = load_engine()                       # all-MiniLM-L6-v2 from its PyPI package
>>> engine.embed(["hello", "world"]).vectors.shape
(2, 384)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atoma_lab.inference.batching import (
    DEFAULT_GAP_MS,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_WAIT_MS,
    DEFAULT_MICRO_BATCH_TOKENS,
    BatcherStats,
    DynamicBatcher,
    plan_micro_batches,
)
from atoma_lab.inference.config import SentenceTransformerConfig, read_sentence_transformers_config
from atoma_lab.inference.engine import (
    Embedder,
    EmbeddingEngine,
    EmbeddingResult,
    TokenizedInputs,
    apply_dimensions,
    split_inputs,
)
from atoma_lab.inference.fake import FAKE_MODEL, FakeEngine
from atoma_lab.inference.prompts import E5_DEFAULT_TASK, e5_instruct_queries, e5_instruct_query
from atoma_lab.inference.registry import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_PACKAGE,
    E5_INSTRUCT_MODEL,
    ModelRegistry,
    ModelSource,
)
from atoma_lab.inference.serving import (
    EmbedResponse,
    NodeEmbedder,
    aembed_request,
    embed_request,
    encode_embeddings_response,
)

if TYPE_CHECKING:
    from atoma_lab.inference.remote import RemoteEmbedder, remote_embedder
    from atoma_lab.inference.transformers_engine import TransformersEngine


def resolve_model(model: str | Path = DEFAULT_MODEL, *, registry: ModelRegistry | None = None,
                  cache_dir: Path | str | None = None,
                  local_files_only: bool | None = None) -> Path:
    """The local folder of ``model``: a registered served name, or itself a source string
    (``package:...``, a folder, a Hub id in the local cache). Raises
    :class:`~atoma_lab.errors.ModelLoadError` with how to supply missing weights.
    """
    reg = ModelRegistry.default() if registry is None else registry
    if isinstance(model, str) and model in reg:
        return reg.resolve(model, cache_dir=cache_dir, local_files_only=local_files_only)
    return ModelSource.parse(model).resolve(model=str(model), cache_dir=cache_dir,
                                            local_files_only=local_files_only)


def load_engine(model: str | Path = DEFAULT_MODEL, *, registry: ModelRegistry | None = None,
                served_name: str | None = None, cache_dir: Path | str | None = None,
                show_progress: bool = True, **options: Any) -> TransformersEngine:
    """Load ``model`` (see :func:`resolve_model`) into a :class:`TransformersEngine`.

    The engine serves it as ``served_name``, by default the name asked for. ``options`` go to
    :class:`TransformersEngine` (``device``, ``dtype``, ``mode``, ``num_threads``, ``truncate``,
    ``micro_batch_tokens``, ...). Loading takes seconds (importing torch most of them):
    ``show_progress`` shows its steps (:func:`~atoma_lab.display.progressbar.progress`), in place of
    transformers' own weight-loading bar.
    """
    from atoma_lab.display.progressbar import progress

    steps = ("locating the weights", "importing torch and transformers",
             "loading the tokenizer and weights")
    short = str(model).rstrip("/").rsplit("/", 1)[-1]
    with progress(total=len(steps), desc=f"loading {short}", unit="step",
                  show=show_progress) as bar:
        bar.set_postfix_str(steps[0], refresh=True)
        folder = resolve_model(model, registry=registry, cache_dir=cache_dir)
        bar.update()
        bar.set_postfix_str(steps[1], refresh=True)
        import torch  # noqa: F401  (the heavy import, timed as its own step)

        from atoma_lab.inference.transformers_engine import TransformersEngine
        bar.update()
        bar.set_postfix_str(steps[2], refresh=True)
        with _quiet_transformers_bars():
            engine = TransformersEngine(folder, model_name=served_name or str(model), **options)
        bar.update()
        bar.set_postfix_str("ready", refresh=True)
    return engine


@contextlib.contextmanager
def _quiet_transformers_bars() -> Iterator[None]:
    """transformers draws a bar while it loads weights, even where output is not a terminal
    (logs, tests); :func:`load_engine` shows its own steps instead. Restored afterwards."""
    from transformers.utils import logging as hf_logging

    active = hf_logging.is_progress_bar_enabled()
    if active:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if active:
            hf_logging.enable_progress_bar()


def node_embedder(model: str = DEFAULT_MODEL, *, registry: ModelRegistry | None = None,
                  aliases: Sequence[str] = (), max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                  max_wait_ms: float = DEFAULT_MAX_WAIT_MS, gap_ms: float = DEFAULT_GAP_MS,
                  truncate: bool | None = None,
                  **engine_options: Any) -> NodeEmbedder:
    """What a node serves: :func:`load_engine` behind a :class:`DynamicBatcher`."""
    engine = load_engine(model, registry=registry, **engine_options)
    batcher = DynamicBatcher(engine, max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms,
                             gap_ms=gap_ms)
    return NodeEmbedder(engine, aliases=aliases, batcher=batcher, truncate=truncate)


def __getattr__(name: str) -> Any:
    if name == "TransformersEngine":
        from atoma_lab.inference.transformers_engine import TransformersEngine

        return TransformersEngine
    if name in ("RemoteEmbedder", "remote_embedder"):  # httpx loads only when asked for
        from atoma_lab.inference import remote

        return getattr(remote, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_GAP_MS",
    "DEFAULT_MAX_BATCH_TOKENS",
    "DEFAULT_MAX_WAIT_MS",
    "DEFAULT_MICRO_BATCH_TOKENS",
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_PACKAGE",
    "E5_DEFAULT_TASK",
    "E5_INSTRUCT_MODEL",
    "FAKE_MODEL",
    "BatcherStats",
    "DynamicBatcher",
    "EmbedResponse",
    "Embedder",
    "EmbeddingEngine",
    "EmbeddingResult",
    "FakeEngine",
    "ModelRegistry",
    "ModelSource",
    "NodeEmbedder",
    "RemoteEmbedder",
    "SentenceTransformerConfig",
    "TokenizedInputs",
    "TransformersEngine",
    "aembed_request",
    "apply_dimensions",
    "e5_instruct_queries",
    "e5_instruct_query",
    "embed_request",
    "encode_embeddings_response",
    "load_engine",
    "node_embedder",
    "plan_micro_batches",
    "read_sentence_transformers_config",
    "remote_embedder",
    "resolve_model",
    "split_inputs",
]
