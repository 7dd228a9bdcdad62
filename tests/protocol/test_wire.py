"""The one-definition wire models (atoma_lab.protocol.wire): what a declaration derives.

Synthetic models exercise the machinery itself; the real models' wire behaviour is pinned in
test_messages.py, test_golden.py, test_hardened.py and tests/adversarial.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import jsonschema
import pytest

from atoma_lab.errors import (
    InvalidEncodingError,
    InvalidFieldError,
    InvalidLengthError,
    MissingFieldError,
)
from atoma_lab.protocol import (
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    CreateEmbeddingRequest,
    HardenedRequest,
    HardenedResponse,
    NodesCreateLockRequest,
    NodesCreateLockResponse,
    Usage,
)
from atoma_lab.protocol.hardened import messages as hardened_messages
from atoma_lab.protocol.wire import (
    Bytes,
    Choice,
    Flag,
    ListOf,
    Nested,
    Text,
    UInt,
    WireModel,
    json_schema,
    wire,
    wire_fields,
    wire_names,
)

from .golden import load_golden

SECRET = b"s3cr3t-plaintext-bytes!!"  # never in a repr


class Inner(WireModel, root="inner"):
    """An inner object."""

    count: int = wire(UInt())
    label: str | None = wire(Text(), default=None)


class Sample(WireModel, root="body", what="sample"):
    """A synthetic model with every kind and placement."""

    blob: bytes = wire(Bytes(min_size=4), repr=False, description="secret bytes")
    key: bytes = wire(Bytes(3))
    flag: bool | None = wire(Flag(), default=None, kw_only=True)  # before a required field
    name: str = wire(Text(nonempty=True))
    mode: str | None = wire(Choice("a", "b"), default=None)
    inner: Inner | None = wire(Nested(Inner), default=None)
    items: list[Inner] | None = wire(ListOf(Nested(Inner)), default=None, kw_only=True)
    note: str | None = wire(Text(), default=None, kw_only=True, write_null=True)


class Strict(WireModel, unknown="forbid", null_is_missing=False):
    """Refuses unknown keys; a null required field is a type error."""

    n: int = wire(UInt(1, 9))


def sample(**changes: Any) -> Sample:
    fields = {"blob": SECRET, "key": b"abc", "name": "x", "flag": True, "mode": "a",
              "inner": Inner(2, "l"), "items": [Inner(1)], "note": None}
    return Sample(**{**fields, **changes})


# ------------------------------------------------------------------------------------------------
# Declaration
# ------------------------------------------------------------------------------------------------


def test_declaration_order_is_wire_order_and_kw_only_fields_keep_their_place() -> None:
    assert wire_names(Sample) == ("blob", "key", "flag", "name", "mode", "inner", "items", "note")
    s = Sample(SECRET, b"abc", "x", "b", flag=False)  # positional: blob, key, name, mode, inner
    assert (s.flag, s.name, s.mode) == (False, "x", "b")
    assert list(s.to_dict()) == ["blob", "key", "flag", "name", "mode", "note"]
    with pytest.raises(TypeError):
        Sample(SECRET, b"abc", "x", "b", None, None)  # items is keyword-only


def test_a_required_field_after_a_defaulted_positional_one_is_refused() -> None:
    with pytest.raises(TypeError, match="kw_only"):
        class Bad(WireModel):
            a: int | None = wire(UInt(), default=None)
            b: int = wire(UInt())


@pytest.mark.parametrize("name", ["to_dict", "replace", "trusted", "_private"])
def test_reserved_names_cannot_be_fields(name: str) -> None:
    with pytest.raises(TypeError, match="wire field name"):
        type(WireModel)("Bad", (WireModel,), {name: wire(UInt())})


def test_a_subclass_adds_fields_after_its_base() -> None:
    class More(Inner):
        extra: bool = wire(Flag(), default=False)

    assert wire_names(More) == ("count", "label", "extra")
    assert More(1, None, True).to_dict() == {"count": 1, "extra": True}
    assert More.from_dict({"count": 1}).extra is False
    with pytest.raises(TypeError):
        type(WireModel)("Twice", (Inner,), {"count": wire(UInt())})


# ------------------------------------------------------------------------------------------------
# Construction
# ------------------------------------------------------------------------------------------------


def test_checked_constructor_names_the_field() -> None:
    with pytest.raises(InvalidLengthError) as info:
        sample(key=b"ab")
    assert info.value.field == "key"
    with pytest.raises(InvalidLengthError):
        sample(blob=b"abc")
    with pytest.raises(InvalidFieldError) as info:
        sample(name="")
    assert info.value.field == "name"
    with pytest.raises(InvalidFieldError) as info:
        sample(mode="c")
    assert info.value.field == "mode"
    with pytest.raises(InvalidFieldError) as info:
        sample(flag=1)
    assert info.value.field == "flag"
    with pytest.raises(InvalidFieldError) as info:
        Inner(-1)
    assert info.value.field == "count"


def test_misuse_is_a_type_error() -> None:
    for bad in [{"blob": bytearray(SECRET)}, {"blob": "text"}, {"inner": {"count": 1}},
                {"items": (Inner(1),)}, {"items": [{"count": 1}]}]:
        with pytest.raises(TypeError):
            sample(**bad)
    with pytest.raises(TypeError, match="missing"):
        Sample(blob=SECRET, key=b"abc")
    with pytest.raises(TypeError, match="unexpected"):
        sample(colour="red")
    with pytest.raises(TypeError, match="multiple"):
        Sample(SECRET, b"abc", "x", key=b"abc")
    with pytest.raises(TypeError, match="positional"):
        Inner(1, "l", "extra")


def test_trusted_builds_the_same_object_without_checks() -> None:
    checked = sample()
    assert Sample.trusted(*[getattr(checked, n) for n in wire_names(Sample)]) == checked
    # Nothing is checked: only for values the caller made or checked itself.
    unchecked = Inner.trusted(-1, None)
    assert unchecked.count == -1
    with pytest.raises(InvalidFieldError):
        unchecked.replace()  # replace checks again


def test_models_are_immutable_values() -> None:
    s = sample()
    with pytest.raises(AttributeError):
        s.name = "y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.other = 1  # type: ignore[attr-defined]
    assert s == sample() and hash(s.replace(items=None)) == hash(sample(items=None))
    assert s != sample(name="y")
    assert s.replace(name="y") == sample(name="y") and s.name == "x"
    with pytest.raises(InvalidFieldError):
        s.replace(name="")
    with pytest.raises(TypeError):
        s.replace(colour="red")


def test_equality_compares_the_model_not_just_the_values() -> None:
    class Twin(WireModel):
        count: int = wire(UInt())
        label: str | None = wire(Text(), default=None)

    assert Inner(1) != Twin(1)
    assert Inner(1) != (1, None)
    with pytest.raises(TypeError):
        _ = Inner(1) < Inner(2)  # type: ignore[operator]


def test_pickle_and_copy_round_trip_through_the_checks() -> None:
    s = sample()
    assert pickle.loads(pickle.dumps(s)) == s
    assert copy.copy(s) == s and copy.deepcopy(s) == s
    reduced = s.__reduce__()
    with pytest.raises(InvalidLengthError):  # a tampered pickle state is checked on the way in
        reduced[0]((SECRET, b"ab", *tuple(s)[2:]))


def test_repr_leaves_out_hidden_fields() -> None:
    text = repr(sample())
    assert text.startswith("Sample(key=b'abc', flag=True, name='x'")
    assert "blob" not in text and SECRET.decode() not in text and SECRET.hex() not in text


# ------------------------------------------------------------------------------------------------
# Codec
# ------------------------------------------------------------------------------------------------


def test_round_trip_and_wire_form() -> None:
    s = sample(note=None, items=[Inner(1), Inner(2, "z")])
    wire_form = s.to_dict()
    assert wire_form == {
        "blob": "czNjcjN0LXBsYWludGV4dC1ieXRlcyEh", "key": "YWJj", "flag": True, "name": "x",
        "mode": "a", "inner": {"count": 2, "label": "l"},
        "items": [{"count": 1}, {"count": 2, "label": "z"}], "note": None,
    }
    assert Sample.from_json(s.to_json()) == s
    minimal = Sample(SECRET, b"abc", "x")
    assert minimal.to_dict() == {"blob": wire_form["blob"], "key": "YWJj", "name": "x",
                                 "note": None}


@pytest.mark.parametrize(("change", "error", "field"), [
    ({"blob": None}, MissingFieldError, "blob"),
    ({"blob": "AAA="}, InvalidLengthError, "blob"),
    ({"key": "YWJ="}, InvalidEncodingError, "key"),
    ({"key": 5}, InvalidFieldError, "key"),
    ({"name": ""}, InvalidFieldError, "name"),
    ({"flag": "true"}, InvalidFieldError, "flag"),
    ({"mode": "c"}, InvalidFieldError, "mode"),
    ({"inner": [1]}, InvalidFieldError, "inner"),
    ({"inner": {}}, MissingFieldError, "inner.count"),
    ({"inner": {"count": 1, "label": 2}}, InvalidFieldError, "inner.label"),
    ({"items": {}}, InvalidFieldError, "items"),
    ({"items": [{"count": 1}, 7]}, InvalidFieldError, "items[1]"),
    ({"items": [{"count": True}]}, InvalidFieldError, "items[0].count"),
])
def test_parse_errors_name_the_field(change: dict[str, Any], error: type[InvalidFieldError],
                                     field: str) -> None:
    body = {**sample().to_dict(), **change}
    with pytest.raises(InvalidFieldError) as info:
        Sample.from_dict(body)
    assert type(info.value) is error and info.value.field == field


def test_optional_fields_may_be_null_or_absent_and_unknown_keys_follow_the_model() -> None:
    body = sample().to_dict()
    for name in ("flag", "mode", "inner", "items", "note"):
        assert getattr(Sample.from_dict({**body, name: None}), name) is None
        assert getattr(Sample.from_dict({k: v for k, v in body.items() if k != name}),
                       name) is None
    assert Sample.from_dict({**body, "extra": [1]}) == Sample.from_dict(body)
    with pytest.raises(InvalidFieldError) as info:
        Strict.from_dict({"n": 1, "extra": 1})
    assert info.value.field == "extra"
    with pytest.raises(InvalidFieldError) as info:  # null is a type error here, not "missing"
        Strict.from_dict({"n": None})
    assert type(info.value) is InvalidFieldError
    with pytest.raises(MissingFieldError):
        Strict.from_dict({})
    with pytest.raises(InvalidFieldError) as info:
        Sample.from_dict([body])
    assert info.value.field == "body"


# ------------------------------------------------------------------------------------------------
# JSON Schema
# ------------------------------------------------------------------------------------------------


def test_json_schema_accepted_and_written() -> None:
    accepted = json_schema(Sample, written=False)
    assert accepted["required"] == ["blob", "key", "name"]
    assert "additionalProperties" not in accepted
    assert accepted["properties"]["mode"] == {"anyOf": [{"enum": ["a", "b"]}, {"type": "null"}]}
    assert accepted["properties"]["blob"]["description"] == "secret bytes"
    assert accepted["description"] == "A synthetic model with every kind and placement."
    written = json_schema(Sample, written=True)
    assert written["required"] == ["blob", "key", "name", "note"]
    assert written["additionalProperties"] is False
    assert written["properties"]["mode"] == {"enum": ["a", "b"]}
    assert written["properties"]["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert json_schema(Strict, written=False)["additionalProperties"] is False


def test_what_the_codec_writes_and_reads_fits_the_derived_schemas() -> None:
    written = jsonschema.Draft202012Validator(json_schema(Sample, written=True))
    accepted = jsonschema.Draft202012Validator(json_schema(Sample, written=False))
    for s in (sample(), Sample(SECRET, b"abc", "x"), sample(items=[], inner=None, note="n")):
        written.validate(s.to_dict())
        accepted.validate(s.to_dict())
    body = sample().to_dict()
    accepted.validate({**body, "mode": None, "extra": 1})
    for bad in ({**body, "key": "YWJ="}, {**body, "name": ""}, {**body, "flag": 1},
                {k: v for k, v in body.items() if k != "name"}):
        with pytest.raises(jsonschema.ValidationError):
            accepted.validate(bad)
        with pytest.raises(InvalidFieldError):
            Sample.from_dict(bad)
    with pytest.raises(jsonschema.ValidationError):
        written.validate({**body, "mode": None})


# ------------------------------------------------------------------------------------------------
# The real models
# ------------------------------------------------------------------------------------------------

REAL = [ConfidentialComputeRequest, ConfidentialComputeResponse, Usage, NodesCreateLockRequest,
        NodesCreateLockResponse, HardenedRequest, HardenedResponse, CreateEmbeddingRequest]




def real_instances() -> dict[type[WireModel], list[WireModel]]:
    """Instances of every real model: the golden envelopes' wire bodies (and the plaintext and
    usage they carry), and lock messages built as a proxy and a node build them."""
    envelopes, hardened = load_golden("golden_envelopes"), load_golden("golden_hardened")
    found: dict[type[WireModel], list[WireModel]] = {model: [] for model in REAL}
    for case in envelopes["requests"]:
        found[ConfidentialComputeRequest].append(
            ConfidentialComputeRequest.from_json(case["expected"]["wire_json"]))
        found[CreateEmbeddingRequest].append(CreateEmbeddingRequest.from_json(case["inputs"]["plaintext"]))
    for case in envelopes["responses"]:
        response = ConfidentialComputeResponse.from_json(case["expected"]["wire_json"])
        found[ConfidentialComputeResponse].append(response)
        if response.usage is not None:
            found[Usage].append(response.usage)
    for case in hardened["cases"]:
        found[HardenedRequest].append(HardenedRequest.from_json(case["expected"]["request_wire_json"]))
        found[HardenedResponse].append(HardenedResponse.from_json(case["expected"]["response_wire_json"]))
    found[Usage].append(Usage(prompt_tokens=1, total_tokens=3, completion_tokens=2))
    found[CreateEmbeddingRequest].append(CreateEmbeddingRequest(
        input=[[1, 2], [3]], model="m", dimensions=8, encoding_format="base64", user="u"))
    found[NodesCreateLockRequest] += [NodesCreateLockRequest("m"),
                                      NodesCreateLockRequest("m", max_num_tokens=64, timeout=30)]
    found[NodesCreateLockResponse] += [
        NodesCreateLockResponse(public_key=bytes(range(32)), node_small_id=3, stack_small_id=42),
        NodesCreateLockResponse(public_key=bytes(range(32)), node_small_id=3,
                                stack_entry_digest="ab" * 32, stack_small_id=42)]
    return found


REAL_INSTANCES = real_instances()


@pytest.mark.parametrize("model", REAL, ids=lambda m: m.__name__)
def test_real_models_fit_their_derived_schemas(model: type[WireModel]) -> None:
    """The derived tables follow the declaration, and what the codec writes for real instances
    (golden wire bodies among them) fits both derived OpenAPI components."""
    fields = wire_fields(model)
    assert [f.index for f in fields] == list(range(len(fields)))
    for schema in (json_schema(model, written=False), json_schema(model, written=True)):
        assert list(schema["properties"]) == [f.name for f in fields]
    written = jsonschema.Draft202012Validator(json_schema(model, written=True))
    accepted = jsonschema.Draft202012Validator(json_schema(model, written=False))
    instances = REAL_INSTANCES[model]
    assert instances
    for instance in instances:
        body = instance.to_dict()
        written.validate(body)
        accepted.validate(body)
        assert model.from_dict(body) == instance


def test_the_profile_telling_fields_come_from_both_declarations() -> None:
    m = hardened_messages
    assert set(m.ATOMA_ONLY_REQUEST_FIELDS) == {"node_dh_public_key", "plaintext_body_hash", "stream"}
    assert set(m.ATOMA_ONLY_RESPONSE_FIELDS) == {"response_hash"}
    assert set(m.HARDENED_ONLY_REQUEST_FIELDS) == {"node_key_id", "timestamp", "request_id"}
    assert set(m.HARDENED_ONLY_RESPONSE_FIELDS) == {"request_id", "request_hash"}
