"""Wire models defined once. Pure.

A model is a class body of fields, each declared with :func:`wire`: its wire name (the attribute
name), its *kind* (how the value is checked, read from JSON, written to JSON and described in JSON
Schema), its default, and its description. Everything else is derived from that one declaration:

* the checked constructor (``Model(...)``; bad values raise the typed errors of
  :mod:`atoma_lab.errors` naming the field, misuse raises ``TypeError``);
* :meth:`WireModel.trusted`, the fast constructor for values a caller has just made or checked
  (the envelope's hot path);
* ``from_dict``/``from_json`` (strict, with the field's name, dotted for nested models, in every
  error) and ``to_dict``/``to_json`` (keys in declaration order, which is the wire order: Atoma's
  Rust struct order; ``None`` optionals left out unless the field says ``write_null``);
* :func:`json_schema`, the OpenAPI component schema, either as the proxy *accepts* it (optional
  fields may be null, unknown keys allowed unless the model forbids them) or as it is *written*
  (exactly the keys ``to_dict`` writes).

Declaration order is the wire order. A field with a default may come before one without only when
it is ``kw_only`` (as with dataclasses), which is how ``stream`` precedes ``model_name`` on the wire
while ``model_name`` stays a positional argument.

Why our own small codec and not msgspec Structs (msgspec 0.22 tried on Python 3.11): msgspec's
decoder accepts base64 whose unused trailing bits are set (``encoding.b64decode`` refuses it) and
reports a ``null`` required field and a wrongly typed one alike, as text (``Expected `bytes`, got
`null` - at `$.nonce```), so neither the strict base64 rule nor the typed errors
(``MissingFieldError`` against ``InvalidFieldError``, with ``field=``) could be kept without parsing
its messages. A Struct used only as the class would keep our codec but cost the hot path: a Struct
cannot define ``__init__`` or ``__new__`` and runs ``__post_init__`` on every construction, so
the envelope would check what it has just made, where a trusted build is one ``tuple.__new__``.
Its JSON Schema lacks the canonical base64 patterns and the accepted/written distinction, so it
would be rewritten anyway. No code is generated (``exec`` has no place in a sans-IO layer), so
``to_dict`` and the checked constructor are loops over per-field tables, dearer per field than
the hand-written code they replace (``from_dict`` is not: base64 and the checks dominate it); the
envelope's hot path builds with :meth:`WireModel.trusted`.

Why a tuple: a model instance is a tuple subclass with a C accessor per field (the ones
:func:`collections.namedtuple` makes), so the derived fast constructor is one ``tuple.__new__``
whatever the number of fields, where a slotted class runs one attribute store per field. Reading a
field goes through that accessor, a little dearer than a slot. A model is immutable; equality also
compares the type; ordering is refused; ``dataclasses.replace`` becomes :meth:`WireModel.replace`
(which runs the checks again); iterating or indexing a model gives its values in wire order.
"""

from __future__ import annotations

import abc
import itertools
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self, dataclass_transform

from atoma_lab.encoding import b64decode, b64encode, dumps, loads, require_int, require_str
from atoma_lab.errors import InvalidFieldError, InvalidLengthError, MissingFieldError

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<required>"})()
_tnew = tuple.__new__

# Canonical padded standard base64 (what encoding.b64decode accepts): the last symbol before the
# padding may carry only data bits, 2 of them before "==", 4 before "=".
_B64 = "[A-Za-z0-9+/]"
_LAST_BEFORE_TWO_PADS = "[AQgw]"
_LAST_BEFORE_ONE_PAD = "[AEIMQUYcgkosw048]"


def b64_pattern(size: int | None = None) -> str:
    """A regular expression for canonical padded standard base64, of ``size`` bytes if given."""
    if size is None:
        return (f"^(?:{_B64}{{4}})*(?:{_B64}{_LAST_BEFORE_TWO_PADS}==|"
                f"{_B64}{{2}}{_LAST_BEFORE_ONE_PAD}=)?$")
    full, rest = divmod(size, 3)
    tail = {0: "", 1: f"{_B64}{_LAST_BEFORE_TWO_PADS}==",
            2: f"{_B64}{{2}}{_LAST_BEFORE_ONE_PAD}="}[rest]
    return f"^(?:{_B64}{{4}}){{{full}}}{tail}$"


