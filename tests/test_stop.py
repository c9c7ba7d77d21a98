"""A stop keeps its promises under real load, in real processes: nothing received is lost,
SHUTDOWN_TIMEOUT bounds the stop for every kind of handler, and nothing wedges it.

Every test counts each message: sent, handled, duplicated, answered."""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from zmqapp.testing import wait_for

APPS = Path(__file__).parent / "apps"
#: The stop's log line for what its deadline read and dropped, and how many that was.
QUEUED_AT_DEADLINE = r"still had messages queued at SHUTDOWN_TIMEOUT.*dropped (\d+) unhandled"


def _count(line: str, name: str) -> int:
    match = re.search(rf"\b{name}=(\d+)", line)
    assert match is not None, line
    return int(match.group(1))


def _send_and_settle(address: str, kind: int, count: int, *, subscribed: bool = False) -> None:
    """Send ``count`` numbered messages from a socket of its own and close it only once
    ZeroMQ has handed every one to the network (linger), so all of them are in flight to or
    already inside the app when this returns."""
    context: zmq.Context[Any] = zmq.Context()
    try:
        sock = context.socket(kind)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.SNDTIMEO, 10000)
        sock.connect(address)
        if subscribed:  # an XPUB: wait until the app's SUB has subscribed
            sock.setsockopt(zmq.RCVTIMEO, 10000)
            assert sock.recv() == b"\x01"
        for i in range(count):
            sock.send(b"%d" % i)
        sock.close(linger=20000)
    finally:
        context.term()


def _sigterm_with_a_backlog(spawn: Any, env: dict[str, str], count: int) -> tuple[Any, float]:
    """stop_load.py with ``count`` messages sent to it, then SIGTERM: the app, once it has
    exited 0, and how long after the signal that was."""
    app = spawn([sys.executable, str(APPS / "stop_load.py")], env=env)
    address = app.wait_for_line(r"^bound ")[0].split()[1]
    _send_and_settle(address, zmq.PUSH, count)
    app.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert app.wait(30) == 0
    return app, time.monotonic() - signalled


def _logged(app: Any, pattern: str) -> int:
    """The number the app's log line matching ``pattern`` counts (its first group)."""
    [line] = app.wait_for_line(pattern, stream="err")
    return int(re.search(pattern, line).group(1))  # type: ignore[union-attr]


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("kind", "busy"), [("PULL", False), ("SUB", False), ("PULL", True)])
def test_a_bound_channel_with_a_backlog_loses_nothing_at_sigterm(
    kind: str, busy: bool, spawn: Any, busy_machine: Any
) -> None:
    """Busy: every core spins throughout, so libzmq's I/O thread may be kept off the CPU
    for longer than the drain's quiet period (the stop once took that for "empty")."""
    if busy:
        busy_machine()
    app = spawn([sys.executable, str(APPS / "stop_load.py")], env={"KIND": kind})
    address = app.wait_for_line(r"^bound ")[0].split()[1]
    sender = zmq.PUSH if kind == "PULL" else zmq.XPUB
    _send_and_settle(address, sender, 3000, subscribed=kind == "SUB")
    app.send_signal(signal.SIGTERM)
    assert app.wait(60) == 0
    at_stop = _count(app.wait_for_line(r"^stopping ")[0], "handled")
    report = app.wait_for_line(r"^stopped ")[0]
    assert at_stop < 3000, "no backlog when the stop began: this test would prove nothing"
    assert _count(report, "handled") == 3000, report  # nothing received was lost
    assert _count(report, "duplicates") == 0


@pytest.mark.timeout(60)
def test_shutdown_timeout_bounds_a_stop_with_slow_plain_handlers(spawn: Any) -> None:
    env = {"HANDLER_SECONDS": "0.02", "ZMQAPP_SHUTDOWN_TIMEOUT": "1"}
    app, took = _sigterm_with_a_backlog(spawn, env, 1000)  # 20 s of work
    handled = _count(app.wait_for_line(r"^stopped ")[0], "handled")
    assert handled < 1000
    # The rest is not lost in silence: the log counts what was dropped at the deadline.
    dropped = _logged(app, QUEUED_AT_DEADLINE)
    assert handled + dropped == 1000, (handled, dropped)
    assert took < 3.0, f"SHUTDOWN_TIMEOUT=1 but the stop took {took:.1f} s"


@pytest.mark.timeout(60)
def test_shutdown_timeout_bounds_a_stop_with_slow_coroutine_handlers(spawn: Any) -> None:
    """Eight coroutine handlers in flight and a backlog at SIGTERM: the stop ends within
    SHUTDOWN_TIMEOUT and a second, and every message is accounted for: handled, cancelled
    in flight at the deadline, or read and dropped at the deadline, each counted in the log."""
    env = {"HANDLER_SECONDS": "0.2", "ASYNC": "1", "CONCURRENCY": "8",
           "ZMQAPP_SHUTDOWN_TIMEOUT": "1"}  # fmt: skip
    app, took = _sigterm_with_a_backlog(spawn, env, 1000)  # 25 s of work
    handled = _count(app.wait_for_line(r"^stopped ")[0], "handled")
    cancelled = _logged(app, r"still had (\d+) handler call\(s\)")
    dropped = _logged(app, QUEUED_AT_DEADLINE)
    assert cancelled == 8
    assert handled + cancelled + dropped == 1000, (handled, cancelled, dropped)
    assert took < 3.0, f"SHUTDOWN_TIMEOUT=1 but the stop took {took:.1f} s"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["ROUTER", "REP"])
