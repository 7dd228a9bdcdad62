"""Wire models, the confidential envelopes (Atoma's in :mod:`.atoma`, the hardened one in
:mod:`.hardened`), and what a node keeps for both: its key ring (:mod:`.keyring`) and replay
memories (:mod:`.replay`). Pure: no I/O."""

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
)
from atoma_lab.protocol.keyring import (
    NodeKey,
    NodeKeyRing,
)
from atoma_lab.protocol.openai import (
    CreateEmbeddingRequest,
    CreateEmbeddingResponse,
    Embedding,
    EmbeddingUsage,
)
from atoma_lab.protocol.replay import (
    OpenedMemory,
    ReplayGuard,
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
    "NodeKey",
    "NodeKeyRing",
    "NodesCreateLockRequest",
    "NodesCreateLockResponse",
    "OpenedMemory",
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