def b64_length(size: int) -> int:
    """Characters of padded base64 for ``size`` bytes."""
    return 4 * ((size + 2) // 3)


Ref = Callable[[type["WireModel"]], dict[str, Any]]


# ------------------------------------------------------------------------------------------------
# Kinds: how one field is checked, read, written and described
# ------------------------------------------------------------------------------------------------


class Kind(abc.ABC):
    """A field's kind. ``check`` takes the Python value given to a constructor, ``decode`` the
    JSON value read from the wire; both return the Python value or raise naming ``field``.
    ``encode`` gives the JSON value (the identity unless ``encodes``). Each check tests the valid
    case first and leaves the exact error to the shared helpers of :mod:`atoma_lab.encoding`."""

    encodes: bool = False

    @abc.abstractmethod
    def check(self, value: Any, field: str) -> Any:
        """The Python value given to a constructor, checked (misuse raises ``TypeError``)."""

    @abc.abstractmethod
    def decode(self, value: Any, field: str) -> Any:
        """The Python value of a JSON value, or a typed error naming ``field``."""

    def encode(self, value: Any) -> Any:
        return value

    @abc.abstractmethod
    def schema(self, ref: Ref) -> dict[str, Any]:
        """The JSON Schema of the wire value (``ref`` places nested models)."""


class Bytes(Kind):
    """``bytes`` in Python, strict canonical standard base64 on the wire (encoding.b64decode),
    of exactly ``size`` bytes or at least ``min_size``."""

    encodes = True

    def __init__(self, size: int | None = None, *, min_size: int = 0) -> None:
        self.size = size
        self.min_size = min_size

    def _length(self, n: int, field: str) -> None:
        if self.size is not None and n != self.size:
            raise InvalidLengthError(f"{field}: expected {self.size} bytes, got {n}", field=field)
        if n < self.min_size:
            raise InvalidLengthError(f"{field}: at least {self.min_size} bytes, got {n}",
                                     field=field)

    def check(self, value: Any, field: str) -> bytes:
        if type(value) is bytes and (len(value) == self.size
                                     or (self.size is None and len(value) >= self.min_size)):
            return value
        if not isinstance(value, bytes):
            raise TypeError(f"{field} must be bytes, not {type(value).__name__}")
        self._length(len(value), field)
        return value

    def decode(self, value: Any, field: str) -> bytes:
        data = b64decode(value, field=field, size=self.size)
        if len(data) < self.min_size:
            self._length(len(data), field)
        return data

    encode = staticmethod(b64encode)  # type: ignore[assignment]  # no frame of our own

    def schema(self, ref: Ref) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "contentEncoding": "base64",
                               "pattern": b64_pattern(self.size)}
        if self.size is not None:
            out["minLength"] = out["maxLength"] = b64_length(self.size)
        elif self.min_size:
            out["minLength"] = b64_length(self.min_size)
        return out


class UInt(Kind):
    """A JSON integer in ``[minimum, maximum]`` (u64 unless bounded further; bools refused)."""

    def __init__(self, minimum: int = 0, maximum: int = U64_MAX) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value: Any, field: str) -> int:
        if type(value) is int and self.minimum <= value <= self.maximum:
            return value
        return require_int(value, field=field, minimum=self.minimum, maximum=self.maximum)

    decode = check

    def schema(self, ref: Ref) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


class Text(Kind):
    """A JSON string, non-empty if ``nonempty``."""

    def __init__(self, *, nonempty: bool = False) -> None:
        self.nonempty = nonempty

    def check(self, value: Any, field: str) -> str:
        if type(value) is str and (value or not self.nonempty):
            return value
        return require_str(value, field=field, allow_empty=not self.nonempty)

    decode = check

    def schema(self, ref: Ref) -> dict[str, Any]:
        return {"type": "string", "minLength": 1} if self.nonempty else {"type": "string"}


class Base64Text(Text):
    """Base64 kept as text: a Sui signature (flag ‖ signature ‖ public key). Parsing checks that it
    is a string; its form and value are checked where it is verified
    (:func:`atoma_lab.crypto.signing.verify_sui_signature`), so that a response is not refused
    for a signature nobody verifies (Atoma's SDKs never do). The schema states the form."""

    def schema(self, ref: Ref) -> dict[str, Any]:
        return {**super().schema(ref), "pattern": b64_pattern()}


