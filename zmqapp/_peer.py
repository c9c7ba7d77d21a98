"""A throwaway ZeroMQ peer for the shell: what ``zmqapp send`` and ``zmqapp listen`` do.

Plain blocking pyzmq, no event loop: one socket, bound or connected by zmqapp's endpoint rules,
always closed with a finite linger, so a command never hangs at exit.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import click
import zmq

from .channel import Endpoint
from .codecs import Codec, get_codec
from .message import parse_error_reply, split_envelope
from .socket_types import SOCKET_TYPES, TYPE_NAMES

#: Socket types ``zmqapp send`` and ``zmqapp listen`` offer.
SEND_TYPES = ("PUSH", "PUB", "REQ", "DEALER", "PAIR")
LISTEN_TYPES = ("PULL", "SUB", "REP", "ROUTER", "PAIR")
#: Codecs the commands offer (pickle is left out on purpose: never unpickle network input).
CODEC_NAMES = ("raw", "utf8", "json", "msgpack")
#: Milliseconds a closing socket keeps delivering what was sent, before the command exits.
FLUSH_LINGER = 2000
#: Seconds ``send --type PUB`` waits for a first subscriber unless ``--wait`` says otherwise.
PUB_WAIT = 0.2


# -- sockets -----------------------------------------------------------------------------------


def open_socket(
    context: zmq.Context[Any],
    kind: int,
    endpoints: Sequence[Endpoint],
    *,
    subscribe: Sequence[bytes] = (),
    announce_connects: bool = False,
) -> zmq.Socket[Any]:
    """Make a socket of ``kind``, bind or connect it to ``endpoints`` and say so on stderr.

    Bound addresses are always printed (a ``*`` port is only known once bound).
    """
    sock: zmq.Socket[Any] = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    name = _type_name(kind)
    try:
        for topic in subscribe:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        for endpoint in endpoints:
            verb = "bind" if endpoint.bind else "connect to"
            try:
                if endpoint.bind:
                    sock.bind(endpoint.address)
                    bound = bytes(sock.getsockopt(zmq.LAST_ENDPOINT)).decode()
                    click.echo(f"{name} socket bound to {bound}", err=True)
                else:
                    sock.connect(endpoint.address)
                    if announce_connects:
                        click.echo(f"{name} socket connected to {endpoint.address}", err=True)
            except zmq.ZMQError as exc:
                raise click.ClickException(
                    f"Could not {verb} {endpoint.address}: {exc}. Check the address; to bind, "
                    "use a free port (or '*' for one the OS picks)."
                ) from None
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def _type_name(kind: int) -> str:
    if kind == zmq.XPUB:
        return "PUB"  # send uses XPUB to see subscribers arrive; users asked for PUB
    return TYPE_NAMES[kind]


def _where(endpoints: Sequence[Endpoint]) -> str:
    return ", ".join(e.address for e in endpoints)


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
    return json.dumps(json_value(value), ensure_ascii=False)


def json_value(value: Any) -> Any:
    """A decoded value made JSON-safe: bytes become text when they are UTF-8, else
    ``{"encoding": "base64", "data": "..."}``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"encoding": "base64", "data": base64.b64encode(data).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class FrameDecoder:
    """Decodes received frames with a codec, falling back to raw bytes (with one warning)."""

    def __init__(self, codec_name: str) -> None:
        self.codec_name = codec_name
        self.codec: Codec | None = None if codec_name == "raw" else get_codec(codec_name)
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


# -- send --------------------------------------------------------------------------------------


@dataclass
class SendOptions:
    """How ``zmqapp send`` sends; see its ``--help``."""

    type_name: str
    topic: bytes | None = None
    codec: str = "raw"
    count: int | None = None
    rate: float | None = None
    wait: float | None = None
    timeout: float = 5.0


def send(endpoints: Sequence[Endpoint], messages: Iterable[bytes], options: SendOptions) -> None:
    """Send each of ``messages`` (already encoded) and, on REQ and DEALER, print the replies.

    With ``options.count`` the single message is sent that many times, at up to
    ``options.rate`` per second, with a progress bar and the achieved rate on stderr.
    """
    kind = SOCKET_TYPES[options.type_name]
    context: zmq.Context[Any] = zmq.Context()
    sock: zmq.Socket[Any] | None = None
    linger = 0
    try:
        # An XPUB sends exactly as a PUB does, and also tells us when a subscriber arrives.
        sock = open_socket(context, zmq.XPUB if kind == zmq.PUB else kind, endpoints)
        sock.setsockopt(zmq.SNDTIMEO, int(options.timeout * 1000))
        peer = _Peer(sock, kind, endpoints, options)
        peer.wait_for_peers()
        if options.count is None:
            for body in messages:
                peer.send(body)
        else:
            peer.send_repeated(next(iter(messages)), options.count)
        linger = FLUSH_LINGER
    finally:
        if sock is not None:
            sock.close(linger=linger)
        context.term()


