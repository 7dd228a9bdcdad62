"""Wire models, the confidential envelope, and lock/stack rules. Pure: no I/O."""

from atoma_lab.protocol.atoma.envelope import (
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
from atoma_lab.protocol.atoma.messages import (
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    NodesCreateLockRequest,
    NodesCreateLockResponse,
    Usage,
)
from atoma_lab.protocol.hardened import (
    HardenedRequest,
    HardenedResponse,
    NodeKeyRing,
    ReplayGuard,
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
    "HardenedRequest",
    "HardenedResponse",
    "NodeContext",
    "NodeKeyRing",
    "NodesCreateLockRequest",
    "NodesCreateLockResponse",
    "OpenedRequest",
    "OpenedResponse",
    "ReplayGuard",
    "SealedRequest",
    "Usage",
    "open_request",
    "open_response",
    "seal_request",
    "seal_response",
]
