"""zmqapp.recording: the file format `listen --record` writes and `replay` reads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from zmqapp.recording import (
    FORMAT,
    VERSION,
    Recorder,
    RecordingError,
    load_recording,
    read_recording,
)


def test_a_recording_round_trips_frames_and_times(tmp_path: Path) -> None:
    times = iter([100.0, 100.25, 101.5])
    stream = io.StringIO()
    recorder = Recorder(stream, {"endpoint": "tcp://x:1", "type": "SUB"}, clock=lambda: next(times))
    recorder.write([b"topic", b"\xff\x00"])
    recorder.write([b""])
    recorder.write([b"given"], t=9.0)
    assert recorder.count == 3
    header_line, *lines = stream.getvalue().splitlines()
    header = json.loads(header_line)
    assert (header["format"], header["version"]) == (FORMAT, VERSION) == ("zmqapp-recording", 1)
    assert header["source"] == {"endpoint": "tcp://x:1", "type": "SUB"}
    assert header["started"].endswith("+00:00")
    assert json.loads(lines[0]) == {"t": 0.25, "frames": ["dG9waWM=", "/wA="]}
    _, messages = read_recording(io.StringIO(stream.getvalue()))
    assert [(m.t, m.frames) for m in messages] == [
        (0.25, [b"topic", b"\xff\x00"]),
        (1.5, [b""]),
        (9.0, [b"given"]),
    ]
    path = tmp_path / "r.jsonl"
    path.write_text(stream.getvalue())
    assert len(load_recording(path)[1]) == 3


def test_a_line_cut_short_at_the_end_is_ignored_and_blank_lines_skipped() -> None:
    text = (
        f'{{"format": "{FORMAT}", "version": 1}}\n\n'
        '{"t": 0, "frames": ["YQ=="], "later": "ignored"}\n{"t": 0.5, "fra'
    )
    _, messages = read_recording(io.StringIO(text))
    assert [m.frames for m in messages] == [[b"a"]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("hello\n", "is not a zmqapp recording"),
        ('{"format": "zmqapp-recording", "version": 7}\n', "is a version 7 recording"),
        ('{"format": "zmqapp-recording", "version": 1}\n{"t": 1}\n{"t": 2, "frames": []}\n',
         "line 2 of rec is not a recorded message"),
        ('{"format": "zmqapp-recording", "version": 1}\n{"t": 1, "frames": ["!!"]}\n',
         "line 2 of rec is not a recorded message"),
    ],
)  # fmt: skip
def test_what_is_not_a_recording_is_an_error_that_says_where(text: str, message: str) -> None:
    with pytest.raises(RecordingError, match=message):
        _, messages = read_recording(io.StringIO(text), "rec")
        list(messages)