class _Peer:
    """One socket of ``zmqapp send``, and what it does per message."""

    def __init__(
        self,
        sock: zmq.Socket[Any],
        kind: int,
        endpoints: Sequence[Endpoint],
        options: SendOptions,
    ) -> None:
        self.sock = sock
        self.kind = kind
        self.where = _where(endpoints)
        self.options = options
        self.replies = kind in (zmq.REQ, zmq.DEALER)
        self.decoder = FrameDecoder(options.codec)

    def wait_for_peers(self) -> None:
        wait = self.options.wait
        if self.kind == zmq.PUB:
            wait = PUB_WAIT if wait is None else wait
            if wait > 0 and not self.sock.poll(int(wait * 1000), zmq.POLLIN):
                click.echo(
                    f"warning: no subscriber arrived within {wait:g} s, and a PUB socket drops "
                    "messages nobody subscribes to; give subscribers longer with --wait",
                    err=True,
                )
        elif wait:
            time.sleep(wait)

    def send(self, body: bytes) -> None:
        frames = [body]
        if self.options.topic is not None:
            frames.insert(0, self.options.topic)
        if self.kind == zmq.DEALER:
            frames.insert(0, b"")  # the envelope a REQ would add, so REP and ROUTER peers answer
        try:
            self.sock.send_multipart(frames)
        except zmq.Again:
            raise click.ClickException(
                f"No peer took the message within {self.options.timeout:g} s: nothing is "
                f"connected to {self.where}. Start the receiving side, or raise --timeout."
            ) from None
        if self.replies:
            self.receive_reply()

    def receive_reply(self) -> None:
        timeout = self.options.timeout
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise click.ClickException(
                f"No reply within {timeout:g} s from {self.where}; is a REP or ROUTER peer "
                "answering there? (Raise --timeout for slow servers.)"
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

    def send_repeated(self, body: bytes, count: int) -> None:
        interval = 1.0 / self.options.rate if self.options.rate else 0.0
        # Replies go to stdout: keep the bar off a terminal they share.
        hidden = self.replies and sys.stdout.isatty()
        start = time.perf_counter()
        with click.progressbar(
            length=count, label="sending", file=sys.stderr, hidden=hidden
        ) as bar:
            for i in range(count):
                if interval:
                    delay = start + i * interval - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)  # pacing to --rate
                self.send(body)
                bar.update(1)
        elapsed = max(time.perf_counter() - start, 1e-9)
        click.echo(
            f"sent {count} messages in {elapsed:.3f} s ({count / elapsed:.0f} msg/s)", err=True
        )


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


def listen(endpoints: Sequence[Endpoint], options: ListenOptions) -> None:
    """Print each message that arrives; REP and ROUTER answer every request.

    Returns after ``options.count`` messages, or on Ctrl-C or SIGTERM.
    """
    kind = SOCKET_TYPES[options.type_name]
    decoder = FrameDecoder(options.codec)
    subscribe = (list(options.topics) or [b""]) if kind == zmq.SUB else []
    context: zmq.Context[Any] = zmq.Context()
    sock: zmq.Socket[Any] | None = None
    linger = 0
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
    try:
        sock = open_socket(context, kind, endpoints, subscribe=subscribe, announce_connects=True)
        seen = 0
        while options.count is None or seen < options.count:
            frames = sock.recv_multipart()
            seen += 1
            envelope, topic, body = _split(kind, frames)
            click.echo(_render(envelope, topic, body, decoder, options.as_json))
            if kind in (zmq.REP, zmq.ROUTER):
                answer = [options.reply] if options.reply is not None else body
                sock.send_multipart(envelope + answer if kind == zmq.ROUTER else answer)
        linger = FLUSH_LINGER  # let the last reply go out
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM: a normal way to stop listening
    except BrokenPipeError:
        _drop_stdout()  # the reader went away (| head): stop quietly
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if sock is not None:
            sock.close(linger=linger)
        context.term()


def _split(kind: int, frames: list[bytes]) -> tuple[list[bytes], bytes | None, list[bytes]]:
    """(envelope, topic, body frames), by zmqapp's message rules."""
    if kind == zmq.ROUTER:
        start = split_envelope(frames)
        return frames[:start], None, frames[start:]
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
            "frames": [json_value(decoder.decode(frame)) for frame in body],
            "topic": None if topic is None else json_value(topic),
            "identity": None if identity is None else json_value(identity),
        }
        return json.dumps(doc, ensure_ascii=False)
    parts = []
    if identity is not None:
        text = _text(identity)
        parts.append(f"<{text if text is not None else '0x' + identity.hex()}>")
    if topic is not None:
        parts.append(f"[{show_bytes(topic)}]")
    parts.append(decoder.show(body))
    return " ".join(parts)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
