"""The whole atoma-lab exception tree.

Every error the toolkit raises on purpose derives from :class:`AtomaLabError`. Each class says whose
fault it was (``fault``), the HTTP status it maps to (``status``) and a stable machine-readable
``code`` that the server puts in its JSON error body ``{"error": {"code": ..., "message": ...}}``.

Rules (see ARCHITECTURE.md, "Errors"):

* messages name fields and sizes, never key material, plaintext or whole ciphertexts;
* a foreign exception is caught specifically and re-raised with ``raise OurError(...) from exc``;
* misuse of an API (wrong Python type, wrong length of an argument) raises plain ``TypeError`` /
  ``ValueError``, as pyca/cryptography does; the classes here are for data that arrives from a peer.
"""

from __future__ import annotations

from typing import ClassVar, Literal

Fault = Literal["caller", "peer", "crypto", "inference", "transport", "server"]


class AtomaLabError(Exception):
    """Base class of every deliberate atoma-lab error."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    fault: ClassVar[Fault] = "server"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The JSON error body, Atoma's ``ErrorResponse`` shape."""
        return {"error": {"code": self.code, "message": self.message}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# --------------------------------------------------------------------------------------------
# The caller sent something wrong (4xx).
# --------------------------------------------------------------------------------------------


class RequestError(AtomaLabError):
    """The request is malformed: the caller's fault."""

    status = 400
    code = "INVALID_REQUEST"
    fault = "caller"


class InvalidJSONError(RequestError):
    """The body is not a JSON document (or is nested too deeply, or is not UTF-8)."""

    code = "INVALID_JSON"


class InvalidFieldError(RequestError):
    """A field is missing, of the wrong type, out of range, badly encoded or of the wrong size.

    ``field`` names the field (a dotted path for nested ones). The message never repeats the value.
    """

    code = "INVALID_FIELD"


class MissingFieldError(InvalidFieldError):
    """A required field is absent."""

    code = "MISSING_FIELD"


class InvalidEncodingError(InvalidFieldError):
    """A binary field is not strict standard base64 with padding."""

    code = "INVALID_BASE64"


class InvalidLengthError(InvalidFieldError):
    """A binary field decodes to the wrong number of bytes."""

    code = "INVALID_LENGTH"


class MissingHeaderError(RequestError):
    """A required header (e.g. ``X-Signature``) is absent."""

    code = "MISSING_HEADER"


class ProfileMismatchError(InvalidFieldError):
    """A message is not of the envelope profile the receiver requires (a downgrade attempt).

    Raised for an Atoma-shaped body where the hardened profile is required, a body that claims the
    hardened profile but carries Atoma's fields, or an unknown ``profile``. Shares
    ``INVALID_FIELD``'s code; ``field`` is ``"profile"`` or the offending field.
    """


class ModelMismatchError(InvalidFieldError):
    """``model_name`` in the envelope differs from ``model`` in the sealed request."""

    code = "MODEL_MISMATCH"


class MethodNotAllowedError(RequestError):
    """The path exists but not for this HTTP method."""

    status = 405
    code = "METHOD_NOT_ALLOWED"


class BodyTooLargeError(RequestError):
    """The body exceeds the configured size limit."""

    status = 413
    code = "BODY_TOO_LARGE"


class HeadersTooLargeError(RequestError):
    """The request's headers exceed the listener's limit on their number or total size."""

    status = 431
    code = "HEADERS_TOO_LARGE"


class RequestTimeoutError(RequestError):
    """The request's headers or body did not arrive within the listener's timeout."""

    status = 408
    code = "REQUEST_TIMEOUT"


class AuthenticationError(AtomaLabError):
    """The bearer token is missing or unknown."""

    status = 401
    code = "AUTH_ERROR"
    fault = "caller"


class PermissionDeniedError(AtomaLabError):
    """The caller is authenticated but may not use this resource (e.g. another user's stack)."""

    status = 403
    code = "FORBIDDEN"
    fault = "caller"


class NotFoundError(AtomaLabError):
    """The named resource (stack, node, model) does not exist."""

    status = 404
    code = "NOT_FOUND"
    fault = "caller"


class ModelNotFoundError(NotFoundError):
    """No node (or engine) serves the requested model."""

    code = "MODEL_NOT_FOUND"


# --------------------------------------------------------------------------------------------
# Cryptographic failures on data a peer sent (4xx on the server side).
# --------------------------------------------------------------------------------------------


class CryptoError(AtomaLabError):
    """A cryptographic check failed on received data."""

    status = 400
    code = "CRYPTO_ERROR"
    fault = "crypto"


class InvalidPublicKeyError(CryptoError):
    """An X25519 public key is a low-order point: the shared secret would be all zeros."""

    code = "INVALID_PUBLIC_KEY"


class DecryptionError(CryptoError):
    """AES-256-GCM authentication failed: wrong key, or a changed ciphertext, tag, nonce or AAD."""

    code = "DECRYPTION_FAILED"


class HashMismatchError(CryptoError):
    """The BLAKE2b-256 of the plaintext differs from the hash that came with it."""

    code = "HASH_MISMATCH"


class SignatureError(CryptoError):
    """A Sui-style signature is malformed, of an unsupported scheme, or does not verify."""

    status = 401
    code = "INVALID_SIGNATURE"


class NodeKeyMismatchError(CryptoError):
    """The request was sealed to a node key that is not this node's current key.

    Atoma answers 500 here; atoma-lab answers 409 so that a client knows to take a fresh lock
    and seal again.
    """

    status = 409
    code = "STALE_NODE_KEY"


class ReplayedRequestError(CryptoError):
    """A confidential request this node has already served (same key, salt and nonce) came again.

    Atoma's node would decrypt and serve it again, and the proxy charge it again.
    """

    status = 409
    code = "REPLAYED_REQUEST"


class StaleRequestError(ReplayedRequestError):
    """A hardened request's timestamp lies outside the receiver's replay window.

    Shares ``REPLAYED_REQUEST``'s code: a request too old to be checked against the replay cache
    is refused as a possible replay; the client seals again with a current timestamp.
    """


class AttestationError(CryptoError):
    """Attestation evidence is malformed, signed by an untrusted vendor, stale, or binds
    something else than the key it is presented with."""

    code = "ATTESTATION_FAILED"


# The subclasses name which check failed. They share ATTESTATION_FAILED on the wire (a peer learns
# that the evidence was refused; the verifier's caller learns why from the class and message).


class EvidenceFormatError(AttestationError):
    """Evidence is malformed, truncated, padded with non-zero bytes, or of a kind, version or
    TEE type the verifier does not handle."""


class EvidenceSignatureError(AttestationError):
    """A signature inside the evidence does not verify: the TDX quote body, the quoting
    enclave's report, the binding of the attestation key, or a simulated vendor's signature."""


class CertificateChainError(AttestationError):
    """The certificate chain in the evidence is malformed, revoked, or does not lead to the
    pinned root."""


class CollateralError(AttestationError):
    """The verification collateral (TCB info, QE identity, CRLs) is malformed, not signed by
    the vendor's chain, or belongs to another platform."""


class StaleEvidenceError(AttestationError):
    """The evidence or its collateral does not hold at the time given: expired, not yet valid,
    or older than the policy's maximum age."""


class TcbStatusError(AttestationError):
    """The platform's TCB status or an advisory that applies to it is not accepted (a TCB below
    every level the vendor lists included)."""


class MeasurementError(AttestationError):
    """A measurement (simulated measurement, MRTD, an RTMR) is not on the policy's allow-list,
    or the TD runs with attributes that make its measurements meaningless (debug)."""


class ReportDataError(AttestationError):
    """The report data does not bind what it must: the expected value, or the nonce and key
    under the binding rule."""


class UntrustedSignerError(AttestationError):
    """The evidence verifies, but under a signing key the policy does not trust."""


class AttestedKeyMismatchError(AttestationError):
    """The evidence attests another key or another node than the one presented."""


# --------------------------------------------------------------------------------------------
# Accounting: stacks, locks and compute units.
# --------------------------------------------------------------------------------------------


class SealedNodeError(AtomaLabError):
    """A node refused a hardened request after opening it; the reason is sealed to the client
    (``sealed_error`` beside this error), who raises the node's own error.

    Status 400 when the node refused, 500 when it failed. Only hardened requests get it;
    Atoma's profile keeps the node's errors in clear, as Atoma does.
    """

    status = 400
    code = "SEALED_ERROR"
    fault = "caller"


class StackNotFoundError(NotFoundError):
    """No stack with that ``stack_small_id`` exists (Atoma answers 500)."""

    code = "STACK_NOT_FOUND"


class StackUnavailableError(AtomaLabError):
    """No unexpired lock on the stack covers the request (Atoma's 425 ``UNAVAILABLE_STACK``)."""

    status = 425
    code = "UNAVAILABLE_STACK"
    fault = "caller"


class StackLockedError(AtomaLabError):
    """The stack is claimed or settling and takes no more requests (Atoma's 423)."""

    status = 423
    code = "LOCKED"
    fault = "caller"


class InsufficientBalanceError(AtomaLabError):
    """The user cannot pay for a new stack (Atoma's 402 ``BALANCE_ERROR``)."""

    status = 402
    code = "BALANCE_ERROR"
    fault = "caller"


class ComputeUnitsExceededError(RequestError):
    """The request needs more compute units than it was allowed (``num_compute_units``)."""

    status = 413
    code = "COMPUTE_UNITS_EXCEEDED"


class ServiceUnavailableError(AtomaLabError):
    """No node can serve the request now (no node for the model, all nodes down)."""

    status = 503
    code = "SERVICE_UNAVAILABLE"
    fault = "server"


class PeerBusyError(ServiceUnavailableError):
    """Too many requests already wait for this peer on this transport: refused at once, nothing
    was sent. Shares ``SERVICE_UNAVAILABLE``'s code; the peer is not marked down for it."""


# --------------------------------------------------------------------------------------------
# The peer broke the protocol (the client's or proxy's view of a bad node answer).
# --------------------------------------------------------------------------------------------


class PeerProtocolError(AtomaLabError):
    """A peer's answer violates the protocol (bad hash, bad signature, wrong shape)."""

    status = 502
    code = "BAD_PEER_RESPONSE"
    fault = "peer"


class ResponseTooLargeError(PeerProtocolError):
    """A peer's answer is larger than the request can justify (its body, or its headers); the
    connection is dropped unread. Shares ``BAD_PEER_RESPONSE``'s code."""


class ResponseMismatchError(PeerProtocolError):
    """A response names another request (request id or request hash) than the one it answers.

    Shares ``BAD_PEER_RESPONSE``'s code.
    """


class NodeFailedError(AtomaLabError):
    """The node failed on its side (a 5xx) while serving the request; nothing is charged."""

    status = 502
    code = "NODE_ERROR"
    fault = "peer"


# --------------------------------------------------------------------------------------------
# Inference.
# --------------------------------------------------------------------------------------------


class InferenceError(AtomaLabError):
    """The embedding engine failed on valid input."""

    status = 500
    code = "INFERENCE_ERROR"
    fault = "inference"


class ModelLoadError(InferenceError):
    """A model could not be found or loaded; the message says how to supply it."""

    code = "MODEL_LOAD_ERROR"


class InputTooLongError(RequestError):
    """An input is too long: more tokens than the model takes with truncation off, or more
    characters than an input or a request may carry.

    ``field`` names the input (``input[i]``), or ``input`` for the request's total.
    """

    code = "INPUT_TOO_LONG"


class BackendUnavailableError(InferenceError):
    """The node's embedding backend (an HTTP server it forwards to) cannot be reached or is
    overloaded; nothing was embedded.

    The node answers 503; the proxy passes a node's 5xx on as 502 ``NODE_ERROR``.
    """

    status = 503
    code = "BACKEND_UNAVAILABLE"


class BackendTimeoutError(InferenceError):
    """The node's embedding backend did not answer in time."""

    status = 504
    code = "BACKEND_TIMEOUT"


class BadBackendResponseError(InferenceError):
    """The node's embedding backend failed (a 5xx) or answered something unusable: not JSON, the
    wrong number of vectors, non-finite values, no usage.
    """

    status = 502
    code = "BAD_BACKEND_RESPONSE"


# --------------------------------------------------------------------------------------------
# Transport.
# --------------------------------------------------------------------------------------------


class TransportError(AtomaLabError):
    """A message could not be delivered (connection refused, dropped, timed out)."""

    status = 503
    code = "SERVICE_UNAVAILABLE"
    fault = "transport"


class TransportTimeoutError(TransportError):
    """The peer did not answer in time."""

    status = 504
    code = "GATEWAY_TIMEOUT"


class APIError(AtomaLabError):
    """An error answer whose code no local class claims, carried on with its status and code: a
    client meeting an unknown code (the server's fault by default), or the proxy passing on a
    node's refusal that was the caller's fault (``fault="caller"``)."""

    fault: ClassVar[Fault] = "peer"

    def __init__(self, message: str, *, status: int, code: str, fault: Fault | None = None) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]
        self.code = code  # type: ignore[misc]
        if fault is not None:
            self.fault = fault  # type: ignore[misc]