class Flag(Kind):
    """A JSON boolean."""

    def check(self, value: Any, field: str) -> bool:
        if value is True or value is False:
            return value
        raise InvalidFieldError(f"{field}: expected a boolean", field=field)

    decode = check

    def schema(self, ref: Ref) -> dict[str, Any]:
        return {"type": "boolean"}


class Choice(Kind):
    """One of a few strings; ``error`` is the class raised for anything else."""

    def __init__(self, *options: str, error: type[InvalidFieldError] = InvalidFieldError) -> None:
        self.options = options
        self.error = error

    def check(self, value: Any, field: str) -> str:
        if type(value) is str and value in self.options:
            return value
        raise self.error(f"{field}: expected one of {', '.join(self.options)}", field=field)

    decode = check

    def schema(self, ref: Ref) -> dict[str, Any]:
        if len(self.options) == 1:
            return {"const": self.options[0]}
        return {"enum": list(self.options)}


class Nested(Kind):
    """Another wire model, a JSON object on the wire; its fields' errors are ``field.name``."""

    encodes = True

    def __init__(self, model: type[WireModel]) -> None:
        self.model = model

    def check(self, value: Any, field: str) -> WireModel:
        if not isinstance(value, self.model):
            raise TypeError(f"{field} must be a {self.model.__name__}, not {type(value).__name__}")
        return value

    def decode(self, value: Any, field: str) -> WireModel:
        return self.model._decode(value, field)

    def encode(self, value: WireModel) -> dict[str, Any]:
        return value.to_dict()

    def schema(self, ref: Ref) -> dict[str, Any]:
        return ref(self.model)


