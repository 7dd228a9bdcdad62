"""What the notebooks compute, so that they only orchestrate and show (ARCHITECTURE.md, "Notebooks").

* byte previews (:func:`preview`), a wire message field by field (:func:`wire_fields`) and what
  each service saw (:func:`captured_rows`, with a check that no plaintext crossed the proxy);
* stage timings of many traces as medians, in coarse groups for stacked bars
  (:func:`stage_medians`, :func:`grouped_stages`);
* agreement of two sets of vectors (:func:`agreement`), synthetic inputs of a given length
  (:func:`synthetic_texts`), the ledger's books by route (:func:`ledger_summary`);
* the negative matrix: crafted bad requests through a network's channel and the status, error
  code and charge each got (:func:`negative_matrix`, :data:`NEGATIVE_CASES`);
* the official atoma-sdk in its own interpreter against an HTTP network (:func:`sdk_roundtrip`);
* :func:`save_figure`, which writes a figure where ``$ATOMA_LAB_FIGURES_DIR`` says, if it says.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from atoma_lab.client import DEFAULT_MODEL, AtomaLabClient
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.encoding import b64decode, b64encode, dumps, loads
from atoma_lab.errors import AtomaLabError
from atoma_lab.protocol.envelope import seal_request
from atoma_lab.protocol.messages import NodesCreateLockResponse
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.services.http import Headers, Request, Response
from atoma_lab.services.node import CONFIDENTIAL_EMBEDDINGS_PATH, EMBEDDINGS_PATH

CONFIDENTIAL_PATH = CONFIDENTIAL_EMBEDDINGS_PATH
PLAIN_PATH = EMBEDDINGS_PATH
FIGURES_ENV = "ATOMA_LAB_FIGURES_DIR"
SDK_PYTHON_ENV = "ATOMA_LAB_SDK_PYTHON"
# Wire fields that carry base64 bytes, in a ConfidentialComputeRequest or its response.
BINARY_FIELDS = frozenset({"ciphertext", "nonce", "salt", "client_dh_public_key",
                           "node_dh_public_key", "plaintext_body_hash", "response_hash",
                           "signature"})


def repo_root() -> Path:
    """The checkout atoma_lab runs from (an editable install: the folder above the package)."""
    return Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------
# Showing bytes
# ------------------------------------------------------------------------------------------------


def preview(data: bytes, n: int = 16) -> str:
    """The first ``n`` bytes in hex, then an ellipsis and the length if there are more."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) <= n:
        return data.hex()
    return f"{data[:n].hex()}… ({len(data)} bytes)"


def shorten(text: str, n: int = 44) -> str:
    """``text`` cut to ``n`` characters with an ellipsis and its full length."""
    return text if len(text) <= n else f"{text[:n]}… ({len(text)} chars)"


def wire_fields(wire: Mapping[str, Any], *, n: int = 40) -> list[dict[str, Any]]:
    """One row per field of a wire message: the JSON value (shortened), and for base64 fields
    the number of bytes it decodes to and their hex preview (empty strings for other fields)."""
    rows = []
    for name, value in wire.items():
        row: dict[str, Any] = {"field": name, "wire value": shorten(json.dumps(value), n),
                               "bytes": "", "hex": ""}
        if name in BINARY_FIELDS and isinstance(value, str):
            raw = b64decode(value, field=name)
            row["bytes"] = len(raw)
            row["hex"] = preview(raw, 8)
        rows.append(row)
    return rows


def _forms(secret: str) -> list[bytes]:
    """How a string can appear inside a JSON body: raw UTF-8 and ASCII-escaped."""
    raw = secret.encode("utf-8")
    escaped = json.dumps(secret)[1:-1].encode("ascii")
    return list(dict.fromkeys([raw, escaped]))


def reveals(body: bytes, secrets: Iterable[str]) -> bool:
    """Whether ``body`` contains any of ``secrets`` (raw or JSON-escaped)."""
    return any(form in body for s in secrets if s for form in _forms(s))


