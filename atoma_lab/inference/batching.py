"""Length-sorted micro-batches and a dynamic batcher that merges concurrent requests.

:func:`plan_micro_batches` sorts sequences by length (longest first, so that a batch too big for
memory fails at once) and cuts them into batches whose padded size, ``rows x longest``, stays
under a token budget, choosing the cuts that minimise padding plus a per-forward overhead.
Sorting keeps padding small; the budget keeps activations cache-sized.

:class:`DynamicBatcher` puts one engine behind a queue. ``submit()`` tokenises in the caller's
thread (so a bad request fails alone, and tokenisation overlaps the model's work) and returns a
:class:`concurrent.futures.Future`; one worker thread takes queued requests until their tokens
reach ``max_batch_tokens``, or no new request has come for ``gap_ms``, or ``max_wait_ms`` has
passed since the first, runs them as one forward, and hands each request its rows. A lone
request thus waits ``gap_ms`` at most; a burst is merged for up to ``max_wait_ms``.
:meth:`DynamicBatcher.aembed` awaits the same future from asyncio.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from atoma_lab.errors import AtomaLabError, InferenceError
from atoma_lab.inference.engine import (
    EmbeddingEngine,
    EmbeddingResult,
    EngineInput,
    TokenizedInputs,
    apply_dimensions,
)

DEFAULT_MICRO_BATCH_TOKENS = 1024  # padded tokens per forward; measured best for MiniLM on 2 cores
DEFAULT_BATCH_OVERHEAD_TOKENS = 64  # a forward's fixed cost in tokens (~9 ms vs ~0.16 ms/token)
DEFAULT_MAX_BATCH_TOKENS = 16384  # tokens merged across requests (TEI's --max-batch-tokens default)
DEFAULT_MAX_WAIT_MS = 10.0  # the longest the first queued request waits for company
DEFAULT_GAP_MS = 2.0  # collection ends once no request has arrived for this long


def plan_micro_batches(lengths: Sequence[int], *, max_batch_tokens: int,
                       max_batch_size: int | None = None,
                       batch_overhead_tokens: int = DEFAULT_BATCH_OVERHEAD_TOKENS,
                       ) -> list[list[int]]:
    """Indices of ``lengths`` grouped into micro-batches, longest sequences first.

    Sequences are sorted by length (longest first, ties in input order) and cut into contiguous
    runs; among all such cuts with ``rows * longest <= max_batch_tokens`` (a sequence longer than
    the budget goes alone) and ``rows <= max_batch_size``, the one with the least padded tokens
    plus ``batch_overhead_tokens`` per batch is chosen (dynamic programming, one numpy pass per
    sequence). The overhead term stands for a forward's fixed cost, so short inputs of varied
    lengths are not all padded to the longest of them, and equal ones still share a batch.
    """
    if max_batch_tokens < 1:
        raise ValueError("max_batch_tokens must be at least 1")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError("max_batch_size must be at least 1")
    if batch_overhead_tokens < 0:
        raise ValueError("batch_overhead_tokens must not be negative")
    n = len(lengths)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: -lengths[i])
    longest = np.fromiter((max(1, lengths[i]) for i in order), dtype=np.float64, count=n)
    cap = n if max_batch_size is None else max_batch_size
    cost = np.full(n + 1, np.inf)
    cost[0] = 0.0
    start_of = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        rows = int(min(n - i, cap, max(1, max_batch_tokens // int(longest[i]))))
        candidate = cost[i] + longest[i] * np.arange(1, rows + 1) + batch_overhead_tokens
        better = candidate <= cost[i + 1:i + rows + 1]  # ties: fuller earlier batches
        cost[i + 1:i + rows + 1][better] = candidate[better]
        start_of[i + 1:i + rows + 1][better] = i
    batches: list[list[int]] = []
    end = n
    while end > 0:
        begin = int(start_of[end])
        batches.append(order[begin:end])
        end = begin
    batches.reverse()
    return batches


def padded_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """Tokens a plan runs, padding included: the sum of ``rows * longest`` over its batches."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches if b)


@dataclass(slots=True)
class BatcherStats:
    """Counters of a :class:`DynamicBatcher` (read them for tests and metrics)."""

    requests: int = 0
    """Requests answered by a forward pass."""
    batches: int = 0
    """Forward passes run (each may hold several requests)."""
    sequences: int = 0
    tokens: int = 0
    largest_batch_requests: int = 0


@dataclass(slots=True)
class _Pending:
    tokens: TokenizedInputs
    dimensions: int | None
    future: Future[EmbeddingResult] = field(default_factory=Future)


_STOP = object()
SMALL_REQUEST_CHARS = 4096  # up to this many characters of text, aembed tokenises on the loop
SMALL_REQUEST_INPUTS = 16


def _is_small(inputs: EngineInput) -> bool:
    if isinstance(inputs, str):
        return len(inputs) <= SMALL_REQUEST_CHARS
    if not isinstance(inputs, Sequence) or len(inputs) > SMALL_REQUEST_INPUTS:
        return False
    chars = 0
    for item in inputs:
        chars += len(item) if isinstance(item, str | Sequence) else 1
        if chars > SMALL_REQUEST_CHARS:
            return False
    return True