class ListOf(Kind):
    """A JSON array of ``item``; an item's errors are ``field[i]``."""

    def __init__(self, item: Kind) -> None:
        self.item = item
        self.encodes = item.encodes

    def check(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            raise TypeError(f"{field} must be a list, not {type(value).__name__}")
        return [self.item.check(v, f"{field}[{i}]") for i, v in enumerate(value)]

    def decode(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            raise InvalidFieldError(f"{field}: expected a list", field=field)
        return [self.item.decode(v, f"{field}[{i}]") for i, v in enumerate(value)]

    def encode(self, value: list[Any]) -> list[Any]:
        encode = self.item.encode
        return [encode(v) for v in value]

    def schema(self, ref: Ref) -> dict[str, Any]:
        return {"type": "array", "items": self.item.schema(ref)}


# ------------------------------------------------------------------------------------------------
# Fields and models
# ------------------------------------------------------------------------------------------------


class WireField:
    """One declared field (made by :func:`wire`; the name and position are set by the model)."""

    __slots__ = ("default", "description", "index", "kind", "kw_only", "name", "repr",
                 "required", "write_null")

    def __init__(self, kind: Kind, *, default: Any, kw_only: bool, repr: bool, write_null: bool,
                 required: bool | None, description: str | None) -> None:
        if not isinstance(kind, Kind):
            raise TypeError(f"kind must be a Kind, not {type(kind).__name__}")
        if isinstance(default, list | dict | set):
            raise TypeError("a field's default must be immutable")
        self.kind = kind
        self.default = default
        self.kw_only = kw_only
        self.repr = repr
        self.write_null = write_null
        self.required = default is _MISSING if required is None else required
        self.description = description
        self.name = ""
        self.index = -1

    def __repr__(self) -> str:
        return f"WireField({self.name!r}, {type(self.kind).__name__}, default={self.default!r})"


def wire(kind: Kind, *, default: Any = _MISSING, kw_only: bool = False, repr: bool = True,
         write_null: bool = False, required: bool | None = None,
         description: str | None = None) -> Any:
    """Declare a field of a :class:`WireModel`.

    ``default``: the Python default (a field without one is a required argument). ``required``:
    whether the wire must carry it (default: when there is no Python default). ``write_null``:
    write ``null`` rather than leave the key out when the value is ``None``. ``repr=False`` keeps
    the value out of ``repr`` (ciphertexts, vectors). ``kw_only``: a keyword-only argument.
    """
    return WireField(kind, default=default, kw_only=kw_only, repr=repr, write_null=write_null,
                     required=required, description=description)


@dataclass_transform(field_specifiers=(wire,), frozen_default=True)
class _WireModelMeta(type):
    """Turns the :func:`wire` declarations of a class body into a tuple layout and the tables the
    generic constructor, codec and schema read."""

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], *,
                root: str | None = None, what: str | None = None, unknown: str | None = None,
                null_is_missing: bool | None = None) -> _WireModelMeta:
        own = [(key, value) for key, value in ns.items() if isinstance(value, WireField)]
        for key, _ in own:
            del ns[key]
        ns.setdefault("__slots__", ())
        cls = super().__new__(mcls, name, bases, ns)
        # Names the bases use (methods, and an inherited model's fields) cannot be fields;
        # tuple's own ``index`` and ``count`` may be shadowed (OpenAI's Embedding has ``index``).
        taken = {key for base in cls.__mro__[1:] if base not in (tuple, object)
                 for key in vars(base) if not key.startswith("_")}
        fields = list(getattr(cls, "__wire_fields__", ()))
        for key, spec in own:
            if key.startswith("_") or key in taken:
                raise TypeError(f"{name}.{key}: not usable as a wire field name")
            spec.name, spec.index = key, len(fields)
            fields.append(spec)
        positional = [f for f in fields if not f.kw_only]
        for before, after in itertools.pairwise(positional):
            if before.default is not _MISSING and after.default is _MISSING:
                raise TypeError(f"{name}.{after.name}: a required field follows {before.name}, "
                                "which has a default (make the earlier one kw_only)")
        if unknown not in (None, "ignore", "forbid"):
            raise ValueError("unknown must be 'ignore' or 'forbid'")
        options = getattr(cls, "__wire_options__", {})
        cls.__wire_options__ = {  # type: ignore[attr-defined]
            "root": root or options.get("root", "body"),
            "what": what or options.get("what", name),
            "unknown": unknown or options.get("unknown", "ignore"),
            "null_is_missing": (options.get("null_is_missing", True) if null_is_missing is None
                                else null_is_missing),
        }
        cls.__wire_fields__ = tuple(fields)  # type: ignore[attr-defined]
        if own:
            # namedtuple's C accessors (item i of the tuple) serve as the fields' attributes.
            accessors = vars(namedtuple(f"_{name}Fields", [f.name for f in fields]))
            for key, _ in own:
                setattr(cls, key, accessors[key])
        cls._prepare()  # type: ignore[attr-defined]
        return cls


