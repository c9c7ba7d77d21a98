"""Every socket type pair, and the bind/connect rules, over real sockets."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from zmqapp import App
from zmqapp.testing import wait_for

TCP = "@tcp://127.0.0.1:*"


def keep_sending(send: Callable[[], Any], done: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Send until ``done()`` is true: for PUB/SUB, whose subscriptions take a moment to arrive."""

    def attempt() -> Any:
        result = done()
        if not result:
            send()
        return result

    return wait_for(attempt, timeout=timeout, interval=0.01)


def test_pull_receives_from_push(app: App, running: Any, peer: Any) -> None:
    got: list[bytes] = []
    app.channel("pull", endpoint=TCP, type=zmq.PULL)(got.append)
    running(app)
    push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
    for i in range(100):
        push.send(b"%d" % i)
    wait_for(lambda: len(got) == 100)
    assert got == [b"%d" % i for i in range(100)]


def test_push_sends_to_pull(app: App, running: Any, peer: Any) -> None:
    app.add_channel("push", endpoint=TCP, type="PUSH")
    running(app)
    pull = peer(zmq.PULL, connect=app.channels["push"].bound[0])
    app.send("push", b"hello")
    assert pull.recv_multipart() == [b"hello"]


def test_sub_receives_everything_by_default(app: App, running: Any, peer: Any) -> None:
    got: list[tuple[bytes, bytes | None]] = []

    @app.channel("sub", endpoint=TCP, type="SUB")
    def on_sub(body: bytes, topic: bytes | None) -> None:
        got.append((body, topic))

    running(app)
    pub = peer(zmq.PUB, connect=app.channels["sub"].bound[0])
    keep_sending(lambda: pub.send(b"warmup"), lambda: got)
    pub.send_multipart([b"weather", b"sunny"])
    pub.send(b"no topic")
    wait_for(lambda: (b"no topic", None) in got)
    assert (b"sunny", b"weather") in got


def test_sub_filters_by_subscription(app: App, running: Any, peer: Any) -> None:
    got: list[bytes] = []
    app.channel("sub", endpoint=TCP, type="SUB", subscribe=["10001 ", b"10002 "])(got.append)
    running(app)
    pub = peer(zmq.PUB, connect=app.channels["sub"].bound[0])
    keep_sending(lambda: pub.send(b"10001 warmup"), lambda: got)
    for msg in (b"10003 skip", b"10002 21C", b"99999 skip", b"10001 25C"):
        pub.send(msg)
    wait_for(lambda: b"10001 25C" in got)
    assert b"10002 21C" in got
    assert not any(m.endswith(b"skip") for m in got)


def test_pub_sends_topic_as_frame_zero(app: App, running: Any, peer: Any) -> None:
    app.add_channel("pub", endpoint=TCP, type="PUB")
    running(app)
    sub = peer(zmq.SUB, connect=app.channels["pub"].bound[0])
    sub.setsockopt(zmq.SUBSCRIBE, b"news")
    sub.setsockopt(zmq.RCVTIMEO, 50)
    received: list[list[bytes]] = []

    def poll() -> bool:
        try:
            received.append(sub.recv_multipart())
        except zmq.Again:
            return False
        return True

    keep_sending(lambda: app.send("pub", b"hello", topic="news"), poll)
    assert received[0] == [b"news", b"hello"]


def test_xpub_receives_subscriptions(app: App, running: Any, peer: Any) -> None:
    got: list[bytes] = []
    app.channel("xpub", endpoint=TCP, type="XPUB")(got.append)
    running(app)
    sub = peer(zmq.SUB, connect=app.channels["xpub"].bound[0])
    sub.setsockopt(zmq.SUBSCRIBE, b"topic-a")
    wait_for(lambda: got)
    assert got == [b"\x01topic-a"]


