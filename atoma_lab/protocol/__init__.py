"""Wire models, the confidential envelope, and lock/stack rules. Pure: no I/O."""

from atoma_lab.protocol.envelope import (
    ClientContext,
    NodeContext,
    OpenedRequest,
    OpenedResponse,
    SealedRequest,
    open_request,
    open_response,
    seal_request,
    seal_response,
)
from atoma_lab.protocol.messages import (
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    NodesCreateLockRequest,
    NodesCreateLockResponse,
    Usage,
)
from atoma_lab.protocol.openai import (
    CreateEmbeddingRequest,
    CreateEmbeddingResponse,
    Embedding,
    EmbeddingUsage,
)

__all__ = [
    "ClientContext",
    "ConfidentialComputeRequest",
    "ConfidentialComputeResponse",
    "CreateEmbeddingRequest",
    "CreateEmbeddingResponse",
    "Embedding",
    "EmbeddingUsage",
    "NodeContext",
    "NodesCreateLockRequest",
    "NodesCreateLockResponse",
    "OpenedRequest",
    "OpenedResponse",
    "SealedRequest",
    "Usage",
    "open_request",
    "open_response",
    "seal_request",
    "seal_response",
]
