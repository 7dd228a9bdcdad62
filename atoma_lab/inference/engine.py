"""The embedding engine interface, shared by the torch engine and the fake one.

An engine does two things: :meth:`EmbeddingEngine.tokenize` turns inputs (texts or token ids)
into model-ready token sequences and raises the caller's errors (an input too long, a token id
outside the vocabulary); :meth:`EmbeddingEngine.embed_tokens` runs the model on such sequences.
:meth:`EmbeddingEngine.embed` chains the two and applies OpenAI's ``dimensions``. The split lets
the dynamic batcher tokenise (and reject) each request in its caller's thread and merge only
valid sequences into one forward pass.

Decisions (OpenAI semantics, documented here once):

* Vectors are float32 and L2-normalised (OpenAI's are; so are sentence-transformers'
  ``encode(normalize_embeddings=True)``'s).
* ``dimensions`` keeps the first ``d`` components and normalises again (Matryoshka). A ``d``
  larger than the model's dimension is an :class:`~atoma_lab.errors.InvalidFieldError` on
  ``dimensions``.
* Token counts include the model's special tokens and are counted after truncation: they are
  the tokens the model actually processed (what TEI reports as usage, too).
* An empty string is embedded: it is the special tokens alone (``[CLS] [SEP]`` for BERT).
  An empty token list is the same. (The OpenAI request parser rejects an empty *list of
  inputs*; here, an empty list gives an empty ``(0, d)`` result.)
* Token ids are ids of the model's own vocabulary, without special tokens; the engine adds them,
  so ``embed([ids])`` equals ``embed([text])`` when ``ids`` is the text's tokenisation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

import numpy as np

from atoma_lab.errors import InputTooLongError, InvalidFieldError

TokenIds: TypeAlias = Sequence[int]
EngineInput: TypeAlias = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]
InputKind = Literal["text", "tokens"]


@dataclass(frozen=True, slots=True)
class TokenizedInputs:
    """Model-ready sequences (special tokens included, truncated) and their token counts."""

    sequences: list[list[int]]
    token_counts: list[int]

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)

    def __len__(self) -> int:
        return len(self.sequences)


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """One ``(n, d)`` float32 array of vectors and each input's token count."""

    vectors: np.ndarray = field(repr=False)
    token_counts: list[int]

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


class Embedder(Protocol):
    """Anything that embeds like an engine: an :class:`EmbeddingEngine` or a ``DynamicBatcher``."""

    @property
    def model_name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    def embed(self, inputs: EngineInput, *, dimensions: int | None = None,
              truncate: bool | None = None, prompt_name: str | None = None) -> EmbeddingResult: ...


def split_inputs(inputs: EngineInput) -> tuple[InputKind, list[str] | list[list[int]]]:
    """Normalise OpenAI-style ``input`` into ``("text", [str, ...])`` or ``("tokens", [[int]])``.

    A single string or a single list of ints is one input. Mixing strings and token lists, or any
    other type, raises :class:`InvalidFieldError` naming the first bad element.
    """
    if isinstance(inputs, str):
        return "text", [inputs]
    if isinstance(inputs, bytes | bytearray) or not isinstance(inputs, Sequence | np.ndarray):
        raise InvalidFieldError("input: expected a string, a list of strings or token ids",
                                field="input")
    items = list(inputs)
    if not items:
        return "text", []
    first = items[0]
    if isinstance(first, str):
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise InvalidFieldError(f"input[{i}]: expected a string", field=f"input[{i}]")
        return "text", items  # type: ignore[return-value]
    if _is_int(first):
        return "tokens", [_token_list(items, "input")]
    out: list[list[int]] = []
    for i, item in enumerate(items):
        if isinstance(item, str | bytes) or not isinstance(item, Sequence | np.ndarray):
            raise InvalidFieldError(f"input[{i}]: expected a list of token ids",
                                    field=f"input[{i}]")
        out.append(_token_list(item, f"input[{i}]"))
    return "tokens", out


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _token_list(items: Sequence[object] | np.ndarray, where: str) -> list[int]:
    out: list[int] = []
    for j, t in enumerate(items):
        if not _is_int(t):
            raise InvalidFieldError(f"{where}[{j}]: expected an integer token id",
                                    field=f"{where}[{j}]")
        out.append(int(t))
    return out


def apply_dimensions(vectors: np.ndarray, dimensions: int | None, *, model_dimensions: int,
                     normalize: bool = True) -> np.ndarray:
    """OpenAI's ``dimensions``: keep the first ``dimensions`` components, then re-normalise.

    ``None`` or the model's own dimension returns ``vectors`` unchanged. Zero vectors stay zero.
    """
    if dimensions is None or dimensions == model_dimensions:
        return vectors
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise InvalidFieldError("dimensions: must be a positive integer", field="dimensions")
    if dimensions > model_dimensions:
        raise InvalidFieldError(
            f"dimensions: {dimensions} is larger than the model's {model_dimensions}",
            field="dimensions",
        )
    cut = np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32)
    if normalize and cut.size:
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        np.divide(cut, norms, out=cut, where=norms > 0)
    return cut


