"""The node key ring both profiles share (``atoma_lab.protocol.keyring``): one record per key
(counter, evidence, id), lookups by public key (Atoma) and by key id (hardened) that agree, the
grace window, Atoma's per-key replay memory and the ring's replay guard."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from atoma_lab.crypto.attestation import AttestationEvidence, SimulatedTEE
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.errors import NodeKeyMismatchError, ReplayedRequestError
from atoma_lab.protocol import NodeKey, NodeKeyRing, hardened
from atoma_lab.protocol.keyring import DEFAULT_KEY_GRACE_S, DEFAULT_OPENED_PER_KEY, node_key_id
from atoma_lab.protocol.replay import ReplayGuard

NOW = 1_800_000_000.0
K1, K2, K3, K4 = (X25519KeyPair.from_private_bytes(bytes([i]) * 32) for i in (11, 22, 33, 44))
TEE = SimulatedTEE(SuiSigner.from_ed25519_seed(bytes(32)))
SIGNER = SuiSigner.from_ed25519_seed(bytes(range(32)))


def _evidence(pair: X25519KeyPair, counter: int) -> AttestationEvidence:
    return TEE.attest(node_small_id=1, key_rotation_counter=counter, rotation_nonce=counter,
                      public_key=pair.public_bytes, signer_address=SIGNER.address, now=NOW)


# The two ways a request names its key, and the field a 409 names for each.
LOOKUPS: dict[str, tuple[Callable[[NodeKeyRing, X25519KeyPair, float], NodeKey], str]] = {
    "atoma": (lambda r, k, now: r.by_public_key(k.public_bytes, now=now), "node_dh_public_key"),
    "hardened": (lambda r, k, now: r.by_key_id(node_key_id(k.public_bytes), now=now),
                 "node_key_id"),
}


def test_node_key_id_is_blake2b_256_of_the_public_key() -> None:
    assert node_key_id(K1.public_bytes) == hashlib.blake2b(K1.public_bytes,
                                                           digest_size=32).digest()
    assert hardened.node_key_id is node_key_id  # re-exported where the hardened profile uses it
    with pytest.raises(ValueError):
        node_key_id(K1.public_bytes[:31])


def test_a_new_ring_holds_one_attested_key() -> None:
    evidence = _evidence(K1, 5)
    ring = NodeKeyRing(K1, counter=5, evidence=evidence)
    key = ring.current_key
    assert ring.current is K1 and key.pair is K1
    assert (key.counter, key.evidence, key.retired_at) == (5, evidence, None)
    assert key.public_key == K1.public_bytes and key.key_id == node_key_id(K1.public_bytes)
    assert ring.current_key_id == key.key_id
    assert (ring.counter, ring.evidence, ring.keys) == (5, evidence, (key,))
    assert ring.grace_s == DEFAULT_KEY_GRACE_S and ring.opened_per_key == DEFAULT_OPENED_PER_KEY
    assert isinstance(ring.guard, ReplayGuard)
    assert NodeKeyRing(K1).counter == 1 and NodeKeyRing(K1).evidence is None


def test_both_lookups_find_the_same_record() -> None:
    ring = NodeKeyRing(K1).rotate(K2, now=NOW)
    for pair in (K1, K2):
        by_public = ring.by_public_key(pair.public_bytes, now=NOW)
        assert by_public is ring.by_key_id(node_key_id(pair.public_bytes), now=NOW)
        assert by_public.pair is pair
        assert ring.lookup(node_key_id(pair.public_bytes), now=NOW) is pair


@pytest.mark.parametrize("profile", sorted(LOOKUPS))
def test_an_unknown_key_is_stale_on_the_field_the_request_used(profile: str) -> None:
    find, field = LOOKUPS[profile]
    with pytest.raises(NodeKeyMismatchError) as excinfo:
        find(NodeKeyRing(K1), K2, NOW)
    assert excinfo.value.status == 409 and excinfo.value.code == "STALE_NODE_KEY"
    assert excinfo.value.field == field


def test_rotation_counts_and_keeps_the_evidence_of_each_key() -> None:
    ring = NodeKeyRing(K1, counter=1, evidence=_evidence(K1, 1), grace_s=60)
    second = _evidence(K2, 2)
    assert ring.rotate(K2, now=NOW, evidence=second) is ring  # in place
    assert (ring.current, ring.counter, ring.evidence) == (K2, 2, second)
    old, new = ring.keys
    assert old.pair is K1 and old.counter == 1 and old.retired_at == NOW
    assert old.evidence is not None and old.evidence.report.public_key == K1.public_bytes
    assert new is ring.current_key and new.retired_at is None
    ring.rotate(K3, now=NOW + 1)  # evidence is optional (a ring without a TEE)
    assert ring.counter == 3 and ring.evidence is None


def test_evidence_must_bind_the_key_and_its_counter() -> None:
    with pytest.raises(ValueError, match="public key"):
        NodeKeyRing(K1, evidence=_evidence(K2, 1))
    with pytest.raises(ValueError, match="counter"):
        NodeKeyRing(K1, counter=2, evidence=_evidence(K1, 1))
    ring = NodeKeyRing(K1)
    with pytest.raises(ValueError, match="counter"):
        ring.rotate(K2, now=NOW, evidence=_evidence(K2, 3))
    with pytest.raises(ValueError, match="public key"):
        ring.rotate(K2, now=NOW, evidence=_evidence(K3, 2))
    assert ring.current is K1 and ring.counter == 1  # refused rotations change nothing
    with pytest.raises(ValueError, match="already"):
        ring.rotate(K1, now=NOW)


@pytest.mark.parametrize("profile", sorted(LOOKUPS))
def test_a_retired_key_serves_through_the_grace_window_only(profile: str) -> None:
    find, field = LOOKUPS[profile]
    ring = NodeKeyRing(K1, grace_s=30).rotate(K2, now=NOW)
    assert find(ring, K1, NOW).pair is K1
    assert find(ring, K1, NOW + 30).pair is K1  # the window is closed at both ends
    with pytest.raises(NodeKeyMismatchError) as excinfo:
        find(ring, K1, NOW + 30.001)
    assert excinfo.value.field == field and "retired" in excinfo.value.message
    assert find(ring, K2, NOW + 10_000).pair is K2  # the current key never expires


@pytest.mark.parametrize("profile", sorted(LOOKUPS))
def test_without_a_grace_window_a_retired_key_is_refused_at_once(profile: str) -> None:
    find, _ = LOOKUPS[profile]
    ring = NodeKeyRing(K1, grace_s=0).rotate(K2, now=NOW)
    with pytest.raises(NodeKeyMismatchError):
        find(ring, K1, NOW)  # not even at the instant of rotation
    assert [k.pair for k in ring.keys] == [K2]


def test_rotation_drops_keys_that_no_longer_serve() -> None:
    ring = NodeKeyRing(K1, grace_s=30).rotate(K2, now=NOW).rotate(K3, now=NOW + 20)
    assert [k.pair for k in ring.keys] == [K1, K2, K3]
    ring.rotate(K4, now=NOW + 40)  # K1 retired 40 s ago: dropped; K2 retired 20 s ago: kept
    assert [k.pair for k in ring.keys] == [K2, K3, K4]
    with pytest.raises(NodeKeyMismatchError) as excinfo:
        ring.by_public_key(K1.public_bytes, now=NOW + 40)
    assert "no key" in excinfo.value.message


def test_atoma_memory_refuses_a_repeat_per_key() -> None:
    ring = NodeKeyRing(K1, grace_s=60)
    first = ring.current_key
    ring.remember(first, b"salt+nonce")
    with pytest.raises(ReplayedRequestError) as excinfo:
        ring.remember(first, b"salt+nonce")
    assert excinfo.value.status == 409 and excinfo.value.code == "REPLAYED_REQUEST"
    ring.rotate(K2, now=NOW)
    ring.remember(ring.current_key, b"salt+nonce")  # another key: another request
    with pytest.raises(ReplayedRequestError):  # the retired key still remembers, within grace
        ring.remember(ring.by_public_key(K1.public_bytes, now=NOW + 1), b"salt+nonce")
    assert [len(k.opened) for k in ring.keys] == [1, 1]


def test_a_full_memory_makes_rotation_due_and_the_key_stop_serving() -> None:
    ring = NodeKeyRing(K1, grace_s=60, opened_per_key=2)
    key = ring.current_key
    ring.remember(key, b"a")
    assert not ring.rotation_due
    ring.remember(key, b"b")
    assert ring.rotation_due
    # Until the caller rotates, the full key opens nothing more (fails closed), by either name.
    for find, _ in LOOKUPS.values():
        with pytest.raises(NodeKeyMismatchError):
            find(ring, K1, NOW)
    ring.rotate(K2, now=NOW)
    assert not ring.rotation_due
    # A full key does not serve out a grace window: it leaves the ring at its rotation.
    assert [k.pair for k in ring.keys] == [K2]


def test_a_retired_key_stops_serving_when_its_memory_fills() -> None:
    ring = NodeKeyRing(K1, grace_s=60, opened_per_key=2)
    ring.remember(ring.current_key, b"a")
    ring.rotate(K2, now=NOW)
    old = ring.by_key_id(node_key_id(K1.public_bytes), now=NOW + 1)
    ring.remember(old, b"b")
    assert not ring.rotation_due  # only the current key is rotated
    with pytest.raises(NodeKeyMismatchError):
        ring.by_public_key(K1.public_bytes, now=NOW + 2)
    assert max(len(k.opened) for k in ring.keys) <= ring.opened_per_key


def test_the_memory_bound_can_be_changed_and_is_checked() -> None:
    ring = NodeKeyRing(K1)
    ring.remember(ring.current_key, b"a")
    ring.opened_per_key = 1
    assert ring.rotation_due
    for bad in (0, -1, True, 1.5, "3"):
        with pytest.raises(ValueError):
            ring.opened_per_key = bad  # type: ignore[assignment]
        with pytest.raises(ValueError):
            NodeKeyRing(K1, opened_per_key=bad)  # type: ignore[arg-type]
    assert ring.opened_per_key == 1


def test_without_memory_nothing_is_recorded_and_no_rotation_is_due() -> None:
    ring = NodeKeyRing(K1, opened_per_key=1, remember_opened=False)
    for _ in range(3):
        ring.remember(ring.current_key, b"same")  # Atoma's node: served as often as it comes
    assert len(ring.current_key.opened) == 0 and not ring.rotation_due


def test_the_hardened_profile_uses_the_rings_guard() -> None:
    guard = ReplayGuard(window_s=10)
    ring = NodeKeyRing(K1, guard=guard)
    assert ring.guard is guard
    sealed = hardened.seal_hardened_request(b"{}", node_public_key=K1.public_bytes, model_name="m",
                                   stack_small_id=1, now=NOW)
    assert hardened.open_hardened_request(sealed.request, ring, now=NOW).plaintext == b"{}"
    assert guard.entries == 1
    with pytest.raises(ReplayedRequestError):
        hardened.open_hardened_request(sealed.request, ring, now=NOW + 1)
    with pytest.raises(TypeError):  # a bare key pair has no guard of its own
        hardened.open_hardened_request(sealed.request, K1, now=NOW)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        NodeKeyRing(K1, grace_s=-1)
    with pytest.raises(ValueError):
        NodeKeyRing(K1, counter=-1)


def test_reprs_hold_no_key_material() -> None:
    ring = NodeKeyRing(K1, evidence=_evidence(K1, 1)).rotate(K2, now=NOW)
    ring.remember(ring.current_key, b"marker-bytes")
    texts = [repr(ring), *(repr(k) for k in ring.keys), repr(ring.current_key.opened)]
    for text in texts:
        for pair in (K1, K2):
            assert pair.private_bytes().hex() not in text
            assert pair.private_bytes().hex()[:16] not in text
        assert "marker-bytes" not in text
    assert "counter=2" in repr(ring) and "opened=1" in repr(ring.current_key)
