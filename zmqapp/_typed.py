"""Typed bodies: validate and convert a decoded body for a handler's annotated body parameter.

A body parameter annotated with a dataclass, a ``TypedDict`` or a pydantic model gets an
instance of it (a dict for a TypedDict), built from the body (usually a JSON or msgpack
object). A body that does not fit raises :class:`DecodeError`: it is a decode failure of the
message, never a crash of the handler.

Validation is **strict**, with and without pydantic installed: a value must already have its
field's type (``"3"`` is not an ``int``, ``1`` is not a ``bool``). The only conversions are
the ones JSON needs: a whole number fits a ``float`` field, an array fits a ``tuple`` or
``set`` field, and a string fits a ``bytes`` field (as UTF-8). Unknown object keys are
ignored; nested dataclasses, TypedDicts, ``Optional``/unions, ``list``/``dict``/``tuple``/
``set`` and ``Literal`` are checked all the way down.

With pydantic installed (``zmqapp[typed]``), a JSON body is validated straight from its bytes
by pydantic's strict JSON mode (one pass, no separate ``json.loads``); other codecs' bodies,
and every body without pydantic, are checked by zmqapp's own checker below, which follows the
same rules. A pydantic model always uses pydantic (strict mode).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .errors import DecodeError

Converter = Callable[[Any], Any]


def is_typed_dict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def is_pydantic_model(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_fields")


class TypedBody:
    """Turns a body into an instance of a handler's body annotation, or raises DecodeError.

    Call it with a decoded body (any codec). :attr:`from_json`, when not None, does the same
    straight from a JSON frame's bytes, which the hot loop uses for JSON channels.
    """

    def __init__(
        self,
        annotation: Any,
        convert: Converter,
        from_json: Callable[[bytes], Any] | None,
    ) -> None:
        self.annotation = annotation
        self.name: str = getattr(annotation, "__name__", repr(annotation))
        self._convert = convert
        #: Validate a JSON document's bytes directly (pydantic installed), else None.
        self.from_json = from_json

    def __call__(self, body: Any) -> Any:
        return self._convert(body)

    def __repr__(self) -> str:
        return f"<TypedBody {self.name}>"


def converter_for(annotation: Any) -> TypedBody | None:
    """The converter for a body annotation, or None if the annotation asks for no conversion."""
    is_dataclass = isinstance(annotation, type) and dataclasses.is_dataclass(annotation)
    is_model = is_pydantic_model(annotation)
    if not (is_dataclass or is_typed_dict(annotation) or is_model):
        return None
    adapter = _pydantic_adapter(annotation)
    checked = functools.partial(_convert_checked, annotation)
    if adapter is None:
        return TypedBody(annotation, checked, None)
    from_python, from_json = adapter
    return TypedBody(annotation, from_python if is_model else checked, from_json)


def _pydantic_adapter(
    annotation: Any,
) -> tuple[Converter, Callable[[bytes], Any]] | None:
    """(validate a Python object, validate JSON bytes), both strict, or None without pydantic
    (or for a ``typing.TypedDict`` that pydantic refuses before Python 3.12)."""
    try:
        import pydantic
    except ImportError:
        return None
    try:
        adapter = pydantic.TypeAdapter(annotation)
    except pydantic.PydanticUserError:
        return None
    name = getattr(annotation, "__name__", repr(annotation))
    error_class = pydantic.ValidationError

    def problem(exc: pydantic.ValidationError) -> DecodeError:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return DecodeError(f"the body does not fit {name}: {problems}")

    validate_python = adapter.validate_python
    validate_json = adapter.validate_json

    def from_python(body: Any) -> Any:
        try:
            return validate_python(body, strict=True)
        except error_class as exc:
            raise problem(exc) from None

    def from_json(data: bytes) -> Any:
        try:
            return validate_json(data, strict=True)
        except error_class as exc:
            raise problem(exc) from None

    return from_python, from_json


def _convert_checked(annotation: Any, body: Any) -> Any:
    name = getattr(annotation, "__name__", repr(annotation))
    try:
        return _convert(body, annotation, "body")
    except _Mismatch as exc:
        raise DecodeError(f"the body does not fit {name}: {exc}") from None


class _Mismatch(Exception):
    pass


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against ``tp`` and return it converted (dataclasses instantiated)."""
    # The common field types first, without typing's introspection.
    if (tp is str or tp is int or tp is float) and type(value) is tp:
        return value
    if tp is Any or tp is typing.Any:
        return value
    if tp is None or tp is type(None):
        if value is not None:
            raise _Mismatch(f"{path}: expected null, got {type(value).__name__}")
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        for option in args:
            try:
                return _convert(value, option, path)
            except _Mismatch:
                continue
        raise _Mismatch(f"{path}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise _Mismatch(f"{path}: expected one of {args!r}, got {value!r}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _convert_dataclass(value, tp, path)
    if is_typed_dict(tp):
        return _convert_typed_dict(value, tp, path)
    if origin in (list, set, frozenset) or tp in (list, set, frozenset):
        if not isinstance(value, list):
            raise _Mismatch(f"{path}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        container = origin or tp
        return items if container is list else container(items)
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(f"{path}: expected an array, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if args:
            if len(args) != len(value):
                raise _Mismatch(f"{path}: expected {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in pairs)
        return tuple(value)
    if origin is dict or tp is dict or origin is Mapping:
        if not isinstance(value, dict):
            raise _Mismatch(f"{path}: expected an object, got {type(value).__name__}")
        key_tp, value_tp = args if args else (Any, Any)
        return {
            _convert(k, key_tp, f"{path} key"): _convert(v, value_tp, f"{path}[{k!r}]")
            for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch(f"{path}: expected a number, got {type(value).__name__}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch(f"{path}: expected an integer, got {type(value).__name__}")
        return value
    if tp is bytes and isinstance(value, str):
        return value.encode("utf-8")  # JSON has no bytes: a string stands for them
    if isinstance(tp, type) and tp in (str, bytes, bool):
        if not isinstance(value, tp):
            raise _Mismatch(f"{path}: expected {tp.__name__}, got {type(value).__name__}")
        return value
    return value  # an annotation this checker does not know: accept the value as it is


@functools.lru_cache(maxsize=1024)
def _hints(tp: type) -> dict[str, Any]:
    """A type's evaluated annotations, worked out once per type (``get_type_hints`` costs
    tens of microseconds: far more than checking a small body)."""
    try:
        return typing.get_type_hints(tp)
    except Exception:
        return {}


@functools.lru_cache(maxsize=1024)
def _fields(tp: type) -> tuple[tuple[str, Any, bool], ...]:
    """A dataclass's init fields: (name, annotation, required), worked out once per type."""
    hints = _hints(tp)
    return tuple(
        (
            field.name,
            hints.get(field.name, Any),
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING,
        )
        for field in dataclasses.fields(tp)
        if field.init
    )


def _convert_dataclass(value: Any, tp: type, path: str) -> Any:
    if not isinstance(value, dict):
        raise _Mismatch(f"{path}: expected an object, got {type(value).__name__}")
    kwargs = {}
    for name, annotation, required in _fields(tp):
        if name in value:
            kwargs[name] = _convert(value[name], annotation, f"{path}.{name}")
        elif required:
            raise _Mismatch(f"{path}.{name}: missing")
    return tp(**kwargs)


def _convert_typed_dict(value: Any, tp: type, path: str) -> Any:
    if not isinstance(value, dict):
        raise _Mismatch(f"{path}: expected an object, got {type(value).__name__}")
    hints = _hints(tp)
    for key in getattr(tp, "__required_keys__", ()):
        if key not in value:
            raise _Mismatch(f"{path}.{key}: missing")
    return {
        key: _convert(item, hints[key], f"{path}.{key}") if key in hints else item
        for key, item in value.items()
        if key in hints
    }
