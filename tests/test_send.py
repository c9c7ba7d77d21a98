"""app.send and app.send_async: from the loop, from threads, queueing, and misuse."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import zmq

from zmqapp import App, NotRunning, SendQueueFull, SetupError, Unroutable
from zmqapp.testing import wait_for

TCP = "@tcp://127.0.0.1:*"


def test_send_from_start_hook_and_timer(app: App, running: Any, peer: Any) -> None:
    pull = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    app.add_channel("out", endpoint=pull.last_endpoint.decode(), type="PUSH")
    ticks = []

    @app.on_start
    def hello() -> None:
        app.send("out", b"hello")

    @app.timer(0.01)
    def tick() -> None:
        if len(ticks) < 3:
            ticks.append(1)
            app.send("out", b"tick")

    running(app)
    assert [pull.recv() for _ in range(4)] == [b"hello", b"tick", b"tick", b"tick"]


def test_send_from_many_threads(app: App, running: Any, peer: Any) -> None:
    app.add_channel("out", endpoint=TCP, type="PUSH")
    running(app)
    pull = peer(zmq.PULL, connect=app.channels["out"].bound[0])

    def producer(n: int) -> None:
        for i in range(200):
            app.send("out", b"%d:%d" % (n, i))

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    received = [pull.recv() for _ in range(800)]
    for t in threads:
        t.join(5)
    for n in range(4):  # each thread's messages arrive in the order it sent them
        mine = [int(m.split(b":")[1]) for m in received if m.startswith(b"%d:" % n)]
        assert mine == list(range(200))


def test_sends_wait_in_the_queue_until_a_peer_appears(
    app: App, running: Any, peer: Any, tmp_path: Any
) -> None:
    # An ipc endpoint nobody serves yet. (A freed TCP port would not do: connecting to it
    # can pick that very port as its own source port and connect to itself.)
    endpoint = f"ipc://{tmp_path}/later.sock"
    app.add_channel("out", endpoint=endpoint, type="PUSH", options={"sndhwm": 1, "immediate": 1})
    running(app)
    for i in range(20):
        app.send("out", b"%d" % i)
    pull = peer(zmq.PULL, bind=endpoint)
    assert [pull.recv() for _ in range(20)] == [b"%d" % i for i in range(20)]


def test_full_send_queue_raises_instead_of_growing(app: App, running: Any) -> None:
    app.config["SEND_QUEUE"] = 5
    app.add_channel(
        "out", endpoint="tcp://127.0.0.1:9", type="PUSH", options={"sndhwm": 1, "immediate": 1}
    )
    running(app)
    for _ in range(5):
        app.send("out", b"x")
    with pytest.raises(SendQueueFull, match="has 5 messages waiting for its peers"):
        app.send("out", b"x")
    assert app.channels["out"].stats.sent == 0


def test_send_async_waits_for_room(app: App, running: Any, peer: Any, tmp_path: Any) -> None:
    endpoint = f"ipc://{tmp_path}/later.sock"  # nobody there yet (see the test above)
    app.config["SEND_QUEUE"] = 3
    app.add_channel("out", endpoint=endpoint, type="PUSH", options={"sndhwm": 1, "immediate": 1})
    progress: list[int] = []

    @app.on_start
    async def produce() -> None:
        async def all_of_them() -> None:
            for i in range(50):
                await app.send_async("out", b"%d" % i)
                progress.append(i)

        asyncio.get_running_loop().create_task(all_of_them())

    running(app)
    wait_for(lambda: len(progress) == 3)  # the queue is full; the producer waits
    assert len(progress) == 3
    pull = peer(zmq.PULL, bind=endpoint)
    assert [pull.recv() for _ in range(50)] == [b"%d" % i for i in range(50)]
    wait_for(lambda: len(progress) == 50)


def test_send_misuse_is_explained(app: App, running: Any) -> None:
    app.add_channel("push", endpoint=TCP, type="PUSH")
    app.add_channel("pull", endpoint=TCP, type="PULL")
    app.add_channel("rep", endpoint=TCP, type="REP")
    app.add_channel("router", endpoint=TCP, type="ROUTER")
    with pytest.raises(NotRunning, match="is not running, so channel 'push' has no socket yet"):
        app.send("push", b"x")
    running(app)
    with pytest.raises(SetupError, match="has no channel named 'nope'"):
        app.send("nope", b"x")
    with pytest.raises(SetupError, match="PULL socket, which only receives"):
        app.send("pull", b"x")
    with pytest.raises(SetupError, match="REP socket, which replies to requests by returning"):
        app.send("rep", b"x")
    with pytest.raises(SetupError, match="topic= is for PUB and XPUB channels"):
        app.send("push", b"x", topic="t")
    with pytest.raises(SetupError, match="ROUTER socket: pass identity="):
        app.send("router", b"x")
    with pytest.raises(SetupError, match="identity= is for ROUTER channels"):
        app.send("push", b"x", identity=b"peer")
    with pytest.raises(TypeError, match=r"the raw codec sends bytes, not str; encode it"):
        app.send("push", "text")


def test_send_after_stop_is_not_running(app: App, running: Any) -> None:
    app.add_channel("push", endpoint=TCP, type="PUSH")
    running(app).stop()
    with pytest.raises(NotRunning):
        app.send("push", b"late")


def test_a_refused_send_does_not_leave_a_request_unread(app: App, running: Any, peer: Any) -> None:
    """A send ZeroMQ refuses (a ROUTER peer that left) has taken the socket's edge, as any
    send does: a request that arrived meanwhile must still be read and answered."""
    go, request_sent = threading.Event(), threading.Event()
    outcome: list[str] = []

    @app.channel("r", endpoint="@tcp://127.0.0.1:*", type="ROUTER")
    def echo(body: bytes) -> bytes:
        return b"echo " + body

    @app.timer(0.2)
    def push_to_a_client_that_left() -> None:
        if outcome:
            return
        go.set()
        request_sent.wait(2)
        time.sleep(0.1)  # busy while the request arrives
        try:
            app.send("r", b"news", identity=b"client-that-left")
        except Unroutable:
            outcome.append("unroutable")

    running(app)
    client = peer(zmq.DEALER, connect=app.channels["r"].bound[0])
    client.send_multipart([b"", b"warm-up"])
    assert client.poll(5000) and client.recv_multipart() == [b"", b"echo warm-up"]
    assert go.wait(5)
    client.send_multipart([b"", b"ping"])
    request_sent.set()
    assert client.poll(3000), "the request that arrived during the refused send was not read"
    assert client.recv_multipart() == [b"", b"echo ping"]
    assert outcome == ["unroutable"]