def captured_rows(captured: Iterable[Any], secrets: Iterable[str] = ()) -> list[dict[str, Any]]:
    """What each service saw (``Network.captured``), one row per message: where, what, sizes and
    whether the request or response body contains any of ``secrets`` in clear."""
    secrets = list(secrets)
    rows = []
    for m in captured:
        resp = m.response
        rows.append({
            "address": m.address,
            "method": m.request.method,
            "path": m.request.path,
            "status": None if resp is None else resp.status,
            "request bytes": len(m.request.body),
            "response bytes": None if resp is None else len(resp.body),
            "plaintext visible": reveals(m.request.body, secrets)
            or (resp is not None and reveals(resp.body, secrets)),
        })
    return rows


# ------------------------------------------------------------------------------------------------
# Stage timings
# ------------------------------------------------------------------------------------------------

# Coarse groups of the trace stages (atoma_lab.trace), bottom to top of a stacked bar.
STAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "model (node_embed)": ("node_embed",),
    "client: seal/open or JSON": ("seal", "open", "encode", "decode"),
    "node: open, seal, sign, checks": ("node_open", "node_seal", "node_check", "node_sign"),
    "proxy: checks, verification": ("proxy_check", "proxy_verify"),
    "lock and attestation": ("lock", "attest"),
    "transport": ("transport", "proxy_forward"),
}
NODE_GROUP = "node: open, seal, sign, checks"
PROXY_GROUP = "proxy: checks, verification"


def stage_group(stage: str) -> str:
    """The group of :data:`STAGE_GROUPS` a stage belongs to (``other`` if none)."""
    for group, stages in STAGE_GROUPS.items():
        if stage in stages:
            return group
    if stage.startswith("node_"):
        return NODE_GROUP
    if stage.startswith("proxy_"):
        return PROXY_GROUP
    return "other"


def stage_medians(traces: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The median of each stage over ``traces`` (``Trace.stages_ms`` dicts), in first-seen
    order; a stage missing from a trace counts as 0 ms there."""
    names: dict[str, None] = {}
    for t in traces:
        names.update(dict.fromkeys(t))
    return {name: float(median(t.get(name, 0.0) for t in traces)) for name in names}


def grouped_stages(traces_by_label: Mapping[str, Sequence[Mapping[str, float]]]) -> list[dict[str, Any]]:
    """Long-form rows ``{label, group, ms}`` of the median stage times per label, summed per
    group (:func:`stage_group`), groups in :data:`STAGE_GROUPS` order (``other`` last)."""
    order = [*STAGE_GROUPS, "other"]
    rows = []
    for label, traces in traces_by_label.items():
        sums = dict.fromkeys(order, 0.0)
        for stage, ms in stage_medians(traces).items():
            sums[stage_group(stage)] += max(ms, 0.0)
        rows += [{"label": label, "group": g, "ms": ms} for g, ms in sums.items()]
    return rows


# ------------------------------------------------------------------------------------------------
# Vectors and inputs
# ------------------------------------------------------------------------------------------------


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (float64)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (n, d) arrays of one shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(np.einsum("ij,ij->i", a, b) / np.where(norms == 0, 1.0, norms))


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How closely two ``(n, d)`` sets of vectors agree, row by row."""
    cos = rowwise_cosine(a, b)
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return {"min cosine": float(cos.min()), "mean cosine": float(cos.mean()),
            "max abs diff": float(diff.max()), "n": int(cos.shape[0])}


_WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "confidential", "embedding", "proxy",
    "node", "cipher", "nonce", "salt", "key", "hash", "stack",
)


def synthetic_texts(count: int, words: int, *, seed: int = 0) -> list[str]:
    """``count`` deterministic texts of ``words`` words each (about one token per word for a
    WordPiece tokenizer), different from each other."""
    if count < 0 or words < 1:
        raise ValueError("count must be >= 0 and words >= 1")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(_WORDS), size=(count, words))
    return [f"{i} " + " ".join(_WORDS[j] for j in row[1:]) if words > 1 else str(i)
            for i, row in enumerate(picks)]


