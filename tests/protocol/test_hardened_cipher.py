"""The request cipher of each hardened profile (``atoma_lab.protocol.hardened.cipher``): one object
per variant, looked up by profile name, each checked against the primitives it is made of."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atoma_lab.crypto import hpke
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.errors import DecryptionError
from atoma_lab.protocol import hardened as h
from atoma_lab.protocol.hardened.cipher import N2C_KEY_SIZE

NODE = X25519KeyPair.from_private_bytes(bytes(range(1, 33)))
OTHER = X25519KeyPair.from_private_bytes(bytes(range(2, 34)))
CLIENT = X25519KeyPair.from_private_bytes(bytes(range(40, 72)))
SALT, NONCE = bytes(range(16)), bytes(range(100, 112))
KEY_ID = h.node_key_id(NODE.public_bytes)
BODY = b'{"input":"cipher me","model":"m"}'
AAD = b"request aad"


def _request(cipher: h.Cipher, *, aad: bytes = AAD) -> tuple[h.HardenedRequest, bytes]:
    """A request sealed by ``cipher`` alone, and the client's node->client key."""
    ciphertext, k_n2c = cipher.seal_request(BODY, aad, client_key=CLIENT,
                                            node_public_key=NODE.public_bytes, key_id=KEY_ID,
                                            salt=SALT, nonce=NONCE)
    request = h.HardenedRequest(model_name="m", stack_small_id=1, node_key_id=KEY_ID,
                                client_dh_public_key=CLIENT.public_bytes, salt=SALT, nonce=NONCE,
                                timestamp=0, request_id=bytes(16), ciphertext=ciphertext,
                                profile=cipher.profile)
    return request, k_n2c


def test_one_cipher_per_profile() -> None:
    assert set(h.CIPHERS) == set(h.PROFILES)
    assert h.CIPHERS[h.PROFILE] is h.HAND_MADE and isinstance(h.HAND_MADE, h.HandMadeCipher)
    assert h.CIPHERS[h.PROFILE_HPKE] is h.HPKE_BASE and isinstance(h.HPKE_BASE, h.HpkeBaseCipher)
    for profile, cipher in h.CIPHERS.items():
        assert cipher.profile == profile and h.cipher_for(profile) is cipher
        assert profile in repr(cipher)
    with pytest.raises(ValueError):
        h.cipher_for("atoma")
    with pytest.raises(TypeError):  # the table is read-only
        h.CIPHERS["x"] = h.HAND_MADE  # type: ignore[index]


@pytest.mark.parametrize("profile", h.PROFILES)
def test_both_sides_agree_on_the_body_and_the_response_key(profile: str) -> None:
    cipher = h.cipher_for(profile)
    request, client_n2c = _request(cipher)
    plaintext, node_n2c = cipher.open_request(request, AAD, NODE)
    assert plaintext == BODY
    assert node_n2c == client_n2c and len(client_n2c) == N2C_KEY_SIZE


@pytest.mark.parametrize("profile", h.PROFILES)
def test_another_aad_or_node_key_does_not_open(profile: str) -> None:
    cipher = h.cipher_for(profile)
    request, _ = _request(cipher)
    with pytest.raises(DecryptionError):
        cipher.open_request(request, AAD + b"!", NODE)
    with pytest.raises(DecryptionError):
        cipher.open_request(request, AAD, OTHER)


def test_the_other_variant_does_not_open_a_request() -> None:
    request, _ = _request(h.HAND_MADE)
    with pytest.raises(DecryptionError):
        h.HPKE_BASE.open_request(request, AAD, NODE)
    request, _ = _request(h.HPKE_BASE)
    with pytest.raises(DecryptionError):
        h.HAND_MADE.open_request(request, AAD, NODE)


def test_hand_made_is_x25519_hkdf_and_aes_gcm() -> None:
    request, client_n2c = _request(h.HAND_MADE)
    shared = CLIENT.exchange(NODE.public_bytes)
    k_c2n, k_n2c = h.derive_direction_keys(shared, SALT, CLIENT.public_bytes, NODE.public_bytes)
    assert AESGCM(k_c2n).decrypt(NONCE, request.ciphertext, AAD) == BODY
    assert client_n2c == k_n2c


def test_hpke_is_rfc9180_base_mode_with_an_exported_response_key() -> None:
    request, client_n2c = _request(h.HPKE_BASE)
    info = h.HPKE_INFO + KEY_ID + SALT
    recipient = hpke.setup_base_recipient(h.HPKE_SUITE, CLIENT.public_bytes, NODE, info)
    assert recipient.open(request.ciphertext, AAD) == BODY
    assert client_n2c == recipient.export(h.HPKE_EXPORT_N2C, N2C_KEY_SIZE)
    # HPKE derives its own nonce: the request's nonce is bound in the AAD only.
    other_nonce = request.replace(nonce=bytes(12))
    assert h.HPKE_BASE.open_request(other_nonce, AAD, NODE)[0] == BODY


def test_seal_and_open_take_the_cipher_of_the_request_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """seal_request and open_request reach the variant through the table, not by branching."""
    from atoma_lab.protocol.hardened import seal

    used: list[str] = []

    class Recording(h.HandMadeCipher):
        __slots__ = ()

        def seal_request(self, *args: object, **kw: object) -> tuple[bytes, bytes]:
            used.append("seal")
            return super().seal_request(*args, **kw)  # type: ignore[arg-type]

        def open_request(self, *args: object, **kw: object) -> tuple[bytes, bytes]:
            used.append("open")
            return super().open_request(*args, **kw)  # type: ignore[arg-type]

    recording = Recording()
    monkeypatch.setattr(seal, "CIPHERS", {h.PROFILE: recording})
    monkeypatch.setattr(seal, "cipher_for", lambda profile: {h.PROFILE: recording}[profile])
    sealed = h.seal_hardened_request(BODY, node_public_key=NODE.public_bytes, model_name="m",
                            stack_small_id=1, now=0)
    assert h.open_hardened_request(sealed.request, NODE, guard=h.ReplayGuard(), now=0).plaintext == BODY
    assert used == ["seal", "open"]
