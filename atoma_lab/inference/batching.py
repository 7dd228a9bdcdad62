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

The queue is fair between flows (a node's stacks): requests are cut into chunks of at most
``chunk_tokens`` tokens, taken round robin between flows; a request whose caller gave up (its
future cancelled) is dropped before its next chunk; ``max_tokens`` refuses a request right after
tokenising, before the model sees it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from atoma_lab.errors import AtomaLabError, ComputeUnitsExceededError, InferenceError
from atoma_lab.inference.engine import (
    EmbeddingEngine,
    EmbeddingResult,
    EngineInput,
    TokenizedInputs,
    apply_dimensions,
)

DEFAULT_MICRO_BATCH_TOKENS = 1024  # padded tokens per forward; measured best for MiniLM on 2 cores
DEFAULT_BATCH_OVERHEAD_TOKENS = 64  # a forward's fixed cost, in tokens (docs/benchmarks.md)
DEFAULT_MAX_BATCH_TOKENS = 16384  # tokens merged across requests (TEI's --max-batch-tokens default)
DEFAULT_MAX_WAIT_MS = 10.0  # the longest the first queued request waits for company
DEFAULT_GAP_MS = 2.0  # collection ends once no request has arrived for this long
DEFAULT_CHUNK_TOKENS = 4096  # tokens of one request per turn: what a heavy request delays another flow by


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


@dataclass(slots=True, eq=False)
class _Pending:
    """One request: its sequences, the future its caller waits on, and the rows of the chunks
    done so far (a request is cut into chunks of at most ``chunk_tokens`` tokens)."""

    tokens: TokenizedInputs
    dimensions: int | None
    future: Future[EmbeddingResult] = field(default_factory=Future)
    parts: list[np.ndarray | None] = field(default_factory=list)
    left: int = 0


@dataclass(slots=True, eq=False)
class _Chunk:
    """Consecutive sequences of one request, run in one forward (with other requests' chunks)."""

    pending: _Pending
    index: int
    start: int
    stop: int
    tokens: int


def _chunks(pending: _Pending, chunk_tokens: int) -> list[_Chunk]:
    """``pending``'s sequences cut in order into chunks of at most ``chunk_tokens`` tokens (a
    longer sequence is a chunk of its own)."""
    out: list[_Chunk] = []
    counts = pending.tokens.token_counts
    start, tokens = 0, 0
    for i, n in enumerate(counts):
        if i > start and tokens + n > chunk_tokens:
            out.append(_Chunk(pending, len(out), start, i, tokens))
            start, tokens = i, 0
        tokens += n
    out.append(_Chunk(pending, len(out), start, len(counts), tokens))
    pending.parts = [None] * len(out)
    pending.left = len(out)
    return out


class _FairQueue:
    """Queued chunks, taken round robin between flows (a flow's own in the order they came), so
    that a heavy request of one flow (a stack) delays another's by one chunk at most. Chunks of
    a request whose future is done (cancelled by its caller, or failed) are dropped unrun."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._flows: dict[Hashable, deque[_Chunk]] = {}
        self._order: deque[Hashable] = deque()
        self._stopped = False

    def put(self, flow: Hashable, chunks: list[_Chunk]) -> None:
        with self._cond:
            queued = self._flows.get(flow)
            if queued is None:
                queued = self._flows[flow] = deque()
                self._order.append(flow)
            queued.extend(chunks)
            self._cond.notify()

    def waiting(self) -> dict[Hashable, int]:
        """Per flow, the requests queued whose callers still wait for them."""
        with self._cond:
            return {flow: n for flow, queued in self._flows.items()
                    if (n := len({id(c.pending) for c in queued
                                  if not c.pending.future.done()}))}

    def stop(self) -> None:
        """Once what is queued is taken, :meth:`get` answers ``_STOP``."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _pop(self) -> _Chunk | None:
        while self._order:
            flow = self._order.popleft()
            queued = self._flows[flow]
            chunk = queued.popleft()
            if queued:
                self._order.append(flow)
            else:
                del self._flows[flow]
            if not chunk.pending.future.done():
                return chunk
        return None

    def get(self, timeout_s: float | None) -> _Chunk | object | None:
        """The next chunk; ``_STOP`` once stopped and empty; ``None`` after ``timeout_s``
        without one (``None``: wait as long as it takes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                chunk = self._pop()
                if chunk is not None:
                    return chunk
                if self._stopped:
                    return _STOP
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)


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

    Fair between flows: each request may name a ``flow`` (a node passes its stack), is cut into
    chunks of at most ``chunk_tokens`` tokens, and the worker takes chunks round robin between
    flows, so a heavy request delays another flow's small one by a chunk, not by all of it.
    A request whose caller gave up (its future cancelled: ``aembed`` awaited no longer) is
    dropped before its next chunk runs. ``max_tokens`` refuses a request whose tokens exceed it
    (:class:`~atoma_lab.errors.ComputeUnitsExceededError`) right after tokenising, before any
    forward runs.
    """

    def __init__(self, engine: EmbeddingEngine, *, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                 max_wait_ms: float = DEFAULT_MAX_WAIT_MS, gap_ms: float = DEFAULT_GAP_MS,
                 name: str | None = None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> None:
        if max_batch_tokens < 1 or chunk_tokens < 1:
            raise ValueError("max_batch_tokens and chunk_tokens must be at least 1")
        if max_wait_ms < 0 or gap_ms < 0:
            raise ValueError("max_wait_ms and gap_ms must not be negative")
        self.engine = engine
        self.max_batch_tokens = max_batch_tokens
        self.chunk_tokens = chunk_tokens
        self.max_wait_ms = max_wait_ms
        self.gap_ms = gap_ms
        self.stats = BatcherStats()
        self._queue = _FairQueue()
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

    def waiting(self) -> dict[Hashable, int]:
        """Per flow, how many queued requests (or their remaining chunks) still wait to run;
        cancelled ones are not counted (they will be dropped unrun)."""
        return self._queue.waiting()

    def submit(self, inputs: EngineInput, *, dimensions: int | None = None,
               truncate: bool | None = None, prompt_name: str | None = None,
               max_tokens: int | None = None, flow: Hashable = None,
               ) -> Future[EmbeddingResult]:
        """Queue ``inputs``; the future holds their :class:`EmbeddingResult` or the error.

        Tokenisation and validation happen here, in the caller's thread; their errors come
        back through the future like the model's (so does ``max_tokens``'s). Cancelling the
        future drops the request's work not yet run. Raises :class:`RuntimeError` once closed.
        """
        future: Future[EmbeddingResult] = Future()
        self._submit(inputs, future, dimensions=dimensions, truncate=truncate,
                     prompt_name=prompt_name, max_tokens=max_tokens, flow=flow)
        return future

    def _submit(self, inputs: EngineInput, future: Future[EmbeddingResult], *,
                dimensions: int | None, truncate: bool | None, prompt_name: str | None,
                max_tokens: int | None, flow: Hashable) -> None:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        pending = _Pending(TokenizedInputs([], []), dimensions, future)
        try:
            if dimensions is not None:
                apply_dimensions(np.zeros((0, self.dimensions), np.float32), dimensions,
                                 model_dimensions=self.dimensions)
            pending.tokens = self.engine.tokenize(inputs, truncate=truncate,
                                                  prompt_name=prompt_name)
            needed = pending.tokens.total_tokens
            if max_tokens is not None and needed > max_tokens:
                raise ComputeUnitsExceededError(
                    f"request needs {needed} compute units; {max_tokens} are allowed")
        except AtomaLabError as exc:
            _settle(future, exc)
            return
        if not pending.tokens.sequences:
            _settle(future, EmbeddingResult(
                np.zeros((0, dimensions or self.dimensions), np.float32), []))
            return
        chunks = _chunks(pending, self.chunk_tokens)
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if not future.done():  # a caller that already gave up queues nothing
                self._queue.put(flow, chunks)

    def embed(self, inputs: EngineInput, *, dimensions: int | None = None,
              truncate: bool | None = None, prompt_name: str | None = None,
              max_tokens: int | None = None, flow: Hashable = None) -> EmbeddingResult:
        """Blocking :meth:`submit`."""
        return self.submit(inputs, dimensions=dimensions, truncate=truncate,
                           prompt_name=prompt_name, max_tokens=max_tokens, flow=flow).result()

    async def aembed(self, inputs: EngineInput, *, dimensions: int | None = None,
                     truncate: bool | None = None, prompt_name: str | None = None,
                     max_tokens: int | None = None, flow: Hashable = None,
                     ) -> EmbeddingResult:
        """:meth:`submit` awaited from an event loop; cancelling the awaiting task drops the
        request's work not yet run.

        Small requests (a few short texts, the common case) are tokenised on the loop: that
        costs less than a hop to a worker thread. Larger ones are tokenised in
        ``asyncio.to_thread`` so that the loop keeps serving.
        """
        future: Future[EmbeddingResult] = Future()
        options = {"dimensions": dimensions, "truncate": truncate, "prompt_name": prompt_name,
                   "max_tokens": max_tokens, "flow": flow}
        try:
            if _is_small(inputs):
                self._submit(inputs, future, **options)  # type: ignore[arg-type]
            else:
                await asyncio.to_thread(functools.partial(self._submit, inputs, future,
                                                          **options))  # type: ignore[arg-type]
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # still tokenising in its thread: it will queue nothing
            raise

    def close(self, timeout_s: float | None = 10.0) -> None:
        """Stop taking requests; what is queued still runs, then the worker ends."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.stop()
        self._thread.join(timeout_s)

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ worker
    def _collect(self, first: _Chunk) -> tuple[list[_Chunk], bool]:
        batch = [first]
        tokens = first.tokens
        now = time.monotonic()
        deadline = now + self.max_wait_ms / 1000.0
        gap = self.gap_ms / 1000.0
        last_arrival = now
        while tokens < self.max_batch_tokens:
            item = self._queue.get(0)
            if item is None:
                remaining = min(deadline, last_arrival + gap) - time.monotonic()
                if remaining <= 0:
                    break
                item = self._queue.get(remaining)
                if item is None:
                    break
            last_arrival = time.monotonic()
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Chunk)
            batch.append(item)
            tokens += item.tokens
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get(None)
            if item is _STOP:
                break
            assert isinstance(item, _Chunk)
            batch, stop = self._collect(item)
            self._process(batch)

    def _process(self, batch: list[_Chunk]) -> None:
        live = [c for c in batch if not c.pending.future.done()]
        if not live:
            return
        sequences = list(itertools.chain.from_iterable(
            c.pending.tokens.sequences[c.start:c.stop] for c in live))
        try:
            vectors = self.engine.embed_tokens(sequences)
        except AtomaLabError as exc:
            for c in live:
                _settle(c.pending.future, exc)
            return
        except Exception as exc:
            err = InferenceError(f"the model failed on a batch of {len(sequences)} inputs "
                                 f"({type(exc).__name__})")
            err.__cause__ = exc
            for c in live:
                _settle(c.pending.future, err)
            return
        stats = self.stats
        stats.batches += 1
        stats.sequences += len(sequences)
        stats.tokens += sum(c.tokens for c in live)
        stats.largest_batch_requests = max(stats.largest_batch_requests,
                                           len({id(c.pending) for c in live}))
        start = 0
        for c in live:
            n = c.stop - c.start
            p = c.pending
            p.parts[c.index] = vectors[start:start + n]
            start += n
            p.left -= 1
            if p.left == 0:
                stats.requests += 1
                self._finish(p)

    def _finish(self, p: _Pending) -> None:
        parts = [part for part in p.parts if part is not None]
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        p.parts = []
        try:
            rows = apply_dimensions(rows, p.dimensions, model_dimensions=self.dimensions,
                                    normalize=self.engine.normalize)
        except AtomaLabError as exc:  # validated in submit(); kept for safety
            _settle(p.future, exc)
            return
        _settle(p.future, EmbeddingResult(np.ascontiguousarray(rows),
                                          list(p.tokens.token_counts)))


def _settle(future: Future[EmbeddingResult], outcome: EmbeddingResult | BaseException) -> None:
    """Set ``future``'s result or exception, unless its caller cancelled it meanwhile."""
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:  # cancelled between the check and now: nobody waits for it
        pass


__all__ = [
    "DEFAULT_BATCH_OVERHEAD_TOKENS",
    "DEFAULT_CHUNK_TOKENS",
    "DEFAULT_GAP_MS",
    "DEFAULT_MAX_BATCH_TOKENS",
    "DEFAULT_MAX_WAIT_MS",
    "DEFAULT_MICRO_BATCH_TOKENS",
    "BatcherStats",
    "DynamicBatcher",
    "padded_tokens",
    "plan_micro_batches",
]
