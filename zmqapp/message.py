"""The message model: how frames on the wire become a :class:`Message` and back.

A message is a list of frames, split into

* the **envelope** (ROUTER only): the frames up to and including the first empty delimiter
  frame, or just the peer identity when the peer sent no delimiter. Replies go back with it.
* the **topic** (SUB/XSUB only): frame 0 when there are two or more frames, else ``None``.
* the **body**: the remaining frames, decoded with the channel's codec. One frame gives the
  decoded value; several give a :class:`Multipart` list of decoded values.

Parsers are built once per channel when the app starts (:func:`make_parser`), so the hot loop
pays for exactly the work its socket type needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import zmq

from .codecs import RAW, Codec, RawCodec, Utf8Codec
from .errors import DecodeError, RemoteError

if TYPE_CHECKING:
    from .channel import Channel

Frames = list[bytes]
Parser = Callable[[Frames], "Message"]


class Multipart(list):  # type: ignore[type-arg]
    """A body of several frames: a list with one decoded value per frame.

    Multi-frame messages arrive as a ``Multipart``, and returning or sending one sends one
    frame per item, whatever the codec. (With the ``raw`` and ``utf8`` codecs a plain list or
    tuple also means one frame per item, since their bodies cannot be lists.)
    """

    __slots__ = ()


class Message:
    """One received message, as handlers and signal receivers see it."""

    __slots__ = ("body", "channel", "envelope", "frames", "topic", "trace_context", "user_id")

    def __init__(
        self,
        channel: Channel,
        frames: Frames,
        body: Any,
        envelope: Frames | None = None,
        topic: bytes | None = None,
        user_id: str | None = None,
    ) -> None:
        #: The :class:`~zmqapp.channel.Channel` it arrived on.
        self.channel = channel
        #: All frames as they came off the socket.
        self.frames = frames
        #: The decoded body.
        self.body = body
        #: ROUTER only: identity frames (and delimiter) that a reply goes back with.
        self.envelope = envelope
        #: SUB/XSUB only: frame 0 of a message with two or more frames.
        self.topic = topic
        #: The peer's authenticated CURVE key (Z85), on channels with ``curve_secret_key``.
        self.user_id = user_id
        #: The OpenTelemetry context the sender put on the wire (``trace=True`` channels).
        self.trace_context: Any = None

    @property
    def identity(self) -> bytes | None:
        """ROUTER only: the peer's identity (the envelope's first frame)."""
        return self.envelope[0] if self.envelope else None

    def __repr__(self) -> str:
        extra = ""
        if self.topic is not None:
            extra += f" topic={self.topic!r}"
        if self.envelope is not None:
            extra += f" identity={self.identity!r}"
        body = repr(self.body)
        if len(body) > 60:
            body = body[:57] + "..."
        return f"<Message {self.channel.name!r}{extra} body={body}>"


# -- decoding ----------------------------------------------------------------------------------


def body_error(codec: Codec, exc: Exception) -> DecodeError:
    """The :class:`DecodeError` for ``codec`` failing on a body with ``exc``."""
    if isinstance(exc, DecodeError):
        return exc
    error = DecodeError(f"{type(codec).__name__} could not decode the body: {exc}")
    error.__cause__ = exc
    return error


def body_decoder(codec: Codec) -> Callable[[Sequence[bytes]], Any]:
    """Return a function from body frames to the body, for ``codec``."""
    if codec is RAW:

        def raw_body(frames: Sequence[bytes]) -> Any:
            return frames[0] if len(frames) == 1 else Multipart(frames)

        return raw_body

    decode = codec.decode

    def decoded_body(frames: Sequence[bytes]) -> Any:
        try:
            if len(frames) == 1:
                return decode(frames[0])
            return Multipart(decode(f) for f in frames)
        except Exception as exc:
            raise body_error(codec, exc) from None

    return decoded_body


def split_envelope(frames: Sequence[bytes]) -> int:
    """Return where a ROUTER message's body starts.

    The envelope runs up to and including the first empty frame that has a body frame after
    it (REQ peers, DEALERs that send a delimiter, chains of proxies). Without one, the
    envelope is the identity frame alone (DEALER peers that send no delimiter).
    """
    for i in range(1, len(frames) - 1):
        if not frames[i]:
            return i + 1
    return 1


def make_parser(channel: Channel) -> Parser:
    """Build the function that turns one received frame list into a Message for ``channel``."""
    body_of = body_decoder(channel.codec)
    kind = channel.socket_type

    if kind in (zmq.SUB, zmq.XSUB):

        def parse_topic(frames: Frames) -> Message:
            if len(frames) >= 2:
                return Message(channel, frames, body_of(frames[1:]), None, frames[0])
            return Message(channel, frames, body_of(frames))

        return parse_topic

    if kind == zmq.ROUTER:

        def parse_routed(frames: Frames) -> Message:
            if len(frames) < 2:
                raise DecodeError("a ROUTER message needs an identity frame and a body frame")
            start = split_envelope(frames)
            return Message(channel, frames, body_of(frames[start:]), frames[:start])

        return parse_routed

    if channel.codec is RAW:

        def parse_plain_raw(frames: Frames) -> Message:
            return Message(channel, frames, frames[0] if len(frames) == 1 else Multipart(frames))

        return parse_plain_raw

    def parse_plain(frames: Frames) -> Message:
        return Message(channel, frames, body_of(frames))

    return parse_plain


# -- encoding ----------------------------------------------------------------------------------


def encode_body(codec: Codec, body: Any) -> Frames:
    """Return the frames for ``body``: one per item of a multipart body, else one."""
    if isinstance(body, Multipart) or (
        isinstance(body, (list, tuple)) and isinstance(codec, (RawCodec, Utf8Codec))
    ):
        if not body:
            raise ValueError("a multipart body needs at least one frame")
        return [codec.encode(item) for item in body]
    return [codec.encode(body)]


def encode_topic(topic: str | bytes) -> bytes:
    """A topic as frame bytes (str is UTF-8)."""
    return topic.encode("utf-8") if isinstance(topic, str) else bytes(topic)


def frames_for(
    codec: Codec,
    body: Any,
    topic: str | bytes | None = None,
    envelope: bytes | Iterable[bytes] | None = None,
) -> Frames:
    """The frames of an outgoing message: ``envelope`` (a ROUTER peer's identity, or a list
    of envelope frames), then ``topic`` (PUB/XPUB), then the encoded body."""
    frames = encode_body(codec, body)
    if topic is not None:
        frames.insert(0, encode_topic(topic))
    if envelope is not None:
        if isinstance(envelope, (bytes, bytearray)):
            frames.insert(0, bytes(envelope))
        else:
            frames[:0] = list(envelope)
    return frames


def show_bytes(data: bytes, limit: int = 48) -> str:
    """``data`` for a log line: text if it is printable UTF-8, else escaped; at most
    ``limit`` characters, with the full length when cut."""
    try:
        text = bytes(data).decode("utf-8")
        shown = repr(text) if text.isprintable() else repr(bytes(data))
    except UnicodeDecodeError:
        shown = repr(bytes(data))
    if len(shown) > limit:
        shown = f"{shown[: limit - 3]}... ({len(data)} bytes)"
    return shown


# -- error replies -----------------------------------------------------------------------------

#: The first bytes of an error reply: ``ZMQAPP-ERROR `` and then a JSON object.
ERROR_PREFIX = b"ZMQAPP-ERROR "


def error_reply(kind: str, exc: BaseException, channel: str, detail: bool) -> bytes:
    """The single frame a REP/ROUTER channel answers with when it cannot reply normally.

    ``{"kind": ..., "error": <exception class>, "detail": <message or "">, "channel": ...}``,
    prefixed by :data:`ERROR_PREFIX`, so any client gets exactly one frame and never waits.
    """
    doc = {
        "kind": kind,
        "error": type(exc).__name__,
        "detail": str(exc) if detail else "",
        "channel": channel,
    }
    return ERROR_PREFIX + json.dumps(doc, separators=(",", ":")).encode()


def parse_error_reply(frames: Iterable[bytes]) -> RemoteError | None:
    """Return the :class:`RemoteError` an error reply stands for, or ``None`` for a normal one."""
    frames = list(frames)
    if len(frames) != 1 or not bytes(frames[0]).startswith(ERROR_PREFIX):
        return None
    try:
        doc = json.loads(bytes(frames[0])[len(ERROR_PREFIX) :])
        return RemoteError(str(doc["kind"]), str(doc["error"]), str(doc.get("detail", "")), doc)
    except (ValueError, KeyError, TypeError):
        return None
