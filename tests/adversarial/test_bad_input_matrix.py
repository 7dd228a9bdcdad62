"""The bad-input matrix: every case is one crafted request to the proxy, in-process and over
loopback HTTP. Each must get its documented status and error code with Atoma's JSON error body,
leave the books (balances, stacks' used and locked units, open locks) and every node's key,
rotation counter and evidence as they were, and the network must serve a valid confidential
request right after.

``stage`` says who refuses: ``"proxy"`` before any lock is consumed (a lock the case took stays
open until it expires), ``"node"`` after the proxy consumed the case's lock, which must then be
released at once with nothing charged and one settlement row whose outcome is the error code.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pytest
from crypto.vectors import load_vectors
from fakes import MODEL

from atoma_lab.crypto.attestation import SimulatedTEE
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.encoding import MAX_JSON_DEPTH, loads
from atoma_lab.protocol.openai import MAX_INPUTS
from atoma_lab.transport.base import MAX_BODY_BYTES, Response

from .support import CONF, LOCK, LONG_MAX_TOKENS, LONG_MODEL, PLAINTEXT, Adversary

PLAIN = "/v1/embeddings"
ATTESTATION = "/v1/nodes/attestation"
Make = Callable[[Adversary], Response]
Wire = dict[str, Any]


@dataclass(frozen=True)
class Case:
    name: str
    make: Make
    status: int
    code: str
    stage: Literal["proxy", "node"] = "proxy"


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def sealed(change: Callable[[Wire], None] | None = None, *, plaintext: bytes = PLAINTEXT,
           model_name: str = MODEL, lock_model: str = MODEL, who: str | None = "default",
           headers: dict[str, str] | None = None, edit: Callable[[bytes], bytes] | None = None,
           **seal_options: Any) -> Make:
    """Take a lock, seal ``plaintext`` for it, apply ``change`` to the wire dict and ``edit`` to
    its JSON bytes, post it."""
    def make(a: Adversary) -> Response:
        d = a.seal(a.lock(lock_model), plaintext, model_name=model_name, **seal_options)
        if change is not None:
            change(d)
        body = orjson.dumps(d)
        return a.post(CONF, body if edit is None else edit(body), who=who, headers=headers)
    return make


def raw(path: str, body: bytes | dict[str, Any] = b"", *, method: str = "POST",
        who: str | None = "default", headers: dict[str, str] | None = None) -> Make:
    return lambda a: a.post(path, body, who=who, headers=headers, method=method)


def drop(name: str) -> Callable[[Wire], None]:
    return lambda d: d.pop(name)


def put(name: str, value: object) -> Callable[[Wire], None]:
    return lambda d: d.__setitem__(name, value)


def recode(name: str, how: Callable[[str], str]) -> Callable[[Wire], None]:
    return lambda d: d.__setitem__(name, how(d[name]))


def sized(name: str, size: int) -> Callable[[Wire], None]:
    """Replace a binary field by ``size`` bytes of standard base64."""
    return put(name, base64.b64encode(bytes((7 * i + 1) % 256 for i in range(size))).decode())


def flip_bit(name: str, bit: int) -> Callable[[Wire], None]:
    """Flip one bit of a binary field's bytes (negative ``bit`` counts from the end)."""
    def change(d: Wire) -> None:
        data = bytearray(base64.b64decode(d[name]))
        bit_index = bit % (8 * len(data))
        data[bit_index // 8] ^= 1 << (bit_index % 8)
        d[name] = base64.b64encode(bytes(data)).decode()
    return change


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def plaintext_of(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


def unpadded(text: str) -> str:
    assert text.endswith("="), "pick a field whose base64 has padding"
    return text.rstrip("=")


def urlsafe(text: str) -> str:
    """The URL-safe alphabet: the same bytes with '-' and '_' for '+' and '/' (forced in)."""
    out = text.replace("+", "-").replace("/", "_")
    return out if out != text else "-_" + text[2:]


def with_whitespace(text: str) -> str:
    return text[:8] + " " + text[8:-4] + "\n" + text[-4:]


LOW_ORDER = load_vectors("x25519_rfc7748", kind="low_order")


def _forged_evidence(a: Adversary) -> bytes:
    """Evidence for node 1 binding an attacker's key, vouched for by an untrusted 'vendor'."""
    node = a.net.nodes[0]
    evidence = SimulatedTEE().attest(
        node_small_id=node.node_small_id, key_rotation_counter=node.key_rotation_counter + 1,
        rotation_nonce=1, public_key=X25519KeyPair.generate().public_bytes,
        signer_address=node.sui_address, now=a.clock())
    return evidence.to_json()


def forged_key(signed_by: str) -> Make:
    """Announce a made-up key for node 1: unsigned, or signed by a key that is not node 1's."""
    def make(a: Adversary) -> Response:
        body = _forged_evidence(a)
        headers = {}
        if signed_by == "impostor":
            headers["x-signature"] = SuiSigner.generate().sign(blake2b_256(body)).to_base64()
        return a.post(ATTESTATION, body, who=None, headers=headers)
    return make


def unknown_node_evidence(a: Adversary) -> Response:
    evidence = loads(_forged_evidence(a))
    evidence["report"]["node_small_id"] = 4242
    return a.post(ATTESTATION, orjson.dumps(evidence), who=None)


def without_lock(who: str, stack: Callable[[Adversary], int]) -> Make:
    """A request sealed to node 1's current key for ``stack`` with no lock taken."""
    def make(a: Adversary) -> Response:
        from atoma_lab.protocol.atoma.envelope import seal_request

        body = seal_request(PLAINTEXT, node_public_key=a.net.nodes[0].public_key,
                            stack_small_id=stack(a), model_name=MODEL).request.to_json()
        return a.post(CONF, body, who=who)
    return make


def other_users_stack(a: Adversary) -> Response:
    """The default user takes its own lock, then names the poor user's stack."""
    d = a.seal(a.lock())
    d["stack_small_id"] = a.poor_stack
    return a.post(CONF, orjson.dumps(d))


def default_stack(a: Adversary) -> int:
    return a.net.ledger.stacks(a.net.user_id)[0].stack_small_id


TOO_MANY = plaintext_of({"input": ["x"] * (MAX_INPUTS + 1), "model": MODEL})
TOO_LONG_TEXT = " ".join(["word"] * (2 * LONG_MAX_TOKENS))
TOO_LONG = plaintext_of({"input": [TOO_LONG_TEXT], "model": LONG_MODEL})

# ------------------------------------------------------------------------------------------------
# The cases
# ------------------------------------------------------------------------------------------------

CASES: list[Case] = [
    # Authentication (the lock the case took stays open, unused).
    Case("conf: no Authorization header", sealed(who=None), 401, "AUTH_ERROR"),
    Case("conf: 'Bearer' without a token", sealed(who=None, headers={"authorization": "Bearer"}),
         401, "AUTH_ERROR"),
    Case("conf: Basic scheme", sealed(who=None, headers={"authorization": "Basic dXNlcjpwdw=="}),
         401, "AUTH_ERROR"),
    Case("conf: unknown token", sealed(who="atl-not-a-real-token"), 401, "AUTH_ERROR"),
    Case("lock: no token", raw(LOCK, {"model": MODEL}, who=None), 401, "AUTH_ERROR"),
    Case("lock: unknown token", raw(LOCK, {"model": MODEL}, who="nope"), 401, "AUTH_ERROR"),
    Case("models: no token", raw("/v1/models", method="GET", who=None), 401, "AUTH_ERROR"),
    Case("plain: no token", raw(PLAIN, {"input": "x", "model": MODEL}, who=None), 401, "AUTH_ERROR"),
    # Malformed JSON.
    Case("conf: truncated JSON", raw(CONF, b'{"ciphertext": "AAAA'), 400, "INVALID_JSON"),
    Case("conf: empty body", raw(CONF, b""), 400, "INVALID_JSON"),
    Case("conf: body not UTF-8", raw(CONF, b'{"model_name": "\xff\xfe"}'), 400, "INVALID_JSON"),
    Case("conf: single quotes", raw(CONF, b"{'ciphertext': 'AAAA'}"), 400, "INVALID_JSON"),
    Case("conf: NaN", raw(CONF, b'{"stack_small_id": NaN}'), 400, "INVALID_JSON"),
    Case(f"conf: nested {MAX_JSON_DEPTH + 1} deep",
         sealed(put("x_extra", orjson.loads(nested(MAX_JSON_DEPTH)))), 400, "INVALID_JSON"),
    Case("conf: nested 100000 deep", raw(CONF, nested(100_000)), 400, "INVALID_JSON"),
    Case("conf: top-level array", raw(CONF, b"[]"), 400, "INVALID_FIELD"),
    Case("lock: truncated JSON", raw(LOCK, b'{"model": '), 400, "INVALID_JSON"),
    # Missing fields and wrong types.
    Case("conf: ciphertext missing", sealed(drop("ciphertext")), 400, "MISSING_FIELD"),
    Case("conf: stack_small_id missing", sealed(drop("stack_small_id")), 400, "MISSING_FIELD"),
    Case("conf: model_name missing", sealed(drop("model_name")), 400, "MISSING_FIELD"),
    Case("conf: salt null", sealed(put("salt", None)), 400, "MISSING_FIELD"),
    Case("conf: stack_small_id a string", sealed(recode("stack_small_id", str)),
         400, "INVALID_FIELD"),
    Case("conf: stack_small_id negative", sealed(put("stack_small_id", -1)), 400, "INVALID_FIELD"),
    Case("conf: stack_small_id a float", sealed(put("stack_small_id", 1.0)), 400, "INVALID_FIELD"),
    Case("conf: stack_small_id beyond u64", sealed(
        put("stack_small_id", 12345), edit=lambda b: b.replace(b":12345,", b":18446744073709551616,")),
        400, "INVALID_FIELD"),
    Case("conf: nonce a number", sealed(put("nonce", 12)), 400, "INVALID_FIELD"),
    Case("conf: model_name a number", sealed(put("model_name", 7)), 400, "INVALID_FIELD"),
    Case("conf: stream a string", sealed(put("stream", "yes")), 400, "INVALID_FIELD"),
    Case("conf: num_compute_units negative", sealed(put("num_compute_units", -1)), 400,
         "INVALID_FIELD"),
    Case("lock: model a number", raw(LOCK, {"model": 7}), 400, "INVALID_FIELD"),
    Case("lock: model missing", raw(LOCK, {"max_num_tokens": 10}), 400, "MISSING_FIELD"),
    Case("lock: max_num_tokens zero", raw(LOCK, {"model": MODEL, "max_num_tokens": 0}), 400,
         "INVALID_FIELD"),
    Case("lock: unknown model", raw(LOCK, {"model": "no/such-model"}), 404, "MODEL_NOT_FOUND"),
    # Non-standard base64.
    Case("conf: salt without padding", sealed(recode("salt", unpadded)), 400, "INVALID_BASE64"),
    Case("conf: node key without padding", sealed(recode("node_dh_public_key", unpadded)), 400,
         "INVALID_BASE64"),
    Case("conf: ciphertext url-safe alphabet", sealed(recode("ciphertext", urlsafe)), 400,
         "INVALID_BASE64"),
    Case("conf: client key url-safe alphabet", sealed(recode("client_dh_public_key", urlsafe)),
         400, "INVALID_BASE64"),
    Case("conf: hash with whitespace", sealed(recode("plaintext_body_hash", with_whitespace)),
         400, "INVALID_BASE64"),
    Case("conf: nonce with a trailing newline", sealed(recode("nonce", lambda t: t + "\n")), 400,
         "INVALID_BASE64"),
    # Wrong sizes.
    Case("conf: node key 31 bytes", sealed(sized("node_dh_public_key", 31)), 400, "INVALID_LENGTH"),
    Case("conf: node key 33 bytes", sealed(sized("node_dh_public_key", 33)), 400, "INVALID_LENGTH"),
    Case("conf: client key 31 bytes", sealed(sized("client_dh_public_key", 31)), 400,
         "INVALID_LENGTH"),
    Case("conf: client key 33 bytes", sealed(sized("client_dh_public_key", 33)), 400,
         "INVALID_LENGTH"),
    Case("conf: salt 15 bytes", sealed(sized("salt", 15)), 400, "INVALID_LENGTH"),
    Case("conf: nonce 11 bytes", sealed(sized("nonce", 11)), 400, "INVALID_LENGTH"),
    Case("conf: hash 31 bytes", sealed(sized("plaintext_body_hash", 31)), 400, "INVALID_LENGTH"),
    Case("conf: ciphertext shorter than the tag", sealed(sized("ciphertext", 15)), 400,
         "INVALID_LENGTH"),
    # One bit flipped in each field of a sealed request.
    Case("conf: bit flipped in the ciphertext body", sealed(flip_bit("ciphertext", 0)), 400,
         "DECRYPTION_FAILED", "node"),
    Case("conf: bit flipped in the tag", sealed(flip_bit("ciphertext", -1)), 400,
         "DECRYPTION_FAILED", "node"),
    Case("conf: bit flipped in the nonce", sealed(flip_bit("nonce", 17)), 400,
         "DECRYPTION_FAILED", "node"),
    Case("conf: bit flipped in the salt", sealed(flip_bit("salt", 100)), 400,
         "DECRYPTION_FAILED", "node"),
    Case("conf: bit flipped in the client key", sealed(flip_bit("client_dh_public_key", 9)), 400,
         "DECRYPTION_FAILED", "node"),
    Case("conf: bit flipped in the node key", sealed(flip_bit("node_dh_public_key", 200)), 409,
         "STALE_NODE_KEY", "node"),
    Case("conf: bit flipped in the body hash", sealed(flip_bit("plaintext_body_hash", 3)), 400,
         "HASH_MISMATCH", "node"),
    Case("conf: bit flipped in stack_small_id",
         sealed(recode("stack_small_id", lambda v: v ^ (1 << 20))),
         404, "STACK_NOT_FOUND"),
    Case("conf: bit flipped in model_name",
         sealed(recode("model_name", lambda m: chr(ord(m[0]) ^ 1) + m[1:])), 400,
         "MODEL_MISMATCH", "node"),
    Case("conf: bit flipped in num_compute_units", sealed(
        recode("num_compute_units", lambda n: n ^ 1),
        num_compute_units=8192), 425, "UNAVAILABLE_STACK"),
    Case("conf: num_compute_units zero", sealed(num_compute_units=0), 413,
         "COMPUTE_UNITS_EXCEEDED", "node"),
    # Hash, model and plaintext problems inside a valid envelope.
    Case("conf: hash of other bytes",
         sealed(put("plaintext_body_hash", base64.b64encode(blake2b_256(b"other")).decode())),
         400, "HASH_MISMATCH", "node"),
    Case("conf: model_name differs from the sealed model", sealed(model_name=LONG_MODEL), 400,
         "MODEL_MISMATCH", "node"),
    Case("conf: sealed model no node serves",
         sealed(plaintext=plaintext_of({"input": "x", "model": "no/such"}), model_name="no/such"),
         404, "MODEL_NOT_FOUND", "node"),
    Case("conf: non-UTF-8 plaintext", sealed(plaintext=b'{"input": "\xc3\x28", "model": "m"}'),
         400, "INVALID_JSON", "node"),
    Case("conf: plaintext nested too deep", sealed(plaintext=nested(MAX_JSON_DEPTH + 1)), 400,
         "INVALID_JSON", "node"),
    Case("conf: plaintext without input", sealed(plaintext=plaintext_of({"model": MODEL})), 400,
         "MISSING_FIELD", "node"),
    Case(f"conf: {MAX_INPUTS + 1} inputs", sealed(plaintext=TOO_MANY), 400, "INVALID_FIELD",
         "node"),
    Case("conf: input over the model's length, truncation off",
         sealed(plaintext=TOO_LONG, model_name=LONG_MODEL, lock_model=LONG_MODEL), 400,
         "INPUT_TOO_LONG", "node"),
    Case("conf: token id beyond the vocabulary",
         sealed(plaintext=plaintext_of({"input": [[10**9]], "model": LONG_MODEL}),
                model_name=LONG_MODEL, lock_model=LONG_MODEL), 400, "INVALID_FIELD", "node"),
    # Stacks.
    Case("conf: unknown stack", sealed(put("stack_small_id", 10**9)), 404, "STACK_NOT_FOUND"),
    Case("conf: another user's stack", other_users_stack, 403, "FORBIDDEN"),
    Case("conf: own stack without a lock", without_lock("default", default_stack), 425,
         "UNAVAILABLE_STACK"),
    Case("conf: exhausted stack", without_lock("poor", lambda a: a.poor_stack), 425,
         "UNAVAILABLE_STACK"),
    Case("lock: exhausted stack and no balance", raw(LOCK, {"model": MODEL}, who="poor"), 402,
         "BALANCE_ERROR"),
    Case("lock: more units than a stack holds",
         raw(LOCK, {"model": MODEL, "max_num_tokens": 1_000_001}), 425, "UNAVAILABLE_STACK"),
    # Size.
    Case("conf: body over MAX_BODY_BYTES", raw(CONF, b" " * (MAX_BODY_BYTES + 1)), 413,
         "BODY_TOO_LARGE"),
    # Routing.
    Case("GET on the confidential route", raw(CONF, method="GET"), 405, "METHOD_NOT_ALLOWED"),
    Case("PUT on the lock route", raw(LOCK, {"model": MODEL}, method="PUT"), 405,
         "METHOD_NOT_ALLOWED"),
    Case("DELETE on the plain route", raw(PLAIN, method="DELETE"), 405, "METHOD_NOT_ALLOWED"),
    Case("POST on /v1/models", raw("/v1/models", b"{}"), 405, "METHOD_NOT_ALLOWED"),
    Case("unknown path", raw("/v1/confidential/embedding", b"{}"), 404, "NOT_FOUND"),
    Case("path in the wrong case", raw("/V1/models", method="GET"), 404, "NOT_FOUND"),
    # The plain route.
    Case("plain: truncated JSON", raw(PLAIN, b'{"input": "x", '), 400, "INVALID_JSON"),
    Case("plain: input missing", raw(PLAIN, {"model": MODEL}), 400, "MISSING_FIELD"),
    Case("plain: model missing", raw(PLAIN, {"input": "x"}), 400, "MISSING_FIELD"),
    Case("plain: input an empty list", raw(PLAIN, {"input": [], "model": MODEL}), 400,
         "INVALID_FIELD"),
    Case("plain: input mixes strings and ids", raw(PLAIN, {"input": ["a", 1], "model": MODEL}),
         400, "INVALID_FIELD"),
    Case("plain: input a number", raw(PLAIN, {"input": 5, "model": MODEL}), 400, "INVALID_FIELD"),
    Case("plain: encoding_format hex",
         raw(PLAIN, {"input": "x", "model": MODEL, "encoding_format": "hex"}), 400,
         "INVALID_FIELD"),
    Case("plain: dimensions zero", raw(PLAIN, {"input": "x", "model": MODEL, "dimensions": 0}),
         400, "INVALID_FIELD"),
    Case("plain: unknown model", raw(PLAIN, {"input": "x", "model": "no/such"}), 404,
         "MODEL_NOT_FOUND"),
    Case(f"plain: {MAX_INPUTS + 1} inputs", raw(PLAIN, TOO_MANY), 400, "INVALID_FIELD"),
    Case("plain: input over the model's length, truncation off", raw(PLAIN, TOO_LONG), 400,
         "INPUT_TOO_LONG", "node"),
    # Attestation look-ups and key announcements (node keys must not move).
    Case("attestation: node id not a number", raw(f"{ATTESTATION}?node_small_id=x", method="GET",
                                                  who=None), 400, "INVALID_FIELD"),
    Case("attestation: unknown node", raw(f"{ATTESTATION}?node_small_id=4242", method="GET",
                                          who=None), 404, "NOT_FOUND"),
    Case("announce: made-up key, unsigned", forged_key("nobody"), 401, "AUTH_ERROR"),
    Case("announce: made-up key, signed by an impostor", forged_key("impostor"), 401,
         "INVALID_SIGNATURE"),
    Case("announce: evidence for an unregistered node", unknown_node_evidence, 404, "NOT_FOUND"),
    Case("announce: not JSON", raw(ATTESTATION, b"{", who=None), 400, "INVALID_JSON"),
    Case("announce: evidence of another type", raw(ATTESTATION, {"evidence_type": "nvswitch"},
                                                   who=None), 400, "ATTESTATION_FAILED"),
]
# Every low-order X25519 point of Wycheproof's list, as the client's key (the node refuses it
# before deriving anything from the all-zero shared secret).
CASES += [
    Case(f"conf: low-order client key {v['name']}",
         sealed(put("client_dh_public_key", base64.b64encode(v["public"]).decode())), 400,
         "INVALID_PUBLIC_KEY", "node")
    for v in LOW_ORDER
]


def _param(case: Case) -> Any:
    return pytest.param(case, id=case.name)


def test_the_matrix_is_large_and_distinct() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    assert len(LOW_ORDER) == 14


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(adversary: Adversary, case: Case) -> None:
    adversary.assert_refused(case.make, case.status, case.code, case.stage)