def size_label(n: int) -> str:
    """``64 B``, ``16 KiB``, ``1 MiB``."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


# ------------------------------------------------------------------------------------------------
# The ledger's books
# ------------------------------------------------------------------------------------------------


def ledger_summary(ledger: Any) -> dict[str, Any]:
    """Units the ledger charged, per route and in all, beside the stacks' own counters."""
    settlements = list(ledger.settlements())
    out: dict[str, Any] = {
        "stacks": len(ledger.stacks()),
        "stack units computed": sum(s.already_computed_units for s in ledger.stacks()),
        "units charged": sum(int(r["units_charged"]) for r in settlements),
        "charged requests": sum(1 for r in settlements if r["outcome"] == "charged"),
        "refused requests": sum(1 for r in settlements if r["outcome"] != "charged"),
    }
    for route in sorted({str(r["route"]) for r in settlements}):
        out[f"units charged ({route})"] = sum(int(r["units_charged"]) for r in settlements
                                              if r["route"] == route)
    return out


# ------------------------------------------------------------------------------------------------
# Crafted requests and the negative matrix
# ------------------------------------------------------------------------------------------------


def error_of(resp: Response) -> tuple[int, str | None]:
    """``(status, error.code)`` of an answer; the code is ``None`` when there is none."""
    return resp.status, resp.error_code()


def flip_b64(value: str, index: int = 0) -> str:
    """A base64 value with one bit of byte ``index`` flipped (still valid base64)."""
    raw = bytearray(b64decode(value, field="value"))
    raw[index] ^= 0x01
    return b64encode(bytes(raw))


class CaseKit:
    """What a negative case builds its request with: fresh locks, sealed wire bodies, requests
    with or without the network's API key."""

    def __init__(self, net: Any, model: str = DEFAULT_MODEL) -> None:
        self.net = net
        self.model = model
        self.client = AtomaLabClient(api_key=net.api_key, channel=net.channel())
        self._other_token: str | None = None

    def lock(self) -> NodesCreateLockResponse:
        return self.client.nodes.lock(self.model)

    def sealed(self, plaintext: bytes | None = None, *, model_name: str | None = None,
               node_key: bytes | None = None, lock: NodesCreateLockResponse | None = None,
               ) -> dict[str, Any]:
        """A valid wire body for a fresh lock (or ``lock``), sealed to the node's key."""
        lock = lock or self.lock()
        if plaintext is None:
            plaintext = CreateEmbeddingRequest(input=["negative matrix"], model=self.model).to_json()
        sealed = seal_request(plaintext, node_public_key=node_key or lock.public_key,
                              stack_small_id=lock.stack_small_id,
                              model_name=model_name or self.model)
        return sealed.request.to_dict()

    def other_token(self) -> str:
        """The API key of a second user (made on first use)."""
        if self._other_token is None:
            self._other_token = self.net.add_user("mallory")
        return self._other_token

    def request(self, body: Mapping[str, Any] | bytes, *, token: str | None = "default",
                path: str = CONFIDENTIAL_PATH) -> Request:
        """A POST to the proxy; ``token="default"`` is the network's key, ``None`` sends none."""
        headers = Headers({"content-type": "application/json", "accept": "application/json"})
        if token is not None:
            headers["authorization"] = f"Bearer {self.net.api_key if token == 'default' else token}"
        payload = body if isinstance(body, bytes) else dumps(dict(body))
        return Request("POST", path, headers, payload)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True, slots=True)
class NegativeCase:
    """One bad request: what it is, what it should get, and how to make it."""

    name: str
    status: int
    code: str
    make: Callable[[CaseKit], Request]
    refused_by: str = "proxy"


def _with(**changes: Any) -> Callable[[CaseKit], Request]:
    def make(kit: CaseKit) -> Request:
        d = kit.sealed()
        for name, value in changes.items():
            d[name] = value(d[name]) if callable(value) else value
        return kit.request(d)
    return make


def _without(name: str) -> Callable[[CaseKit], Request]:
    def make(kit: CaseKit) -> Request:
        d = kit.sealed()
        del d[name]
        return kit.request(d)
    return make


def _replayed(kit: CaseKit) -> Request:
    req = kit.request(kit.sealed())
    first = kit.client.channel.request(req)
    if not first.ok:
        raise RuntimeError(f"the request to replay failed: {first.status}")
    return req


def _rotated(kit: CaseKit) -> Request:
    d = kit.sealed()
    kit.net.rotate(0)
    return kit.request(d)


