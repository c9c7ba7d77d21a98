"""Codecs turn one frame's bytes into a body and back.

A codec is any object with ``encode(obj) -> bytes`` and ``decode(bytes) -> obj``. Channels
name one with ``codec=``: ``"raw"`` (the default), ``"utf8"``, ``"json"``, ``"msgpack"``
(``pip install zmqapp[msgpack]``), or pass an object. ``"pickle"`` exists only for peers
you trust and only when asked for by name: it is never a default.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .errors import SetupError

_BYTES_LIKE = (bytes, bytearray, memoryview)


@runtime_checkable
class Codec(Protocol):
    """What a channel needs from a codec."""

    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


def _to_builtin(obj: Any) -> Any:
    """``default=`` hook for JSON and msgpack: dataclasses and pydantic models as dicts."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    dump = getattr(obj, "model_dump", None)  # pydantic v2
    if callable(dump):
        return dump(mode="json")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot encode an object of type {type(obj).__name__}")


class RawCodec:
    """Bytes in, bytes out: the body is the frame itself."""

    name = "raw"

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, _BYTES_LIKE):
            return obj  # type: ignore[return-value]  # pyzmq sends any buffer
        if isinstance(obj, str):
            raise TypeError(
                "the raw codec sends bytes, not str; encode it (body.encode()) "
                "or give the channel codec='utf8'"
            )
        raise TypeError(
            f"the raw codec sends bytes, not {type(obj).__name__}; convert the body to "
            "bytes or give the channel a codec such as 'json'"
        )

    def decode(self, data: bytes) -> bytes:
        return data


class Utf8Codec:
    """Text: frames are UTF-8, bodies are ``str``."""

    name = "utf8"

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, str):
            return obj.encode("utf-8")
        if isinstance(obj, _BYTES_LIKE):
            return bytes(obj)
        raise TypeError(f"the utf8 codec sends str, not {type(obj).__name__}")

    def decode(self, data: bytes) -> str:
        return data.decode("utf-8")


class JsonCodec:
    """JSON documents, compact and UTF-8. Dataclasses and pydantic models encode as objects."""

    name = "json"

    def encode(self, obj: Any) -> bytes:
        return json.dumps(
            obj, separators=(",", ":"), ensure_ascii=False, default=_to_builtin
        ).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


class MsgpackCodec:
    """MessagePack, through the optional ``msgpack`` package."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError:  # pragma: no cover - depends on the environment
            raise SetupError(
                "the msgpack codec needs the msgpack package; install it with "
                "pip install 'zmqapp[msgpack]'"
            ) from None
        self._packb: Callable[..., bytes] = msgpack.packb
        self._unpackb: Callable[..., Any] = msgpack.unpackb

    def encode(self, obj: Any) -> bytes:
        return self._packb(obj, use_bin_type=True, default=_to_builtin)

    def decode(self, data: bytes) -> Any:
        # Maps may have keys of any hashable type, as MessagePack allows (integers, say).
        return self._unpackb(data, raw=False, strict_map_key=False)


class PickleCodec:
    """Pickle. Unpickling runs code chosen by the sender: use it only between trusted peers."""

    name = "pickle"

    def encode(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)  # opt-in by name only, documented as unsafe


#: Codec names to factories; a name is looked up case-insensitively.
codecs: dict[str, Callable[[], Codec]] = {
    "raw": RawCodec,
    "bytes": RawCodec,
    "utf8": Utf8Codec,
    "utf-8": Utf8Codec,
    "json": JsonCodec,
    "msgpack": MsgpackCodec,
    "pickle": PickleCodec,
}

RAW: Codec = RawCodec()


def get_codec(spec: str | Codec | None) -> Codec:
    """Return the codec a channel's ``codec=`` option names."""
    if spec is None:
        return RAW
    if isinstance(spec, str):
        factory = codecs.get(spec.lower())
        if factory is None:
            names = ", ".join(sorted(repr(n) for n in codecs))
            raise SetupError(
                f"there is no codec named {spec!r}; use one of {names}, or pass an object "
                "with encode(obj) -> bytes and decode(bytes) -> obj"
            )
        return RAW if factory is RawCodec else factory()
    if callable(getattr(spec, "encode", None)) and callable(getattr(spec, "decode", None)):
        return spec
    raise SetupError(
        f"codec must be a codec name or an object with encode() and decode() methods, "
        f"not {type(spec).__name__}"
    )