class WireModel(tuple[Any, ...], metaclass=_WireModelMeta):
    """Base of the wire models. Class keywords: ``root`` (the name a non-object body is reported
    under: ``body`` or ``response``), ``what`` (the JSON's name in parse errors), ``unknown``
    (``"ignore"``, serde's rule for Atoma's and OpenAI's structs, or ``"forbid"``) and
    ``null_is_missing`` (a ``null`` required field is a :class:`MissingFieldError`, as Atoma's
    services report it; otherwise the kind's own type error)."""

    __slots__ = ()
    __wire_fields__: ClassVar[tuple[WireField, ...]]
    __wire_options__: ClassVar[dict[str, Any]]
    _arg_names: ClassVar[tuple[str, ...]]
    _in_order: ClassVar[bool]
    _default_values: ClassVar[tuple[Any, ...]]
    _by_name: ClassVar[dict[str, int]]
    _names: ClassVar[frozenset[str]]
    _spec: ClassVar[tuple[tuple[str, Any, Callable[[Any, str], Any], bool], ...]]
    _decoders: ClassVar[tuple[tuple[str, Callable[[Any, str], Any], bool, Any], ...]]
    _wire_names: ClassVar[tuple[str, ...]]
    _encoders: ClassVar[tuple[Callable[[Any], Any] | None, ...]]
    _write_null: ClassVar[tuple[bool, ...]]

    @classmethod
    def _prepare(cls) -> None:
        fields = cls.__wire_fields__
        cls._arg_names = tuple(f.name for f in fields if not f.kw_only)
        cls._in_order = not any(f.kw_only for f in fields)
        cls._default_values = tuple(f.default for f in fields)
        cls._by_name = {f.name: f.index for f in fields}
        cls._names = frozenset(cls._by_name)
        cls._spec = tuple((f.name, f.default, f.kind.check, f.default is None) for f in fields)
        cls._decoders = tuple((f.name, f.kind.decode, f.required, f.default) for f in fields)
        cls._wire_names = tuple(f.name for f in fields)
        cls._encoders = tuple(f.kind.encode if f.kind.encodes else None for f in fields)
        cls._write_null = tuple(f.write_null for f in fields)

    # -------------------------------------------------------------- construction

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        if not kwargs and cls._in_order and len(args) <= len(cls._spec):
            # Every argument positional, in declaration order (a model without kw_only fields).
            return cls._checked([*args, *cls._default_values[len(args):]])
        if args:
            if len(args) > len(cls._arg_names):
                raise TypeError(f"{cls.__name__}() takes {len(cls._arg_names)} positional "
                                f"arguments but {len(args)} were given")
            named = dict(zip(cls._arg_names, args, strict=False))
            if kwargs:
                if not named.keys().isdisjoint(kwargs):
                    twice = sorted(named.keys() & kwargs.keys())[0]
                    raise TypeError(f"{cls.__name__}() got multiple values for argument {twice!r}")
                named.update(kwargs)
        else:
            named = kwargs
        if not cls._names >= named.keys():
            unexpected = sorted(named.keys() - cls._names)
            raise TypeError(f"{cls.__name__}() got unexpected keyword arguments: {unexpected}")
        get = named.get
        values: list[Any] = []
        append = values.append
        for name, default, check, optional in cls._spec:
            value = get(name, default)
            if value is None and optional:
                append(None)
            elif value is _MISSING:
                raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
            else:
                append(check(value, name))
        return _tnew(cls, values)

    @classmethod
    def _checked(cls, values: list[Any]) -> Self:
        """Check every field's value (declaration order) as the kind says; ``None`` is accepted
        for an optional field whose default is ``None``."""
        for i, (name, _, check, optional) in enumerate(cls._spec):
            value = values[i]
            if value is _MISSING:
                raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
            if value is not None or not optional:
                values[i] = check(value, name)
        return _tnew(cls, values)

    @classmethod
    def _from_values(cls, values: Sequence[Any]) -> Self:
        """Checked, from every field's value in declaration order (pickle and copy)."""
        if len(values) != len(cls.__wire_fields__):
            raise TypeError(f"{cls.__name__} has {len(cls.__wire_fields__)} fields, "
                            f"got {len(values)} values")
        return cls._checked(list(values))

    @classmethod
    def trusted(cls, *values: Any) -> Self:
        """Build from every field's value, in declaration (wire) order, *without* checks: only for
        values the caller has just made or checked itself (the envelope's hot path)."""
        return _tnew(cls, values)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, checked like a new instance (``dataclasses.replace``)."""
        values = list(self)
        by_name = self._by_name
        for key, value in changes.items():
            i = by_name.get(key)
            if i is None:
                raise TypeError(f"{type(self).__name__} has no field {key!r}")
            values[i] = value
        return self._checked(values)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self)._from_values, (tuple(self),))

    # -------------------------------------------------------------- wire

    @classmethod
    def from_dict(cls, data: object) -> Self:
        """Validate a parsed JSON object (see the class's fields for the rules)."""
        return cls._decode(data, "")

    @classmethod
    def _decode(cls, data: object, path: str) -> Self:
        if not isinstance(data, dict):
            where = path or cls.__wire_options__["root"]
            raise InvalidFieldError(f"{where}: expected a JSON object", field=where)
        prefix = f"{path}." if path else ""
        options = cls.__wire_options__
        if options["unknown"] == "forbid":
            extra = sorted(data.keys() - cls._names)
            if extra:
                raise InvalidFieldError(f"{prefix}{extra[0]}: unknown field",
                                        field=f"{prefix}{extra[0]}")
        null_is_missing = options["null_is_missing"]
        values = []
        for name, decode, required, default in cls._decoders:
            field = prefix + name if prefix else name
            value = data.get(name, _MISSING)
            if value is None or value is _MISSING:
                if not required:
                    values.append(default)
                    continue
                if value is _MISSING or null_is_missing:
                    raise MissingFieldError(f"{field}: required", field=field)
            values.append(decode(value, field))
        return _tnew(cls, values)

    @classmethod
    def from_json(cls, body: bytes | str) -> Self:
        """Parse JSON bytes (:func:`atoma_lab.encoding.loads`) and validate them."""
        return cls.from_dict(loads(body, what=cls.__wire_options__["what"]))

    def to_dict(self) -> dict[str, Any]:
        """The wire form: keys in declaration order, ``None`` optionals left out unless the field
        writes ``null``."""
        out = {}
        for name, encode, write_null, value in zip(self._wire_names, self._encoders,
                                                   self._write_null, self, strict=False):
            if value is not None:
                out[name] = value if encode is None else encode(value)
            elif write_null:
                out[name] = None
        return out

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON of :meth:`to_dict`. Text that UTF-8 cannot carry (a lone
        surrogate, as ``"\\ud800"`` makes) is an :class:`InvalidFieldError` naming where it sits
        (``input[1]``, ``model``, ...), not the encoder's ``TypeError``."""
        wire = self.to_dict()
        try:
            return dumps(wire)
        except TypeError as exc:  # orjson refuses a str that is not valid UTF-8
            where = _unencodable(wire, "")
            if where is None:
                raise
            raise InvalidFieldError(f"{where}: not valid Unicode text (a lone surrogate?)",
                                    field=where) from exc

    # -------------------------------------------------------------- value semantics

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={value!r}"
                          for f, value in zip(self.__wire_fields__, self, strict=True) if f.repr)
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = tuple.__hash__

    def _unordered(self, other: object) -> Any:
        return NotImplemented

    __lt__ = __le__ = __gt__ = __ge__ = _unordered


