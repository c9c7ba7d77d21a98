"""Channels: a named socket declaration, its options, its handlers and its signal.

A :class:`Channel` is what ``@app.channel(...)`` creates. It validates its options when it is
declared (and again when config overrides them), so mistakes surface at import time with a
sentence that says how to fix them, not when the first message arrives.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple
from weakref import ref as _weakref

import zmq
from blinker import Signal

from . import security
from ._handlers import Handler
from .codecs import Codec, RawCodec, Utf8Codec, get_codec
from .errors import SetupError

#: The socket types a channel may be, by name.
SOCKET_TYPES: dict[str, int] = {
    name: int(getattr(zmq, name))
    for name in (
        "PAIR", "PUB", "SUB", "REQ", "REP", "DEALER", "ROUTER", "PULL", "PUSH", "XPUB", "XSUB",
    )
}  # fmt: skip
TYPE_NAMES: dict[int, str] = {v: k for k, v in SOCKET_TYPES.items()}

#: Types that receive messages, so their handlers get called.
RECEIVING = frozenset(SOCKET_TYPES[n] for n in ("PULL", "SUB", "XSUB", "XPUB", "REQ", "REP",
                                                "DEALER", "ROUTER", "PAIR"))  # fmt: skip
#: Types whose handlers' return values are replies rather than forwarded messages.
REPLYING = frozenset((zmq.REP, zmq.ROUTER))
#: Types a ``send_to`` target may be: they send without an identity or a request to answer.
FORWARDABLE = frozenset((zmq.PUSH, zmq.PUB, zmq.XPUB, zmq.DEALER, zmq.REQ, zmq.PAIR))
#: Types ``app.send`` works on.
SENDING = FORWARDABLE | {zmq.ROUTER, zmq.XSUB}
#: Types whose traffic only flows in: at a stop they can unbind (peers then send elsewhere)
#: without losing anything, as what is queued stays readable. Two-way types keep their
#: connections, or replies to requests already read could not reach their clients.
INBOUND_ONLY = frozenset((zmq.PULL, zmq.SUB, zmq.XSUB))
#: Types that carry topics.
TOPICAL = frozenset((zmq.SUB, zmq.XSUB))


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
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    endpoints = []
    for raw in items:
        if not isinstance(raw, str):
            raise SetupError(f"an endpoint must be a string, not {type(raw).__name__}")
        item = raw.strip()
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


def socket_type(value: int | str) -> int:
    """A socket type from a zmq constant or a name in any case."""
    if isinstance(value, str):
        found = SOCKET_TYPES.get(value.strip().upper())
    else:
        found = int(value) if int(value) in TYPE_NAMES else None
    if found is None:
        names = ", ".join(SOCKET_TYPES)
        raise SetupError(f"{value!r} is not a socket type zmqapp knows; use one of {names}")
    return found


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


class ChannelSignal(Signal):
    """A blinker signal whose receivers are a channel's handlers plus anything connected later.

    Connecting or disconnecting tells the channel, which rebuilds the tuple the hot loop
    iterates, so dispatch never walks blinker's bookkeeping per message.
    """

    def __init__(self, channel: Channel) -> None:
        super().__init__(f"channel {channel.name!r}")
        self._channel = _weakref(channel)

    def _changed(self) -> None:
        channel = self._channel()
        if channel is not None:
            channel.receivers_changed()

    def connect(self, receiver: Any, sender: Any = Signal.ANY, weak: bool = True) -> Any:
        result = super().connect(receiver, sender, weak)
        self._changed()
        return result

    def _disconnect(self, receiver_id: Any, sender_id: Any) -> None:
        super()._disconnect(receiver_id, sender_id)
        self._changed()

    def ordered_receivers(self, sender: Any) -> list[Any]:
        """The live receivers for ``sender``, in the order they were first connected."""
        live = {_receiver_id(r): r for r in self.receivers_for(sender)}
        return [live[rid] for rid in self.receivers if rid in live]


def _receiver_id(obj: Any) -> Any:
    """The key blinker files a receiver under in ``Signal.receivers``."""
    if inspect.ismethod(obj):
        return id(obj.__func__), id(obj.__self__)
    return id(obj)


class ChannelStats:
    """Counters of one channel, kept across runs of the app."""

    __slots__ = (
        "decode_failed", "dropped", "failed", "handled", "handshake_failed", "received", "sent",
    )  # fmt: skip

    def __init__(self) -> None:
        self.handshake_failed = 0
        self.received = 0
        self.handled = 0
        self.failed = 0
        self.decode_failed = 0
        self.sent = 0
        self.dropped = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"<ChannelStats {self.as_dict()}>"


class Channel:
    """A declared socket: its options, its handlers and its signal.

    Created by :meth:`App.add_channel`. Option values are read from the declaration and then
    from the app's ``CHANNELS`` config when the app starts.
    """

    #: Option names a channel accepts, beyond ``endpoint`` and ``type``.
    option_names = frozenset({
        "endpoint", "type", "bind", "subscribe", "codec", "send_to", "concurrency",
        "threaded", "options", "maxmsgsize", "timeout", "retries", "monitor",
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
        self.signal = ChannelSignal(self)
        #: Counters of received, handled, failed, decode-failed, sent and dropped messages.
        self.stats = ChannelStats()
        #: The addresses actually bound while running (wildcard ports resolved).
        self.bound: list[str] = []
        #: The socket while the app runs, else None.
        self.socket: zmq.Socket[bytes] | None = None
        self._on_receivers_changed: Callable[[], None] | None = None
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
        options = dict(self.declared)
        for key, value in overrides.items():
            options[str(key).lower()] = value
        unknown = sorted(set(options) - self.option_names)
        if unknown:
            known = ", ".join(sorted(self.option_names))
            raise SetupError(
                f"channel {self.name!r} has no option {unknown[0]!r}; channel options are {known}"
            )
        if options.get("type") is None:
            raise SetupError(
                f"channel {self.name!r} needs a socket type, e.g. type=zmq.PULL or type='pull'"
            )
        self.socket_type = socket_type(options["type"])
        self.type_name = TYPE_NAMES[self.socket_type]

        bind = options.get("bind")
        if bind is not None and not isinstance(bind, bool):
            raise SetupError(f"channel {self.name!r}: bind must be True or False, not {bind!r}")
        self.bind: bool | None = bind
        endpoint = options.get("endpoint")
        self.endpoints: list[Endpoint] = (
            [] if endpoint in (None, "", []) else parse_endpoints(endpoint, bind)
        )

        subscribe = options.get("subscribe")
        if subscribe is not None and self.socket_type not in TOPICAL:
            raise SetupError(
                f"channel {self.name!r} is a {self.type_name} socket; only SUB and XSUB "
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
                raise SetupError(f"channel {self.name!r}: send_to must be a channel name")
            if self.socket_type in REPLYING:
                raise SetupError(
                    f"channel {self.name!r} is a {self.type_name} socket, whose handlers' "
                    "return values are replies; remove send_to and call app.send() in the "
                    "handler to forward as well"
                )
            if send_to == self.name:
                raise SetupError(f"channel {self.name!r} cannot send_to itself")
        self.send_to: str | None = send_to

        concurrency = options.get("concurrency", 1)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise SetupError(
                f"channel {self.name!r}: concurrency must be a whole number of at least 1, "
                f"not {concurrency!r}"
            )
        if concurrency > 1 and self.socket_type == zmq.REP:
            raise SetupError(
                f"channel {self.name!r} is a REP socket, which answers one request at a time; "
                "use type='ROUTER' to serve requests concurrently"
            )
        self.concurrency: int = concurrency
        self.threaded = bool(options.get("threaded", False))

        self.options: dict[int, Any] = {
            socket_option(k): v for k, v in dict(options.get("options") or {}).items()
        }
        self.maxmsgsize: int | None = options.get("maxmsgsize")
        self.timeout: float | None = options.get("timeout")
        self.retries: int = int(options.get("retries") or 0)
        self.monitor: bool = bool(options.get("monitor", False))
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
        return self.socket_type in RECEIVING

    @property
    def replies(self) -> bool:
        """True if handlers' return values are replies (REP and ROUTER)."""
        return self.socket_type in REPLYING

    def check_handler(self, handler: Handler) -> None:
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
        if handler.threaded or self.threaded:
            handler.threaded = not handler.is_async

    # -- handlers and receivers ----------------------------------------------------------------

    def add_handler(self, fn: Callable[..., Any], *, threaded: bool = False) -> Handler:
        handler = Handler(fn, threaded=threaded or self.threaded)
        self.check_handler(handler)
        self.handlers.append(handler)
        self.signal.connect(handler, weak=False)
        return handler

    def receivers_changed(self) -> None:
        if self._on_receivers_changed is not None:
            self._on_receivers_changed()

    def receivers(self, sender: Any) -> list[Any]:
        """Handlers and other receivers of this channel's messages, in connection order."""
        return self.signal.ordered_receivers(sender)

    def __repr__(self) -> str:
        where = ", ".join(map(str, self.endpoints)) or "no endpoint"
        return f"<Channel {self.name!r} {self.type_name} {where}>"
