"""A deterministic fake engine for protocol and service tests that are about bytes.

It has no model: a text's tokens are its whitespace-separated words (each hashed to an id), plus
one special token before and one after, like ``[CLS] ... [SEP]``; a vector is a unit vector drawn
from a generator seeded with BLAKE2b of the token sequence. Equal token sequences give equal
vectors, in any batch, on any machine. Truncation, ``dimensions``, token-id inputs and their
errors behave as in the real engine, so the OpenAI mapping and the batcher can be tested on it.

With ``tokens_per_s`` it behaves like a device of that capacity: each forward takes (at least)
its token count divided by the rate, the remainder slept off outside the GIL, so a node that owns
one processes its queue in order at that rate whatever the host CPU. That is how a 2-core machine
simulates a network of GPU nodes for scaling experiments.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from atoma_lab.errors import InvalidFieldError
from atoma_lab.inference.engine import EmbeddingEngine, EngineInput, TokenizedInputs, split_inputs

FAKE_MODEL = "atoma-lab/fake-embedder"
CLS_ID = 1  # the fake's special tokens
SEP_ID = 2
FIRST_WORD_ID = 3


class FakeEngine(EmbeddingEngine):
    """Hash-based vectors and whitespace token counts.

    ``forward_sizes`` records how many sequences each :meth:`embed_tokens` call received (the
    batcher tests read it). ``tokens_per_s`` (``None``: as fast as the host) gives the engine a
    device's capacity; ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, *, model_name: str = FAKE_MODEL, dimensions: int = 32,
                 max_seq_length: int = 512, vocab_size: int = 30_000, truncate: bool = True,
                 prompts: dict[str, str] | None = None, tokens_per_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if dimensions < 1 or max_seq_length < 3 or vocab_size <= FIRST_WORD_ID:
            raise ValueError("dimensions >= 1, max_seq_length >= 3, vocab_size > 3")
        if tokens_per_s is not None and not tokens_per_s > 0:
            raise ValueError("tokens_per_s must be positive (or None for no modelled capacity)")
        self.tokens_per_s = tokens_per_s
        self._clock = clock
        self._sleep = sleep
        self.busy_s = 0.0  # modelled device time spent so far
        self._model_name = model_name
        self._dimensions = dimensions
        self._max_seq_length = max_seq_length
        self.vocab_size = vocab_size
        self.truncate = truncate
        self.prompts = dict(prompts or {})
        self.forward_sizes: list[int] = []
        self._lock = threading.Lock()

    def word_id(self, word: str) -> int:
        """The fake tokenizer's id for one word."""
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        return FIRST_WORD_ID + int.from_bytes(digest, "little") % (self.vocab_size - FIRST_WORD_ID)

    def tokenize(self, inputs: EngineInput, *, truncate: bool | None = None,
                 prompt_name: str | None = None) -> TokenizedInputs:
        kind, items = split_inputs(inputs)
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
            self._check_token_ids(contents, self.vocab_size)
        sequences = self._frame(contents, prefix=[CLS_ID], suffix=[SEP_ID],
                                truncate=self.truncate if truncate is None else truncate)
        return TokenizedInputs(sequences, [len(s) for s in sequences])

    def vector(self, sequence: Sequence[int]) -> np.ndarray:
        """The unit vector of one token sequence."""
        seed = hashlib.blake2b(np.asarray(sequence, dtype="<i8").tobytes(), digest_size=16)
        rng = np.random.default_rng(int.from_bytes(seed.digest(), "little"))
        v = rng.standard_normal(self._dimensions).astype(np.float32)
        return v / np.float32(np.linalg.norm(v))

    def forward_time_s(self, sequences: Sequence[Sequence[int]]) -> float:
        """The modelled duration of one forward over ``sequences`` (0 without a capacity)."""
        if self.tokens_per_s is None:
            return 0.0
        return sum(len(s) for s in sequences) / self.tokens_per_s

    def embed_tokens(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        started = self._clock()
        with self._lock:
            self.forward_sizes.append(len(sequences))
        out = np.empty((len(sequences), self._dimensions), dtype=np.float32)
        for i, seq in enumerate(sequences):
            out[i] = self.vector(seq)
        modelled = self.forward_time_s(sequences)
        if modelled:
            remaining = modelled - (self._clock() - started)
            if remaining > 0:
                self._sleep(remaining)  # time.sleep releases the GIL: other nodes run meanwhile
            with self._lock:
                self.busy_s += modelled
        return out


__all__ = ["FAKE_MODEL", "FakeEngine"]
