"""Coroutine and threaded handlers: ordering, concurrency limits, back-pressure, and stops
while work is in flight."""

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

from zmqapp import App, Unroutable, signals
from zmqapp.testing import wait_for

TCP = "@tcp://127.0.0.1:*"
APPS = Path(__file__).parent / "apps"


def test_concurrency_one_keeps_order(app: App, running: Any, peer: Any) -> None:
    done: list[int] = []

    @app.channel("pull", endpoint=TCP, type="PULL")
    async def slow(body: bytes) -> None:
        n = int(body)
        await asyncio.sleep(0.002 if n % 2 else 0)  # odd ones would finish last if overlapped
        done.append(n)

    running(app)
    push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
    for i in range(40):
        push.send(b"%d" % i)
    wait_for(lambda: len(done) == 40)
    assert done == list(range(40))


@pytest.mark.parametrize("limit", [1, 4, 16])
def test_concurrency_n_runs_exactly_n_at_once(
    limit: int, app: App, running: Any, peer: Any
) -> None:
    active: list[int] = []
    peak: list[int] = [0]
    gate = asyncio.Event()
    done: list[bytes] = []

    @app.channel("pull", endpoint=TCP, type="PULL", concurrency=limit)
    async def held(body: bytes) -> None:
        active.append(1)
        peak[0] = max(peak[0], len(active))
        await gate.wait()
        active.pop()
        done.append(body)

    running(app)
    push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
    for i in range(limit * 3):
        push.send(b"%d" % i)
    wait_for(lambda: len(active) == limit)
    assert peak[0] == limit  # and not one more, although 3x as many are waiting
    assert app.channels["pull"].stats.received == limit
    loop = app.runtime.loop if app.runtime else None
    assert loop is not None
    loop.call_soon_threadsafe(gate.set)
    wait_for(lambda: len(done) == limit * 3)
    assert peak[0] == limit


def test_a_full_channel_pushes_back_on_the_sender(ctx: Any, peer: Any, running: Any) -> None:
    """At the concurrency limit the channel stops reading, ZeroMQ's queues fill, and a PUSH
    sender blocks (EAGAIN), instead of the app's memory growing."""
    app = App("backpressure", context=ctx)
    app.config.update(LINGER=0, RCVHWM=10)
    gate = threading.Event()
    handled: list[bytes] = []

    @app.channel("pull", endpoint="@inproc://held", type="PULL", threaded=True, concurrency=2)
    def blocked(body: bytes) -> None:
        gate.wait(10)
        handled.append(body)

    running(app)
    push = peer(zmq.PUSH, connect="inproc://held")
    push.setsockopt(zmq.SNDHWM, 10)
    sent = 0
    try:
        while sent < 10_000:
            push.send(b"%d" % sent, zmq.NOBLOCK)
            sent += 1
    except zmq.Again:
        pass
    # Two in the handlers, the rest in ZeroMQ's two high-water marks (inproc: 10 + 10).
    assert sent <= 2 + 10 + 10 + 2, f"the sender was never pushed back ({sent} sent)"
    gate.set()
    wait_for(lambda: len(handled) == sent)
    assert sorted(handled, key=int) == [b"%d" % i for i in range(sent)]


def test_a_blocking_threaded_handler_does_not_stall_other_channels(
    app: App, running: Any, peer: Any
) -> None:
    release = threading.Event()
    handler_threads: list[int] = []
    other: list[bytes] = []

    @app.channel("slow", endpoint=TCP, type="REP", threaded=True)
    def slow(body: bytes) -> bytes:
        handler_threads.append(threading.get_ident())
        release.wait(10)
        return b"slow:" + body

    app.channel("fast", endpoint=TCP, type="PULL")(other.append)
    running(app)
    req = peer(zmq.REQ, connect=app.channels["slow"].bound[0])
    req.send(b"x")
    wait_for(lambda: handler_threads)
    push = peer(zmq.PUSH, connect=app.channels["fast"].bound[0])
    for i in range(10):
        push.send(b"%d" % i)
    wait_for(lambda: len(other) == 10)  # handled while the slow handler blocks its thread
    release.set()
    assert req.recv() == b"slow:x"  # the reply still went out, from the loop thread
    assert handler_threads[0] != app.runtime.loop_thread


