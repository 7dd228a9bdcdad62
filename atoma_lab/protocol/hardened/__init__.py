"""A hardened confidential envelope beside Atoma's: profile ``atoma-lab/hardened-v1`` (and
``atoma-lab/hardened-hpke-v1``, the same with RFC 9180 HPKE). Pure.

It keeps Atoma's primitives and adds replay protection, a response bound to its request, one key
per direction and AAD over every routing field. The byte-by-byte specification is
``docs/hardened-profile.md``. Rooms: :mod:`.layout` (constants, AAD pieces, key ids, receipt),
:mod:`.messages` (wire models, strict parsing, downgrade checks), :mod:`.replay` (the replay
guard), :mod:`.keys` (the node key ring), :mod:`.seal` (seal and open, both sides).
"""

from atoma_lab.protocol.hardened.keys import (
    NodeKeyRing,
)
from atoma_lab.protocol.hardened.layout import (
    DEFAULT_KEY_GRACE_S,
    DEFAULT_REPLAY_CACHE_ENTRIES,
    DEFAULT_REPLAY_WINDOW_S,
    HPKE_EXPORT_N2C,
    HPKE_INFO,
    HPKE_SUITE,
    KEY_ID_SIZE,
    LABEL_C2N,
    LABEL_N2C,
    PROFILE,
    PROFILE_HPKE,
    PROFILES,
    RECEIPT_LABEL,
    REQUEST_ID_SIZE,
    derive_direction_keys,
    node_key_id,
    receipt_digest,
)
from atoma_lab.protocol.hardened.messages import (
    HardenedRequest,
    HardenedResponse,
    parse_request,
    parse_response,
)
from atoma_lab.protocol.hardened.replay import (
    ReplayGuard,
)
from atoma_lab.protocol.hardened.seal import (
    HardenedClientContext,
    HardenedNodeContext,
    OpenedHardenedRequest,
    OpenedHardenedResponse,
    SealedHardenedRequest,
    open_request,
    open_response,
    seal_request,
    seal_response,
    verify_receipt,
)

__all__ = [
    "DEFAULT_KEY_GRACE_S",
    "DEFAULT_REPLAY_CACHE_ENTRIES",
    "DEFAULT_REPLAY_WINDOW_S",
    "HPKE_EXPORT_N2C",
    "HPKE_INFO",
    "HPKE_SUITE",
    "KEY_ID_SIZE",
    "LABEL_C2N",
    "LABEL_N2C",
    "PROFILE",
    "PROFILES",
    "PROFILE_HPKE",
    "RECEIPT_LABEL",
    "REQUEST_ID_SIZE",
    "HardenedClientContext",
    "HardenedNodeContext",
    "HardenedRequest",
    "HardenedResponse",
    "NodeKeyRing",
    "OpenedHardenedRequest",
    "OpenedHardenedResponse",
    "ReplayGuard",
    "SealedHardenedRequest",
    "derive_direction_keys",
    "node_key_id",
    "open_request",
    "open_response",
    "parse_request",
    "parse_response",
    "receipt_digest",
    "seal_request",
    "seal_response",
    "verify_receipt",
]
