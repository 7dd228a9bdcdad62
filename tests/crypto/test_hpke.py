"""HPKE base mode (RFC 9180): Appendix A vectors both ways, pyca interop, and negative cases.

``tests/vectors/rfc9180_x25519_base.json`` holds RFC 9180 A.1 (AES-128-GCM) and A.2
(ChaCha20Poly1305), base mode. RFC 9180 has no X25519 + AES-256-GCM vector, so that suite (and the
other two) is also checked against pyca/cryptography's independent HPKE (OpenSSL's), in both
directions, with empty AAD (the only AAD its public API offers).
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke as pyca_hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from atoma_lab.crypto import hpke
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.errors import DecryptionError, InvalidLengthError, InvalidPublicKeyError

from .vectors import load_vectors, vector_id

SETUPS = {v["name"]: v for v in load_vectors("rfc9180_x25519_base", kind="setup")}
ENCRYPTIONS = load_vectors("rfc9180_x25519_base", kind="encryption")
EXPORTS = load_vectors("rfc9180_x25519_base", kind="export")
ALL_SUITES = [hpke.X25519_SHA256_AES128GCM, hpke.X25519_SHA256_AES256GCM,
              hpke.X25519_SHA256_CHACHA20POLY1305]
_PYCA_AEAD = {
    hpke.AeadId.AES_128_GCM: pyca_hpke.AEAD.AES_128_GCM,
    hpke.AeadId.AES_256_GCM: pyca_hpke.AEAD.AES_256_GCM,
    hpke.AeadId.CHACHA20_POLY1305: pyca_hpke.AEAD.CHACHA20_POLY1305,
}
RECIPIENT = X25519KeyPair.from_private_bytes(bytes(range(1, 33)))
OTHER = X25519KeyPair.from_private_bytes(bytes(range(2, 34)))
EPHEMERAL = X25519KeyPair.from_private_bytes(bytes(range(40, 72)))
INFO = b"atoma-lab hpke test"
AAD = b"bound header"
MESSAGE = b'{"input":"zebra-canary-hpke","model":"m"}'


def _suite(setup: dict[str, Any]) -> hpke.Suite:
    assert (setup["mode"], setup["kem_id"], setup["kdf_id"]) == (0, 0x20, 0x01)
    return hpke.Suite(setup["aead_id"])


def _pyca_suite(suite: hpke.Suite) -> pyca_hpke.Suite:
    return pyca_hpke.Suite(pyca_hpke.KEM.X25519, pyca_hpke.KDF.HKDF_SHA256, _PYCA_AEAD[suite.aead])


# ------------------------------------------------------------------------------------------------
# RFC 9180 Appendix A
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("setup", list(SETUPS.values()), ids=vector_id)
def test_derive_key_pair(setup: dict[str, Any]) -> None:
    ephemeral = hpke.derive_key_pair(setup["ikmE"])
    recipient = hpke.derive_key_pair(setup["ikmR"])
    assert ephemeral.private_bytes() == setup["skEm"]
    assert ephemeral.public_bytes == setup["pkEm"]
    assert recipient.private_bytes() == setup["skRm"]
    assert recipient.public_bytes == setup["pkRm"]


@pytest.mark.parametrize("setup", list(SETUPS.values()), ids=vector_id)
def test_encap_decap_and_key_schedule(setup: dict[str, Any]) -> None:
    suite = _suite(setup)
    ephemeral = X25519KeyPair.from_private_bytes(setup["skEm"])
    recipient = X25519KeyPair.from_private_bytes(setup["skRm"])
    shared, enc = hpke.encap(setup["pkRm"], ephemeral)
    assert enc == setup["enc"]
    assert shared == setup["shared_secret"]
    assert hpke.decap(setup["enc"], recipient) == setup["shared_secret"]
    schedule = hpke.key_schedule_base(suite, shared, setup["info"])
    assert schedule.key_schedule_context == setup["key_schedule_context"]
    assert schedule.secret == setup["secret"]
    assert schedule.key == setup["key"]
    assert schedule.base_nonce == setup["base_nonce"]
    assert schedule.exporter_secret == setup["exporter_secret"]
    assert "redacted" in repr(schedule) and setup["key"].hex() not in repr(schedule)


def _vector_stream(setup_name: str) -> tuple[hpke.Context, hpke.Context, dict[int, dict[str, Any]]]:
    setup = SETUPS[setup_name]
    suite = _suite(setup)
    enc, sender = hpke.setup_base_sender(
        suite, setup["pkRm"], setup["info"],
        ephemeral_key=X25519KeyPair.from_private_bytes(setup["skEm"]),
    )
    assert enc == setup["enc"]
    recipient = hpke.setup_base_recipient(
        suite, enc, X25519KeyPair.from_private_bytes(setup["skRm"]), setup["info"]
    )
    by_seq = {v["sequence_number"]: v for v in ENCRYPTIONS if v["suite_name"] == setup_name}
    return sender, recipient, by_seq


@pytest.mark.parametrize("setup_name", sorted(SETUPS))
def test_sequence_of_encryptions_both_ways(setup_name: str) -> None:
    """The sender reproduces every listed ciphertext and the recipient opens it, at sequence
    numbers 0, 1, 2, 4, 255 and 256; the unlisted numbers between carry filler messages that the
    sender seals and the recipient opens, so both contexts reach each listed number honestly."""
    sender, recipient, by_seq = _vector_stream(setup_name)
    last = max(by_seq)
    for seq in range(last + 1):
        assert sender.sequence_number == recipient.sequence_number == seq
        vector = by_seq.get(seq)
        if vector is None:
            filler = b"filler %d" % seq
            assert recipient.open(sender.seal(filler, b"aad"), b"aad") == filler
            continue
        assert (sender._base_nonce ^ seq).to_bytes(12, "big") == vector["nonce"]
        assert sender.seal(vector["pt"], vector["aad"]) == vector["ct"]
        assert recipient.open(vector["ct"], vector["aad"]) == vector["pt"]
    assert {0, 1, 2, 4, 255, 256} <= set(by_seq)


@pytest.mark.parametrize("vector", EXPORTS, ids=vector_id)
def test_exported_values(vector: dict[str, Any]) -> None:
    sender, recipient, _ = _vector_stream(vector["suite_name"])
    for context in (sender, recipient):
        assert context.export(vector["exporter_context"], vector["length"]) == vector["exported_value"]


@pytest.mark.parametrize("setup", list(SETUPS.values()), ids=vector_id)
def test_single_shot_matches_sequence_zero(setup: dict[str, Any]) -> None:
    vector = next(v for v in ENCRYPTIONS
                  if v["suite_name"] == setup["name"] and v["sequence_number"] == 0)
    suite = _suite(setup)
    sealed = hpke.seal_base(
        suite, setup["pkRm"], vector["pt"], info=setup["info"], aad=vector["aad"],
        ephemeral_key=X25519KeyPair.from_private_bytes(setup["skEm"]),
    )
    assert sealed == hpke.Sealed(setup["enc"], vector["ct"])
    recipient = X25519KeyPair.from_private_bytes(setup["skRm"])
    assert hpke.open_base(suite, recipient, setup["enc"], vector["ct"], info=setup["info"],
                          aad=vector["aad"]) == vector["pt"]
    # rng-derived ephemeral keys follow DeriveKeyPair(ikmE).
    sealed_rng = hpke.seal_base(suite, setup["pkRm"], vector["pt"], info=setup["info"],
                                aad=vector["aad"], rng=lambda n: setup["ikmE"][:n])
    assert sealed_rng == sealed


# ------------------------------------------------------------------------------------------------
# Interop with pyca/cryptography's HPKE (covers AES-256-GCM, which RFC 9180 has no vector for)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.aead.name)
def test_pyca_seals_we_open(suite: hpke.Suite) -> None:
    sk = X25519PrivateKey.from_private_bytes(RECIPIENT.private_bytes())
    message = _pyca_suite(suite).encrypt(MESSAGE, sk.public_key(), INFO)
    parts = hpke.split_enc(message)
    assert hpke.open_base(suite, RECIPIENT, parts.enc, parts.ciphertext, info=INFO) == MESSAGE


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.aead.name)
def test_we_seal_pyca_opens(suite: hpke.Suite) -> None:
    sealed = hpke.seal_base(suite, RECIPIENT.public_bytes, MESSAGE, info=INFO)
    sk = X25519PrivateKey.from_private_bytes(RECIPIENT.private_bytes())
    assert _pyca_suite(suite).decrypt(sealed.to_bytes(), sk, INFO) == MESSAGE
    # A different AEAD id changes the suite id, so another suite cannot open it.
    for other in ALL_SUITES:
        if other != suite:
            with pytest.raises(InvalidTag):
                _pyca_suite(other).decrypt(sealed.to_bytes(), sk, INFO)


def test_suite_ids_and_key_sizes() -> None:
    assert hpke.X25519_SHA256_AES128GCM.suite_id == bytes.fromhex("48504b45002000010001")
    assert hpke.X25519_SHA256_AES256GCM.suite_id == bytes.fromhex("48504b45002000010002")
    assert hpke.X25519_SHA256_CHACHA20POLY1305.suite_id == bytes.fromhex("48504b45002000010003")
    assert [s.key_size for s in ALL_SUITES] == [16, 32, 32]
    with pytest.raises(ValueError):
        hpke.Suite(0xFFFF)  # export-only AEAD: not offered


# ------------------------------------------------------------------------------------------------
# Negative cases
# ------------------------------------------------------------------------------------------------


def _sealed(suite: hpke.Suite) -> hpke.Sealed:
    return hpke.seal_base(suite, RECIPIENT.public_bytes, MESSAGE, info=INFO, aad=AAD,
                          ephemeral_key=EPHEMERAL)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.aead.name)
def test_round_trip_with_info_and_aad(suite: hpke.Suite) -> None:
    sealed = _sealed(suite)
    assert len(sealed.enc) == hpke.ENC_SIZE
    assert len(sealed.ciphertext) == len(MESSAGE) + 16
    assert hpke.open_base(suite, RECIPIENT, sealed.enc, sealed.ciphertext, info=INFO,
                          aad=AAD) == MESSAGE
    # Fresh ephemeral keys by default: two seals of one message differ.
    a = hpke.seal_base(suite, RECIPIENT.public_bytes, MESSAGE)
    b = hpke.seal_base(suite, RECIPIENT.public_bytes, MESSAGE)
    assert a.enc != b.enc and a.ciphertext != b.ciphertext


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.aead.name)
@pytest.mark.parametrize(
    "change",
    ["wrong_key", "enc", "ciphertext", "tag", "aad", "info", "empty_aad", "truncated"],
)
def test_tampering_is_a_decryption_error(suite: hpke.Suite, change: str) -> None:
    sealed = _sealed(suite)
    key, enc, ct, info, aad = RECIPIENT, sealed.enc, sealed.ciphertext, INFO, AAD
    if change == "wrong_key":
        key = OTHER
    elif change == "enc":
        enc = _flip(enc, 5)
    elif change == "ciphertext":
        ct = _flip(ct, 0)
    elif change == "tag":
        ct = _flip(ct, len(ct) - 1)
    elif change == "aad":
        aad = _flip(aad, 2)
    elif change == "info":
        info = INFO + b"!"
    elif change == "empty_aad":
        aad = b""
    elif change == "truncated":
        ct = ct[:-1]
    with pytest.raises(DecryptionError) as excinfo:
        hpke.open_base(suite, key, enc, ct, info=info, aad=aad)
    assert MESSAGE.decode() not in str(excinfo.value)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_enc_of_wrong_size(size: int) -> None:
    with pytest.raises(InvalidLengthError) as excinfo:
        hpke.open_base(hpke.X25519_SHA256_AES256GCM, RECIPIENT, bytes(size), bytes(32))
    assert excinfo.value.field == "enc"


def test_ciphertext_shorter_than_tag() -> None:
    sealed = _sealed(hpke.X25519_SHA256_AES256GCM)
    with pytest.raises(DecryptionError) as excinfo:
        hpke.open_base(hpke.X25519_SHA256_AES256GCM, RECIPIENT, sealed.enc, bytes(15))
    assert excinfo.value.field == "ciphertext"


def test_split_enc_of_short_message() -> None:
    with pytest.raises(InvalidLengthError):
        hpke.split_enc(bytes(47))
    assert hpke.split_enc(bytes(range(48))) == hpke.Sealed(bytes(range(32)), bytes(range(32, 48)))


@pytest.mark.parametrize("low_order", [bytes(32), (1).to_bytes(32, "little")])
def test_low_order_keys_are_refused(low_order: bytes) -> None:
    suite = hpke.X25519_SHA256_AES256GCM
    with pytest.raises(InvalidPublicKeyError):
        hpke.open_base(suite, RECIPIENT, low_order, bytes(32))
    with pytest.raises(InvalidPublicKeyError):
        hpke.seal_base(suite, low_order, MESSAGE)


def test_contexts_keep_to_their_role_and_do_not_advance_on_failure() -> None:
    suite = hpke.X25519_SHA256_AES256GCM
    enc, sender = hpke.setup_base_sender(suite, RECIPIENT.public_bytes, INFO)
    recipient = hpke.setup_base_recipient(suite, enc, RECIPIENT, INFO)
    with pytest.raises(ValueError):
        sender.open(bytes(32))
    with pytest.raises(ValueError):
        recipient.seal(MESSAGE)
    first, second = sender.seal(b"one"), sender.seal(b"two")
    with pytest.raises(DecryptionError):
        recipient.open(second)  # out of order: wrong nonce
    assert recipient.sequence_number == 0
    assert recipient.open(first) == b"one" and recipient.open(second) == b"two"
    with pytest.raises(DecryptionError):
        recipient.open(first)  # a replayed message fails: its nonce is behind the sequence
    assert "redacted" in repr(sender)


def test_export_matches_between_sender_and_recipient() -> None:
    suite = hpke.X25519_SHA256_AES256GCM
    enc, sender = hpke.setup_base_sender(suite, RECIPIENT.public_bytes, INFO)
    recipient = hpke.setup_base_recipient(suite, enc, RECIPIENT, INFO)
    assert sender.export(b"response", 32) == recipient.export(b"response", 32)
    assert sender.export(b"response", 32) != sender.export(b"request", 32)
    assert len(sender.export(b"", 64)) == 64
    with pytest.raises(ValueError):
        sender.export(b"", 255 * 32 + 1)


def test_public_api_takes_raw_public_keys() -> None:
    pk = X25519PublicKey.from_public_bytes(RECIPIENT.public_bytes)
    with pytest.raises(TypeError):
        hpke.seal_base(hpke.X25519_SHA256_AES256GCM, pk, MESSAGE)  # type: ignore[arg-type]
