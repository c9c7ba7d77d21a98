"""A throwaway ZeroMQ peer for the shell: what ``zmqapp send``, ``listen`` and ``replay`` do.

Plain blocking pyzmq, no event loop: one socket, bound or connected by zmqapp's endpoint rules,
always closed with a finite linger, so a command never hangs at exit.

Sending tells the truth. A message counts as taken only once a peer has completed the ZeroMQ
handshake (the socket's monitor says so, and ``IMMEDIATE`` keeps messages off connections that
have not); on PUB, only once a subscriber whose subscription matches has arrived. When no
peer takes a message within ``--timeout`` the command says why, as far as the monitor can
tell (nothing listening, a host that does not resolve, a refused CURVE handshake), and exits 1.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import click
import zmq
from zmq.utils.monitor import parse_monitor_message

from ._graph import split_address
from .channel import Endpoint
from .codecs import Codec, get_codec
from .errors import SetupError
from .message import parse_error_reply, split_envelope
from .monitor import EVENT_NAMES, close_monitor
from .recording import Recorded, Recorder
from .security import read_public_key, read_secret_key
from .socket_types import SOCKET_TYPES, TYPE_NAMES
from .tap import value_json

#: Socket types ``zmqapp send`` and ``zmqapp replay`` offer.
SEND_TYPES = ("PUSH", "PUB", "REQ", "DEALER", "PAIR")
#: Socket types ``zmqapp listen`` offers.
LISTEN_TYPES = ("PULL", "SUB", "REP", "ROUTER", "DEALER", "PAIR")
#: Codecs the commands offer (pickle is left out on purpose: never unpickle network input).
CODEC_NAMES = ("raw", "utf8", "json", "msgpack")
#: Milliseconds a closing socket keeps delivering what was sent, before the command exits.
FLUSH_LINGER = 2000
#: Types whose connecting side shares the binding side's traffic with other connected peers:
#: a listen that connects one of them takes messages away from the real consumers.
SHARING: dict[int, str] = {
    zmq.PULL: "a PUSH socket deals its messages out in turn to every PULL connected to it",
    zmq.REP: "requests are spread over every REP and ROUTER connected to the client",
    zmq.ROUTER: "requests are spread over every REP and ROUTER connected to the client",
    zmq.DEALER: "a DEALER or ROUTER deals its messages out among the peers connected to it",
}

# -- sockets -----------------------------------------------------------------------------------


@dataclass
class Curve:
    """CURVE keys for a shell peer: a client when ``server_key`` is set, else a server."""

    server_key: bytes | None = None
    public: bytes | None = None
    secret: bytes | None = None


def curve_keys(server_key: str | None, secret_key: str | None) -> Curve | None:
    """The keys ``--curve-server-key`` and ``--curve-secret-key`` give (each a Z85 key or a
    certificate file), or None when neither is given."""
    if server_key is None and secret_key is None:
        return None
    try:
        curve = Curve()
        if secret_key is not None:
            curve.public, curve.secret = read_secret_key(secret_key, "--curve-secret-key")
        if server_key is not None:
            curve.server_key = read_public_key(server_key, "--curve-server-key")
    except SetupError as exc:
        raise click.UsageError(str(exc)) from None
    if not zmq.has("curve"):  # pragma: no cover - pyzmq wheels bundle a libzmq with CURVE
        raise click.UsageError("This libzmq was built without CURVE support.")
    return curve


def apply_curve(sock: zmq.Socket[Any], curve: Curve) -> None:
    """Make ``sock`` a CURVE client (``curve.server_key`` set) or server.

    A client without its own key uses a fresh pair. A server here has no ZAP handler, so any
    client that completes the handshake gets in: the traffic is encrypted, not authenticated
    (fine for debugging; a zmqapp app checks ``authorized_keys``).
    """
    if curve.server_key is not None:
        if curve.secret is None:
            curve.public, curve.secret = zmq.curve_keypair()
        sock.curve_serverkey = curve.server_key
        sock.curve_publickey = curve.public
        sock.curve_secretkey = curve.secret
    else:
        assert curve.public is not None and curve.secret is not None
        sock.curve_server = True
        sock.curve_publickey = curve.public
        sock.curve_secretkey = curve.secret


class ShellSocket:
    """One socket of a shell command, bound or connected, and a monitor that tells how its
    connections went (so a failure can say why)."""

    def __init__(
        self,
        context: zmq.Context[Any],
        kind: int,
        endpoints: Sequence[Endpoint],
        *,
        subscribe: Sequence[bytes] = (),
        curve: Curve | None = None,
        immediate: bool = False,
        announce_connects: bool = False,
    ) -> None:
        self.kind = kind
        self.endpoints = list(endpoints)
        self.where = ", ".join(e.address for e in endpoints)
        self.name = "PUB" if kind == zmq.XPUB else type_name(kind)
        self.curve = curve
        #: (event name, endpoint, value) as the monitor reported them, oldest first.
        self.events: list[tuple[str, str, Any]] = []
        self.handshakes = 0
        self.sock: zmq.Socket[Any] = context.socket(kind)
        self.monitor: zmq.Socket[Any] | None = None
        try:
            self.sock.setsockopt(zmq.LINGER, 0)
            if immediate:
                self.sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for unfinished connections
            for topic in subscribe:
                self.sock.setsockopt(zmq.SUBSCRIBE, topic)
            if curve is not None:
                apply_curve(self.sock, curve)
            self.monitor = self.sock.get_monitor_socket()
            self._open(announce_connects)
        except BaseException:
            self.close(0)
            raise

    def _open(self, announce_connects: bool) -> None:
        for endpoint in self.endpoints:
            verb = "bind" if endpoint.bind else "connect to"
            try:
                if endpoint.bind:
                    self.sock.bind(endpoint.address)
                    bound = bytes(self.sock.getsockopt(zmq.LAST_ENDPOINT)).decode()
                    self.where = self.where.replace(endpoint.address, bound, 1)
                    click.echo(f"{self.name} socket bound to {bound}", err=True)
                    if self.curve is not None and self.curve.server_key is None:
                        assert self.curve.public is not None
                        click.echo(
                            f"CURVE server with public key {self.curve.public.decode()}; it "
                            "admits any client that knows it (no authorized keys here)",
                            err=True,
                        )
                else:
                    self.sock.connect(endpoint.address)
                    if announce_connects:
                        click.echo(f"{self.name} socket connected to {endpoint.address}", err=True)
            except zmq.ZMQError as exc:
                raise click.ClickException(
                    f"Could not {verb} {endpoint.address}: {exc}. Check the address; to bind, "
                    "use a free port (or '*' for one the OS picks)."
                ) from None

    def read_events(self, timeout: float = 0) -> None:
        """Collect the monitor's events, waiting up to ``timeout`` seconds for the first."""
        monitor = self.monitor
        if monitor is None:
            return
        wait = int(timeout * 1000)
        while monitor.poll(wait):
            wait = 0
            try:
                event = parse_monitor_message(monitor.recv_multipart())
            except Exception:  # pragma: no cover - libzmq sends what pyzmq parses
                continue
            name = EVENT_NAMES.get(int(event["event"]), str(event["event"]))
            endpoint = bytes(event["endpoint"]).decode(errors="replace")
            self.events.append((name, endpoint, event["value"]))
            if name == "handshake_succeeded":
                self.handshakes += 1

    def wait_for_peer(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until a peer has completed the ZeroMQ handshake."""
        deadline = time.monotonic() + timeout
        while not self.handshakes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.read_events(remaining)
        return True

    def why_no_peer(self, hint: str) -> str:
        """What the monitor saw, as a clause that says what went wrong; ``hint`` (what to do
        when nobody is there) is added when that is the reason."""
        self.read_events()
        seen = {name for name, _, _ in self.events}
        failed = [(n, value) for n, _, value in self.events if n.startswith("handshake_failed")]
        if failed:
            failure = _handshake_failure(*failed[-1], curve=self.curve is not None)
            return f"a peer at {self.where} answered, but {failure}"
        links = [n for n, _, _ in self.events if n in ("handshake_succeeded", "disconnected")]
        if links and links[-1] == "disconnected":
            return f"the peer at {self.where} went away. {hint}"
        if self.handshakes:
            return f"a peer connected to {self.where}, but took nothing"
        if "connected" in seen or "accepted" in seen:
            return (
                f"a connection to {self.where} was made, but the ZeroMQ handshake did not "
                f"complete: is the peer a ZeroMQ socket of a type that talks to {self.name}, "
                "and does it expect CURVE (--curve-server-key)?"
            )
        if all(e.bind for e in self.endpoints):
            return f"no peer connected to {self.where}. {hint}"
        if "connect_delayed" in seen:
            return f"nothing accepts connections at {self.where} (refused or unreachable). {hint}"
        return f"nothing answered at {self.where}. {hint}"

    def close(self, linger: int) -> None:
        if self.monitor is not None:
            close_monitor(self.sock, self.monitor)
            self.monitor = None
        self.sock.close(linger=linger)


_PROTOCOL_ERRORS = {
    int(getattr(zmq, name)): name
    for name in dir(zmq)
    if name.startswith("PROTOCOL_ERROR_") and isinstance(getattr(zmq, name), int)
}


def _handshake_failure(name: str, value: int, curve: bool) -> str:
    if name == "handshake_failed_auth":
        return (
            "refused our CURVE credentials: check --curve-server-key, and that the peer "
            "authorizes our --curve-secret-key"
        )
    if name == "handshake_failed_protocol":
        error = _PROTOCOL_ERRORS.get(value, hex(value))
        if error.endswith("MECHANISM_MISMATCH"):
            return (
                "one side uses CURVE and the other does not: give --curve-server-key for a "
                "CURVE server, or leave it out for a plain one"
            )
        if error.endswith(("CRYPTOGRAPHIC", "KEY_EXCHANGE")):
            return "the CURVE keys do not fit: check --curve-server-key"
        return f"the ZeroMQ handshake failed ({error})"
    reason = os.strerror(value) if isinstance(value, int) and value > 0 else str(value)
    if curve:
        return (
            f"dropped the connection during the handshake ({reason}); with CURVE, that is "
            "what a wrong --curve-server-key looks like"
        )
    return (
        f"dropped the connection during the handshake ({reason}): does the peer expect CURVE "
        "(--curve-server-key), or is its socket type one that cannot talk to ours?"
    )


def type_name(kind: int) -> str:
    return TYPE_NAMES[kind]


def check_hosts(endpoints: Sequence[Endpoint], timeout: float) -> None:
    """Fail clearly, before connecting, when a tcp host name does not resolve.

    libzmq resolves in the background and retries for ever, so it would only time out.
    A lookup slower than ``timeout`` is left to libzmq.
    """
    for endpoint in endpoints:
        transport, host, _ = split_address(endpoint.address)
        if endpoint.bind or transport != "tcp" or not host:
            continue
        outcome: list[OSError | None] = []
        lookup = threading.Thread(
            target=_resolve, args=(host, outcome), name="zmqapp-resolve", daemon=True
        )
        lookup.start()
        lookup.join(timeout)
        if outcome and outcome[0] is not None:
            reason = outcome[0].strerror or outcome[0]
            raise click.ClickException(
                f"Could not resolve the host {host!r} of {endpoint.address} ({reason}); check "
                "the name, or give an IP address."
            )


def _resolve(host: str, outcome: list[OSError | None]) -> None:
    try:
        socket.getaddrinfo(host, None)
        outcome.append(None)
    except OSError as exc:
        outcome.append(exc)


# -- input -------------------------------------------------------------------------------------


def argument_bytes(arg: str) -> bytes:
    """A command-line argument as the bytes the user typed (undecodable bytes survive)."""
    return arg.encode("utf-8", "surrogateescape")


def stdin_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """One message per line of ``stream``, without the line ending; read lazily."""
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        yield line


def encode_input(codec_name: str, data: bytes) -> bytes:
    """Encode what the user typed for the wire.

    ``raw`` sends the bytes as they are and ``utf8`` checks they are text. For ``json`` and
    ``msgpack`` the text is a JSON document: it is parsed, then encoded with the codec, so a
    typo is caught here instead of confusing the peer.
    """
    if codec_name == "raw":
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.UsageError(
            f"{data!r} is not UTF-8 text, which --codec {codec_name} needs; use --codec raw "
            "to send bytes as they are."
        ) from None
    if codec_name == "utf8":
        return data
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.UsageError(
            f"{text!r} is not valid JSON ({exc}); with --codec {codec_name} each message is a "
            "JSON document, e.g. '{\"n\": 1}' or '\"some text\"'."
        ) from None
    return get_codec(codec_name).encode(value)


# -- output ------------------------------------------------------------------------------------


class Unrepresentable(str):
    """A number JSON cannot hold (``1e999999``, ``NaN``), kept as the text it was written as."""


def _text(data: bytes) -> str | None:
    """``data`` as text if it is non-empty UTF-8 with no control characters but tabs."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text and all(c.isprintable() or c == "\t" for c in text):
        return text
    return None


def show_bytes(data: bytes) -> str:
    """Bytes for a human: text when printable UTF-8, else a Python bytes literal."""
    text = _text(data)
    return text if text is not None else repr(data)


def show_value(value: Any) -> str:
    """A decoded value for a human: bytes as :func:`show_bytes`, str as is, others as JSON."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return show_bytes(bytes(value))
    if isinstance(value, str):
        return value
    return json.dumps(value_json(value), ensure_ascii=False)


def _number(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else Unrepresentable(text)


class _ShowJson:
    """The json codec for display: numbers JSON cannot hold keep their text."""

    name = "json"

    def encode(self, obj: Any) -> bytes:  # pragma: no cover - only decodes
        return get_codec("json").encode(obj)

    def decode(self, data: bytes) -> Any:
        return json.loads(data, parse_float=_number, parse_constant=Unrepresentable)


class FrameDecoder:
    """Decodes received frames with a codec, falling back to raw bytes (with one warning)."""

    def __init__(self, codec_name: str) -> None:
        self.codec_name = codec_name
        self.codec: Codec | None
        if codec_name == "raw":
            self.codec = None
        elif codec_name == "json":
            self.codec = _ShowJson()
        else:
            self.codec = get_codec(codec_name)
        self._warned = False

    def decode(self, frame: bytes) -> Any:
        if self.codec is None:
            return frame
        try:
            return self.codec.decode(frame)
        except Exception as exc:
            if not self._warned:
                self._warned = True
                click.echo(
                    f"warning: a frame is not valid {self.codec_name} ({exc}); showing such "
                    "frames as bytes",
                    err=True,
                )
            return frame

    def show(self, frames: Iterable[bytes]) -> str:
        return " | ".join(show_value(self.decode(frame)) for frame in frames)


# -- send and replay ---------------------------------------------------------------------------


@dataclass
class SendOptions:
    """How ``zmqapp send`` and ``zmqapp replay`` send; see their ``--help``."""

    type_name: str
    topic: bytes | None = None
    codec: str = "raw"
    count: int | None = None
    rate: float | None = None
    wait: float | None = None
    timeout: float = 5.0
    curve: Curve | None = None
    #: What the summary calls the action ("sent", "replayed").
    verb: str = "sent"
    #: Sends until interrupted (replay --loop): Ctrl-C or SIGTERM is then a normal end.
    endless: bool = False


@dataclass
class Outgoing:
    """One message to send: its frames, and when (seconds after the first message; None for
    as soon as ``--rate`` allows)."""

    frames: list[bytes]
    at: float | None = None


@dataclass
class _Tally:
    sent: int = 0
    unmatched: int = 0
    start: float = field(default_factory=time.perf_counter)


def send(endpoints: Sequence[Endpoint], messages: Iterable[bytes], options: SendOptions) -> None:
    """Send each of ``messages`` (already encoded) and, on REQ and DEALER, print the replies.

    With ``options.count`` the single message is sent that many times with a progress bar.
    ``options.rate`` paces every send. A summary goes to stderr; when no peer takes a message
    within ``options.timeout`` the command fails (exit code 1) and says why.
    """
    topic = options.topic

    def outgoing() -> Iterator[Outgoing]:
        for body in messages:
            yield Outgoing([body] if topic is None else [topic, body])

    if options.count is None:
        deliver(endpoints, outgoing(), options)
        return
    body = next(iter(messages))
    frames = [body] if topic is None else [topic, body]
    repeated = (Outgoing(frames) for _ in range(options.count))
    hidden = options.type_name in ("REQ", "DEALER") and sys.stdout.isatty()  # replies there
    with click.progressbar(
        length=options.count, label="sending", file=sys.stderr, hidden=hidden
    ) as bar:
        deliver(endpoints, repeated, options, progress=bar.update)


def replay(
    endpoints: Sequence[Endpoint],
    messages: Sequence[Recorded],
    options: SendOptions,
    *,
    speed: float = 1.0,
    loop: bool = False,
) -> None:
    """Send recorded messages again, keeping their gaps (divided by ``speed``; 0 sends as
    fast as possible); with ``loop``, over and over until interrupted."""

    def outgoing() -> Iterator[Outgoing]:
        offset = 0.0
        while True:
            first = messages[0].t
            for message in messages:
                at = None if speed == 0 else offset + (message.t - first) / speed
                yield Outgoing(list(message.frames), at)
            if not loop:
                return
            offset += (messages[-1].t - first) / speed if speed else 0.0

    options.endless = loop
    deliver(endpoints, outgoing(), options)


def deliver(
    endpoints: Sequence[Endpoint],
    messages: Iterable[Outgoing],
    options: SendOptions,
    *,
    progress: Any = None,
) -> None:
    """Open the socket, wait for a peer, send each message on time, print the summary."""
    kind = SOCKET_TYPES[options.type_name]
    check_hosts(endpoints, options.timeout)
    context: zmq.Context[Any] = zmq.Context()
    shell: ShellSocket | None = None
    linger = 0
    tally = _Tally()
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
    try:
        # An XPUB sends exactly as a PUB does, and also tells us who subscribes to what.
        shell = ShellSocket(
            context,
            zmq.XPUB if kind == zmq.PUB else kind,
            endpoints,
            curve=options.curve,
            # Queue only on connections that completed the handshake. Not for REQ and DEALER:
            # a reply proves delivery there, and with IMMEDIATE, libzmq 4.3 sometimes loses
            # the reply to a request sent right after the handshake.
            immediate=kind not in (zmq.REQ, zmq.DEALER),
        )
        shell.sock.setsockopt(zmq.SNDTIMEO, int(options.timeout * 1000))
        sender = _Sender(shell, kind, options, tally)
        sender.wait_for_peers()
        tally.start = time.perf_counter()
        sender.send_all(messages, progress)
        linger = FLUSH_LINGER
    except KeyboardInterrupt:
        if options.endless:
            _summary(options, tally, "stopped: ")
            return
        _summary(options, tally, "interrupted: ")
        sys.exit(130)
    except click.ClickException as exc:
        if tally.sent:
            noun = "message" if tally.sent == 1 else "messages"
            raise click.ClickException(
                f"{exc.message} ({tally.sent} {noun} had been {options.verb} before.)"
            ) from None
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if shell is not None:
            shell.close(linger)
        context.term()
    _summary(options, tally)
    if tally.unmatched:
        raise click.ClickException(
            f"{tally.unmatched} of {tally.sent} messages matched no subscription, so no "
            f"subscriber got them ({sender.wanted()}); check --topic."
        )


def _summary(options: SendOptions, tally: _Tally, prefix: str = "") -> None:
    elapsed = max(time.perf_counter() - tally.start, 1e-9)
    noun = "message" if tally.sent == 1 else "messages"
    click.echo(
        f"{prefix}{options.verb} {tally.sent} {noun} in {elapsed:.3f} s "
        f"({tally.sent / elapsed:.0f} msg/s)",
        err=True,
    )


class _Sender:
    """What ``send`` and ``replay`` do with their one socket, per message."""

    def __init__(self, shell: ShellSocket, kind: int, options: SendOptions, tally: _Tally) -> None:
        self.shell = shell
        self.sock = shell.sock
        self.kind = kind
        self.options = options
        self.tally = tally
        self.replies = kind in (zmq.REQ, zmq.DEALER)
        self.decoder = FrameDecoder(options.codec)
        #: PUB: the topics subscribers have asked for (an XPUB passes each one once).
        self.subscriptions: set[bytes] = set()

    def wait_for_peers(self) -> None:
        timeout = self.options.timeout
        if self.kind == zmq.PUB:
            wait = timeout if self.options.wait is None else self.options.wait
            if not self._read_subscriptions(wait):
                cause = self.shell.why_no_peer(
                    "Start the subscriber first, or give it longer with --wait."
                ).replace("took nothing", "subscribed to nothing")
                raise click.ClickException(
                    f"No subscriber arrived within {wait:g} s, and a PUB socket drops what "
                    f"nobody subscribes to, so nothing was sent: {cause}"
                )
            return
        if not self.shell.wait_for_peer(timeout):
            cause = self.shell.why_no_peer(
                "Start the receiving side first, or give it longer with --timeout."
            )
            raise click.ClickException(f"No peer took the message within {timeout:g} s: {cause}")
        if self.options.wait:
            time.sleep(self.options.wait)  # --wait: give more peers time to connect

    def _read_subscriptions(self, timeout: float) -> bool:
        """Read subscription messages, waiting up to ``timeout`` for the first; True if any
        subscriber has arrived so far."""
        wait = int(timeout * 1000)
        while self.sock.poll(wait, zmq.POLLIN):
            wait = 0
            message = self.sock.recv()
            if message[:1] == b"\x01":
                self.subscriptions.add(message[1:])
            elif message[:1] == b"\x00":
                self.subscriptions.discard(message[1:])
        return bool(self.subscriptions)

    def wanted(self) -> str:
        topics = ", ".join(
            repr(show_bytes(t)) if t else "everything" for t in sorted(self.subscriptions)
        )
        return f"subscribers want {topics}" if topics else "no subscriber is left"

    def send_all(self, messages: Iterable[Outgoing], progress: Any) -> None:
        interval = 1.0 / self.options.rate if self.options.rate else 0.0
        start = time.perf_counter()
        for index, message in enumerate(messages):
            due = message.at if message.at is not None else index * interval
            delay = start + due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # pacing: --rate, or the recorded gaps
            self.send(message.frames)
            if progress is not None:
                progress(1)

    def send(self, frames: list[bytes]) -> None:
        if self.kind == zmq.PUB:
            self._read_subscriptions(0)
            if not any(frames[0].startswith(topic) for topic in self.subscriptions):
                self.tally.unmatched += 1
        if self.kind == zmq.DEALER:
            frames = [b"", *frames]  # the envelope a REQ would add, so REP and ROUTER answer
        try:
            self.sock.send_multipart(frames)
        except zmq.Again:
            cause = self.shell.why_no_peer("Is the receiving side still running?")
            raise click.ClickException(
                f"No peer took the message within {self.options.timeout:g} s: {cause}"
            ) from None
        self.tally.sent += 1
        if self.replies:
            self.receive_reply()

    def receive_reply(self) -> None:
        timeout = self.options.timeout
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise click.ClickException(
                f"No reply within {timeout:g} s from {self.shell.where}; is a REP or ROUTER "
                "peer answering there? (Raise --timeout for slow servers.)"
            )
        frames = self.sock.recv_multipart()
        if self.kind == zmq.DEALER and b"" in frames:
            frames = frames[frames.index(b"") + 1 :]
        error = parse_error_reply(frames)
        if error is not None:
            raise click.ClickException(
                f"The server answered with an error ({error.kind}): {error}."
            )
        click.echo(self.decoder.show(frames))


# -- listen ------------------------------------------------------------------------------------


@dataclass
class ListenOptions:
    """How ``zmqapp listen`` listens; see its ``--help``."""

    type_name: str
    topics: Sequence[bytes] = ()
    codec: str = "raw"
    as_json: bool = False
    count: int | None = None
    reply: bytes | None = None
    curve: Curve | None = None
    record: str | None = None


def listen(endpoints: Sequence[Endpoint], options: ListenOptions) -> None:
    """Print each message that arrives; REP and ROUTER answer every request. With
    ``options.record``, also write each message to that file (:mod:`zmqapp.recording`).

    Returns after ``options.count`` messages, or on Ctrl-C or SIGTERM.
    """
    kind = SOCKET_TYPES[options.type_name]
    decoder = FrameDecoder(options.codec)
    subscribe = (list(options.topics) or [b""]) if kind == zmq.SUB else []
    _warn_if_sharing(kind, endpoints)
    context: zmq.Context[Any] = zmq.Context()
    shell: ShellSocket | None = None
    recorder: Recorder | None = None
    linger = 0
    try:
        with interruptible():  # Ctrl-C, SIGTERM or a closed stdout: a normal way to stop
            shell = ShellSocket(
                context,
                kind,
                endpoints,
                subscribe=subscribe,
                curve=options.curve,
                announce_connects=True,
            )
            if options.record is not None:
                source = {"endpoint": shell.where, "type": options.type_name}
                try:
                    recorder = Recorder.open(options.record, source)
                except OSError as exc:
                    raise click.ClickException(
                        f"Could not write the recording {options.record}: {exc.strerror or exc}."
                    ) from None
            sock = shell.sock
            seen = 0
            while options.count is None or seen < options.count:
                frames = sock.recv_multipart()
                seen += 1
                envelope, topic, body = _split(kind, frames)
                if recorder is not None:
                    recorder.write(([] if topic is None else [topic]) + body)
                click.echo(_render(envelope, topic, body, decoder, options.as_json))
                if kind in (zmq.REP, zmq.ROUTER):
                    answer = [options.reply] if options.reply is not None else body
                    sock.send_multipart(envelope + answer if kind == zmq.ROUTER else answer)
            linger = FLUSH_LINGER  # let the last reply go out
    finally:
        if recorder is not None:
            recorder.close()
            click.echo(f"recorded {recorder.count} messages to {options.record}", err=True)
        if shell is not None:
            shell.close(linger)
        context.term()


def _warn_if_sharing(kind: int, endpoints: Sequence[Endpoint]) -> None:
    """Warn that a connecting PULL/REP/ROUTER/DEALER takes part of someone else's traffic."""
    connected = [e.address for e in endpoints if not e.bind]
    if kind not in SHARING or not connected:
        return
    name = type_name(kind)
    click.echo(
        f"warning: this {name} socket connects to {', '.join(connected)}, where another socket "
        f"binds; {SHARING[kind]}, so this listen takes part of the traffic away from the real "
        "consumers, who never see what it gets. To watch a zmqapp app's channel without "
        "taking anything, use zmqapp tap URL CHANNEL (the app's HTTP /tap/CHANNEL stream).",
        err=True,
    )


def _split(kind: int, frames: list[bytes]) -> tuple[list[bytes], bytes | None, list[bytes]]:
    """(envelope, topic, body frames), by zmqapp's message rules."""
    if kind == zmq.ROUTER:
        start = split_envelope(frames)
        return frames[:start], None, frames[start:]
    if kind == zmq.DEALER and len(frames) >= 2 and not frames[0]:
        return [], None, frames[1:]  # the delimiter a REP or ROUTER peer sends first
    if kind == zmq.SUB and len(frames) >= 2:
        return [], frames[0], frames[1:]
    return [], None, frames


def _render(
    envelope: list[bytes],
    topic: bytes | None,
    body: list[bytes],
    decoder: FrameDecoder,
    as_json: bool,
) -> str:
    identity = envelope[0] if envelope else None
    if as_json:
        doc = {
            "frames": [value_json(decoder.decode(frame)) for frame in body],
            "topic": None if topic is None else value_json(topic),
            "identity": None if identity is None else value_json(identity),
        }
        return json.dumps(doc, ensure_ascii=False, allow_nan=False)
    parts = []
    if identity is not None:
        text = _text(identity)
        parts.append(f"<{text if text is not None else '0x' + identity.hex()}>")
    if topic is not None:
        parts.append(f"[{show_bytes(topic)}]")
    parts.append(decoder.show(body))
    return " ".join(parts)


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM end the block quietly (a normal way to stop watching or
    listening); a closed stdout (``| head``) too."""
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        drop_stdout()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout is not a file
        pass
    finally:
        os.close(devnull)