def _bad_plaintext(plaintext: bytes) -> Callable[[CaseKit], Request]:
    return lambda kit: kit.request(kit.sealed(plaintext))


# The replay comes first: it is refused only while the user holds no other open lock on the stack
# (locks are per stack, not per request, in Atoma too), and cases the proxy refuses leave theirs
# open until they expire.
NEGATIVE_CASES: tuple[NegativeCase, ...] = (
    NegativeCase("replay of a served request", 425, "UNAVAILABLE_STACK", _replayed),
    NegativeCase("no API key", 401, "AUTH_ERROR", lambda k: k.request(k.sealed(), token=None)),
    NegativeCase("wrong API key", 401, "AUTH_ERROR",
                 lambda k: k.request(k.sealed(), token="atl-not-a-key")),
    NegativeCase("body is not JSON", 400, "INVALID_JSON", lambda k: k.request(b'{"ciphertext": ')),
    NegativeCase("nonce missing", 400, "MISSING_FIELD", _without("nonce")),
    NegativeCase("salt in unpadded base64", 400, "INVALID_BASE64",
                 _with(salt=lambda v: v.rstrip("="))),
    NegativeCase("nonce of 11 bytes", 400, "INVALID_LENGTH", _with(nonce=b64encode(bytes(11)))),
    NegativeCase("stack_small_id as a string", 400, "INVALID_FIELD",
                 _with(stack_small_id=lambda v: str(v))),
    NegativeCase("unknown stack", 404, "STACK_NOT_FOUND", _with(stack_small_id=987654)),
    NegativeCase("another user's stack", 403, "FORBIDDEN",
                 lambda k: k.request(k.sealed(), token=k.other_token())),
    NegativeCase("ciphertext: one bit flipped", 400, "DECRYPTION_FAILED",
                 _with(ciphertext=flip_b64), "node"),
    NegativeCase("ciphertext: last byte cut", 400, "DECRYPTION_FAILED",
                 _with(ciphertext=lambda v: b64encode(b64decode(v, field="c")[:-1])), "node"),
    NegativeCase("salt: one bit flipped", 400, "DECRYPTION_FAILED", _with(salt=flip_b64), "node"),
    NegativeCase("plaintext_body_hash of other bytes", 400, "HASH_MISMATCH",
                 _with(plaintext_body_hash=b64encode(blake2b_256(b"other bytes"))), "node"),
    NegativeCase("model_name changed in clear", 400, "MODEL_MISMATCH",
                 _with(model_name="some/other-model"), "node"),
    NegativeCase("client key of low order (all zeros)", 400, "INVALID_PUBLIC_KEY",
                 _with(client_dh_public_key=b64encode(bytes(32))), "node"),
    NegativeCase("sealed to a key that is not the node's", 409, "STALE_NODE_KEY",
                 _with(node_dh_public_key=lambda v: b64encode(X25519KeyPair.generate().public_bytes)),
                 "node"),
    NegativeCase("sealed plaintext is not JSON", 400, "INVALID_JSON",
                 _bad_plaintext(b"not json at all"), "node"),
    NegativeCase("sealed request has an empty input list", 400, "INVALID_FIELD",
                 lambda k: k.request(k.sealed(dumps({"input": [], "model": k.model}))), "node"),
    NegativeCase("plain route, unknown model", 404, "MODEL_NOT_FOUND",
                 lambda k: k.request({"input": "x", "model": "no/such-model"}, path=PLAIN_PATH)),
    NegativeCase("sealed to a key rotated out since", 409, "STALE_NODE_KEY", _rotated, "node"),
)


