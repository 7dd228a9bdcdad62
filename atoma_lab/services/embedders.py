"""Adapters from inference engines to the node's async :class:`~atoma_lab.services.node.RequestEmbedder`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from atoma_lab.protocol.openai import CreateEmbeddingRequest, EmbeddingUsage
from atoma_lab.services.node import EmbedOutput

SyncEmbed = Callable[[CreateEmbeddingRequest], tuple[bytes, EmbeddingUsage]]
AsyncEmbed = Callable[[CreateEmbeddingRequest], Awaitable[tuple[bytes, EmbeddingUsage]]]


class CallableEmbedder:
    """Serve ``models`` with an embedding function.

    An async function is awaited (e.g. the dynamic batcher's, which merges concurrent requests);
    a sync one runs in a worker thread so the event loop keeps serving.
    """

    def __init__(self, models: Sequence[str], fn: SyncEmbed | AsyncEmbed) -> None:
        self._models = tuple(models)
        self._fn = fn
        self._is_async = asyncio.iscoroutinefunction(fn)

    @property
    def models(self) -> Sequence[str]:
        return self._models

    async def embed(self, request: CreateEmbeddingRequest) -> EmbedOutput:
        if self._is_async:
            body, usage = await self._fn(request)  # type: ignore[misc]
        else:
            body, usage = await asyncio.to_thread(self._fn, request)  # type: ignore[misc]
        return EmbedOutput(body=body, usage=usage)
