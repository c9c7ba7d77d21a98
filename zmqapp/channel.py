"""Channels: a named socket declaration, its options, its handlers and its signal.

A :class:`Channel` is what ``@app.channel(...)`` creates. It validates its options when it is
declared (and again when config overrides them), so mistakes surface at import time with a
sentence that says how to fix them, not when the first message arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableSet
from typing import Any, NamedTuple

import zmq
from blinker import Signal

from . import security
from ._handlers import Handler
from .codecs import Codec, RawCodec, Utf8Codec, get_codec
from .dns import parse_dns_endpoint
from .errors import SetupError
from .heartbeat import heartbeat_options
from .socket_types import KINDS, SocketKind, socket_type


class Endpoint(NamedTuple):
    """One address of a channel and whether the channel binds it (else connects)."""

    address: str
    bind: bool

    def __str__(self) -> str:
        return ("@" if self.bind else ">") + self.address


def parse_endpoints(spec: str | Iterable[str], bind: bool | None) -> list[Endpoint]:
    """Turn an ``endpoint=`` value into endpoints, by the rules DESIGN.md gives.

    ``@addr`` binds and ``>addr`` connects (the CZMQ convention). Without a prefix, ``bind``
    decides; if it is ``None``, an address with a wildcard host (``tcp://*:N``,
    ``tcp://0.0.0.0:N``) or a wildcard port (``tcp://127.0.0.1:*``, which only a bind can
    resolve) binds and anything else connects. A string may list several, comma-separated.
    ``tcp+dns://NAME:PORT`` always connects, to every address NAME has (binding one is an
    error): see :mod:`zmqapp.dns`.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    endpoints = []
    for raw in items:
        if not isinstance(raw, str):
            raise SetupError(f"an endpoint must be a string, not {type(raw).__name__}")
        item = raw.strip()
        if parse_dns_endpoint(item, bind=bool(bind)) is not None:  # errors say how to fix
            endpoints.append(Endpoint(item.lstrip(">").strip(), False))
            continue
        if item[:1] in ("@", ">"):
            endpoints.append(Endpoint(item[1:].strip(), item[0] == "@"))
            continue
        if "://" not in item:
            raise SetupError(
                f"endpoint {item!r} has no transport; write it like 'tcp://host:port', "
                "'ipc:///path' or 'inproc://name'"
            )
        if bind is None:
            host = item.split("://", 1)[1]
            port = host.rsplit(":", 1)[1] if ":" in host else ""
            wildcard = host.startswith(("*", "0.0.0.0", "[::]")) or port in ("*", "0", "!")
            endpoints.append(Endpoint(item, wildcard))
        else:
            endpoints.append(Endpoint(item, bind))
    if not endpoints or not all(e.address for e in endpoints):
        raise SetupError(f"endpoint {spec!r} names no address")
    return endpoints


def socket_option(key: int | str) -> int:
    """A socket option from a zmq constant or its name (``"sndhwm"``, ``"SNDHWM"``)."""
    if isinstance(key, str):
        option = getattr(zmq.SocketOption, key.strip().upper(), None)
        if option is None:
            raise SetupError(
                f"{key!r} is not a ZeroMQ socket option; use a zmq constant such as "
                "zmq.SNDHWM or its name, e.g. 'sndhwm'"
            )
        return int(option)
    return int(key)


def _topics(value: Any) -> list[bytes]:
    items = [value] if isinstance(value, (str, bytes)) else list(value)
    topics = []
    for item in items:
        if isinstance(item, str):
            topics.append(item.encode("utf-8"))
        elif isinstance(item, bytes):
            topics.append(item)
        else:
            raise SetupError(f"a subscription must be str or bytes, not {type(item).__name__}")
    return topics