def test_xsub_subscribes_and_receives(app: App, running: Any, peer: Any) -> None:
    pub = peer(zmq.XPUB, bind="tcp://127.0.0.1:*")
    got: list[tuple[bytes, bytes | None]] = []

    @app.channel("xsub", endpoint=pub.last_endpoint.decode(), type="XSUB", subscribe="t")
    def on_xsub(body: bytes, topic: bytes | None) -> None:
        got.append((body, topic))

    running(app)
    pub.setsockopt(zmq.RCVTIMEO, 5000)
    assert pub.recv() == b"\x01t"  # the subscription reached the publisher
    pub.send_multipart([b"t", b"payload"])
    wait_for(lambda: got)
    assert got == [(b"payload", b"t")]


def test_rep_replies_to_req(app: App, running: Any, peer: Any) -> None:
    app.channel("hello", endpoint=TCP, type="REP")(lambda body: b"World:" + body)
    running(app)
    req = peer(zmq.REQ, connect=app.channels["hello"].bound[0])
    for i in range(3):
        req.send(b"%d" % i)
        assert req.recv_multipart() == [b"World:%d" % i]


def test_rep_replies_to_dealer_with_delimiter(app: App, running: Any, peer: Any) -> None:
    app.channel("hello", endpoint=TCP, type="REP")(lambda body: body.upper())
    running(app)
    dealer = peer(zmq.DEALER, connect=app.channels["hello"].bound[0])
    dealer.send_multipart([b"", b"abc"])
    assert dealer.recv_multipart() == [b"", b"ABC"]


def test_rep_always_replies_even_to_none(app: App, running: Any, peer: Any) -> None:
    app.channel("hello", endpoint=TCP, type="REP")(lambda body: None)
    running(app)
    req = peer(zmq.REQ, connect=app.channels["hello"].bound[0])
    req.send(b"x")
    assert req.recv_multipart() == [b""]


def test_router_replies_to_req(app: App, running: Any, peer: Any) -> None:
    seen: list[bytes] = []

    @app.channel("router", endpoint=TCP, type="ROUTER")
    def on_request(body: bytes, identity: bytes) -> bytes:
        seen.append(identity)
        return b"re:" + body

    running(app)
    req = peer(zmq.REQ, connect=app.channels["router"].bound[0])
    req.send(b"one")
    assert req.recv_multipart() == [b"re:one"]
    req.send(b"two")
    assert req.recv_multipart() == [b"re:two"]
    assert len(set(seen)) == 1


def test_router_replies_to_dealer_with_and_without_delimiter(
    app: App, running: Any, peer: Any
) -> None:
    app.channel("router", endpoint=TCP, type="ROUTER")(lambda body: b"re:" + body)
    running(app)
    dealer = peer(zmq.DEALER, connect=app.channels["router"].bound[0])
    dealer.send_multipart([b"", b"delimited"])
    assert dealer.recv_multipart() == [b"", b"re:delimited"]
    dealer.send(b"bare")
    assert dealer.recv_multipart() == [b"re:bare"]
    dealer.send_multipart([b"request-id", b"", b"with id"])  # an envelope it must echo back
    assert dealer.recv_multipart() == [b"request-id", b"", b"re:with id"]


def test_router_sends_nothing_for_none(app: App, running: Any, peer: Any) -> None:
    app.channel("router", endpoint=TCP, type="ROUTER")(
        lambda body: None if body == b"quiet" else body
    )
    running(app)
    dealer = peer(zmq.DEALER, connect=app.channels["router"].bound[0])
    dealer.send(b"quiet")
    dealer.send(b"loud")
    assert dealer.recv_multipart() == [b"loud"]  # the first request got no answer


def test_router_replies_to_router(app: App, running: Any, peer: Any) -> None:
    app.channel("router", endpoint=TCP, type="ROUTER", options={"routing_id": b"server"})(
        lambda body: b"re:" + body
    )
    running(app)
    client = peer(zmq.ROUTER, connect=app.channels["router"].bound[0])
    client.setsockopt(zmq.ROUTER_MANDATORY, 1)

    def send() -> bool:  # a ROUTER can only send once the connection is up
        try:
            client.send_multipart([b"server", b"", b"hi"])
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            return False
        return True

    wait_for(send)
    reply = client.recv_multipart()
    assert reply[0] == b"server"
    assert reply[1:] == [b"", b"re:hi"]


