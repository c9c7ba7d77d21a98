"""The live tools against real processes over real sockets and real HTTP: ``zmqapp tap``,
``zmqapp top``, ``zmqapp logs``, the app's own dashboard page and the token that guards them.
(The multi-app dashboard, in a real browser, is in test_dashboard.py.)"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from clitools import ZMQAPP, zmqapp

from zmqapp.collect import LogFilter, format_record
from zmqapp.dashboard import flows_from_connector, reaches
from zmqapp.live import app_url, format_tap_record, percentile
from zmqapp.testing import wait_for

APPS = Path(__file__).parent / "apps"
TAPPED = str(APPS / "live_tap.py")


def get(url: str, token: str | None = None, cookie: str | None = None) -> tuple[int, str, Any]:
    """(status, body, headers) of a real HTTP GET that does not follow redirects."""

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.build_opener(Stay).open(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


class Served:
    """An app run by ``zmqapp run`` with HTTP on a port the OS picks."""

    def __init__(self, spawn: Any, spec: str, *settings: str, env: dict[str, str] | None = None):
        sets = [part for setting in settings for part in ("--set", setting)]
        self.proc = spawn([*ZMQAPP, "run", "--app", spec, "--set", "HTTP=127.0.0.1:0", *sets],
                          env=env)  # fmt: skip
        [line] = self.proc.wait_for_line(r"HTTP: http://", stream="err")
        self.url: str = re.search(r"(http://\S+)", line).group(1)  # type: ignore[union-attr]
        [running] = self.proc.wait_for_line(r"is running: ", stream="err")
        #: Channel name -> the address it bound.
        self.bound = dict(re.findall(r"(\w+) \w+ @(\S+?)(?=;|$)", running))

    def status(self, token: str | None = None) -> Any:
        return json.loads(get(self.url + "/status", token)[1])


@pytest.fixture
def tapped(spawn: Any) -> Served:
    return Served(spawn, TAPPED)


# -- tap -----------------------------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_taps_see_messages_while_the_handler_handles_them_all(
    spawn: Any, peer: Any, tapped: Served
) -> None:
    raw = spawn([*ZMQAPP, "tap", tapped.url, "tasks", "--count", "20", "--json"])
    text = spawn([*ZMQAPP, "tap", tapped.url, "tasks", "--count", "20"])
    out = spawn([*ZMQAPP, "tap", tapped.url, "results", "--count", "5", "--json"])
    for tap in (raw, text, out):
        tap.wait_for_line("tapping channel", stream="err")
    sink = peer(zmq.PULL, connect=tapped.bound["results"])
    push = peer(zmq.PUSH, connect=tapped.bound["tasks"])
    for n in range(50):
        push.send_json({"n": n})
    results = [sink.recv_json() for _ in range(50)]
    assert results == [{"done": n} for n in range(50)]
    for tap in (raw, text, out):
        assert tap.wait(20) == 0, tap.err
    wait_for(lambda: tapped.status()["channels"]["tasks"]["handled"] == 50)

    records = [json.loads(line) for line in raw.out]
    assert len(records) == 20
    assert [r["body"] for r in records] == [{"n": n} for n in range(20)]
    for record in records:
        assert set(record) == {"channel", "direction", "time", "topic", "body", "frames"}
        assert (record["channel"], record["direction"], record["topic"]) == ("tasks", "in", None)
        assert json.loads(record["frames"][0]) == record["body"]
    assert len(text.out) == 20
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} in  tasks \{\"n\":\d+\}", line)
               for line in text.out), text.out  # fmt: skip
    sent = [json.loads(line) for line in out.out]
    assert [(r["direction"], r["body"]) for r in sent] == [("out", {"done": n}) for n in range(5)]


@pytest.mark.timeout(40)
def test_tap_record_then_replay_reproduces_the_bodies_in_order(
    spawn: Any, peer: Any, tapped: Served, tmp_path: Path
) -> None:
    recording = tmp_path / "tasks.jsonl"
    tap = spawn([*ZMQAPP, "tap", tapped.url, "tasks", "--count", "10", "--record",
                 str(recording)])  # fmt: skip
    tap.wait_for_line("tapping channel", stream="err")
    push = peer(zmq.PUSH, connect=tapped.bound["tasks"])
    for n in range(10):
        push.send_json({"n": n})
    assert tap.wait(20) == 0, tap.err
    tap.wait_for_line(r"recorded 10 message\(s\)", stream="err")
    sink = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    replay = spawn([*ZMQAPP, "replay", str(recording), sink.last_endpoint.decode(),
                    "--type", "PUSH", "--speed", "0"])  # fmt: skip
    assert [sink.recv_json() for _ in range(10)] == [{"n": n} for n in range(10)]
    assert replay.wait(20) == 0, replay.err


@pytest.mark.timeout(60)
def test_a_tap_that_does_not_read_drops_and_never_slows_the_app(spawn: Any, peer: Any) -> None:
    app = Served(spawn, TAPPED, env={"FORWARD": "0"})
    push = peer(zmq.PUSH, connect=app.bound["tasks"])
    count = 5000
    body = {"n": 0, "pad": "x" * 2000}  # 10 MB through the tap: more than socket buffers hold

    def run(expected: int) -> float:
        started = time.perf_counter()
        for n in range(count):
            body["n"] = n
            push.send_json(body)
        wait_for(lambda: app.status()["channels"]["tasks"]["handled"] == expected, timeout=30)
        return count / (time.perf_counter() - started)

    untapped = run(count)
    # A reader that never reads: a small receive buffer, and nothing taken from it.
    host, port = app.url.removeprefix("http://").rsplit(":", 1)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(10)
    try:
        slow.connect((host, int(port)))
        slow.sendall(f"GET /tap/tasks HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += slow.recv(1)
        assert head.startswith(b"HTTP/1.1 200")
        tapped = run(2 * count)
        print(f"\nhandled {untapped:.0f} msg/s untapped, {tapped:.0f} msg/s with a tap that "
              "does not read")  # fmt: skip
        # Now read: every message was either streamed or counted as dropped.
        stream = b""
        seen = dropped = 0

        def accounted() -> bool:
            nonlocal stream, seen, dropped
            try:
                stream += slow.recv(1 << 16)
            except TimeoutError:
                pass
            *lines, stream = stream.split(b"\n")
            for line in lines:
                line = line.strip()
                if not line or line.isalnum():  # keep-alives and chunk sizes
                    continue
                start = line.find(b"{")
                if start < 0:
                    continue
                record = json.loads(line[start:])
                if "dropped" in record:
                    dropped = record["dropped"]
                else:
                    seen += 1
            return seen + dropped == count

        slow.settimeout(0.2)
        wait_for(accounted, timeout=20)
    finally:
        slow.close()
    print(f"the tap streamed {seen} and dropped {dropped} of {count}")
    assert dropped > 0
    assert app.status()["channels"]["tasks"]["handled"] == 2 * count


def test_the_token_guards_taps_pages_and_status_but_not_the_probes(spawn: Any, peer: Any) -> None:
    app = Served(spawn, TAPPED, env={"ZMQAPP_HTTP_TOKEN": "s3cret"})  # read as HTTP_TOKEN
    for path in ("/livez", "/readyz"):
        assert get(app.url + path)[0] == 200
    for path in ("/tap/tasks", "/status", "/metrics", "/", "/static/dashboard.js"):
        assert get(app.url + path)[0] == 401, path
        assert get(app.url + path, token="wrong")[0] == 401, path
    assert get(app.url + "/static/dashboard.js", token="s3cret")[0] == 200

    refused = zmqapp("tap", app.url, "tasks", "--count", "1")
    assert refused.returncode == 1
    assert "needs a token" in refused.stderr and "ZMQAPP_HTTP_TOKEN" in refused.stderr
    assert "Traceback" not in refused.stderr
    wrong = zmqapp("tap", app.url, "tasks", "--token", "nope")
    assert wrong.returncode == 1 and "refused the token" in wrong.stderr

    tap = spawn([*ZMQAPP, "tap", app.url, "tasks", "--count", "1"],
                env={"ZMQAPP_HTTP_TOKEN": "s3cret"})  # fmt: skip
    tap.wait_for_line("tapping channel", stream="err")
    peer(zmq.PUSH, connect=app.bound["tasks"]).send_json({"n": 7})
    assert tap.wait(20) == 0
    assert tap.out[-1].endswith('tasks {"n":7}')

    # A browser gives the token once, in the address; a cookie stands for it afterwards.
    code, body, headers = get(app.url + "/")
    assert code == 401 and "/?token=" in body
    code, _, headers = get(app.url + "/?token=s3cret")
    assert code == 302 and headers["Location"] == "./"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "s3cret" not in cookie
    assert "httponly" in headers["Set-Cookie"].lower()
    assert "samesite=strict" in headers["Set-Cookie"].lower()
    code, page, _ = get(app.url + "/", cookie=cookie)
    assert code == 200 and 'content="status"' in page
    assert get(app.url + "/status", cookie=cookie)[0] == 200
    assert get(app.url + "/?token=wrong")[0] == 401


def test_live_tools_say_what_to_do_about_a_mistake(tapped: Served) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    cases = [
        (("tap", "tcp://127.0.0.1:5555", "tasks"), 2, "not an HTTP address"),
        (("tap", "http://127.0.0.1:notaport", "tasks"), 2, "write it as http://HOST:PORT"),
        (("tap", dead, "tasks"), 1, "cannot reach"),
        (("tap", tapped.url, "nope"), 1, "has no channel 'nope'; tap one of its channels: "
                                         "results, tasks"),
        (("top", dead, "--once"), 1, "cannot reach"),
        (("top", tapped.url + "/livez", "--once"), 1, "not a zmqapp app's HTTP address"),
        (("logs", "tcp://127.0.0.1:notaport"), 1, "cannot bind"),
        (("logs", "nonsense"), 1, "has no transport"),
        (("logs", "tcp://127.0.0.1:*", "--authorized-keys", "."), 1, "needs --curve-secret-key"),
    ]  # fmt: skip
    for args, code, said in cases:
        done = zmqapp(*args)
        assert (done.returncode, said in done.stderr) == (code, True), (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_a_dashboard_refuses_to_start_without_the_apps_token(spawn: Any) -> None:
    app = Served(spawn, TAPPED, env={"ZMQAPP_HTTP_TOKEN": "s3cret"})
    done = zmqapp("dashboard", app.url, "--port", "0")
    assert done.returncode == 1 and "needs a token" in done.stderr
    assert "Traceback" not in done.stderr


# -- top -----------------------------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_top_once_prints_rates_queues_peers_and_latency(
    spawn: Any, peer: Any, tapped: Served
) -> None:
    sink = peer(zmq.PULL, connect=tapped.bound["results"])
    push = peer(zmq.PUSH, connect=tapped.bound["tasks"])
    top = spawn([*ZMQAPP, "top", tapped.url, "--once", "--interval", "1"])
    sent = 0
    while top.proc.poll() is None:  # a steady stream while top measures
        for _ in range(20):
            push.send_json({"n": sent})
            sent += 1
        for _ in range(20):
            sink.recv()
        time.sleep(0.01)
    assert top.wait(10) == 0, top.err
    screen = "\n".join(top.out)
    assert "tapped" in screen and tapped.url in screen
    rows = {line.split()[0]: line.split() for line in top.out if line.startswith("  ")}
    assert rows["CHANNEL"][:5] == ["CHANNEL", "TYPE", "IN/s", "OUT/s", "ERR/s"]
    assert rows["tasks"][1] == "PULL" and float(rows["tasks"][2]) > 0
    assert rows["results"][1] == "PUSH" and float(rows["results"][3]) > 0
    assert rows["tasks"][7] == "1"  # peers: our PUSH
    assert re.fullmatch(r"\d+(\.\d+)?(µs|ms)", rows["tasks"][8])  # p50 of the handler
    assert f"@{tapped.bound['tasks']}" in rows["tasks"]


# -- logs ----------------------------------------------------------------------------------------


def _collector(spawn: Any, *options: str) -> tuple[Any, str]:
    proc = spawn([*ZMQAPP, "logs", "tcp://127.0.0.1:*", *options])
    [line] = proc.wait_for_line(r"bound to tcp://", stream="err")
    return proc, line.rsplit(" ", 1)[1]


@pytest.mark.timeout(40)
def test_logs_gathers_two_apps_and_every_worker_of_a_pool(spawn: Any, peer: Any) -> None:
    logs, address = _collector(spawn)
    sink = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    spawn([*ZMQAPP, "run", "--app", str(APPS / "workers_app.py"), "--workers", "2",
           "--set", f"LOG_ENDPOINT={address}",
           "--set", f"CHANNELS.results.endpoint={sink.last_endpoint.decode()}"])  # fmt: skip
    app = Served(spawn, TAPPED, f"LOG_ENDPOINT={address}")
    peer(zmq.PUSH, connect=app.bound["tasks"]).send(b"{not json")
    logs.wait_for_line(r" workers_app\[0\] +zmqapp\.workers: worker 0 \(pid \d+\) is running")
    logs.wait_for_line(r" workers_app\[1\] +zmqapp\.workers: worker 1 \(pid \d+\) is running")
    [warning] = logs.wait_for_line(r"WARNING +tapped +#tasks ")
    assert "undecodable" in warning and "(peer 127.0.0.1)" in warning
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} ", warning)
    assert "Traceback" not in "\n".join(logs.err)


@pytest.mark.timeout(40)
def test_logs_json_and_level_filter(spawn: Any, peer: Any) -> None:
    logs, address = _collector(spawn, "--json", "--level", "warning")
    app = Served(spawn, TAPPED, f"LOG_ENDPOINT={address}")  # its INFO lines come first
    peer(zmq.PUSH, connect=app.bound["tasks"]).send(b"{not json")
    logs.wait_for_line("undecodable")
    records = [json.loads(line) for line in logs.out]
    assert {r["level"] for r in records} == {"WARNING"}
    assert records[0]["app"] == "tapped" and records[0]["channel"] == "tasks"


@pytest.mark.timeout(40)
def test_logs_over_curve_admits_only_authorized_apps(spawn: Any, tmp_path: Path, peer: Any) -> None:
    for name in ("collector", "app", "stranger"):
        zmq.auth.create_certificates(tmp_path, name)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "app.key").write_bytes((tmp_path / "app.key").read_bytes())
    logs, address = _collector(
        spawn, "--curve-secret-key", str(tmp_path / "collector.key_secret"),
        "--authorized-keys", str(allowed),
    )  # fmt: skip
    keys = [f"LOG_ENDPOINT={address}", f"LOG_CURVE_SERVER_KEY={tmp_path / 'collector.key'}"]
    stranger = Served(
        spawn, TAPPED, *keys, f"LOG_CURVE_SECRET_KEY={tmp_path / 'stranger.key_secret'}"
    )
    logs.wait_for_line("refused a log sender", stream="err")
    Served(spawn, TAPPED, *keys, f"LOG_CURVE_SECRET_KEY={tmp_path / 'app.key_secret'}")
    logs.wait_for_line(r"INFO +tapped +zmqapp: app 'tapped' is running")
    peer(zmq.PUSH, connect=stranger.bound["tasks"]).send(b"{not json")
    stranger.proc.wait_for_line("undecodable", stream="err")
    assert sum("is running" in line for line in logs.out) == 1  # the stranger's never came


# -- formats -------------------------------------------------------------------------------------


def test_formats_of_tap_lines_and_log_records() -> None:
    record = {"channel": "feed", "direction": "out", "time": 0.5, "topic": "t1",
              "body": {"encoding": "base64", "data": "AAE="}, "frames": []}  # fmt: skip
    assert format_tap_record(record).endswith(" out feed [t1] base64:AAE=")
    record.update(body=None, error="not JSON", frames=["{x"])
    assert format_tap_record(record).endswith("(not decoded: not JSON) {x")
    log = {"time": "2026-01-02T03:04:05.678+00:00", "level": "ERROR", "app": "a", "worker": 2,
           "channel": "c", "peer": None, "logger": "zmqapp", "message": "boom",
           "exc": "Traceback...\nValueError: x"}  # fmt: skip
    line = format_record(log)
    assert re.match(r"\d\d:\d\d:05\.678 ERROR +a\[2\] +#c zmqapp: boom\n    Traceback", line)
    assert LogFilter(30, frozenset({"a"})).admits(log)
    assert not LogFilter(50).admits(log) and not LogFilter(0, frozenset({"b"})).admits(log)
    assert app_url("127.0.0.1:9100/") == "http://127.0.0.1:9100"
    # Where the dashboard draws edges: addresses placed on the host of each app's URL.
    assert reaches("tcp://0.0.0.0:5557", "ingest", "tcp://ingest:5557", "analyzer")
    assert reaches("tcp://127.0.0.1:5557", "10.0.0.5", "tcp://localhost:5557", "10.0.0.5")
    assert not reaches("tcp://127.0.0.1:5557", "10.0.0.5", "tcp://127.0.0.1:5557", "10.0.0.6")
    assert not reaches("tcp://*:5557", "ingest", "tcp://ingest:5558", "analyzer")
    assert reaches("ipc:///tmp/x", "h", "ipc:///tmp/x", "h")
    assert not reaches("ipc:///tmp/x", "h", "ipc:///tmp/x", "other")
    assert flows_from_connector("PULL", "PUSH") is False  # a worker pulling from a ventilator
    assert flows_from_connector("REP", "DEALER") is False  # a broker's backend feeds workers
    assert flows_from_connector("DEALER", "ROUTER") is True
    timing = {"buckets": [0.001, 0.01], "counts": [0, 10, 0]}
    assert percentile(timing, 0.5) == pytest.approx(0.0055)
    assert percentile({"buckets": [1.0], "counts": [0, 0]}, 0.5) is None


def test_a_tap_ends_quietly_on_sigterm(spawn: Any, tapped: Served) -> None:
    tap = spawn([*ZMQAPP, "tap", tapped.url, "tasks"])
    tap.wait_for_line("tapping channel", stream="err")
    tap.send_signal(signal.SIGTERM)
    assert tap.wait(10) == 0
    assert "Traceback" not in "\n".join(tap.err)


def test_tap_and_listen_write_a_value_as_the_same_json() -> None:
    """``/tap`` and ``zmqapp listen --json`` share one conversion: floats JSON cannot hold,
    bytes that are not text, and keys that are bytes come out the same in both."""
    from zmqapp.tap import value_json

    value = {
        b"key": [float("nan"), float("inf"), -float("inf"), 1.5],
        "raw": b"\xff\x00",
        "text": b"caf\xc3\xa9",
        3: None,
    }
    assert value_json(value) == {
        "key": ["NaN", "Infinity", "-Infinity", 1.5],
        "raw": {"encoding": "base64", "data": "/wA="},
        "text": "café",
        "3": None,
    }
    json.dumps(value_json(value), allow_nan=False)  # strict JSON