@pytest.mark.parametrize("kind", ["PULL", "SUB", "PAIR", "DEALER", "REP", "ROUTER"])
def test_coroutine_handlers_on_every_receiving_type(
    kind: str, app: App, running: Any, peer: Any
) -> None:
    got: list[bytes] = []
    router = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*") if kind == "DEALER" else None
    endpoint = router.last_endpoint.decode() if router is not None else TCP

    @app.channel("c", endpoint=endpoint, type=kind)
    async def handle(body: bytes) -> bytes:
        await asyncio.sleep(0)
        got.append(body)
        return b"re:" + body

    if kind == "DEALER":
        app.on_start(lambda: app.send("c", b"hello"))
    running(app)
    if kind == "DEALER":
        assert router is not None
        identity = router.recv_multipart()[0]
        router.send_multipart([identity, b"x"])
    elif kind == "SUB":
        pub = peer(zmq.PUB, connect=app.channels["c"].bound[0])
        wait_for(lambda: pub.send(b"x") or got, interval=0.01)
    else:
        other = peer(
            {"PULL": zmq.PUSH, "PAIR": zmq.PAIR, "REP": zmq.REQ, "ROUTER": zmq.REQ}[kind],
            connect=app.channels["c"].bound[0],
        )
        other.send(b"x")
        if kind in ("REP", "ROUTER"):
            assert other.recv() == b"re:x"
    wait_for(lambda: got)
    assert got[0] == b"x"


def test_router_answers_concurrent_requests_out_of_order(app: App, running: Any, peer: Any) -> None:
    @app.channel("router", endpoint=TCP, type="ROUTER", concurrency=8)
    async def answer(body: bytes) -> bytes:
        await asyncio.sleep(0.05 if body == b"slow" else 0)
        return body

    running(app)
    slow = peer(zmq.REQ, connect=app.channels["router"].bound[0])
    fast = peer(zmq.REQ, connect=app.channels["router"].bound[0])
    slow.send(b"slow")
    fast.send(b"fast")
    assert fast.recv() == b"fast"  # not stuck behind the slow one
    assert slow.recv() == b"slow"


def test_sync_and_async_handlers_on_one_channel(app: App, running: Any, peer: Any) -> None:
    calls: list[str] = []

    @app.channel("pull", endpoint=TCP, type="PULL")
    def sync(body: bytes) -> None:
        calls.append("sync")

    @app.handler("pull")
    async def coro(body: bytes) -> None:
        await asyncio.sleep(0)
        calls.append("async")

    running(app)
    peer(zmq.PUSH, connect=app.channels["pull"].bound[0]).send(b"x")
    wait_for(lambda: len(calls) == 2)
    assert calls == ["sync", "async"]


