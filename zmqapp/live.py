"""Clients of a running app's HTTP side: what ``zmqapp tap`` and ``zmqapp top`` do.

Plain blocking ``http.client``: a tool reads one app's ``/tap/{channel}`` stream, or polls the
``/status`` of a few apps. Every failure a user can cause or meet (a wrong address, an app that
is down, a missing token, an unknown channel) becomes a :class:`LiveError` whose message says
what to do; the command line prints it without a traceback.

Rates are not in ``/status``: they are the change of its counters between two polls
(:class:`Meter`), and handler latency is read from the change of the ``timing`` histogram over
the same interval (:func:`percentile`).
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import http.client
import json
import shutil
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import click

from ._peer import interruptible
from .recording import Recorder

#: Seconds a stream may stay silent before the tool gives up (the app sends an empty line
#: every 5 s while nothing passes).
STREAM_SILENCE = 30.0
#: Seconds to wait for an answer to a ``/status`` request.
STATUS_TIMEOUT = 5.0


class LiveError(Exception):
    """A live tool could not do what was asked; the message says what to do about it."""


class Unreachable(LiveError):
    """The app did not answer (it may be down for now, or the address may be wrong)."""


# -- addresses and requests ----------------------------------------------------------------------


def app_url(value: str) -> str:
    """An app's HTTP address as a base URL: ``127.0.0.1:9100`` and ``http://127.0.0.1:9100/``
    both give ``http://127.0.0.1:9100``. Raises :class:`LiveError` for anything else."""
    text = value.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme and scheme not in ("http", "https"):
        raise LiveError(
            f"{value} is not an HTTP address; give the app's HTTP address (its HTTP config, "
            "e.g. http://127.0.0.1:9100), not a ZeroMQ endpoint"
        )
    parts = urllib.parse.urlsplit(text if scheme else f"http://{text}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or parts.query or parts.fragment:
        raise LiveError(
            f"{value!r} is not an app's HTTP address; write it as http://HOST:PORT "
            "(what the app logs as 'HTTP: ...' when it starts)"
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname or "", parts.port, timeout=timeout)


def _open(
    url: str, path: str, token: str | None, timeout: float, silence: float | None = None
) -> http.client.HTTPResponse:
    """Send ``GET url+path``; the response, whatever its status. ``timeout`` bounds the
    connect and the answer's head, ``silence`` (default: ``timeout``) each read after it.
    Network failures raise :class:`Unreachable`."""
    conn = _connection(url, timeout)
    headers = {"Accept": "application/json, application/x-ndjson"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", urllib.parse.urlsplit(url).path + path, headers=headers)
        sock = conn.sock  # the response reads from it, even once conn lets go of it
        response = conn.getresponse()
        if silence is not None and sock is not None:
            sock.settimeout(silence)
        return response
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise unreachable(url, exc) from None


def unreachable(url: str, exc: BaseException) -> Unreachable:
    """The error for an app that did not answer at ``url``."""
    if isinstance(exc, http.client.HTTPException):
        return Unreachable(
            f"{url} did not answer as an HTTP server ({type(exc).__name__}); give the app's "
            "HTTP address (its HTTP config), not a ZeroMQ endpoint"
        )
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return Unreachable(
        f"cannot reach {url} ({reason}); check that the app is running with HTTP set "
        "(zmqapp run --set HTTP=127.0.0.1:9100) and that the address is the one it logged"
    )


def refused(url: str, status: int, body: str, token: str | None) -> LiveError:
    """The error for an answer other than 200 (``body`` is what the app said)."""
    said = body.strip().splitlines()[0] if body.strip() else ""
    if status == 401:
        if token:
            return LiveError(
                f"{url} refused the token; give the app's HTTP_TOKEN with --token or "
                "ZMQAPP_HTTP_TOKEN"
            )
        return LiveError(
            f"{url} needs a token (the app sets HTTP_TOKEN); pass --token TOKEN or set "
            "ZMQAPP_HTTP_TOKEN"
        )
    if status == 404 and not said:
        return LiveError(f"{url} is not a zmqapp app's HTTP address (it has no /status)")
    return LiveError(f"{url} answered {status}: {said or 'no reason given'}")


def fetch_status(url: str, token: str | None = None, timeout: float = STATUS_TIMEOUT) -> Any:
    """The ``/status`` document of the app at ``url`` (see
    :meth:`zmqapp.runtime.Runtime.snapshot`). Raises :class:`LiveError`."""
    response = _open(url, "/status", token, timeout)
    try:
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise unreachable(url, exc) from None
    finally:
        response.close()
    return parse_status(url, response.status, body, token)


def parse_status(url: str, status: int, body: bytes, token: str | None) -> Any:
    """A ``/status`` answer as its document, or the :class:`LiveError` it means."""
    text = body.decode("utf-8", "replace")
    if status != 200:
        raise refused(url, status, "" if status == 404 else text, token)
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("channels"), dict):
        raise LiveError(f"{url}/status is not a zmqapp status document; is it a zmqapp app?")
    return document


# -- tap -----------------------------------------------------------------------------------------


@dataclass
class TapResult:
    """What a tap saw: messages printed, and the messages the app dropped for this reader."""

    messages: int = 0
    dropped: int = 0


def tap(
    url: str,
    channel: str,
    *,
    token: str | None = None,
    count: int | None = None,
    as_json: bool = False,
    record: str | None = None,
    out: Callable[[str], None] = click.echo,
    note: Callable[[str], None] = lambda text: click.echo(text, err=True),
) -> TapResult:
    """Print what ``channel`` of the app at ``url`` receives and sends, as it happens.

    Each message is one line, by :func:`format_tap_record` (``as_json``: the stream's own JSON
    line). With ``record``, the messages the channel receives (or, for a channel that only
    sends, sends) are also written to that file, with the app's timing, in the format of
    :mod:`zmqapp.recording`, for ``zmqapp replay``. Returns after ``count`` messages, or on
    Ctrl-C or SIGTERM; raises :class:`LiveError` when the app refuses, or ends the stream
    first.
    """
    recorder: Recorder | None = None
    recorded = "in"
    if record is not None:
        kind = fetch_status(url, token)["channels"].get(channel, {}).get("type")
        recorded = "out" if kind in ("PUSH", "PUB") else "in"
        try:
            recorder = Recorder.open(record, source={"url": url, "channel": channel,
                                                     "direction": recorded})  # fmt: skip
        except OSError as exc:
            raise LiveError(f"cannot write the recording {record}: {exc.strerror or exc}") from None
    try:
        return _tap(url, channel, token, count, as_json, recorder, recorded, out, note)
    finally:
        if recorder is not None:
            recorder.close()
            note(f"recorded {recorder.count} message(s) to {record}")


def _tap(
    url: str,
    channel: str,
    token: str | None,
    count: int | None,
    as_json: bool,
    recorder: Recorder | None,
    recorded: str,
    out: Callable[[str], None],
    note: Callable[[str], None],
) -> TapResult:
    first: float | None = None
    path = "/tap/" + urllib.parse.quote(channel, safe="")
    if count is not None:
        path += f"?count={count}"
    result = TapResult()
    with interruptible():
        response = _open(url, path, token, STATUS_TIMEOUT, silence=STREAM_SILENCE)
        try:
            if response.status != 200:
                said = response.read().decode("utf-8", "replace")
                if response.status == 404:
                    raise _unknown_channel(url, channel, token)
                raise refused(url, response.status, said, token)
            note(f"tapping channel {channel!r} at {url} (Ctrl-C to stop)")
            for record, line in _records(url, response):
                if "dropped" in record and "direction" not in record:
                    result.dropped = int(record["dropped"])
                    note(
                        f"the app dropped {result.dropped} message(s) for this tap so far: it "
                        "reads faster than this tap prints (the app was not slowed)"
                    )
                    continue
                result.messages += 1
                out(line if as_json else format_tap_record(record))
                if recorder is not None and record.get("direction") == recorded:
                    when = float(record.get("time") or 0.0)
                    first = when if first is None else first
                    recorder.write(
                        [_frame_bytes(f) for f in record.get("frames") or []], when - first
                    )
                if count is not None and result.messages >= count:
                    return result
        finally:
            response.close()
        if count is not None:
            raise LiveError(
                f"the app ended the tap after {result.messages} of {count} messages "
                "(is it stopping?)"
            )
        raise LiveError("the app ended the tap (is it stopping?)")
    return result  # interrupted


def _frame_bytes(frame: Any) -> bytes:
    """A frame of the tap stream as bytes: text is UTF-8, else ``{"encoding": "base64"}``."""
    if isinstance(frame, dict):
        return base64.b64decode(str(frame.get("data", "")))
    return str(frame).encode("utf-8")


def _records(url: str, response: http.client.HTTPResponse) -> Iterator[tuple[dict[str, Any], str]]:
    while True:
        try:
            raw = response.readline()
        except TimeoutError:
            raise LiveError(
                f"{url} sent nothing for {STREAM_SILENCE:.0f} s, not even the empty line it "
                "sends every 5 s; the app's loop may be blocked (try zmqapp top, or SIGUSR1 "
                "for its stacks)"
            ) from None
        except (OSError, http.client.HTTPException):
            return  # the connection ended
        if not raw:
            return
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            continue  # a keep-alive
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record, line


def _unknown_channel(url: str, channel: str, token: str | None) -> LiveError:
    try:
        names = sorted(fetch_status(url, token)["channels"])
    except LiveError as exc:
        return exc  # not a zmqapp app's address at all
    return LiveError(
        f"the app at {url} has no channel {channel!r}; tap one of its channels: "
        f"{', '.join(names) or '(none)'}"
    )


def format_tap_record(record: dict[str, Any]) -> str:
    """One tapped message as a line: time, direction, channel, [topic], body."""
    when = _clock(record.get("time"))
    direction = str(record.get("direction", "?"))
    parts = [when, f"{direction:<3}", str(record.get("channel", "?"))]
    topic = record.get("topic")
    if topic is not None:
        parts.append(f"[{_shown(topic)}]")
    if "error" in record:
        frames = " | ".join(_shown(f) for f in record.get("frames") or [])
        parts.append(f"(not decoded: {record['error']}) {frames}")
    else:
        parts.append(_shown(record.get("body")))
    return " ".join(parts)


def _clock(value: Any) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(float(value))
    except (TypeError, ValueError, OverflowError, OSError):
        return "--:--:--.---"
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _shown(value: Any) -> str:
    """A JSON value of the tap stream as text: strings bare, base64 frames marked, the rest
    as compact JSON."""
    if isinstance(value, str) and value.isprintable():
        return value
    if isinstance(value, dict) and value.get("encoding") == "base64" and len(value) == 2:
        return f"base64:{value.get('data')}"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- rates and latency ---------------------------------------------------------------------------


def percentile(timing: dict[str, Any] | None, q: float) -> float | None:
    """The ``q`` quantile (0..1) of a ``timing`` histogram (``buckets``, ``counts``), in seconds,
    interpolated within its bucket; None when it counts nothing."""
    if not timing:
        return None
    counts = list(timing.get("counts") or [])
    total = sum(counts)
    if total <= 0:
        return None
    bounds = list(timing.get("buckets") or [])
    rank = q * total
    seen = 0.0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            low = bounds[index - 1] if index > 0 else 0.0
            if index >= len(bounds):  # the +Inf bucket: say its lower bound
                return float(low)
            high = bounds[index]
            return float(low + (high - low) * max(0.0, rank - seen) / count)
        seen += count
    return float(bounds[-1]) if bounds else None


def timing_change(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The histogram of what was timed between two snapshots of one channel."""
    if not after:
        return None
    if not before or len(before.get("counts") or []) != len(after.get("counts") or []):
        return after
    counts = [max(0, a - b) for a, b in zip(after["counts"], before["counts"], strict=True)]
    if any(a < b for a, b in zip(after["counts"], before["counts"], strict=True)):
        return after  # the process restarted: its histogram began again
    return {"buckets": after["buckets"], "counts": counts, "sum": after["sum"] - before["sum"]}


@dataclass
class ChannelRates:
    """One channel's numbers over one interval: rates per second, gauges, latency."""

    name: str
    type: str
    received: float = 0.0
    handled: float = 0.0
    errors: float = 0.0
    sent: float = 0.0
    dropped: float = 0.0
    queue: int = 0
    in_flight: int = 0
    peers: int = 0
    p50: float | None = None
    p99: float | None = None
    endpoints: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)


def channel_rates(
    before: dict[str, Any] | None, after: dict[str, Any], seconds: float
) -> list[ChannelRates]:
    """Every channel of a status (or a pool worker's ``channels``) with its rates since
    ``before`` (None: no rates yet)."""
    rows = []
    old_channels = (before or {}).get("channels") or {}
    for name, now in (after.get("channels") or {}).items():
        old = old_channels.get(name)
        row = ChannelRates(
            name=name,
            type=str(now.get("type", "")),
            queue=int(now.get("queue") or 0),
            in_flight=int(now.get("in_flight") or 0),
            peers=int(now.get("peers") or 0),
            endpoints=_where(now),
            subscribe=list(now.get("subscribe") or []),
        )
        if old is not None and seconds > 0:

            def rate(*keys: str, old: dict[str, Any] = old, now: dict[str, Any] = now) -> float:
                change = sum(int(now.get(k) or 0) - int(old.get(k) or 0) for k in keys)
                return max(0.0, change / seconds)  # a restarted process counts from zero

            row.received = rate("received")
            row.handled = rate("handled")
            row.errors = rate("errors", "decode_failed")
            row.sent = rate("sent")
            row.dropped = rate("dropped")
            timing = timing_change(old.get("timing"), now.get("timing"))
            row.p50, row.p99 = percentile(timing, 0.5), percentile(timing, 0.99)
        rows.append(row)
    return rows


def _where(channel: dict[str, Any]) -> list[str]:
    """A channel's endpoints, bound ones with the port the OS chose."""
    bound = iter(channel.get("bound") or [])
    shown = []
    for endpoint in channel.get("endpoints") or []:
        text = str(endpoint)
        shown.append("@" + next(bound, text[1:]) if text.startswith("@") else text)
    return shown


@dataclass
class Sample:
    """One poll of one app: its status document, or why there is none."""

    url: str
    time: float
    status: dict[str, Any] | None = None
    error: str | None = None


class Meter:
    """Polls apps and keeps each one's previous sample, for rates over the last interval."""

    def __init__(self, urls: Sequence[str], token: str | None = None) -> None:
        self.urls = list(urls)
        self.token = token
        self.previous: dict[str, Sample] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(16, len(self.urls)) or 1, thread_name_prefix="zmqapp-top"
        )

    def poll(self) -> list[tuple[Sample | None, Sample]]:
        """Every app's (previous sample, this one), polled at once."""

        def one(url: str) -> Sample:
            try:
                status = fetch_status(url, self.token)
            except LiveError as exc:
                return Sample(url, time.monotonic(), error=str(exc))
            return Sample(url, time.monotonic(), status=status)

        samples = list(self.pool.map(one, self.urls))
        pairs = []
        for sample in samples:
            before = self.previous.get(sample.url)
            pairs.append((before, sample))
            if sample.status is not None:
                self.previous[sample.url] = sample
        return pairs

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# -- top -----------------------------------------------------------------------------------------