def wire_fields(model: type[WireModel] | WireModel) -> tuple[WireField, ...]:
    """A model's fields in declaration (wire) order."""
    return model.__wire_fields__


def wire_names(model: type[WireModel] | WireModel) -> tuple[str, ...]:
    """A model's wire field names, in wire order."""
    return tuple(f.name for f in model.__wire_fields__)


# ------------------------------------------------------------------------------------------------
# JSON Schema
# ------------------------------------------------------------------------------------------------


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def json_schema(model: type[WireModel], *, written: bool, ref: Ref | None = None,
                description: bool = True) -> dict[str, Any]:
    """The JSON Schema of ``model`` on the wire, derived from its fields.

    ``written=False``: what parsing accepts. Optional fields may be absent or null (null reads as
    absent); unknown keys are allowed unless the model forbids them. ``written=True``: what
    ``to_dict`` writes, exactly: every key that is always written is required, an optional one is
    absent rather than null unless it writes ``null``, and no other key appears. ``ref`` places a
    nested model (default: inline, in the same sense).
    """
    def inline(nested: type[WireModel]) -> dict[str, Any]:
        return json_schema(nested, written=written, ref=ref, description=False)

    place = ref or inline
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in model.__wire_fields__:
        schema = f.kind.schema(place)
        may_be_none = f.default is None
        if written:
            if f.write_null:
                schema = _nullable(schema)
            if f.required or f.write_null or not may_be_none:
                required.append(f.name)
        else:
            if may_be_none:
                schema = _nullable(schema)
            if f.required:
                required.append(f.name)
        if f.description:
            schema = {**schema, "description": f.description}
        properties[f.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if written or model.__wire_options__["unknown"] == "forbid":
        out["additionalProperties"] = False
    summary = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    if description and summary:
        out["description"] = summary  # the docstring's first paragraph
    return out


__all__ = [
    "U32_MAX",
    "U64_MAX",
    "Base64Text",
    "Bytes",
    "Choice",
    "Flag",
    "Kind",
    "ListOf",
    "Nested",
    "Text",
    "UInt",
    "WireField",
    "WireModel",
    "b64_length",
    "b64_pattern",
    "json_schema",
    "wire",
    "wire_fields",
    "wire_names",
]


def _unencodable(value: object, where: str) -> str | None:
    """The path of the first string in ``value`` that UTF-8 cannot encode, else ``None``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "body"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unencodable(item, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _unencodable(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None
