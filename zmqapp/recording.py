"""Recordings of ZeroMQ messages with their timing: what ``zmqapp listen --record`` writes and
``zmqapp replay`` sends again. Any tool that records (``zmqapp tap --record``) uses the same
:class:`Recorder`.

The format is JSON lines: UTF-8, one JSON object per line, ``\\n`` line endings.

The first line is a header::

    {"format": "zmqapp-recording", "version": 1, "started": "2025-01-31T09:30:00.123456+00:00",
     "source": {"endpoint": "tcp://127.0.0.1:5556", "type": "SUB"}}

``started`` is the wall-clock time (UTC, ISO 8601) the recording began; ``source`` says, for
people, where the messages came from. Every other line is one message::

    {"t": 0.0123, "frames": ["YWxlcnQ=", "eyJuIjogMX0="]}

``t`` is the time of arrival in seconds since the recording began (from a monotonic clock, so
it never goes backwards), and ``frames`` the message's frames, each base64 (standard alphabet,
padded), as the sender sent them: on SUB the topic is frame 0; a ROUTER's identity envelope
and the empty delimiter a REQ adds are not part of the message.

Readers refuse another ``format`` and a ``version`` they do not know, ignore keys they do not
know and empty lines, and ignore a last line cut short (a recorder killed mid-write); any other
line that is not a message is an error that gives its line number.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

#: The ``format`` of the header line.
FORMAT = "zmqapp-recording"
#: The version of the format this module writes and reads.
VERSION = 1


class RecordingError(ValueError):
    """A file is not a recording this version of zmqapp can read; the message says why."""


@dataclass(frozen=True)
class Recorded:
    """One recorded message: its arrival time (seconds since the start) and its frames."""

    t: float
    frames: list[bytes]


class Recorder:
    """Writes a recording to a text stream, one line per message, flushed as it goes (so a
    recording cut short by a kill is readable up to its last whole line).

    ::

        with Recorder.open("session.jsonl", source={"endpoint": address, "type": "SUB"}) as rec:
            rec.write(frames)
    """

    def __init__(
        self,
        stream: IO[str],
        source: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.start = clock()
        #: Messages written so far.
        self.count = 0
        header = {
            "format": FORMAT,
            "version": VERSION,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "source": dict(source or {}),
        }
        self._line(header)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], source: Mapping[str, Any] | None = None
    ) -> Recorder:
        """A recorder writing to a new file at ``path`` (replaced if it exists)."""
        return cls(open(path, "w", encoding="utf-8", newline="\n"), source)

    def write(self, frames: Sequence[bytes], t: float | None = None) -> None:
        """Record a message; ``t`` defaults to the time since the recording began."""
        when = self.clock() - self.start if t is None else t
        self._line(
            {
                "t": round(when, 6),
                "frames": [base64.b64encode(bytes(frame)).decode("ascii") for frame in frames],
            }
        )
        self.count += 1

    def _line(self, doc: Mapping[str, Any]) -> None:
        self.stream.write(json.dumps(doc, separators=(",", ":")) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_recording(
    stream: IO[str], name: str = "the recording"
) -> tuple[dict[str, Any], Iterator[Recorded]]:
    """The header of a recording and an iterator over its messages, read lazily.

    Raises :class:`RecordingError` (at once for the header, while iterating for a message)
    naming ``name`` and the line.
    """
    first = stream.readline()
    try:
        header = json.loads(first)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingError(
            f"{name} is not a zmqapp recording: its first line is not a "
            f'{{"format": "{FORMAT}", ...}} header (record one with zmqapp listen --record)'
        )
    if header.get("version") != VERSION:
        raise RecordingError(
            f"{name} is a version {header.get('version')!r} recording, and this zmqapp reads "
            f"version {VERSION}; replay it with the zmqapp that recorded it"
        )
    return header, _messages(stream, name)


def _messages(stream: IO[str], name: str) -> Iterator[Recorded]:
    for number, line in enumerate(stream, start=2):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            t = float(doc["t"])
            frames = [base64.b64decode(frame, validate=True) for frame in doc["frames"]]
        except (ValueError, KeyError, TypeError, binascii.Error):
            if not line.endswith("\n"):
                return  # the last line, cut short: the recorder was stopped mid-write
            raise RecordingError(
                f"line {number} of {name} is not a recorded message "
                '({"t": seconds, "frames": [base64, ...]})'
            ) from None
        yield Recorded(t, frames)


def load_recording(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Recorded]]:
    """The header and every message of the recording at ``path``."""
    with open(path, encoding="utf-8") as stream:
        header, messages = read_recording(stream, os.fspath(path))
        return header, list(messages)