class EmbeddingEngine(ABC):
    """A loaded embedding model.

    Subclasses set ``_model_name``, ``_dimensions`` and ``_max_seq_length`` when loaded and
    implement :meth:`tokenize` (with the checks :meth:`_check_token_ids` and :meth:`_frame`)
    and :meth:`embed_tokens`; the rest is shared.
    Engines are safe to call from several threads (forward passes are serialised); for
    concurrent serving put one behind :class:`~atoma_lab.inference.batching.DynamicBatcher`.
    """

    _model_name: str
    _dimensions: int
    _max_seq_length: int

    @property
    def model_name(self) -> str:
        """The served model name."""
        return self._model_name

    @property
    def dimensions(self) -> int:
        """Length of the vectors :meth:`embed_tokens` returns."""
        return self._dimensions

    @property
    def max_seq_length(self) -> int:
        """Most tokens one input may have, special tokens included."""
        return self._max_seq_length

    @property
    def normalize(self) -> bool:
        """Whether vectors are L2-normalised (OpenAI semantics: yes)."""
        return True

    @abstractmethod
    def tokenize(self, inputs: EngineInput, *, truncate: bool | None = None,
                 prompt_name: str | None = None) -> TokenizedInputs:
        """Model-ready sequences for ``inputs``.

        ``truncate`` (default: the engine's setting) cuts over-long inputs to
        :attr:`max_seq_length`; when false, an over-long input raises
        :class:`~atoma_lab.errors.InputTooLongError` naming its index. ``prompt_name`` picks one
        of the model's named prompts for text inputs.
        """

    @staticmethod
    def _check_token_ids(contents: Sequence[Sequence[int]], vocab_size: int) -> None:
        """Raise :class:`InvalidFieldError` naming the first input with an id outside the
        vocabulary (token-id inputs)."""
        for i, ids in enumerate(contents):
            if ids and (min(ids) < 0 or max(ids) >= vocab_size):
                raise InvalidFieldError(
                    f"input[{i}]: token ids must be in [0, {vocab_size}) for this model",
                    field=f"input[{i}]")

    def _frame(self, contents: Sequence[Sequence[int]], *, prefix: list[int], suffix: list[int],
               truncate: bool, keep_end: bool = False) -> list[list[int]]:
        """Each input's tokens between the special tokens ``prefix`` and ``suffix``.

        An input that would exceed :attr:`max_seq_length` tokens is cut to fit (its start kept,
        or its end with ``keep_end``), or with ``truncate`` false raises
        :class:`InputTooLongError` naming it.
        """
        n_special = len(prefix) + len(suffix)
        room = self._max_seq_length - n_special
        sequences: list[list[int]] = []
        for i, ids in enumerate(contents):
            if len(ids) > room:
                if not truncate:
                    raise InputTooLongError(
                        f"input[{i}] has {len(ids) + n_special} tokens; the model takes at most "
                        f"{self._max_seq_length} (truncation is off)", field=f"input[{i}]")
                ids = ids[len(ids) - room:] if keep_end else ids[:room]
            sequences.append(prefix + list(ids) + suffix)
        return sequences

    @abstractmethod
    def embed_tokens(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Vectors, ``(len(sequences), dimensions)`` float32, for :meth:`tokenize`'s sequences."""

    def embed(self, inputs: EngineInput, *, dimensions: int | None = None,
              truncate: bool | None = None, prompt_name: str | None = None) -> EmbeddingResult:
        """Tokenise, run the model, apply ``dimensions``."""
        if dimensions is not None:
            apply_dimensions(np.zeros((0, self.dimensions), np.float32), dimensions,
                             model_dimensions=self.dimensions)  # validate before the work
        tokens = self.tokenize(inputs, truncate=truncate, prompt_name=prompt_name)
        if tokens.sequences:
            vectors = self.embed_tokens(tokens.sequences)
        else:
            vectors = np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = apply_dimensions(vectors, dimensions, model_dimensions=self.dimensions,
                                   normalize=self.normalize)
        return EmbeddingResult(vectors=vectors, token_counts=tokens.token_counts)

    def count_tokens(self, inputs: EngineInput, *, truncate: bool | None = None,
                     prompt_name: str | None = None) -> list[int]:
        """Each input's token count as :meth:`embed` would report it."""
        return self.tokenize(inputs, truncate=truncate, prompt_name=prompt_name).token_counts

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release resources (nothing by default)."""


__all__ = [
    "Embedder",
    "EmbeddingEngine",
    "EmbeddingResult",
    "EngineInput",
    "InputKind",
    "TokenIds",
    "TokenizedInputs",
    "apply_dimensions",
    "split_inputs",
]
