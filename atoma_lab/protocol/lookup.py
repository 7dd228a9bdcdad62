"""The signed stack look-up (atoma-lab only; Atoma's node reads stacks from the chain).

A node in its own process asks the proxy who owns a stack with ``GET /v1/stacks?stack_small_id=N``
and the headers ``X-Node-Small-Id`` and ``X-Signature``: its Sui signature over
:func:`stack_lookup_digest`. The proxy answers only a registered node, and only about stacks
assigned to that node, so nobody can list every stack's owner and node by counting up.
"""

from __future__ import annotations

from atoma_lab.crypto.hashing import blake2b_256

STACK_LOOKUP_LABEL = b"atoma-lab/stack-lookup-v1"
U64_BYTES = 8  # bytes, big-endian, of each id in the signed message


def stack_lookup_digest(node_small_id: int, stack_small_id: int) -> bytes:
    """BLAKE2b-256 of the label, the node's id and the stack's id (each a big-endian u64)."""
    return blake2b_256(STACK_LOOKUP_LABEL + node_small_id.to_bytes(U64_BYTES, "big")
                       + stack_small_id.to_bytes(U64_BYTES, "big"))


__all__ = ["STACK_LOOKUP_LABEL", "stack_lookup_digest"]
