"""A deterministic fake engine for protocol and service tests that are about bytes.

It has no model: a text's tokens are its whitespace-separated words (each hashed to an id), plus
one special token before and one after, like ``[CLS] ... [SEP]``; a vector is a unit vector drawn
from a generator seeded with BLAKE2b of the token sequence. Equal token sequences give equal
vectors, in any batch, on any machine. Truncation, ``dimensions``, token-id inputs and their
errors behave as in the real engine, so the OpenAI mapping and the batcher can be tested on it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np

from atoma_lab.errors import InputTooLongError, InvalidFieldError
from atoma_lab.inference.engine import EmbeddingEngine, EngineInput, TokenizedInputs, split_inputs

FAKE_MODEL = "atoma-lab/fake-embedder"
CLS_ID = 1  # the fake's special tokens
SEP_ID = 2
FIRST_WORD_ID = 3


class FakeEngine(EmbeddingEngine):
    """Hash-based vectors and whitespace token counts.

    ``forward_sizes`` records how many sequences each :meth:`embed_tokens` call received (the
    batcher tests read it).
    """

    def __init__(self, *, model_name: str = FAKE_MODEL, dimensions: int = 32,
                 max_seq_length: int = 512, vocab_size: int = 30_000, truncate: bool = True,
                 prompts: dict[str, str] | None = None) -> None:
        if dimensions < 1 or max_seq_length < 3 or vocab_size <= FIRST_WORD_ID:
            raise ValueError("dimensions >= 1, max_seq_length >= 3, vocab_size > 3")
        self._model_name = model_name
        self._dimensions = dimensions
        self._max_seq_length = max_seq_length
        self.vocab_size = vocab_size
        self.truncate = truncate
        self.prompts = dict(prompts or {})
        self.forward_sizes: list[int] = []
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    def word_id(self, word: str) -> int:
        """The fake tokenizer's id for one word."""
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        return FIRST_WORD_ID + int.from_bytes(digest, "little") % (self.vocab_size - FIRST_WORD_ID)

    def tokenize(self, inputs: EngineInput, *, truncate: bool | None = None,
                 prompt_name: str | None = None) -> TokenizedInputs:
        kind, items = split_inputs(inputs)
        cut = self.truncate if truncate is None else truncate
        room = self._max_seq_length - 2
        if kind == "text":
            prompt = ""
            if prompt_name is not None:
                if prompt_name not in self.prompts:
                    raise InvalidFieldError(f"prompt_name: {prompt_name!r} is not a prompt",
                                            field="prompt_name")
                prompt = self.prompts[prompt_name]
            contents = [[self.word_id(w) for w in (prompt + t).split()] for t in items]  # type: ignore[operator]
        else:
            contents = [list(ids) for ids in items]  # type: ignore[arg-type]
            for i, ids in enumerate(contents):
                if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
                    raise InvalidFieldError(
                        f"input[{i}]: token ids must be in [0, {self.vocab_size})",
                        field=f"input[{i}]")
        sequences = []
        for i, ids in enumerate(contents):
            if len(ids) > room:
                if not cut:
                    raise InputTooLongError(
                        f"input[{i}] has {len(ids) + 2} tokens; the model takes at most "
                        f"{self._max_seq_length} (truncation is off)", field=f"input[{i}]")
                ids = ids[:room]
            sequences.append([CLS_ID, *ids, SEP_ID])
        return TokenizedInputs(sequences, [len(s) for s in sequences])

    def vector(self, sequence: Sequence[int]) -> np.ndarray:
        """The unit vector of one token sequence."""
        seed = hashlib.blake2b(np.asarray(sequence, dtype="<i8").tobytes(), digest_size=16)
        rng = np.random.default_rng(int.from_bytes(seed.digest(), "little"))
        v = rng.standard_normal(self._dimensions).astype(np.float32)
        return v / np.float32(np.linalg.norm(v))

    def embed_tokens(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        with self._lock:
            self.forward_sizes.append(len(sequences))
        out = np.empty((len(sequences), self._dimensions), dtype=np.float32)
        for i, seq in enumerate(sequences):
            out[i] = self.vector(seq)
        return out


__all__ = ["FAKE_MODEL", "FakeEngine"]