def test_two_way_channels_answer_every_queued_request_at_a_stop(kind: str, spawn: Any) -> None:
    """In-flight requests finish; queued ones get a fast 'unavailable' error; none is left
    without an answer, and none is cancelled."""
    env = {"KIND": kind, "HANDLER_SECONDS": "0.02", "ASYNC": "1"}
    env["CONCURRENCY"] = "4" if kind == "ROUTER" else "1"
    app = spawn([sys.executable, str(APPS / "stop_load.py")], env=env)
    address = app.wait_for_line(r"^bound ")[0].split()[1]
    context: zmq.Context[Any] = zmq.Context()
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.setsockopt(zmq.RCVTIMEO, 10000)
    client.connect(address)
    try:
        total = 400
        for i in range(total):
            client.send_multipart([b"", b"%d" % i])
        replies = [client.recv_multipart()]  # work has begun
        app.send_signal(signal.SIGTERM)
        while len(replies) < total:
            try:
                replies.append(client.recv_multipart())
            except zmq.Again:
                break
        assert app.wait(30) == 0
    finally:
        client.close(linger=0)
        context.term()
    bodies = [frames[-1] for frames in replies]
    ok = [b for b in bodies if not b.startswith(b"ZMQAPP-ERROR ")]
    unavailable = [b for b in bodies if b'"kind":"unavailable"' in b]
    assert len(bodies) == total, f"{total - len(bodies)} requests got no answer at all"
    assert len(ok) + len(unavailable) == total  # none cancelled, none failed
    assert unavailable, "nothing was queued at the stop: this test would prove nothing"
    assert len(set(ok)) == len(ok)


@pytest.mark.timeout(60)
def test_a_socket_left_open_on_the_app_context_does_not_wedge_the_stop(spawn: Any) -> None:
    code = """
import zmq
from zmqapp import App
app = App("leaky")
app.config.update(LINGER=200)
app.add_channel("tick", endpoint="@tcp://127.0.0.1:*", type="PULL", handler=lambda b: None)
kept = []

@app.on_start
def leak():
    sock = app.context.socket(zmq.PUSH)
    sock.connect("tcp://127.0.0.1:9")  # nobody there: the message waits forever
    sock.send(b"never delivered")
    kept.append(sock)  # and the socket is never closed
    print("leaked", flush=True)

app.run()
print("exited", flush=True)
"""
    app = spawn([sys.executable, "-c", code])
    app.wait_for_line("^leaked")
    app.send_signal(signal.SIGTERM)
    assert app.wait(20) == 0
    app.wait_for_line("^exited")
    app.wait_for_line(r"1 socket\(s\) made on app.context were left open", stream="err")


def test_a_test_client_with_a_socket_left_open_exits(app: Any) -> None:
    kept: list[Any] = []
    app.add_channel("tick", endpoint="tcp://127.0.0.1:9", type="PUSH")

    @app.on_start
    def leak() -> None:
        sock = app.context.socket(zmq.PUSH)
        sock.connect("inproc://nowhere")
        kept.append(sock)

    done = threading.Event()

    def use() -> None:
        with app.test_client():
            pass
        done.set()

    thread = threading.Thread(target=use, daemon=True)
    thread.start()
    wait_for(done.is_set, timeout=10)
    assert kept[0].closed


def test_a_message_on_its_way_to_an_idle_channel_at_the_stop_is_handled(
    running: Any, peer: Any
) -> None:
    """The stop's quiet period starts when the stop does: a channel idle for a while must not
    count as settled at once, while libzmq is still moving a message sent just before."""
    for trial in range(3):
        assert _idle_then_stop(f"idle-{trial}", running, peer) == 2, (
            f"trial {trial}: the 4 MB message sent before the stop was lost"
        )


def _idle_then_stop(name: str, running: Any, peer: Any) -> int:
    from zmqapp import App

    app = App(name)
    app.config["SHUTDOWN_TIMEOUT"] = 5.0
    got: list[int] = []

    @app.channel("in", endpoint="@tcp://127.0.0.1:*", type="PULL")
    def handle(body: bytes) -> None:
        got.append(len(body))

    runner = running(app)
    push = peer(zmq.PUSH, connect=app.channels["in"].bound[0])
    push.setsockopt(zmq.LINGER, 5000)
    push.send(b"warm-up")
    wait_for(lambda: got, timeout=5)
    time.sleep(0.1)  # idle on purpose: the last read that found the socket empty is old now
    push.send(b"x" * 4_000_000)  # still on its way when ...
    runner.stop()  # ... the stop begins
    return len(got)