def test_stop_cancels_what_outlives_the_timeout(
    app: App, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["SHUTDOWN_TIMEOUT"] = 0.3
    finished: list[bytes] = []
    cancelled: list[bytes] = []

    @app.channel("pull", endpoint=TCP, type="PULL", concurrency=4)
    async def forever(body: bytes) -> None:
        if body == b"quick":
            finished.append(body)
            return
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(body)
            raise

    @app.on_start
    def feed() -> None:
        push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
        for body in (b"stuck-1", b"stuck-2", b"quick"):
            push.send(body)

        async def stop_when_busy() -> None:
            while app.runtime is None or len(app.runtime.pumps["pull"].tasks) < 2 or not finished:
                await asyncio.sleep(0.001)
            app.stop()

        asyncio.get_running_loop().create_task(stop_when_busy())

    app.run(install_signal_handlers=False)
    assert finished == [b"quick"]
    assert sorted(cancelled) == [b"stuck-1", b"stuck-2"]
    said = [r.getMessage() for r in caplog.records if "SHUTDOWN_TIMEOUT" in r.getMessage()]
    assert len(said) == 1  # one line per channel, with the count
    assert "channel 'pull' still had 2 handler call(s)" in said[0] and "forever" in said[0]


def test_idle_handler_threads_are_not_reported_as_blocked(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[bytes] = []
    app.channel("pull", endpoint=TCP, type="PULL", threaded=True)(got.append)
    thread = running(app)
    push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
    for i in range(5):
        push.send(b"%d" % i)
    wait_for(lambda: len(got) == 5)
    thread.stop()
    assert not [r for r in caplog.records if "abandoning" in r.getMessage()]


def test_a_thread_blocked_forever_does_not_hang_the_process_at_exit() -> None:
    proc = subprocess.run(
        [sys.executable, str(APPS / "stuck_thread.py")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "stop: abandoning 1 handler thread(s) still blocked" in proc.stderr
    assert proc.stdout.strip() == "exited"


def test_router_send_to_a_missing_peer_is_unroutable(app: App, running: Any) -> None:
    app.add_channel("router", endpoint=TCP, type="ROUTER")
    running(app)
    with pytest.raises(Unroutable, match=r"no peer with identity b'nobody'"):
        app.send("router", b"hello?", identity=b"nobody")
    assert app.channels["router"].stats.dropped == 1


def test_a_reply_to_a_vanished_peer_is_counted(app: App, running: Any, peer: Any) -> None:
    gate = asyncio.Event()
    events: list[str] = []

    @app.channel("router", endpoint=TCP, type="ROUTER", monitor=True)
    async def late(body: bytes) -> bytes:
        await gate.wait()
        return b"too late"

    def on_event(sender: App, channel: Any, event: str, endpoint: str, value: int) -> None:
        events.append(event)

    signals.socket_event.connect(on_event, sender=app)
    try:
        running(app)
        req = peer(zmq.REQ, connect=app.channels["router"].bound[0])
        req.send(b"hello")
        wait_for(lambda: app.channels["router"].stats.received == 1)
        req.close(linger=0)
        wait_for(lambda: "disconnected" in events)  # ZeroMQ has noticed the peer is gone
    finally:
        signals.socket_event.disconnect(on_event, sender=app)
    loop = app.runtime.loop if app.runtime else None
    assert loop is not None
    loop.call_soon_threadsafe(gate.set)
    wait_for(lambda: app.channels["router"].stats.dropped == 1)


@pytest.mark.parametrize("kind", ["REP", "ROUTER"])
def test_a_request_whose_handler_is_cancelled_at_stop_still_gets_an_answer(
    kind: str, app: App, running: Any, peer: Any
) -> None:
    from zmqapp.message import parse_error_reply

    app.config["SHUTDOWN_TIMEOUT"] = 0.2

    @app.channel("slow", endpoint="@tcp://127.0.0.1:*", type=kind)
    async def forever(body: bytes) -> bytes:
        await asyncio.Event().wait()
        return b"never"

    thread = running(app)
    req = peer(zmq.REQ, connect=app.channels["slow"].bound[0])
    req.send(b"question")
    wait_for(lambda: app.channels["slow"].stats.received == 1)
    thread.stop()
    error = parse_error_reply(req.recv_multipart())  # RCVTIMEO 5 s: never a hang
    assert error is not None and error.kind == "cancelled"


def test_an_async_receiver_connected_from_another_thread_gets_messages(
    app: App, running: Any, peer: Any
) -> None:
    handled: list[bytes] = []
    seen: list[bytes] = []
    app.channel("pull", endpoint=TCP, type="PULL")(handled.append)
    running(app)

    async def watcher(sender: App, message: Any) -> None:
        await asyncio.sleep(0)
        seen.append(message.body)

    app.signal("pull").connect(watcher, weak=False)  # from the test's thread, while running
    push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
    for i in range(20):
        push.send(b"%d" % i)
    wait_for(lambda: len(handled) == 20)
    wait_for(lambda: len(seen) >= 1)
    app.signal("pull").disconnect(watcher)


@pytest.mark.timeout(90)
def test_send_to_pushes_back_on_the_producer_and_loses_nothing(spawn: Any, ctx: Any) -> None:
    """A relay process whose consumer does not read: its send queue stays within SEND_QUEUE,
    its PULL stops reading, the kernel's and ZeroMQ's buffers fill, and the producer blocks.
    Then the consumer reads: every message arrives exactly once, none dropped."""
    relay = spawn([sys.executable, str(APPS / "forward_load.py")])
    inbound, outbound = relay.wait_for_line(r"^bound ")[0].split()[1:]
    producer = ctx.socket(zmq.PUSH)
    producer.setsockopt(zmq.SNDHWM, 10)
    producer.setsockopt(zmq.LINGER, 0)
    producer.connect(inbound)
    consumer = ctx.socket(zmq.PULL)
    consumer.setsockopt(zmq.RCVHWM, 10)
    consumer.setsockopt(zmq.LINGER, 0)
    consumer.setsockopt(zmq.RCVTIMEO, 10_000)
    consumer.connect(outbound)
    pad = b"." * 1024  # so the TCP buffers fill within a few thousand messages
    sent = 0
    deadline = time.monotonic() + 30
    try:
        while True:  # send until the relay's back-pressure reaches the producer
            try:
                producer.send(b"%d:" % sent + pad, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                if not producer.poll(500, zmq.POLLOUT):
                    break  # blocked for half a second: pushed back
            assert sent < 50_000, "the producer was never pushed back"
            assert time.monotonic() < deadline, "the producer was never pushed back"
        got = [consumer.recv().split(b":")[0] for _ in range(sent)]
        consumer.setsockopt(zmq.RCVTIMEO, 300)
        with pytest.raises(zmq.Again):
            consumer.recv()  # and nothing twice
    finally:
        producer.close()
        consumer.close()
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(30) == 0
    report = relay.wait_for_line(r"^stopped ")[0]
    counts = dict(item.split("=") for item in report.split()[1:])
    assert sorted(got, key=int) == [b"%d" % i for i in range(sent)]
    assert int(counts["received"]) == int(counts["sent"]) == sent, report
    assert int(counts["dropped"]) == 0, report
    assert int(counts["peak_queue"]) <= 10, report  # SEND_QUEUE: memory stays bounded


def test_messages_held_during_the_start_keep_the_concurrency_limit_and_order(
    app: App, running: Any, peer: Any, tmp_path: Path
) -> None:
    """A DEALER channel reads during a slow start (for replies) and holds other messages;
    when the start ends they start one at a time, in order, not all at once."""
    active = peak = 0
    done: list[int] = []

    @app.channel("d", endpoint=f"@ipc://{tmp_path}/d", type="DEALER")  # concurrency 1
    async def handle(body: bytes) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        n = int(body)
        await asyncio.sleep(0.03 if n % 2 == 0 else 0.001)
        done.append(n)
        active -= 1

    hook_running = threading.Event()

    @app.on_start
    async def slow_start() -> None:
        hook_running.set()
        await asyncio.sleep(0.5)

    starter = threading.Thread(target=running, args=(app,), daemon=True)
    starter.start()
    assert hook_running.wait(10)
    dealer = peer(zmq.DEALER, connect=f"ipc://{tmp_path}/d")
    for i in range(6):
        dealer.send(b"%d" % i)
    wait_for(lambda: len(done) == 6, timeout=10)
    starter.join(10)
    assert (peak, done) == (1, [0, 1, 2, 3, 4, 5])
