"""A hardened confidential envelope beside Atoma's: profile ``atoma-lab/hardened-v1`` (and
``atoma-lab/hardened-hpke-v1``, the same with RFC 9180 HPKE). Pure.

It keeps Atoma's primitives and adds replay protection, a response bound to its request, one key
per direction and AAD over every routing field. The byte-by-byte specification is
``docs/hardened-profile.md``. Rooms: :mod:`.layout` (constants, AAD pieces, receipt),
:mod:`.messages` (wire models, strict parsing, downgrade checks), :mod:`.cipher` (the request
cipher of each profile: by hand or HPKE), :mod:`.seal` (seal and open, both sides). The node key
ring and the replay guard serve Atoma's profile too, so they live in
:mod:`atoma_lab.protocol.keyring` and :mod:`atoma_lab.protocol.replay` (re-exported here).
"""

from atoma_lab.protocol.hardened.cipher import (
    CIPHERS,
    HAND_MADE,
    HPKE_BASE,
    Cipher,
    HandMadeCipher,
    HpkeBaseCipher,
    cipher_for,
)
from atoma_lab.protocol.hardened.layout import (
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
    receipt_digest,
)
from atoma_lab.protocol.hardened.messages import (
    HardenedRequest,
    HardenedResponse,
    parse_request,
    parse_response,
)
from atoma_lab.protocol.hardened.seal import (
    HardenedClientContext,
    HardenedNodeContext,
    OpenedHardenedRequest,
    OpenedHardenedResponse,
    SealedHardenedRequest,
    open_hardened_request,
    open_hardened_response,
    seal_hardened_request,
    seal_hardened_response,
    verify_receipt,
)
from atoma_lab.protocol.keyring import (
    DEFAULT_KEY_GRACE_S,
    NodeKeyRing,
    node_key_id,
)
from atoma_lab.protocol.replay import (
    DEFAULT_REPLAY_CACHE_ENTRIES,
    DEFAULT_REPLAY_WINDOW_S,
    ReplayGuard,
)

__all__ = [
    "CIPHERS",
    "DEFAULT_KEY_GRACE_S",
    "DEFAULT_REPLAY_CACHE_ENTRIES",
    "DEFAULT_REPLAY_WINDOW_S",
    "HAND_MADE",
    "HPKE_BASE",
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
    "Cipher",
    "HandMadeCipher",
    "HardenedClientContext",
    "HardenedNodeContext",
    "HardenedRequest",
    "HardenedResponse",
    "HpkeBaseCipher",
    "NodeKeyRing",
    "OpenedHardenedRequest",
    "OpenedHardenedResponse",
    "ReplayGuard",
    "SealedHardenedRequest",
    "cipher_for",
    "derive_direction_keys",
    "node_key_id",
    "open_hardened_request",
    "open_hardened_response",
    "parse_request",
    "parse_response",
    "receipt_digest",
    "seal_hardened_request",
    "seal_hardened_response",
    "verify_receipt",
]
