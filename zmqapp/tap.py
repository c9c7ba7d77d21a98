"""Taps: watch the messages a running channel receives and sends, without taking them.

``GET /tap/{channel}`` on the app's HTTP server (``HTTP`` config; ``HTTP_TOKEN`` guards it,
since bodies are data) streams one JSON object per line (``application/x-ndjson``), as
messages pass::

    {"channel": "tasks", "direction": "in", "time": 1764079200.123, "topic": null,
     "body": {"id": 7}, "frames": ["{\\"id\\":7}"]}

``direction`` is ``in`` or ``out``; ``body`` is decoded with the channel's codec where it
decodes (else null, with ``"error"`` saying why); ``frames`` are the raw frames, each a
string where it is UTF-8, else ``{"encoding": "base64", "data": ...}``. ``?count=N`` ends the
stream after N messages. A tap that cannot keep up drops messages, never the app: each tap
has its own bounded queue, and a line ``{"channel": ..., "dropped": N}`` says how many it
lost so far. Several taps may watch one channel; what handlers see never changes. A tapped
channel leaves the fast path (its messages are built into :class:`~zmqapp.Message` objects)
until the last tap closes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .message import Multipart, body_decoder, split_envelope

if TYPE_CHECKING:
    from .channel import Channel
    from .message import Frames, Message

#: Messages a tap holds for a slow reader before it drops.
TAP_QUEUE = 1000


def frame_json(data: bytes) -> Any:
    """A raw frame for JSON: text if it is UTF-8, else base64."""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(bytes(data)).decode("ascii")}


def value_json(value: Any) -> Any:
    """A decoded value made JSON-safe, the same way for ``/tap`` and ``zmqapp listen --json``.

    Bytes become text when they are UTF-8, else ``{"encoding": "base64", "data": "..."}``.
    A float JSON cannot hold (infinity, NaN) becomes a string: the text it was written as
    when the json codec decoded it (``"1e999999"``), else ``"Infinity"``, ``"-Infinity"`` or
    ``"NaN"``. Map keys become strings; anything else, its repr.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return frame_json(bytes(value))
    if isinstance(value, dict):
        return {_key(k): value_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [value_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _key(key: Any) -> str:
    if isinstance(key, (bytes, bytearray)):
        text = frame_json(bytes(key))
        return text if isinstance(text, str) else repr(bytes(key))
    return key if isinstance(key, str) else json.dumps(value_json(key))


class Tap:
    """One reader's bounded queue of a channel's traffic."""

    def __init__(self, channel: Channel, limit: int = TAP_QUEUE) -> None:
        self.channel = channel
        self.limit = limit
        self.records: deque[tuple[float, str, Frames, Message | None]] = deque()
        self.dropped = 0
        self.reported = 0
        self.closed = False
        self.ready = asyncio.Event()
        self.decode = body_decoder(channel.codec)

    def offer(self, direction: str, frames: Frames, message: Message | None = None) -> None:
        """Keep one message for the reader, or count it dropped when the queue is full."""
        if len(self.records) >= self.limit:
            self.dropped += 1
        else:
            self.records.append((time.time(), direction, frames, message))
        if not self.ready.is_set():
            self.ready.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self.ready.clear()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    def lines(self, budget: int | None = None) -> list[str]:
        """JSON lines for what is queued (at most ``budget`` messages), and a ``dropped``
        line when the count of drops grew."""
        out: list[str] = []
        while self.records and (budget is None or len(out) < budget):
            out.append(json.dumps(self.render(*self.records.popleft()), allow_nan=False))
        if self.dropped != self.reported:
            self.reported = self.dropped
            out.append(json.dumps({"channel": self.channel.name, "dropped": self.dropped}))
        return out

    def render(
        self, when: float, direction: str, frames: Frames, message: Message | None
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "channel": self.channel.name,
            "direction": direction,
            "time": when,
            "topic": None,
            "body": None,
            "frames": [frame_json(f) for f in frames],
        }
        if message is not None:
            record["topic"] = frame_json(message.topic) if message.topic is not None else None
            body = message.body
        else:
            body_frames = self._body_frames(direction, frames, record)
            try:
                body = self.decode(body_frames) if body_frames else None
            except Exception as exc:
                record["error"] = str(exc)
                return record
        if isinstance(body, Multipart):
            body = list(body)
        record["body"] = value_json(body)
        return record

    def _body_frames(self, direction: str, frames: Frames, record: dict[str, Any]) -> Frames:
        kind = self.channel.kind
        if direction == "out":
            if kind.publishes and len(frames) >= 2:
                record["topic"] = frame_json(frames[0])
                return frames[1:]
            if kind.name == "ROUTER" and len(frames) >= 2:
                return frames[split_envelope(frames) :]
        elif kind.topical and len(frames) >= 2:  # an inbound message that did not parse
            record["topic"] = frame_json(frames[0])
            return frames[1:]
        return frames