def _rate(value: float) -> str:
    if value <= 0:
        return "0"
    if value >= 10000:
        return f"{value / 1000:.0f}k"
    if value >= 99.95:
        return f"{value:.0f}"
    return f"{value:.1f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.0f}µs"
    if value < 1:
        return f"{value * 1000:.1f}ms"
    return f"{value:.2f}s"


def _table(rows: list[list[str]], right: frozenset[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


CHANNEL_HEADER = ["CHANNEL", "TYPE", "IN/s", "OUT/s", "ERR/s", "QUEUE", "BUSY", "PEERS",
                  "P50", "P99", "ENDPOINTS"]  # fmt: skip
WORKER_HEADER = ["WORKER", "PID", "STATE", "READY", "LAG", "IN/s", "OUT/s", "ERR/s", "QUEUE",
                 "BUSY"]  # fmt: skip


def render_top(
    pairs: Sequence[tuple[Sample | None, Sample]],
    *,
    interval: float,
    color: bool = False,
    width: int | None = None,
) -> list[str]:
    """The lines of one ``zmqapp top`` screen (each cut to ``width`` characters, if given)."""

    def cut(text: str) -> str:
        if width is None or len(text) <= width:
            return text
        return text[: max(0, width - 1)] + "…"

    def style(text: str, **kwargs: Any) -> str:
        return click.style(cut(text), **kwargs) if color else cut(text)

    up = sum(1 for _, sample in pairs if sample.status is not None)
    now = datetime.datetime.now().strftime("%H:%M:%S")
    lines = [
        style(f"zmqapp top · {up} of {len(pairs)} apps answering · {now} · "
              f"rates over {interval:g} s", bold=True),
    ]  # fmt: skip
    for before, sample in pairs:
        lines.append("")
        status = sample.status
        if status is None:
            lines.append(style(f"{sample.url}  NOT ANSWERING: {sample.error}", fg="red"))
            continue
        seconds = sample.time - before.time if before is not None else 0.0
        previous = before.status if before is not None else None
        workers = status.get("workers") or []
        ready = "ready" if status.get("ready") else "not ready"
        head = (
            f"{status.get('app')}  {sample.url}  {status.get('state')}  {ready}  "
            f"pid {status.get('pid')}  lag {_seconds(status.get('loop_lag'))}"
        )
        if workers:
            head += f"  {len(workers)} workers"
        lines.append(style(head, bold=True, fg=None if status.get("ready") else "yellow"))
        rows = [CHANNEL_HEADER]
        failing: set[int] = set()
        for row in channel_rates(previous, status, seconds):
            if row.errors > 0 or row.dropped > 0:
                failing.add(len(rows))
            where = ", ".join(row.endpoints) or "-"
            if row.subscribe:
                where += f"  topics {', '.join(repr(t) for t in row.subscribe)}"
            rows.append(
                [row.name, row.type, _rate(row.received), _rate(row.sent), _rate(row.errors),
                 str(row.queue), str(row.in_flight), str(row.peers), _seconds(row.p50),
                 _seconds(row.p99), where]
            )  # fmt: skip
        for index, line in enumerate(_table(rows, frozenset(range(2, 10)))):
            lines.append(style("  " + line, fg="red" if index in failing else None))
        if workers:
            old_workers = {w.get("worker"): w for w in (previous or {}).get("workers") or []}
            wrows = [WORKER_HEADER]
            for worker in workers:
                per = channel_rates(old_workers.get(worker.get("worker")), worker, seconds)
                wrows.append(
                    [str(worker.get("worker")), str(worker.get("pid")),
                     str(worker.get("state")), "yes" if worker.get("ready") else "no",
                     _seconds(worker.get("loop_lag")),
                     _rate(sum(r.received for r in per)), _rate(sum(r.sent for r in per)),
                     _rate(sum(r.errors for r in per)), str(sum(r.queue for r in per)),
                     str(sum(r.in_flight for r in per))]
                )  # fmt: skip
            lines += [style("  " + line) for line in _table(wrows, frozenset({1, *range(4, 10)}))]
    return lines


def top(
    urls: Sequence[str],
    *,
    token: str | None = None,
    interval: float = 1.0,
    once: bool = False,
    stream: IO[str] | None = None,
) -> int:
    """Show the apps' channels, rates, queues, peers, in-flight work and latency, refreshed
    every ``interval`` seconds in place (on a terminal); ``once``: one screen, from two polls
    ``interval`` apart. Returns the exit code: 1 if an app did not answer the last poll.

    An app that does not answer the first poll is an error (:class:`LiveError`): a typo in an
    address must not look like a dead app. Later, it is shown as not answering.
    """
    out = stream or sys.stdout
    meter = Meter(urls, token)
    live = not once and out.isatty()
    pairs: list[tuple[Sample | None, Sample]] = []
    try:
        with interruptible():
            first = meter.poll()
            failed = [sample.error for _, sample in first if sample.error]
            if failed:
                raise LiveError(failed[0] if len(failed) == 1 else "; ".join(failed))
            if live:
                out.write("\x1b[?1049h\x1b[?25l")  # the alternate screen, no cursor
            pairs = first
            while True:
                time.sleep(interval)
                pairs = meter.poll()
                size = shutil.get_terminal_size() if live else None
                lines = render_top(
                    pairs,
                    interval=interval,
                    color=out.isatty(),
                    width=size.columns if size else None,
                )
                if size is not None:
                    shown = lines[: max(1, size.lines - 1)]
                    out.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in shown) + "\x1b[J")
                else:
                    out.write("\n".join(lines) + "\n")
                    if not once:
                        out.write("\n")
                out.flush()
                if once:
                    break
        return 1 if any(sample.status is None for _, sample in pairs) else 0
    finally:
        if live:
            out.write("\x1b[?25h\x1b[?1049l")
            out.flush()
        meter.close()
