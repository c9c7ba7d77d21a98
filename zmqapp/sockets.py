"""Socket setup: turning a :class:`~zmqapp.channel.Channel` into a configured, bound or
connected ZeroMQ socket, and closing it again."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import zmq

from . import dns, security
from .channel import Channel, Endpoint
from .errors import SetupError
from .heartbeat import heartbeat_options

#: Config keys applied to every socket unless the channel's own ``options`` set them.
DEFAULT_OPTIONS: dict[str, int] = {"SNDHWM": zmq.SNDHWM, "RCVHWM": zmq.RCVHWM}


def open_socket(
    context: zmq.Context[Any],
    channel: Channel,
    config: Mapping[str, Any],
    monitor: Callable[[Channel, zmq.Socket[Any]], None] | None = None,
) -> zmq.Socket[Any]:
    """Create ``channel``'s socket, set its options, subscribe, then bind and connect.

    Options come first because ZeroMQ applies most of them only to connections made after
    they are set. ``monitor`` is called with the socket before any bind or connect, so a
    monitor sees every event. Raises :class:`SetupError` with the endpoint named when a bind or
    connect fails; the half-made socket is closed first.
    """
    if not channel.endpoints:
        raise SetupError(
            f"channel {channel.name!r} has no endpoint; pass endpoint=... when declaring it or "
            f"set CHANNELS.{channel.name}.endpoint in the config"
        )
    sock: zmq.Socket[Any] = context.socket(channel.socket_type)
    try:
        sock.setsockopt(zmq.LINGER, int(config.get("LINGER", 1000)))
        if channel.socket_type == zmq.ROUTER:
            # Report unroutable and full peers instead of dropping in silence, so zmqapp can
            # count the drops (a ROUTER never queues behind one slow peer; see Pump.send).
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if channel.socket_type == zmq.REQ:
            # A REQ that may send again before a reply arrives, and that ignores replies to
            # earlier requests, so a timed-out request never leaves the socket stuck.
            sock.setsockopt(zmq.REQ_RELAXED, 1)
            sock.setsockopt(zmq.REQ_CORRELATE, 1)
        binds = any(e.bind for e in channel.endpoints)
        for option, value in socket_options(channel, config, binds).items():
            set_option(sock, channel, option, value)
        security.apply(sock, channel)
        if channel.socket_type == zmq.SUB:
            for topic in channel.subscribe:
                sock.setsockopt(zmq.SUBSCRIBE, topic)

        if monitor is not None:
            monitor(channel, sock)
        channel.bound = []
        for endpoint in channel.endpoints:
            if is_dns(endpoint):
                continue  # connected address by address, as DNS says (see zmqapp.dns)
            try:
                if endpoint.bind:
                    sock.bind(endpoint.address)
                    channel.bound.append(bytes(sock.getsockopt(zmq.LAST_ENDPOINT)).decode())
                else:
                    sock.connect(endpoint.address)
            except zmq.ZMQError as exc:
                verb = "bind" if endpoint.bind else "connect to"
                hint = (
                    "; is another process using it? Use a free port, or a '*' port to let the "
                    "OS choose one"
                    if exc.errno == zmq.EADDRINUSE
                    else ""
                )
                raise SetupError(
                    f"channel {channel.name!r} could not {verb} {endpoint.address}: {exc}{hint}"
                ) from None
        if channel.socket_type == zmq.XSUB:
            for topic in channel.subscribe:
                sock.send(b"\x01" + topic)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def socket_options(channel: Channel, config: Mapping[str, Any], binds: bool) -> dict[int, Any]:
    """The options a socket of ``channel`` gets: the config's high-water marks, ``MAXMSGSIZE``
    (the channel's own, or the config's if it binds), the heartbeat options of ``heartbeat``
    (the channel's, else the ``HEARTBEAT`` config), IPv6 for ``tcp+dns://`` endpoints, then
    the channel's own ``options``, which win."""
    options: dict[int, Any] = {}
    for key, option in DEFAULT_OPTIONS.items():
        if config.get(key) is not None:
            options[option] = int(config[key])
    maxmsgsize = channel.maxmsgsize
    if maxmsgsize is None and binds:
        maxmsgsize = config.get("MAXMSGSIZE")
    if maxmsgsize is not None and channel.receives:
        options[zmq.MAXMSGSIZE] = int(maxmsgsize)
    heartbeat = channel.heartbeat if channel.heartbeat is not None else config.get("HEARTBEAT")
    try:
        options.update(heartbeat_options(heartbeat))
    except SetupError as exc:
        raise SetupError(f"config HEARTBEAT: {exc}") from None
    if any(is_dns(e) for e in channel.endpoints):
        options.update(dns.SOCKET_OPTIONS)
    options.update(channel.options)
    return options


def is_dns(endpoint: Endpoint) -> bool:
    """True for a ``tcp+dns://`` endpoint, which the runtime connects address by address."""
    return endpoint.address[: len(dns.SCHEME)].lower() == dns.SCHEME  # as parse_dns_endpoint


def set_option(sock: zmq.Socket[Any], channel: Channel, option: int, value: Any) -> None:
    """Set one socket option, a str value as bytes where ZeroMQ wants bytes; a failure is a
    :class:`SetupError` naming the channel and the option."""
    try:
        if isinstance(value, str) and option in _BYTES_OPTIONS:
            value = value.encode()
        sock.setsockopt(option, value)
    except (zmq.ZMQError, TypeError) as exc:
        name = getattr(zmq.SocketOption(option), "name", option)
        raise SetupError(
            f"channel {channel.name!r} could not set socket option {name} to {value!r}: {exc}"
        ) from None


_BYTES_OPTIONS = frozenset(
    int(o)
    for o in (zmq.IDENTITY, zmq.SUBSCRIBE, zmq.UNSUBSCRIBE, zmq.ZAP_DOMAIN, zmq.PLAIN_USERNAME,
              zmq.PLAIN_PASSWORD, zmq.SOCKS_PROXY)
)  # fmt: skip


class RunContext(zmq.Context):  # type: ignore[type-arg]
    """The ZeroMQ context of one run, which remembers the sockets made on it.

    At the end of a run the app terminates its own context, and ``term()`` waits for every
    socket made on it to be closed, the ones user code made on ``app.context`` too. Knowing
    them lets the stop close a socket that was left open, instead of hanging forever.
    """

    #: Every socket made on this context (held weakly). Declared here: pyzmq contexts take
    #: undeclared attributes for ZeroMQ options.
    opened: weakref.WeakSet[zmq.Socket[Any]]

    def __init__(self) -> None:
        super().__init__()
        self.opened = weakref.WeakSet()

    def socket(self, socket_type: int, *args: Any, **kwargs: Any) -> Any:
        sock = super().socket(socket_type, *args, **kwargs)
        self.opened.add(sock)
        return sock

    def open_sockets(self) -> list[zmq.Socket[Any]]:
        """Sockets made on this context and not closed yet."""
        return [sock for sock in list(self.opened) if not sock.closed]


#: Seconds a socket must stay empty to count as drained at a stop (and then, with an
#: :class:`IoBarrier`, libzmq's I/O thread must have caught up too).
SETTLE = 0.01


class IoBarrier:
    """Tells when libzmq's I/O thread has read what the kernel held for a context's sockets.

    A stop reads a socket until it is empty; but "empty" may only mean that the I/O thread,
    which moves data from the kernel's buffers into the socket, has not run yet: on a busy
    machine it can be kept off the CPU for longer than any quiet period. A probe sent through
    the same I/O thread (a PUSH to a PULL over loopback TCP) comes back only after the thread
    has waited for events at least once more, and each wait reports every connection with
    data. Two probes, one after the other, mean every event reported before the first one
    was sent has been handled: whatever the kernel held then is now in the sockets (ask them
    once more). This holds for a context with one I/O thread, the default.
    """

    def __init__(self, context: zmq.Context[Any]) -> None:
        self.sink: zmq.Socket[Any] = context.socket(zmq.PULL)
        self.source: zmq.Socket[Any] = context.socket(zmq.PUSH)
        try:
            for sock in (self.sink, self.source):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.IMMEDIATE, 0)  # whatever the context's defaults say
            port = self.sink.bind_to_random_port("tcp://127.0.0.1")
            self.source.connect(f"tcp://127.0.0.1:{port}")
        except zmq.ZMQError:
            self.close()
            raise
        self.outstanding = 0  # probes sent and not back
        self.stale = 0  # of those, sent before the last reset (they come back first)
        self.back = 0  # probes back since the last reset

    def passed(self) -> bool:
        """Never blocks: True once two probes, each sent after the last came back, have come
        back since the last :meth:`reset` (the first call sends the first)."""
        while self.sink.poll(0):
            self.sink.recv()
            self.outstanding -= 1
            if self.stale:
                self.stale -= 1
            else:
                self.back += 1
        if self.outstanding:
            return False
        if self.back >= 2:
            return True
        try:
            self.source.send(b"", zmq.NOBLOCK)  # the PUSH queues it until it is connected
        except zmq.Again:  # pragma: no cover - a queue of 1000 probes that never left
            return True  # no barrier to be had: trust the quiet socket, as before
        self.outstanding += 1
        return False

    def reset(self) -> None:
        """Something arrived after all: start over."""
        self.stale = self.outstanding
        self.back = 0

    def wait(self, timeout: float) -> bool:
        """Block until :meth:`passed` (from a fresh start), or ``timeout`` seconds pass."""
        self.reset()
        until = time.monotonic() + timeout
        while not self.passed():
            left = until - time.monotonic()
            if left <= 0 or not self.sink.poll(max(1, int(left * 1000))):
                return False
        return True

    def close(self) -> None:
        self.source.close(linger=0)
        self.sink.close(linger=0)

    @classmethod
    def for_context(cls, context: zmq.Context[Any]) -> IoBarrier | None:
        """A barrier for ``context``, or None where it cannot say anything: a context with
        several I/O threads (the probes may pass through another one), or no loopback TCP."""
        try:
            if context.get(zmq.IO_THREADS) != 1:
                return None
            return cls(context)
        except zmq.ZMQError:
            return None


def stays_empty(sock: zmq.Socket[Any], seconds: float, barrier: IoBarrier | None) -> bool:
    """True if ``sock`` has nothing to read for SETTLE and, with ``barrier``, still nothing
    once libzmq's I/O thread has caught up; False as soon as something comes in, or if
    ``seconds`` run out first."""
    if sock.poll(max(1, int(min(seconds, SETTLE) * 1000))):
        return False
    return barrier is None or (barrier.wait(seconds) and not sock.poll(0))


def unsubscribe_upstream(sock: zmq.Socket[Any], channel: Channel) -> None:
    """At a stop, take back an XSUB channel's subscriptions, so its publishers stop sending
    to it while it reads what they already sent.

    Only XSUB: a SUB socket also filters what it receives by its own subscriptions, so
    unsubscribing a SUB would throw away what already arrived."""
    for topic in channel.subscribe:
        try:
            sock.send(b"\x00" + topic, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
