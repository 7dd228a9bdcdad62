"""A corpus split into requests that each fit one call of an embeddings route.

One request may carry at most :data:`~atoma_lab.protocol.openai.MAX_INPUTS` inputs and
:data:`~atoma_lab.protocol.openai.MAX_REQUEST_CHARS` characters, and a confidential one may use
no more compute units than its lock holds. A client cannot count a model's tokens without its
tokenizer, so a text's units are bounded from above as the proxy bounds them on the plain route:
its UTF-8 bytes plus two special tokens (a token covers at least one byte), at most
:data:`MAX_UNITS_PER_INPUT`. A chunk is locked for the sum of its texts' bounds, so the node never
finds the lock short, and settlement gives back what the texts did not use.

Texts are sorted by length before they are grouped (similar lengths pad little in a node's
batches); each :class:`Chunk` remembers the corpus positions of its texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from atoma_lab.errors import InputTooLongError
from atoma_lab.protocol.atoma.messages import DEFAULT_MAX_NUM_TOKENS
from atoma_lab.protocol.openai import MAX_INPUT_CHARS, MAX_INPUTS, MAX_REQUEST_CHARS

#: Compute units one input can need at most, and so the most the proxy reserves for one on the
#: plain route (``services.proxy.estimate_plain_units``; no embedding model reads more tokens).
MAX_UNITS_PER_INPUT = 8192
SPECIAL_TOKENS = 2  # [CLS] and [SEP], or <s> and </s>, around every input


def units_bound_of_length(n: int) -> int:
    """An upper bound on the compute units (tokens) one input of ``n`` UTF-8 bytes, or of ``n``
    token ids, can use: the one rule the planner and the proxy's plain-route reserve share."""
    return min(n + SPECIAL_TOKENS, MAX_UNITS_PER_INPUT)


def units_bound(text: str) -> int:
    """An upper bound on the compute units (tokens) ``text`` can use as one input."""
    return units_bound_of_length(len(text.encode("utf-8", "surrogatepass")))


@dataclass(frozen=True, slots=True)
class Chunk:
    """One request's share of a corpus: the corpus positions of its texts (shortest first), the
    compute units to lock for it, and its characters."""

    index: int
    positions: tuple[int, ...]
    units: int
    chars: int

    def __len__(self) -> int:
        return len(self.positions)


def plan_chunks(texts: Sequence[str], *, batch_tokens: int = DEFAULT_MAX_NUM_TOKENS,
                max_inputs: int = MAX_INPUTS, max_request_chars: int = MAX_REQUEST_CHARS,
                count_tokens: Callable[[str], int] | None = None) -> list[Chunk]:
    """Group ``texts`` into chunks of at most ``max_inputs`` texts, ``max_request_chars``
    characters and ``batch_tokens`` compute units each (a text whose bound alone exceeds
    ``batch_tokens`` travels alone, locked for its bound). ``count_tokens`` replaces the bound
    with a count of one's own (a tokenizer's, special tokens included): it must never count
    fewer tokens than the model will, or the node refuses the chunk.

    A text that is not a string is :class:`TypeError`; one longer than
    :data:`~atoma_lab.protocol.openai.MAX_INPUT_CHARS` characters,
    :class:`~atoma_lab.errors.InputTooLongError` naming it; nothing is planned then.
    """
    if batch_tokens < 1 or max_inputs < 1 or max_request_chars < 1:
        raise ValueError("batch_tokens, max_inputs and max_request_chars must be positive")
    if max_inputs > MAX_INPUTS or max_request_chars > MAX_REQUEST_CHARS:
        raise ValueError(f"a request carries at most {MAX_INPUTS} inputs and "
                         f"{MAX_REQUEST_CHARS} characters")
    count = units_bound if count_tokens is None else count_tokens
    units: list[int] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(text).__name__}")
        if len(text) > MAX_INPUT_CHARS:
            raise InputTooLongError(f"texts[{i}]: {len(text)} characters; at most "
                                    f"{MAX_INPUT_CHARS} per input", field=f"texts[{i}]")
        n = count(text)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"count_tokens gave {n!r} for texts[{i}]: expected a positive int")
        units.append(n)
    order = sorted(range(len(units)), key=lambda i: (units[i], i))
    chunks: list[Chunk] = []
    current: list[int] = []
    held = chars = 0
    for i in order:
        n, c = units[i], len(texts[i])
        if current and (held + n > batch_tokens or len(current) == max_inputs
                        or chars + c > max_request_chars):
            chunks.append(Chunk(len(chunks), tuple(current), held, chars))
            current, held, chars = [], 0, 0
        current.append(i)
        held += n
        chars += c
    if current:
        chunks.append(Chunk(len(chunks), tuple(current), held, chars))
    return chunks


__all__ = ["MAX_UNITS_PER_INPUT", "SPECIAL_TOKENS", "Chunk", "plan_chunks", "units_bound",
           "units_bound_of_length"]
