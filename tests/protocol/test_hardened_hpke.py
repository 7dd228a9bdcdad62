"""The hardened profile sealed with RFC 9180 HPKE (``atoma-lab/hardened-hpke-v1``): the request is
a genuine HPKE base-mode message (the HPKE primitive opens it), the response key is an HPKE
export, and the hardened profile's bindings, receipt and replay rules hold unchanged."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atoma_lab.crypto import hpke
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.errors import (
    AtomaLabError,
    DecryptionError,
    ProfileMismatchError,
    ReplayedRequestError,
)
from atoma_lab.protocol import hardened
from atoma_lab.protocol.atoma.messages import Usage

NOW = 1_750_000_000.0
NODE = X25519KeyPair.generate()
SIGNER = SuiSigner.generate()
BODY = b'{"input":"hpke me","model":"m"}'


def _seal(**kw: object) -> hardened.SealedHardenedRequest:
    args: dict[str, object] = {"node_public_key": NODE.public_bytes, "model_name": "m",
                               "stack_small_id": 7, "now": NOW, "profile": hardened.PROFILE_HPKE}
    args.update(kw)
    return hardened.seal_hardened_request(BODY, **args)  # type: ignore[arg-type]


def _round_trip(sealed: hardened.SealedHardenedRequest) -> bytes:
    wire = hardened.parse_request(hardened.HardenedRequest.from_json(
        sealed.request.to_json()).to_dict())
    assert isinstance(wire, hardened.HardenedRequest)
    opened = hardened.open_hardened_request(wire, NODE, guard=hardened.ReplayGuard(), now=NOW)
    assert opened.plaintext == BODY
    response = hardened.seal_hardened_response(b'{"data":[]}', opened.context, signer=SIGNER,
                                      usage=Usage(3, 3))
    answer = hardened.parse_response(hardened.HardenedResponse.from_json(
        response.to_json()).to_dict())
    assert answer.profile == hardened.PROFILE_HPKE
    return hardened.open_hardened_response(answer, sealed.context,
                                  expected_signer_address=SIGNER.address).plaintext


def test_round_trip_and_wire_profile() -> None:
    sealed = _seal()
    assert sealed.request.to_dict()["profile"] == hardened.PROFILE_HPKE
    assert _round_trip(sealed) == b'{"data":[]}'


def test_the_request_is_a_genuine_hpke_message() -> None:
    """HPKE's own recipient context, given the profile's info and AAD, opens it; the response
    key is the context's export under the profile's label."""
    ephemeral = X25519KeyPair.generate()
    sealed = _seal(client_key=ephemeral)
    req = sealed.request
    assert req.client_dh_public_key == ephemeral.public_bytes  # enc of DHKEM(X25519)
    ctx = hpke.setup_base_recipient(hardened.HPKE_SUITE, req.client_dh_public_key, NODE,
                                    hardened.HPKE_INFO + req.node_key_id + req.salt)
    assert ctx.open(req.ciphertext, req.aad()) == BODY
    opened = hardened.open_hardened_request(req, NODE, guard=hardened.ReplayGuard(), now=NOW)
    response = hardened.seal_hardened_response(b"answer", opened.context, signer=SIGNER)
    key = ctx.export(hardened.HPKE_EXPORT_N2C, 32)
    assert AESGCM(key).decrypt(response.nonce, response.ciphertext, response.aad()) == b"answer"


def test_the_plain_hardened_profile_cannot_open_it() -> None:
    """Relabelling an HPKE request as the other hardened profile (or back) fails: the profile is
    in the AAD and the key derivations differ."""
    for profile, other in ((hardened.PROFILE_HPKE, hardened.PROFILE),
                           (hardened.PROFILE, hardened.PROFILE_HPKE)):
        relabelled = _seal(profile=profile).request.replace(profile=other)
        with pytest.raises(DecryptionError):
            hardened.open_hardened_request(relabelled, NODE, guard=hardened.ReplayGuard(), now=NOW)


def test_a_response_of_the_other_profile_is_refused() -> None:
    sealed = _seal()
    opened = hardened.open_hardened_request(sealed.request, NODE, guard=hardened.ReplayGuard(), now=NOW)
    response = hardened.seal_hardened_response(b"x", opened.context, signer=SIGNER)
    with pytest.raises(ProfileMismatchError):
        hardened.open_hardened_response(response.replace(profile=hardened.PROFILE),
                               sealed.context)


@pytest.mark.parametrize("field", ["model_name", "stack_small_id", "client_dh_public_key", "salt",
                                   "nonce", "timestamp", "request_id", "num_compute_units",
                                   "ciphertext"])
def test_every_bound_field_is_bound(field: str) -> None:
    req = _seal(num_compute_units=100).request
    value = getattr(req, field)
    if isinstance(value, bytes):
        changed: object = bytes([value[0] ^ 1]) + value[1:]
    elif isinstance(value, int):
        changed = value + 1
    else:
        changed = value + "x"
    guard = hardened.ReplayGuard()
    with pytest.raises(AtomaLabError):
        hardened.open_hardened_request(req.replace(**{field: changed}), NODE, guard=guard,
                              now=NOW)
    assert guard.entries == 0  # nothing recorded for a forgery


def test_replay_is_refused() -> None:
    req = _seal().request
    guard = hardened.ReplayGuard()
    hardened.open_hardened_request(req, NODE, guard=guard, now=NOW)
    with pytest.raises(ReplayedRequestError):
        hardened.open_hardened_request(req, NODE, guard=guard, now=NOW + 1)


def test_an_unknown_profile_is_refused() -> None:
    data = _seal().request.to_dict()
    data["profile"] = "atoma-lab/hardened-v9"
    with pytest.raises(ProfileMismatchError):
        hardened.parse_request(data)
    with pytest.raises(ValueError):
        _seal(profile="atoma-lab/hardened-v9")
