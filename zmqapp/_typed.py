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
import logging
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .errors import DecodeError

log = logging.getLogger("zmqapp")

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
        #: The conversion itself, as a plain function (what the hot loop calls).
        self.convert = convert
        #: Validate a JSON document's bytes directly (pydantic installed), else None.
        self.from_json = from_json

    def __call__(self, body: Any) -> Any:
        return self.convert(body)

    def __repr__(self) -> str:
        return f"<TypedBody {self.name}>"


def converter_for(annotation: Any) -> TypedBody | None:
    """The converter for a body annotation, or None if the annotation asks for no conversion."""
    is_dataclass = isinstance(annotation, type) and dataclasses.is_dataclass(annotation)
    is_model = is_pydantic_model(annotation)
    if not (is_dataclass or is_typed_dict(annotation) or is_model):
        return None
    adapter = _pydantic_adapter(annotation)
    checked = _checked(annotation)
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


def _checked(annotation: Any) -> Converter:
    """zmqapp's own check of a body against ``annotation``, raising :class:`DecodeError`."""
    name = getattr(annotation, "__name__", repr(annotation))
    check: Check | None = None

    def convert(body: Any) -> Any:
        # Built at the first message, not at registration: a body type may name classes
        # that its module defines further down, which only exist once the module has run.
        nonlocal check
        if check is None:
            made = _check_for(annotation)
            check = made.compiled() if isinstance(made, _LazyCheck) else made
        try:
            return check(body)
        except _Mismatch as exc:
            raise DecodeError(f"the body does not fit {name}: {exc.path('body')}: "
                              f"{exc.problem}") from None  # fmt: skip

    return convert


