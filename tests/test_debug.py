"""Seeing into a live app: taps, a loop that blocks, stack dumps and shipped logs."""

from __future__ import annotations

import http.client
import json
import logging
import signal
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import zmq

from zmqapp import App
from zmqapp.testing import wait_for

TCP = "@tcp://127.0.0.1:*"


class TapReader:
    """Reads ``GET /tap/{channel}`` line by line in a thread, optionally slowly."""

    def __init__(self, url: str, channel: str, *, token: str | None = None, pause: float = 0):
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.connection.request("GET", f"/tap/{channel}", headers=headers)
        self.response = self.connection.getresponse()
        self.records: list[dict[str, Any]] = []
        self.pause = pause
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        if self.response.status == 200:
            self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.response:
                if line.strip():
                    self.records.append(json.loads(line))
                if self.pause and self.closing.wait(self.pause):  # a reader that lags
                    return
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # the test closed the connection

    def messages(self) -> list[dict[str, Any]]:
        return [r for r in list(self.records) if "direction" in r]

    def close(self) -> None:
        self.closing.set()
        sock = self.connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end, then it is closed
            except OSError:
                pass
        if self.thread.is_alive():
            self.thread.join(5)
        self.connection.close()


@pytest.fixture
def taps() -> Any:
    opened: list[TapReader] = []

    def open_tap(*args: Any, **kwargs: Any) -> TapReader:
        reader = TapReader(*args, **kwargs)
        opened.append(reader)
        return reader

    yield open_tap
    for reader in opened:
        reader.close()


def served(**config: Any) -> App:
    app = App("debugged")
    app.config.update(LINGER=0, SHUTDOWN_TIMEOUT=1.0, HTTP="127.0.0.1:0", **config)
    return app


def test_taps_watch_without_taking(running: Any, peer: Any, taps: Any) -> None:
    app = served()
    handled: list[Any] = []

    @app.channel("orders", endpoint=TCP, type="ROUTER", codec="json")
    def take(order: Any) -> Any:
        handled.append(order)
        return {"ok": order["id"]}

    running(app)
    url = app.runtime.http.url  # type: ignore[union-attr]
    first, second = taps(url, "orders"), taps(url, "orders")
    wait_for(lambda: len(app.runtime.pumps["orders"].taps) == 2)  # type: ignore[union-attr]
    dealer = peer(zmq.DEALER, connect=app.channels["orders"].bound[0])
    for i in range(50):
        dealer.send_multipart([b"", json.dumps({"id": i}).encode()])
    replies = [dealer.recv_multipart() for _ in range(50)]
    assert len(handled) == 50 and len(replies) == 50  # the handler got every one
    for reader in (first, second):
        wait_for(lambda reader=reader: len(reader.messages()) >= 100)
        inbound = [m for m in reader.messages() if m["direction"] == "in"]
        outbound = [m for m in reader.messages() if m["direction"] == "out"]
        assert [m["body"] for m in inbound] == [{"id": i} for i in range(50)]
        assert [m["body"] for m in outbound] == [{"ok": i} for i in range(50)]
        record = inbound[0]
        assert set(record) >= {"channel", "direction", "time", "topic", "body", "frames"}
        assert record["channel"] == "orders" and record["frames"][-1] == '{"id": 0}'
    first.close()
    second.close()
    wait_for(lambda: not app.runtime.pumps["orders"].taps)  # type: ignore[union-attr]


def test_a_slow_tap_drops_and_counts_instead_of_slowing_the_app(
    running: Any, peer: Any, taps: Any, capsys: Any
) -> None:
    app = served()
    handled = [0]

    @app.channel("flood", endpoint=TCP, type="PULL")
    def count(body: bytes) -> None:
        handled[0] += 1

    running(app)
    push = peer(zmq.PUSH, connect=app.channels["flood"].bound[0])
    push.setsockopt(zmq.SNDHWM, 0)

    body = b"x" * 1000  # enough to fill the tap's socket buffers, so the tap falls behind

    def flood(n: int) -> float:
        before = handled[0]
        started = time.perf_counter()
        for _ in range(n):
            push.send(body)
        wait_for(lambda: handled[0] == before + n, timeout=30)
        return n / (time.perf_counter() - started)

    untapped = flood(20_000)
    taps(app.runtime.http.url, "flood", pause=60)  # reads one line, then nothing  # type: ignore[union-attr]
    wait_for(lambda: app.runtime.pumps["flood"].taps)  # type: ignore[union-attr]
    tapped = flood(20_000)
    dropped = app.runtime.pumps["flood"].taps[0].dropped  # type: ignore[union-attr]
    with capsys.disabled():
        print(f"\nPULL with a slow tap: {tapped:,.0f} msg/s against {untapped:,.0f} untapped; "
              f"the tap dropped {dropped:,}")  # fmt: skip
    assert handled[0] == 40_000  # every message handled, tap or no tap
    assert dropped > 0


def test_tap_needs_the_token_and_a_channel(running: Any, taps: Any) -> None:
    app = served(HTTP_TOKEN="t0ken")
    app.channel("c", endpoint=TCP, type="PULL")(lambda body: None)
    running(app)
    url = app.runtime.http.url  # type: ignore[union-attr]
    assert taps(url, "c").response.status == 401
    assert taps(url, "c", token="wrong").response.status == 401
    assert taps(url, "nope", token="t0ken").response.status == 404
    reader = taps(url, "c", token="t0ken")
    assert reader.response.status == 200


def test_a_blocked_loop_is_named_with_its_stack(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app.config["LOOP_BLOCKED_WARN"] = 0.2

    def fetch_from_a_slow_service(body: bytes) -> None:
        time.sleep(0.6)  # blocking I/O in a plain handler

    app.channel("c", endpoint=TCP, type="PULL")(fetch_from_a_slow_service)
    running(app)
    peer(zmq.PUSH, connect=app.channels["c"].bound[0]).send(b"x")
    wait_for(lambda: any("has been held" in r.getMessage() for r in caplog.records), timeout=5)
    [record] = [r for r in caplog.records if "has been held" in r.getMessage()]
    assert "fetch_from_a_slow_service" in record.getMessage()


def test_sigusr1_prints_every_threads_stack(spawn: Any) -> None:
    code = """
import threading
from zmqapp import App
app = App("dumped")
def parked_in_a_thread():
    threading.Event().wait()
threading.Thread(target=parked_in_a_thread, daemon=True).start()
app.add_channel("c", endpoint="@tcp://127.0.0.1:*", type="PULL", handler=print)
app.on_start(lambda: print("started", flush=True))
app.run()
"""
    proc = spawn([sys.executable, "-c", code])
    proc.wait_for_line("^started")
    proc.send_signal(signal.SIGUSR1)
    proc.wait_for_line("parked_in_a_thread", stream="err")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0  # SIGUSR1 did not end it


def test_logs_are_shipped_as_json_to_log_endpoint(app: App, running: Any, peer: Any) -> None:
    collector = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    app.config["LOG_ENDPOINT"] = collector.last_endpoint.decode()
    app.channel("c", endpoint=TCP, type="PULL", codec="json")(lambda body: None)
    thread = running(app)
    peer(zmq.PUSH, connect=app.channels["c"].bound[0]).send(b"{oops")
    document = json.loads(collector.recv())
    while "undecodable" not in document["message"]:  # the app's INFO lines come first
        document = json.loads(collector.recv())
    assert document["app"] == "test_app" and document["channel"] == "c"
    assert document["level"] == "WARNING" and document["peer"] == "127.0.0.1"
    thread.stop()
    assert not [h for h in logging.getLogger().handlers if type(h).__name__ == "LogShipper"]