class DynamicBatcher:
    """Merge concurrent requests to one engine into shared forward passes.

    Thread-safe and asyncio-friendly: call :meth:`submit` (a future), :meth:`embed` (blocking)
    or ``await`` :meth:`aembed` from any thread or event loop. Close it (or use ``with``) to stop
    the worker thread: requests already queued are still answered, later ones are refused.
    """

    def __init__(self, engine: EmbeddingEngine, *, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                 max_wait_ms: float = DEFAULT_MAX_WAIT_MS, gap_ms: float = DEFAULT_GAP_MS,
                 name: str | None = None) -> None:
        if max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be at least 1")
        if max_wait_ms < 0 or gap_ms < 0:
            raise ValueError("max_wait_ms and gap_ms must not be negative")
        self.engine = engine
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_ms = max_wait_ms
        self.gap_ms = gap_ms
        self.stats = BatcherStats()
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=name or f"atoma-lab-batcher-{engine.model_name}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ engine-like surface
    @property
    def model_name(self) -> str:
        return self.engine.model_name

    @property
    def dimensions(self) -> int:
        return self.engine.dimensions

    @property
    def max_seq_length(self) -> int:
        return self.engine.max_seq_length

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, inputs: EngineInput, *, dimensions: int | None = None,
               truncate: bool | None = None, prompt_name: str | None = None,
               ) -> Future[EmbeddingResult]:
        """Queue ``inputs``; the future holds their :class:`EmbeddingResult` or the error.

        Tokenisation and validation happen here, in the caller's thread; their errors come
        back through the future like the model's. Raises :class:`RuntimeError` once closed.
        """
        if self._closed:
            raise RuntimeError("the batcher is closed")
        pending = _Pending(TokenizedInputs([], []), dimensions)
        try:
            if dimensions is not None:
                apply_dimensions(np.zeros((0, self.dimensions), np.float32), dimensions,
                                 model_dimensions=self.dimensions)
            pending.tokens = self.engine.tokenize(inputs, truncate=truncate,
                                                  prompt_name=prompt_name)
        except AtomaLabError as exc:
            pending.future.set_exception(exc)
            return pending.future
        if not pending.tokens.sequences:
            pending.future.set_result(EmbeddingResult(
                np.zeros((0, dimensions or self.dimensions), np.float32), []))
            return pending.future
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.put(pending)
        return pending.future

    def embed(self, inputs: EngineInput, *, dimensions: int | None = None,
              truncate: bool | None = None, prompt_name: str | None = None) -> EmbeddingResult:
        """Blocking :meth:`submit`."""
        return self.submit(inputs, dimensions=dimensions, truncate=truncate,
                           prompt_name=prompt_name).result()

    async def aembed(self, inputs: EngineInput, *, dimensions: int | None = None,
                     truncate: bool | None = None, prompt_name: str | None = None,
                     ) -> EmbeddingResult:
        """:meth:`submit` awaited from an event loop.

        Small requests (a few short texts, the common case) are tokenised on the loop: tens of
        microseconds, less than a hop to a worker thread. Larger ones are tokenised in
        ``asyncio.to_thread`` so that the loop keeps serving.
        """
        if _is_small(inputs):
            future = self.submit(inputs, dimensions=dimensions, truncate=truncate,
                                 prompt_name=prompt_name)
        else:
            future = await asyncio.to_thread(self.submit, inputs, dimensions=dimensions,
                                             truncate=truncate, prompt_name=prompt_name)
        return await asyncio.wrap_future(future)

    def close(self, timeout_s: float | None = 10.0) -> None:
        """Stop taking requests, finish the batch in flight, fail what is still queued."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout_s)

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ worker
    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        batch = [first]
        tokens = first.tokens.total_tokens
        now = time.monotonic()
        deadline = now + self.max_wait_ms / 1000.0
        gap = self.gap_ms / 1000.0
        last_arrival = now
        while tokens < self.max_batch_tokens:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                now = time.monotonic()
                remaining = min(deadline, last_arrival + gap) - now
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            last_arrival = time.monotonic()
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Pending)
            batch.append(item)
            tokens += item.tokens.total_tokens
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, _Pending)
            batch, stop = self._collect(item)
            self._process(batch)
        # Anything queued after the stop marker (there should be none) fails cleanly.
        while True:
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(left, _Pending) and left.future.set_running_or_notify_cancel():
                left.future.set_exception(InferenceError("the batcher closed before this ran"))

    def _process(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if p.future.set_running_or_notify_cancel()]
        if not live:
            return
        sequences = list(itertools.chain.from_iterable(p.tokens.sequences for p in live))
        try:
            vectors = self.engine.embed_tokens(sequences)
        except AtomaLabError as exc:
            for p in live:
                p.future.set_exception(exc)
            return
        except Exception as exc:
            err = InferenceError(f"the model failed on a batch of {len(sequences)} inputs "
                                 f"({type(exc).__name__})")
            err.__cause__ = exc
            for p in live:
                p.future.set_exception(err)
            return
        stats = self.stats
        stats.batches += 1
        stats.requests += len(live)
        stats.sequences += len(sequences)
        stats.tokens += sum(p.tokens.total_tokens for p in live)
        stats.largest_batch_requests = max(stats.largest_batch_requests, len(live))
        start = 0
        for p in live:
            n = len(p.tokens.sequences)
            rows = vectors[start:start + n]
            start += n
            try:
                rows = apply_dimensions(rows, p.dimensions, model_dimensions=self.dimensions,
                                        normalize=self.engine.normalize)
            except AtomaLabError as exc:  # validated in submit(); kept for safety
                p.future.set_exception(exc)
                continue
            p.future.set_result(EmbeddingResult(np.ascontiguousarray(rows),
                                                list(p.tokens.token_counts)))


__all__ = [
    "DEFAULT_BATCH_OVERHEAD_TOKENS",
    "DEFAULT_GAP_MS",
    "DEFAULT_MAX_BATCH_TOKENS",
    "DEFAULT_MAX_WAIT_MS",
    "DEFAULT_MICRO_BATCH_TOKENS",
    "BatcherStats",
    "DynamicBatcher",
    "padded_tokens",
    "plan_micro_batches",
]
