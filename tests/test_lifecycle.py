"""run, stop, serve, hooks, timers, graceful stop by signal, and exiting without hanging."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from zmqapp import App, NotRunning
from zmqapp.testing import wait_for

TCP = "@tcp://127.0.0.1:*"
APPS = Path(__file__).parent / "apps"


def test_stop_from_a_handler(app: App, peer: Any) -> None:
    got: list[bytes] = []

    @app.channel("pull", endpoint=TCP, type="PULL")
    def on_pull(body: bytes) -> None:
        got.append(body)
        if body == b"stop":
            app.stop()

    @app.on_start
    def send_stop() -> None:
        push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
        push.send(b"one")
        push.send(b"stop")

    app.run(install_signal_handlers=False)
    assert got == [b"one", b"stop"]
    assert not app.running


def test_stop_from_a_timer_and_run_again(app: App) -> None:
    ticks: list[int] = []

    @app.timer(0.005)
    def tick() -> None:
        ticks.append(1)
        if len(ticks) % 3 == 0:
            app.stop()

    app.run(install_signal_handlers=False)
    assert len(ticks) == 3
    app.run(install_signal_handlers=False)  # an app can run again after it stopped
    assert len(ticks) == 6


def test_stop_from_another_thread(app: App) -> None:
    app.add_channel("pull", endpoint=TCP, type="PULL", handler=lambda b: None)
    stoppers: list[threading.Thread] = []

    @app.on_start
    def stop_soon() -> None:
        stoppers.append(threading.Thread(target=app.stop))
        stoppers[0].start()

    app.run(install_signal_handlers=False)
    stoppers[0].join(5)
    assert not app.running


def test_a_stop_asked_while_idle_does_not_stop_the_next_run(app: App) -> None:
    """A stop belongs to one run: asked while nothing runs, it is forgotten."""
    ticks: list[int] = []

    @app.timer(0.005)
    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 3:
            app.stop()

    app.stop()
    app.run(install_signal_handlers=False)
    assert len(ticks) == 3  # the run went on until its own stop


def test_a_stop_while_idle_does_not_break_the_next_test_client(app: App) -> None:
    got: list[bytes] = []
    app.channel("pull", endpoint=TCP, type="PULL")(got.append)
    app.stop()
    with app.test_client() as client:
        client.send("pull", b"one")
        client.send("pull", b"two")
    assert got == [b"one", b"two"]


def test_hooks_run_in_order_and_may_send(app: App, peer: Any) -> None:
    pull = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    app.config["LINGER"] = 5000  # time for the goodbye to cross the connection after close
    app.add_channel("out", endpoint=pull.last_endpoint.decode(), type="PUSH")
    calls: list[str] = []

    @app.on_start
    def sync_start() -> None:
        calls.append("sync start")

    @app.on_start
    async def async_start() -> None:
        await asyncio.sleep(0)
        calls.append("async start")
        app.stop()

    @app.on_stop
    async def async_stop() -> None:
        calls.append("async stop")
        app.send("out", b"goodbye")

    @app.on_stop
    def sync_stop() -> None:
        calls.append("sync stop")

    app.run(install_signal_handlers=False)
    assert calls == ["sync start", "async start", "async stop", "sync stop"]
    assert pull.recv() == b"goodbye"  # flushed before the socket closed


def test_async_timer_calls_do_not_overlap(app: App) -> None:
    active: list[int] = []
    overlaps: list[int] = []
    calls: list[int] = []

    @app.timer(0.001)
    async def slow() -> None:
        if active:
            overlaps.append(1)
        active.append(1)
        await asyncio.sleep(0.005)  # five times the interval
        active.pop()
        calls.append(1)
        if len(calls) == 5:
            app.stop()

    app.run(install_signal_handlers=False)
    assert len(calls) == 5
    assert overlaps == []


def test_a_failing_timer_is_logged_and_keeps_running(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    @app.timer(0.001)
    def flaky() -> None:
        calls.append(1)
        if len(calls) == 3:
            app.stop()
        raise RuntimeError("timer trouble")

    app.run(install_signal_handlers=False)
    assert len(calls) == 3
    assert sum("timer" in r.getMessage() and "flaky" in r.getMessage() for r in caplog.records) == 3


def test_serve_inside_a_running_loop(app: App, peer: Any) -> None:
    got: list[bytes] = []
    app.channel("pull", endpoint=TCP, type="PULL")(got.append)

    async def main() -> None:
        task = asyncio.create_task(app.serve())
        while not app.channels["pull"].bound:
            await asyncio.sleep(0.001)
        peer(zmq.PUSH, connect=app.channels["pull"].bound[0]).send(b"hi")
        while not got:
            await asyncio.sleep(0.001)
        app.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert got == [b"hi"]
    with pytest.raises(NotRunning):
        app.context  # noqa: B018 - the owned context is gone


def test_in_flight_coroutine_handler_finishes_before_stop(app: App, peer: Any) -> None:
    finished: list[bytes] = []

    @app.channel("pull", endpoint=TCP, type="PULL")
    async def slow(body: bytes) -> None:
        if body == b"first":
            app.stop()  # asked while this handler is still running
        await asyncio.sleep(0.05)
        finished.append(body)

    @app.on_start
    def send() -> None:
        peer(zmq.PUSH, connect=app.channels["pull"].bound[0]).send(b"first")

    app.run(install_signal_handlers=False)
    assert finished == [b"first"]


def test_queued_messages_are_handled_at_stop(app: App, peer: Any, ctx: Any) -> None:
    """Messages already in the socket's queue when stop is asked are handled, not dropped."""
    app = App("drain", context=ctx)
    app.config.update(LINGER=0)
    got: list[bytes] = []

    @app.channel("pull", endpoint="@inproc://drain", type="PULL")
    def on_pull(body: bytes) -> None:
        got.append(body)
        if body == b"0":
            app.stop()

    @app.on_start
    def fill() -> None:
        push = peer(zmq.PUSH, connect="inproc://drain")
        for i in range(500):
            push.send(b"%d" % i)  # inproc: in the app's queue when send returns

    app.run(install_signal_handlers=False)
    assert got == [b"%d" % i for i in range(500)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_a_real_process_gracefully(signum: int, peer: Any, spawn: Any) -> None:
    proc = spawn([sys.executable, str(APPS / "graceful.py")])
    address = proc.wait_for_line("^bound ")[0].split()[1]
    push = peer(zmq.PUSH, connect=address)
    for i in range(300):
        push.send(b"%d" % i)
    proc.wait_for_line("^handled 20$")
    proc.send_signal(signum)
    assert proc.wait(30) == 0
    handled = [line.split()[1] for line in proc.out if line.startswith("handled ")]
    [report] = [line for line in proc.out if line.startswith("stopped ")]
    assert report == "stopped received=300 handled=300"
    assert handled == [str(i) for i in range(300)]  # nothing received was lost, in order


def test_process_with_undeliverable_messages_exits() -> None:
    """ZeroMQ holds the messages for a peer that never comes for LINGER, then drops them."""
    proc = subprocess.run(
        [sys.executable, str(APPS / "lingering.py")], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "exited"


def test_a_stop_asked_before_serve_starts_is_not_lost(app: App) -> None:
    async def main() -> None:
        task = asyncio.create_task(app.serve())
        app.stop()  # the task has not started yet
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert not app.running


@pytest.mark.timeout(30)
def test_a_steady_publisher_does_not_hold_a_stop_past_the_timeout(
    app: App, running: Any, peer: Any
) -> None:
    """A SUB keeps reading what its publisher sends while it stops (a SUB cannot take back
    its subscriptions without dropping what already arrived), but only until
    SHUTDOWN_TIMEOUT; what is queued then is counted in the log, not lost in silence."""
    app.config["SHUTDOWN_TIMEOUT"] = 0.5
    got: list[bytes] = []
    pub = peer(zmq.PUB, bind="tcp://127.0.0.1:*")
    app.channel("sub", endpoint=pub.last_endpoint.decode(), type="SUB")(got.append)
    thread = running(app)
    publishing = threading.Event()
    publishing.set()

    def publish() -> None:
        while publishing.is_set():
            pub.send(b"tick")

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        wait_for(lambda: len(got) > 100)
        thread.stop()  # raises if the app has not stopped within 10 s
    finally:
        publishing.clear()
        publisher.join(10)
    assert thread.stopped


def test_an_on_start_hook_may_await_a_request(app: App, running: Any, peer: Any) -> None:
    """Replies are read before the start hooks run; other messages wait for the hooks."""
    router = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    app.add_channel("ask", endpoint=router.last_endpoint.decode(), type="DEALER", timeout=5)
    answers: list[Any] = []

    def serve_one() -> None:
        frames = router.recv_multipart()
        router.send_multipart([*frames[:-1], b"answer to " + frames[-1]])

    server = threading.Thread(target=serve_one)
    server.start()

    @app.on_start
    async def ask() -> None:
        answers.append(await app.request("ask", b"setup"))

    running(app)
    server.join(5)
    assert answers == [b"answer to setup"]


def test_a_blocking_start_hook_does_not_hold_back_subscriptions(
    app: App, peer: Any, tmp_path: Path
) -> None:
    """While a plain on_start hook blocks, a SUB channel's subscription still reaches a
    publisher that appears meanwhile, so what it publishes is queued, not dropped."""
    address = f"ipc://{tmp_path}/news.sock"
    got: list[bytes] = []
    # A bound SUB: the pipe to a publisher that connects later is attached by the SUB's own
    # thread, so while that thread is in the hook, the subscription cannot go out by itself.
    app.channel("news", endpoint=f"@{address}", type="SUB", subscribe="a")(got.append)
    subscribed = threading.Event()
    hook_running = threading.Event()

    def publisher() -> None:
        hook_running.wait(5)
        xpub = peer(zmq.XPUB, connect=address)  # the publisher comes while the hook blocks
        if xpub.poll(5000) and xpub.recv() == b"\x01a":
            subscribed.set()
            xpub.send(b"a published during the hook")

    thread = threading.Thread(target=publisher)
    thread.start()

    @app.on_start
    def slow_setup() -> None:
        hook_running.set()
        subscribed.wait(5)  # blocks the loop, as loading a model would
        time.sleep(0.1)  # and the message published meanwhile reaches the SUB's queue

    @app.timer(0.01)
    def done() -> None:
        if got:
            app.stop()

    app.config["SHUTDOWN_TIMEOUT"] = 1
    app.run(install_signal_handlers=False)
    thread.join(5)
    assert subscribed.is_set(), "the subscription waited for the hook to return"
    assert got == [b"a published during the hook"]


def test_sighup_reloads_keys_that_come_from_config(tmp_path: Path, spawn: Any) -> None:
    import zmq.auth

    _, server_secret = zmq.auth.create_certificates(str(tmp_path), "server")
    clients = tmp_path / "clients"
    clients.mkdir()
    code = """
import logging
from zmqapp import App
logging.basicConfig(level=logging.INFO)
app = App("keys-from-config")
app.config.from_prefixed_env()
app.add_channel("secure", endpoint="@tcp://127.0.0.1:*", type="PULL", handler=print)
app.on_start(lambda: print("started", flush=True))
app.run()
print("exited", flush=True)
"""
    env = {
        "ZMQAPP_CHANNELS__secure__curve_secret_key": str(server_secret),
        "ZMQAPP_CHANNELS__secure__authorized_keys": str(clients),
    }
    app = spawn([sys.executable, "-c", code], env=env)
    app.wait_for_line("^started")
    app.send_signal(signal.SIGHUP)
    app.wait_for_line("reading authorized keys again", stream="err")
    app.send_signal(signal.SIGTERM)
    assert app.wait(20) == 0  # SIGHUP did not kill it
    app.wait_for_line("^exited")


def test_a_failed_start_sends_no_stopping_signals(app: App) -> None:
    from zmqapp import signals

    seen: list[str] = []
    for name in ("app_starting", "app_started", "app_stopping", "app_stopped"):
        signal_ = getattr(signals, name)
        signal_.connect(lambda sender, name=name: seen.append(name), sender=app, weak=False)
    app.add_channel("pull", endpoint=TCP, type="PULL", handler=lambda b: None)

    @app.on_start
    def fail() -> None:
        raise RuntimeError("no database")

    try:
        with pytest.raises(RuntimeError, match="no database"):
            app.run(install_signal_handlers=False)
    finally:
        for name in ("app_starting", "app_started", "app_stopping", "app_stopped"):
            getattr(signals, name).receivers.clear()
    assert seen == ["app_starting"]
    assert not app.running


def test_a_timer_tick_that_outlives_the_stop_is_cancelled(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["SHUTDOWN_TIMEOUT"] = 0.2
    outcome: list[str] = []
    at_stop_hooks: list[list[str]] = []

    @app.timer(0.001)
    async def forever() -> None:
        app.stop()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    @app.on_stop
    def look() -> None:
        at_stop_hooks.append(list(outcome))

    app.run(install_signal_handlers=False)
    assert at_stop_hooks == [["cancelled"]]  # cancelled by the stop, before the stop hooks


@pytest.mark.timeout(30)
def test_a_coroutine_stop_hook_that_never_returns_is_cancelled(
    app: App, running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """SHUTDOWN_TIMEOUT bounds the stop hooks too: a coroutine hook still waiting a second
    after the deadline is cancelled and named, and the hooks after it still run."""
    app.config["SHUTDOWN_TIMEOUT"] = 0.3
    ran: list[str] = []

    @app.on_stop
    async def forever() -> None:
        ran.append("forever")
        await asyncio.Event().wait()

    @app.on_stop
    def after() -> None:
        ran.append("after")

    thread = running(app)
    thread.stop()  # raises if the app has not stopped within 10 s
    assert ran == ["forever", "after"]
    assert "stop hook" in caplog.text and "forever" in caplog.text and "cancelled" in caplog.text


@pytest.mark.timeout(30)
def test_a_stop_asked_during_a_start_that_never_ends_is_bounded(app: App) -> None:
    """A start hook that never returns, and a stop asked meanwhile: the start is cancelled at
    SHUTDOWN_TIMEOUT and serve() returns; no handler ever ran."""
    app.config["SHUTDOWN_TIMEOUT"] = 0.3
    begun = asyncio.Event()

    @app.on_start
    async def never() -> None:
        begun.set()
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(app.serve())
        await asyncio.wait_for(begun.wait(), 10)
        app.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert not app.running


@pytest.mark.timeout(30)
def test_a_stop_hook_failing_with_its_own_timeout_is_a_failure(
    app: App, running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook whose own work times out (an app.request's Timeout is a TimeoutError) failed:
    it is logged with its traceback, not as a hook cut short at the deadline."""

    @app.on_stop
    async def flush_metrics() -> None:
        raise TimeoutError("metrics server did not answer")

    running(app).stop()
    [record] = [r for r in caplog.records if "flush_metrics" in r.getMessage()]
    assert "failed" in record.getMessage() and "still running" not in record.getMessage()
    assert record.exc_info is not None and "metrics server" in str(record.exc_info[1])


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "script",
    [
        "signal_during_blocking_start.py",  # the deadline counts from the signal
        "signal_on_another_thread.py",  # a signal to any thread wakes the loop at once
        "signal_handlers_two_runs.py",  # Python's handlers are back after the runs
    ],
)
def test_signals_stop_the_app_when_they_should(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "apps" / script)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), (
        result.stdout + result.stderr
    )


@pytest.mark.timeout(30)
def test_a_start_cancelled_at_the_deadline_answers_every_queued_request(peer: Any) -> None:
    """A start hook that never ends: at SHUTDOWN_TIMEOUT the start is cancelled, and each of
    the 800 requests queued meanwhile gets its ``unavailable`` answer, not only one batch."""
    app = App("never-started")
    app.config.update(SHUTDOWN_TIMEOUT=0.5, LINGER=200)
    app.add_channel("r", endpoint="@tcp://127.0.0.1:*", type="ROUTER", handler=lambda b: b)
    bound = threading.Event()

    @app.on_start
    async def forever() -> None:
        bound.set()
        await asyncio.sleep(3600)

    runner = threading.Thread(target=app.run, kwargs={"install_signal_handlers": False})
    runner.start()
    assert bound.wait(10)
    client = peer(zmq.DEALER, connect=app.channels["r"].bound[0])
    for i in range(800):
        client.send_multipart([b"", b"%d" % i])
    app.stop()  # the start is waited for until SHUTDOWN_TIMEOUT, then cancelled
    runner.join(20)
    assert not runner.is_alive()
    replies = 0
    while client.poll(1000):
        assert client.recv_multipart()[1].startswith(b'ZMQAPP-ERROR {"kind":"unavailable"')
        replies += 1
    assert replies == app.channels["r"].stats.refused == 800