class _OrderedSet(MutableSet[Any]):
    """A set that iterates in insertion order (blinker's documented ``set_class`` hook)."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items: dict[Any, None] = dict.fromkeys(items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, value: Any) -> None:
        self._items[value] = None

    def discard(self, value: Any) -> None:
        self._items.pop(value, None)

    def copy(self) -> _OrderedSet:
        return _OrderedSet(self._items)


class ChannelSignal(Signal):
    """A channel's blinker signal: its handlers are receivers, and anything connected later
    receives the channel's messages too, in the order they were connected.

    The running app listens to blinker's ``receiver_connected`` and ``receiver_disconnected``
    to rebuild the tuple the hot loop calls, so dispatch never walks blinker's bookkeeping
    per message.
    """

    set_class = _OrderedSet  # type: ignore[assignment]  # blinker accepts any set-like class


class ChannelStats:
    """Counters of one channel, kept across runs of the app.

    ``received`` counts messages read; each then ends up ``handled`` (its handlers ran;
    ``failed`` of those had a handler raise), ``decode_failed``, ``refused`` (a stopping
    REP/ROUTER answered it ``unavailable``), dropped at a stop's deadline, or, on a REQ or
    DEALER channel, as the reply to an ``app.request`` (its outcome counted in ``requests``;
    a late one in ``drops``). ``sent`` counts
    messages handed to ZeroMQ, ``dropped`` the ones lost instead, by reason in ``drops``.

    The hot loop adds to ``received`` and ``handled`` once per batch of messages, not per
    message: read from a handler, they may lag behind by the current batch.
    """

    __slots__ = (
        "decode_failed", "dropped", "drops", "failed", "handled", "handshake_failed",
        "handshakes", "received", "refused", "requests", "sent",
    )  # fmt: skip

    def __init__(self) -> None:
        self.received = 0
        self.handled = 0
        self.failed = 0
        self.decode_failed = 0
        self.refused = 0
        self.sent = 0
        self.dropped = 0
        #: Dropped messages by reason: ``unroutable``, ``peer_full``, ``stop_deadline``,
        #: ``send_error``, ``late_reply`` (a reply to a request that timed out or was
        #: cancelled).
        self.drops: dict[str, int] = {}
        self.handshake_failed = 0
        #: Failed handshakes by reason (monitor event names, ``auth_refused``).
        self.handshakes: dict[str, int] = {}
        #: ``app.request`` outcomes on this channel: ``ok``, ``timeout``, ``remote_error``,
        #: ``decode_failed`` (a reply not in the channel's codec), ``cancelled`` (its caller
        #: stopped waiting first).
        self.requests: dict[str, int] = {}

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` messages lost for ``reason``."""
        self.dropped += count
        self.drops[reason] = self.drops.get(reason, 0) + count

    def handshake(self, reason: str) -> None:
        """Count a failed handshake (or a refused client) for ``reason``."""
        self.handshake_failed += 1
        self.handshakes[reason] = self.handshakes.get(reason, 0) + 1

    def request(self, outcome: str) -> None:
        """Count one ``app.request`` that ended with ``outcome``."""
        self.requests[outcome] = self.requests.get(outcome, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            name: dict(value) if isinstance(value, dict) else value
            for name in self.__slots__
            if (value := getattr(self, name)) is not None
        }

    def __repr__(self) -> str:
        return f"<ChannelStats {self.as_dict()}>"