def negative_matrix(net: Any, *, model: str = DEFAULT_MODEL,
                    cases: Sequence[NegativeCase] = NEGATIVE_CASES) -> list[dict[str, Any]]:
    """Send each case's request through ``net.channel()`` and report what it got.

    Rows: ``case``, ``refused by``, ``status``, ``code``, ``expected``, ``as expected``,
    ``units charged`` (by this request; a refused one must be 0) and the error ``message``.
    The default cases add a second user and rotate node 1's key (last); the first, a replay,
    expects that the user holds no open lock yet.
    """
    kit = CaseKit(net, model)
    rows = []
    try:
        for case in cases:
            req = case.make(kit)
            charged_before = sum(int(r["units_charged"]) for r in net.ledger.settlements())
            resp = kit.client.channel.request(req)
            status, code = error_of(resp)
            charged = sum(int(r["units_charged"]) for r in net.ledger.settlements()) - charged_before
            try:
                message = str(loads(resp.body)["error"]["message"])
            except (AtomaLabError, KeyError, TypeError):
                message = ""
            rows.append({
                "case": case.name,
                "refused by": case.refused_by,
                "status": status,
                "code": code,
                "expected": f"{case.status} {case.code}",
                "as expected": (status, code) == (case.status, case.code),
                "units charged": charged,
                "message": shorten(message, 70),
            })
    finally:
        kit.close()
    return rows


# ------------------------------------------------------------------------------------------------
# The official SDK, in its own venv
# ------------------------------------------------------------------------------------------------

SDK_ROUNDTRIP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from atoma_sdk import AtomaSDK
    url, key, model, texts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    sdk = AtomaSDK(bearer_auth=key, server_url=url)
    conf = sdk.confidential_embeddings.create(input=texts, model=model)
    plain = sdk.embeddings.create(input_=texts, model=model)
    print(json.dumps({
        "confidential": [d.embedding for d in sorted(conf.data, key=lambda d: d.index)],
        "confidential_usage": conf.usage.total_tokens,
        "plain": [d.embedding for d in sorted(plain.data, key=lambda d: d.index)],
        "plain_usage": plain.usage.total_tokens,
    }))
    """
)


def sdk_python() -> Path | None:
    """The official SDK's interpreter: ``$ATOMA_LAB_SDK_PYTHON``, else ``<repo>/.venv-sdk``;
    ``None`` when it is not there (``make sdk-setup`` creates it).

    A relative ``$ATOMA_LAB_SDK_PYTHON`` (the Makefile passes ``.venv-sdk/bin/python``) is taken
    from the working directory, else from the repository root: notebooks run in ``notebooks/``.
    """
    configured = os.environ.get(SDK_PYTHON_ENV)
    python = Path(configured) if configured else repo_root() / ".venv-sdk" / "bin" / "python"
    if not python.is_absolute() and not python.exists():
        python = repo_root() / python
    return python if python.exists() else None


def sdk_roundtrip(python: Path | str, *, base_url: str, api_key: str, texts: Sequence[str],
                  model: str = DEFAULT_MODEL, timeout_s: float = 300.0) -> dict[str, Any]:
    """Confidential and plain embeddings of ``texts`` through the unmodified atoma-sdk, run by
    ``python`` against ``base_url``: vectors as ``(n, d)`` float32 arrays and usages."""
    done = subprocess.run(
        [str(python), "-c", SDK_ROUNDTRIP_SCRIPT, base_url, api_key, model, json.dumps(list(texts))],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the atoma-sdk round trip failed:\n{done.stderr[-3000:]}")
    got = json.loads(done.stdout)
    for name in ("confidential", "plain"):
        got[name] = np.asarray(got[name], dtype=np.float32)
    return got


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------


def save_figure(fig: Any, name: str, *, dpi: int = 90) -> Path | None:
    """Write ``fig`` as ``<$ATOMA_LAB_FIGURES_DIR>/<name>.png`` when that variable is set
    (``make notebooks`` sets it); otherwise do nothing and return ``None``."""
    folder = os.environ.get(FIGURES_ENV)
    if not folder:
        return None
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


__all__ = [
    "BINARY_FIELDS",
    "CONFIDENTIAL_PATH",
    "FIGURES_ENV",
    "NEGATIVE_CASES",
    "PLAIN_PATH",
    "SDK_ROUNDTRIP_SCRIPT",
    "STAGE_GROUPS",
    "CaseKit",
    "NegativeCase",
    "agreement",
    "captured_rows",
    "error_of",
    "flip_b64",
    "grouped_stages",
    "ledger_summary",
    "negative_matrix",
    "preview",
    "repo_root",
    "reveals",
    "rowwise_cosine",
    "save_figure",
    "sdk_python",
    "sdk_roundtrip",
    "shorten",
    "size_label",
    "stage_group",
    "stage_medians",
    "synthetic_texts",
    "wire_fields",
]