def test_router_send_to_identity(app: App, running: Any, peer: Any) -> None:
    identities: queue.Queue[bytes] = queue.Queue()
    app.channel("router", endpoint=TCP, type="ROUTER")(
        lambda body, identity: identities.put(identity)
    )
    running(app)
    dealer = peer(zmq.DEALER, connect=app.channels["router"].bound[0])
    dealer.send(b"register")
    app.send("router", b"pushed", identity=identities.get(timeout=5))
    assert dealer.recv_multipart() == [b"pushed"]


def test_req_channel_gets_replies_in_its_handler(app: App, running: Any, peer: Any) -> None:
    rep = peer(zmq.REP, bind="tcp://127.0.0.1:*")
    got: list[bytes] = []
    app.channel("req", endpoint=rep.last_endpoint.decode(), type="REQ")(got.append)
    running(app)
    app.send("req", b"question")
    assert rep.recv() == b"question"
    rep.send(b"answer")
    wait_for(lambda: got)
    assert got == [b"answer"]


def test_idle_req_channel_survives_peers_coming_and_going(
    app: App, running: Any, peer: Any, ctx: Any
) -> None:
    """A REQ socket refuses to read with no request outstanding; connection events still
    wake its descriptor, and the pump must take that quietly (the loop logs nothing)."""
    probe = ctx.socket(zmq.REP)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)
    address = f"tcp://127.0.0.1:{port}"
    app.add_channel("req", endpoint=address, type="REQ")
    running(app)

    def bind_rep() -> Any:  # a closed socket frees its port in the background: retry
        try:
            return peer(zmq.REP, bind=address)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE:
                raise
            return None

    for _ in range(5):
        wait_for(bind_rep).close(linger=0)
    rep = wait_for(bind_rep)
    answered = threading.Thread(target=lambda: rep.send(rep.recv() + b"!"))
    answered.start()
    assert app.request_sync("req", b"still works", timeout=5) == b"still works!"
    answered.join(5)


def test_dealer_channel_talks_to_router(app: App, running: Any, peer: Any) -> None:
    router = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    got: list[bytes] = []
    app.channel(
        "dealer", endpoint=router.last_endpoint.decode(), type="DEALER",
        options={"routing_id": b"worker-1"},
    )(got.append)  # fmt: skip
    running(app)
    app.send("dealer", b"ready")
    identity, body = router.recv_multipart()
    assert (identity, body) == (b"worker-1", b"ready")  # routing_id was set before connect
    router.send_multipart([identity, b"job"])
    wait_for(lambda: got)
    assert got == [b"job"]


def test_pair_both_ways(app: App, running: Any, peer: Any) -> None:
    got: list[bytes] = []
    app.channel("pair", endpoint=TCP, type="PAIR")(got.append)
    running(app)
    other = peer(zmq.PAIR, connect=app.channels["pair"].bound[0])
    other.send(b"ping")
    wait_for(lambda: got)
    app.send("pair", b"pong")
    assert other.recv() == b"pong"


def test_ipc_and_inproc_transports(ctx: Any, peer: Any, running: Any, tmp_path: Path) -> None:
    got: list[bytes] = []
    ipc = f"ipc://{tmp_path}/tasks.sock"
    app = App("transports", context=ctx)
    app.config["LINGER"] = 0
    app.channel("tasks", endpoint=[f"@{ipc}", "@inproc://tasks"], type="PULL")(got.append)
    running(app)
    assert app.channels["tasks"].bound == [ipc, "inproc://tasks"]
    peer(zmq.PUSH, connect=ipc).send(b"over ipc")
    peer(zmq.PUSH, connect="inproc://tasks").send(b"over inproc")
    wait_for(lambda: len(got) == 2)
    assert sorted(got) == [b"over inproc", b"over ipc"]
    assert not ctx.closed  # a context the app was given is not the app's to terminate


def test_connect_side_and_bind_flag(app: App, running: Any, peer: Any) -> None:
    pull = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    address = pull.last_endpoint.decode()
    app.add_channel("out", endpoint=address, type="PUSH")  # no prefix, no wildcard: connects
    app.add_channel("also", endpoint=address.replace("tcp", ">tcp"), type="PUSH", bind=True)
    running(app)
    assert app.channels["out"].bound == [] and app.channels["also"].bound == []
    app.send("out", b"a")
    app.send("also", b"b")
    assert sorted([pull.recv(), pull.recv()]) == [b"a", b"b"]