def _number(name: str, option: str, value: Any, *, integer: bool, minimum: float) -> Any:
    """``value`` if it is a number of the right kind and at least ``minimum``, else an error."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        what = "a whole number" if integer else "a number"
        raise SetupError(
            f"channel {name!r}: {option} must be {what} of at least {minimum:g}, not {value!r}"
        )
    return value


def _flag(name: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SetupError(f"channel {name!r}: {option} must be True or False, not {value!r}")
    return value


class Channel:
    """A declared socket: its options, its handlers and its signal.

    Created by :meth:`App.add_channel`. Option values are read from the declaration and then
    from the app's ``CHANNELS`` config when the app starts.
    """

    #: Option names a channel accepts, beyond ``endpoint`` and ``type``.
    option_names = frozenset({
        "endpoint", "type", "bind", "subscribe", "codec", "send_to", "concurrency",
        "threaded", "options", "maxmsgsize", "maxframes", "timeout", "retries", "monitor", "trace",
        "heartbeat",
        "curve_secret_key", "curve_server_key", "authorized_keys", "allow", "deny",
    })  # fmt: skip

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        if not isinstance(name, str) or not name:
            raise SetupError("a channel name must be a non-empty string")
        self.name = name
        #: The options as declared in code, before config overrides.
        self.declared: dict[str, Any] = dict(options)
        #: The functions attached as handlers, in registration order.
        self.handlers: list[Handler] = []
        #: The channel's signal: its handlers are receivers; connect more at any time.
        self.signal = ChannelSignal(f"channel {name!r}")
        #: Counters of received, handled, failed, decode-failed, sent and dropped messages.
        self.stats = ChannelStats()
        #: The addresses actually bound while running (wildcard ports resolved).
        self.bound: list[str] = []
        #: The socket while the app runs, else None.
        self.socket: zmq.Socket[bytes] | None = None
        self.configure({})

    # -- options -------------------------------------------------------------------------------

    def configure(self, overrides: Mapping[str, Any]) -> None:
        """Apply ``overrides`` (from config) on top of the declared options, validating all.

        If they do not fit, the channel goes back to its declared options and the error is
        raised, so a failed override never leaves a half-changed channel behind.
        """
        try:
            self._configure(overrides)
        except SetupError:
            if overrides:
                self._configure({})
            raise

    def _configure(self, overrides: Mapping[str, Any]) -> None:
        name = self.name
        options = dict(self.declared)
        for key, value in overrides.items():
            options[str(key).lower()] = value
        unknown = sorted(set(options) - self.option_names)
        if unknown:
            known = ", ".join(sorted(self.option_names))
            raise SetupError(
                f"channel {name!r} has no option {unknown[0]!r}; channel options are {known}"
            )
        if options.get("type") is None:
            raise SetupError(
                f"channel {name!r} needs a socket type, e.g. type=zmq.PULL or type='pull'"
            )
        self.socket_type = socket_type(options["type"])
        #: The facts about this channel's socket type.
        self.kind: SocketKind = KINDS[self.socket_type]
        self.type_name = self.kind.name

        bind = options.get("bind")
        self.bind: bool | None = None if bind is None else _flag(name, "bind", bind)
        endpoint = options.get("endpoint")
        self.endpoints: list[Endpoint] = (
            [] if endpoint in (None, "", []) else parse_endpoints(endpoint, bind)
        )

        subscribe = options.get("subscribe")
        if subscribe is not None and not self.kind.topical:
            raise SetupError(
                f"channel {name!r} is a {self.type_name} socket; only SUB and XSUB "
                "channels take subscribe=, so remove it or change the type"
            )
        if subscribe is None:
            self.subscribe = [b""] if self.socket_type == zmq.SUB else []
        else:
            self.subscribe = _topics(subscribe)

        self.codec: Codec = get_codec(options.get("codec"))

        send_to = options.get("send_to")
        if send_to is not None:
            if not isinstance(send_to, str):
                raise SetupError(f"channel {name!r}: send_to must be a channel name")
            if self.kind.replies:
                raise SetupError(
                    f"channel {name!r} is a {self.type_name} socket, whose handlers' "
                    "return values are replies; remove send_to and call app.send() in the "
                    "handler to forward as well"
                )
            if send_to == name:
                raise SetupError(f"channel {name!r} cannot send_to itself")
        self.send_to: str | None = send_to

        concurrency = _number(
            name, "concurrency", options.get("concurrency", 1), integer=True, minimum=1
        )
        if concurrency > 1 and self.socket_type == zmq.REP:
            raise SetupError(
                f"channel {name!r} is a REP socket, which answers one request at a time; "
                "use type='ROUTER' to serve requests concurrently"
            )
        self.concurrency: int = concurrency
        self.threaded: bool = _flag(name, "threaded", options.get("threaded", False))

        raw_options = options.get("options") or {}
        if not isinstance(raw_options, Mapping):
            raise SetupError(
                f"channel {name!r}: options must be a dict of socket options, such as "
                "{'sndhwm': 10}"
            )
        self.options: dict[int, Any] = {socket_option(k): v for k, v in raw_options.items()}
        self.maxmsgsize: int | None = _optional(name, "maxmsgsize", options, minimum=-1)
        self.maxframes: int | None = _optional(name, "maxframes", options, minimum=1)
        timeout = options.get("timeout")
        self.timeout: float | None = None
        if timeout is not None:
            self.timeout = _number(name, "timeout", timeout, integer=False, minimum=0)
        self.retries: int = _number(
            name, "retries", options.get("retries") or 0, integer=True, minimum=0
        )
        self.monitor: bool = _flag(name, "monitor", options.get("monitor", False))
        #: Carry OpenTelemetry context in a header frame (both ends must say so).
        self.trace: bool = _flag(name, "trace", options.get("trace", False))
        #: ZMTP heartbeat interval in seconds (None: the HEARTBEAT config; 0: off).
        self.heartbeat: float | None = options.get("heartbeat")
        try:
            heartbeat_options(self.heartbeat)
        except SetupError as exc:
            raise SetupError(f"channel {name!r}: {exc}") from None
        self.security: dict[str, Any] = {
            k: options[k]
            for k in ("curve_secret_key", "curve_server_key", "authorized_keys", "allow", "deny")
            if options.get(k) is not None
        }
        security.check_options(self)
        for handler in self.handlers:
            self.check_handler(handler)

    @property
    def receives(self) -> bool:
        """True if the socket type can receive messages."""
        return self.kind.receives

    @property
    def replies(self) -> bool:
        """True if handlers' return values are replies (REP and ROUTER)."""
        return self.kind.replies

    def check_handler(self, handler: Handler) -> None:
        """Raise :class:`SetupError` if ``handler`` cannot serve this channel as configured."""
        if not self.receives:
            raise SetupError(
                f"channel {self.name!r} is a {self.type_name} socket, which only sends, so "
                f"handler {handler.name} would never be called; declare it with "
                f"app.add_channel({self.name!r}, ...) and no handler"
            )
        handler.check(self.name, self.socket_type, self.type_name)
        if handler.convert is not None and isinstance(self.codec, (RawCodec, Utf8Codec)):
            kind = getattr(handler.body_type, "__name__", "a typed body")
            raise SetupError(
                f"handler {handler.name} takes its body as {kind}, but channel {self.name!r} "
                f"uses the {self.codec.name} codec, whose bodies are "
                f"{'bytes' if isinstance(self.codec, RawCodec) else 'str'}; give the channel "
                "codec='json' or codec='msgpack'"
            )
        if self.threaded and handler.is_async:
            raise SetupError(
                f"channel {self.name!r} runs its handlers in threads (threaded=True), but "
                f"handler {handler.name} is a coroutine function; coroutines already run "
                "concurrently, so drop threaded=True or make the handler a plain function"
            )

    def runs_in_thread(self, handler: Handler) -> bool:
        """True if ``handler`` runs in the thread pool (its own or the channel's setting)."""
        return handler.threaded or (self.threaded and not handler.is_async)

    # -- handlers and receivers ----------------------------------------------------------------

    def add_handler(self, fn: Callable[..., Any], *, threaded: bool = False) -> Handler:
        """Check ``fn`` against the channel and attach it as one more handler."""
        handler = Handler(fn, threaded=threaded)
        self.check_handler(handler)
        self.handlers.append(handler)
        self.signal.connect(handler, weak=False)
        return handler

    def receivers(self, sender: Any) -> list[Any]:
        """Handlers and other receivers of this channel's messages, in connection order."""
        return list(self.signal.receivers_for(sender))

    def __repr__(self) -> str:
        where = ", ".join(map(str, self.endpoints)) or "no endpoint"
        return f"<Channel {self.name!r} {self.type_name} {where}>"


def _optional(name: str, option: str, options: Mapping[str, Any], minimum: int) -> int | None:
    value = options.get(option)
    if value is None:
        return None
    return int(_number(name, option, value, integer=True, minimum=minimum))