class _Mismatch(Exception):
    """A value that does not fit: ``problem``, at ``where`` (path segments, innermost
    first, added as the error goes out through each container)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.where: list[str] = []

    def at(self, segment: str) -> _Mismatch:
        self.where.append(segment)
        return self

    def path(self, root: str) -> str:
        return root + "".join(reversed(self.where))


Check = Callable[[Any], Any]


def _kind(value: Any) -> str:
    return type(value).__name__


@functools.lru_cache(maxsize=1024)
def _check_for(tp: Any) -> Check:
    """A function that checks a value against ``tp`` and converts it, built once per type:
    the per-message work is then only what the value needs."""
    if tp is Any or tp is typing.Any:
        return _accept
    if tp is None or tp is type(None):
        return _check_none
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _check_union(tp, args)
    if origin is typing.Literal:
        return _check_literal(args)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _check_dataclass(tp)
    if is_typed_dict(tp):
        return _check_typed_dict(tp)
    if origin in (list, set, frozenset) or tp in (list, set, frozenset):
        return _check_list(origin or tp, args[0] if args else Any)
    if origin is tuple or tp is tuple:
        return _check_tuple(args)
    if origin is dict or tp is dict or origin is Mapping:
        key_tp, value_tp = args if args else (Any, Any)
        return _check_dict(key_tp, value_tp)
    if tp is float:
        return _check_float
    if tp is int:
        return _check_int
    if tp is bytes:
        return _check_bytes
    if isinstance(tp, type) and tp in (str, bool):
        return _check_instance(tp)
    return _accept  # an annotation this checker does not know: accept the value as it is


def _accept(value: Any) -> Any:
    return value


def _check_none(value: Any) -> Any:
    if value is not None:
        raise _Mismatch(f"expected null, got {_kind(value)}")
    return None


def _check_float(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is bool or not isinstance(value, (int, float)):
        raise _Mismatch(f"expected a number, got {_kind(value)}")
    return float(value)


def _check_int(value: Any) -> Any:
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Mismatch(f"expected an integer, got {_kind(value)}")
    return value


def _check_bytes(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8")  # JSON has no bytes: a string stands for them
    if not isinstance(value, bytes):
        raise _Mismatch(f"expected bytes, got {_kind(value)}")
    return value


def _check_instance(tp: type) -> Check:
    def check(value: Any) -> Any:
        if type(value) is tp or isinstance(value, tp):
            return value
        raise _Mismatch(f"expected {tp.__name__}, got {_kind(value)}")

    return check


# The containers' checks build their items' checks once, with their own: a recursive type
# goes through a dataclass or a TypedDict, whose checks are built at their first value.


def _check_union(tp: Any, options: tuple[Any, ...]) -> Check:
    checks = [_check_for(option) for option in options]

    def check(value: Any) -> Any:
        for option in checks:
            try:
                return option(value)
            except _Mismatch:
                continue
        raise _Mismatch(f"{value!r} fits none of {tp}")

    return check


def _check_literal(allowed: tuple[Any, ...]) -> Check:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise _Mismatch(f"expected one of {allowed!r}, got {value!r}")
        return value

    return check


def _check_list(container: Any, item_tp: Any) -> Check:
    item = _check_for(item_tp)

    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise _Mismatch(f"expected a list, got {_kind(value)}")
        items = []
        for i, v in enumerate(value):
            try:
                items.append(item(v))
            except _Mismatch as exc:
                raise exc.at(f"[{i}]") from None
        return items if container is list else container(items)

    return check


def _check_tuple(args: tuple[Any, ...]) -> Check:
    variadic = len(args) == 2 and args[1] is Ellipsis
    checks = [_check_for(arg) for arg in (args[:1] if variadic else args)]

    def check(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(f"expected an array, got {_kind(value)}")
        if not args:
            return tuple(value)
        if not variadic and len(args) != len(value):
            raise _Mismatch(f"expected {len(args)} items, got {len(value)}")
        items = []
        for i, v in enumerate(value):
            try:
                items.append(checks[0 if variadic else i](v))
            except _Mismatch as exc:
                raise exc.at(f"[{i}]") from None
        return tuple(items)

    return check


def _check_dict(key_tp: Any, value_tp: Any) -> Check:
    key_check, value_check = _check_for(key_tp), _check_for(value_tp)

    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise _Mismatch(f"expected an object, got {_kind(value)}")
        out = {}
        for k, v in value.items():
            try:
                checked_key = key_check(k)
            except _Mismatch as exc:
                raise exc.at(" key") from None
            try:
                out[checked_key] = value_check(v)
            except _Mismatch as exc:
                raise exc.at(f"[{k!r}]") from None
        return out

    return check


@functools.lru_cache(maxsize=1024)
def _hints(tp: type) -> dict[str, Any]:
    """A type's evaluated annotations, worked out once per type (``get_type_hints`` costs
    tens of microseconds: far more than checking a small body). Annotations that cannot be
    evaluated (a name only imported under ``TYPE_CHECKING``) leave the fields unchecked, and
    say so."""
    try:
        return typing.get_type_hints(tp)
    except Exception as exc:
        log.warning(
            "the fields of %s are not checked: its annotations cannot be evaluated (%s)",
            getattr(tp, "__qualname__", tp),
            exc,
        )
        return {}


def _check_dataclass(tp: type) -> Check:
    hints = _hints(tp)
    fields = [
        (
            field.name,
            hints.get(field.name, Any),
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING,
        )
        for field in dataclasses.fields(tp)
        if field.init
    ]
    return _LazyCheck(lambda: _compile_dataclass(tp, fields))


class _LazyCheck:
    """A check built on its first use: a dataclass may contain itself, so its fields' checks
    cannot all exist while its own is being made."""

    def __init__(self, build: Callable[[], Check]) -> None:
        self.build = build
        self._check: Check | None = None

    def compiled(self) -> Check:
        if self._check is None:
            self._check = self.build()
        return self._check

    def __call__(self, value: Any) -> Any:
        return self.compiled()(value)


_MISSING = object()


def _compile_dataclass(tp: type, fields: list[tuple[str, Any, bool]]) -> Check:
    """A dataclass's check as straight-line code, one block per field, the way the standard
    library's ``dataclasses`` writes ``__init__``: a loop over the fields costs several times
    what checking a small body does. A value that already has its field's plain type (str,
    int, float, bool) skips the field's check."""
    env: dict[str, Any] = {"_Mismatch": _Mismatch, "_kind": _kind, "_MISSING": _MISSING, "tp": tp}
    lines = [
        "def check(value):",
        "    if type(value) is not dict and not isinstance(value, dict):",
        "        raise _Mismatch(f'expected an object, got {_kind(value)}')",
    ]
    passed = []
    optional = []
    for i, (name, annotation, required) in enumerate(fields):
        env[f"check_{i}"] = _check_for(annotation)
        env[f"plain_{i}"] = annotation if annotation in _PLAIN else None
        where = repr(f".{name}")
        lines.append(f"    v{i} = value.get({name!r}, _MISSING)")
        if required:
            lines.append(f"    if v{i} is _MISSING:")
            lines.append(f"        raise _Mismatch('missing').at({where})")
            lines.append(f"    if type(v{i}) is not plain_{i}:")
            passed.append(f"{name}=v{i}")
        else:
            lines.append(f"    if v{i} is not _MISSING and type(v{i}) is not plain_{i}:")
            optional.append((name, i))
        lines.append("        try:")
        lines.append(f"            v{i} = check_{i}(v{i})")
        lines.append("        except _Mismatch as exc:")
        lines.append(f"            raise exc.at({where}) from None")
    if not optional:
        lines.append(f"    return tp({', '.join(passed)})")
    else:
        lines.append(f"    kwargs = dict({', '.join(passed)})")
        for name, i in optional:
            lines.append(f"    if v{i} is not _MISSING:")
            lines.append(f"        kwargs[{name!r}] = v{i}")
        lines.append("    return tp(**kwargs)")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), env, namespace)  # the code is built from field names only
    check: Check = namespace["check"]
    return check


_PLAIN = (str, int, float, bool)


def _check_typed_dict(tp: type) -> Check:
    hints = _hints(tp)
    required = tuple(getattr(tp, "__required_keys__", ()))
    checks: dict[str, Check] = {}  # built at the first value: the TypedDict may be recursive

    def check(value: Any) -> Any:
        if not checks:
            checks.update({key: _check_for(hint) for key, hint in hints.items()})
        if not isinstance(value, dict):
            raise _Mismatch(f"expected an object, got {_kind(value)}")
        for key in required:
            if key not in value:
                raise _Mismatch("missing").at(f".{key}")
        out = {}
        for key, item in value.items():
            if key in checks:
                try:
                    out[key] = checks[key](item)
                except _Mismatch as exc:
                    raise exc.at(f".{key}") from None
        return out

    return check