def test_wildcard_host_binds(app: App, running: Any, peer: Any) -> None:
    got: list[bytes] = []
    app.channel("pull", endpoint="tcp://*:*", type="PULL")(got.append)
    running(app)
    port = app.channels["pull"].bound[0].rsplit(":", 1)[1]
    peer(zmq.PUSH, connect=f"tcp://127.0.0.1:{port}").send(b"x")
    wait_for(lambda: got)


def test_options_are_applied(app: App, running: Any) -> None:
    seen: dict[str, int] = {}
    app.add_channel("push", endpoint=TCP, type="PUSH", options={"sndhwm": 17})
    app.config["RCVHWM"] = 23
    app.add_channel("pull", endpoint=TCP, type="PULL", handler=lambda b: None)

    @app.on_start
    def read_options() -> None:
        seen["sndhwm"] = app.channels["push"].socket.getsockopt(zmq.SNDHWM)  # type: ignore[union-attr]
        seen["rcvhwm"] = app.channels["pull"].socket.getsockopt(zmq.RCVHWM)  # type: ignore[union-attr]
        seen["linger"] = app.channels["pull"].socket.getsockopt(zmq.LINGER)  # type: ignore[union-attr]

    running(app)
    assert seen == {"sndhwm": 17, "rcvhwm": 23, "linger": 0}


def test_bind_conflict_is_a_clear_error(app: App, peer: Any) -> None:
    taken = peer(zmq.PULL, bind="tcp://127.0.0.1:*").last_endpoint.decode()
    app.add_channel("pull", endpoint="@" + taken, type="PULL", handler=lambda b: None)
    with pytest.raises(Exception, match=rf"could not bind {taken}: Address already in use"):
        app.run(install_signal_handlers=False)
    assert not app.running


def test_socket_events_from_the_monitor(app: App, running: Any, peer: Any) -> None:
    from zmqapp import signals

    events: list[tuple[str, str]] = []

    def on_event(sender: App, channel: Any, event: str, endpoint: str, value: int) -> None:
        events.append((channel.name, event))

    app.channel("pull", endpoint=TCP, type="PULL", monitor=True)(lambda body: None)
    app.channel("quiet", endpoint=TCP, type="PULL")(lambda body: None)
    signals.socket_event.connect(on_event, sender=app)
    try:
        running(app)
        wait_for(lambda: ("pull", "listening") in events)  # the monitor saw the bind itself
        push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
        push.send(b"x")
        wait_for(lambda: ("pull", "handshake_succeeded") in events)
        push.close(linger=0)
        wait_for(lambda: ("pull", "disconnected") in events)
        # Something listened to socket-event as the app started, so every channel is watched.
        wait_for(lambda: ("quiet", "listening") in events)
    finally:
        signals.socket_event.disconnect(on_event, sender=app)
    assert ("pull", "accepted") in events


def test_a_raising_socket_signal_receiver_does_not_stop_the_monitor(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """peer_connected's receiver raises on the first connection: the monitor says so and
    goes on reading, so the next connections are still seen and counted."""
    from zmqapp import signals

    calls: list[str] = []

    def fragile(sender: App, channel: Any, address: str) -> None:
        calls.append(address)
        if len(calls) == 1:
            raise RuntimeError("receiver bug")

    app.channel("pull", endpoint=TCP, type="PULL", monitor=True)(lambda body: None)
    signals.peer_connected.connect(fragile, sender=app)
    try:
        running(app)
        for _ in range(4):
            peer(zmq.PUSH, connect=app.channels["pull"].bound[0]).send(b"x")
        wait_for(lambda: len(calls) == 4)
    finally:
        signals.peer_connected.disconnect(fragile, sender=app)
    assert "a receiver of a zmqapp socket signal failed on channel 'pull'" in caplog.text
    assert app.runtime is not None
    runtime = app.runtime
    wait_for(lambda: runtime.snapshot()["channels"]["pull"]["peers"] == 4)