#: How many characters of a caller's value (a model name, say) an error message quotes.
QUOTE_CHARS = 64


def quoted(value: str, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters plus a count of the rest, for messages that
    name what the caller sent (an unbounded name must not come back whole)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def _all_error_classes() -> list[type[AtomaLabError]]:
    out: list[type[AtomaLabError]] = []
    stack: list[type[AtomaLabError]] = [AtomaLabError]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def error_from_response(status: int, code: str, message: str) -> AtomaLabError:
    """Rebuild the specific exception a server raised from its status and JSON error code.

    The class whose ``code`` and ``status`` both match wins; otherwise :class:`APIError` keeps
    them as they came. A server that answered did not fail to deliver: where a transport class
    shares its status and code with another (503 ``SERVICE_UNAVAILABLE``), the other wins.
    """
    for cls in sorted(_all_error_classes(), key=lambda c: c.fault == "transport"):
        if "code" in cls.__dict__ and cls.code == code and cls.status == status \
                and cls.__init__ is AtomaLabError.__init__:
            return cls(message)
    return APIError(message, status=status, code=code)


def known_error(status: int, code: str) -> type[AtomaLabError] | None:
    """The class of this tree that answers ``status`` with ``code`` (as the error table lists
    them), or ``None`` for a pair no atoma-lab service sends."""
    for cls in _all_error_classes():
        if "code" in cls.__dict__ and cls.code == code and cls.status == status:
            return cls
    return None


def error_codes() -> frozenset[str]:
    """Every code of the error table: the fixed set metric labels may take (with ``OTHER``)."""
    return frozenset(cls.code for cls in _all_error_classes() if "code" in cls.__dict__)


def error_table() -> list[tuple[int, str, str, str]]:
    """Every error class with its own code: ``(status, code, class name, first doc line)``,
    sorted by status then code. The README's error table is generated from this."""
    rows = []
    for cls in _all_error_classes():
        if "code" not in cls.__dict__ or cls.__init__ is not AtomaLabError.__init__:
            continue
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        doc = " ".join(doc.split())
        rows.append((cls.status, cls.code, cls.__name__, doc))
    return sorted(set(rows))


__all__ = [
    "QUOTE_CHARS",
    "APIError",
    "AtomaLabError",
    "AttestationError",
    "AttestedKeyMismatchError",
    "AuthenticationError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BadBackendResponseError",
    "BodyTooLargeError",
    "CertificateChainError",
    "CollateralError",
    "ComputeUnitsExceededError",
    "CryptoError",
    "DecryptionError",
    "EvidenceFormatError",
    "EvidenceSignatureError",
    "Fault",
    "HashMismatchError",
    "HeadersTooLargeError",
    "InferenceError",
    "InputTooLongError",
    "InsufficientBalanceError",
    "InvalidEncodingError",
    "InvalidFieldError",
    "InvalidJSONError",
    "InvalidLengthError",
    "InvalidPublicKeyError",
    "MeasurementError",
    "MethodNotAllowedError",
    "MissingFieldError",
    "MissingHeaderError",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "NodeFailedError",
    "NodeKeyMismatchError",
    "NotFoundError",
    "PeerBusyError",
    "PeerProtocolError",
    "PermissionDeniedError",
    "ProfileMismatchError",
    "ReplayedRequestError",
    "ReportDataError",
    "RequestError",
    "RequestTimeoutError",
    "ResponseMismatchError",
    "ResponseTooLargeError",
    "SealedNodeError",
    "ServiceUnavailableError",
    "SignatureError",
    "StackLockedError",
    "StackNotFoundError",
    "StackUnavailableError",
    "StaleEvidenceError",
    "StaleRequestError",
    "TcbStatusError",
    "TransportError",
    "TransportTimeoutError",
    "UntrustedSignerError",
    "error_codes",
    "error_from_response",
    "error_table",
    "known_error",
    "quoted",
]
