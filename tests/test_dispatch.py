"""Dispatch through the signal bus: fan-out, extra receivers, app signals, failures, fairness."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import zmq

from zmqapp import App, Message, signals
from zmqapp.testing import wait_for

TCP = "@tcp://127.0.0.1:*"


def test_every_handler_gets_every_message(app: App, running: Any, peer: Any) -> None:
    first: list[bytes] = []
    second: list[bytes] = []
    app.channel("pull", endpoint=TCP, type="PULL")(first.append)
    app.handler("pull")(second.append)
    running(app)
    push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
    for i in range(50):
        push.send(b"%d" % i)
    wait_for(lambda: len(first) == len(second) == 50)
    assert first == second == [b"%d" % i for i in range(50)]


def test_signal_receivers_connected_before_and_during_run(
    app: App, running: Any, peer: Any
) -> None:
    handled: list[bytes] = []
    early: list[Message] = []
    late: list[Message] = []
    app.channel("pull", endpoint=TCP, type="PULL")(handled.append)

    def on_early(sender: App, message: Message) -> None:
        assert sender is app
        early.append(message)

    app.signal("pull").connect(on_early)
    running(app)
    push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
    push.send(b"one")
    wait_for(lambda: early)

    def on_late(sender: App, message: Message) -> None:
        late.append(message)

    app.signal("pull").connect(on_late)  # while the app runs
    push.send(b"two")
    wait_for(lambda: late)
    app.signal("pull").disconnect(on_early)
    push.send(b"three")
    wait_for(lambda: len(late) == 2)
    assert handled == [b"one", b"two", b"three"]
    assert [m.body for m in early] == [b"one", b"two"]
    assert [m.body for m in late] == [b"two", b"three"]
    assert late[0].channel is app.channels["pull"]


def test_receivers_are_called_in_connection_order(app: App, running: Any, peer: Any) -> None:
    calls: list[str] = []
    app.channel("pull", endpoint=TCP, type="PULL")(lambda body: calls.append("handler"))
    app.signal("pull").connect(lambda sender, message: calls.append("receiver"), weak=False)
    app.handler("pull")(lambda body: calls.append("second handler"))
    running(app)
    peer(zmq.PUSH, connect=app.channels["pull"].bound[0]).send(b"x")
    wait_for(lambda: len(calls) == 3)
    assert calls == ["handler", "receiver", "second handler"]


def test_a_weak_receiver_that_dies_is_dropped(app: App, running: Any, peer: Any) -> None:
    got: list[bytes] = []
    app.channel("pull", endpoint=TCP, type="PULL")(got.append)

    class Listener:
        calls = 0

        def __call__(self, sender: App, message: Message) -> None:
            Listener.calls += 1

    listener = Listener()
    app.signal("pull").connect(listener)  # weak by default, as in blinker
    running(app)
    push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
    push.send(b"1")
    wait_for(lambda: Listener.calls == 1)
    del listener
    push.send(b"2")
    wait_for(lambda: len(got) == 2)
    assert Listener.calls == 1


def test_app_signals_fire_with_the_app_as_sender(app: App, running: Any, peer: Any) -> None:
    events: list[tuple[str, Any]] = []

    def record(name: str) -> Any:
        def receiver(sender: Any, **kwargs: Any) -> None:
            assert sender is app
            events.append((name, kwargs.get("message") or kwargs.get("frames")))

        return receiver

    receivers = {
        name: record(name)
        for name in (
            "app_starting", "app_started", "app_stopping", "app_stopped",
            "message_received", "message_handled", "message_sent",
        )
    }  # fmt: skip
    for name, receiver in receivers.items():
        getattr(signals, name).connect(receiver, sender=app)
    try:
        app.channel("pull", endpoint=TCP, type="PULL", send_to="out")(lambda body: body * 2)
        app.add_channel("out", endpoint=TCP, type="PUSH")
        thread = running(app)
        pull = peer(zmq.PULL, connect=app.channels["out"].bound[0])
        peer(zmq.PUSH, connect=app.channels["pull"].bound[0]).send(b"ab")
        assert pull.recv() == b"abab"
        thread.stop()
    finally:
        for name, receiver in receivers.items():
            getattr(signals, name).disconnect(receiver, sender=app)
    names = [name for name, _ in events]
    assert names == [
        "app_starting", "app_started", "message_received", "message_sent",
        "message_handled", "app_stopping", "app_stopped",
    ]  # fmt: skip
    received = events[2][1]
    assert isinstance(received, Message) and received.body == b"ab"
    assert events[3][1] == [b"abab"]


def test_send_to_forwards_non_none_return_values(app: App, running: Any, peer: Any) -> None:
    app.channel("tasks", endpoint=TCP, type="PULL", send_to="results")(
        lambda body: None if body == b"skip" else body.upper()
    )
    app.add_channel("results", endpoint=TCP, type="PUSH")
    running(app)
    results = peer(zmq.PULL, connect=app.channels["results"].bound[0])
    push = peer(zmq.PUSH, connect=app.channels["tasks"].bound[0])
    for body in (b"a", b"skip", b"b"):
        push.send(body)
    assert [results.recv(), results.recv()] == [b"A", b"B"]


def test_raising_handler_is_logged_signalled_and_the_loop_goes_on(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[bytes] = []
    failures: list[tuple[Message, Any, BaseException]] = []

    @app.channel("pull", endpoint=TCP, type="PULL")
    def fragile(body: bytes) -> None:
        if body == b"bad":
            raise ValueError("cannot handle bad")
        got.append(body)

    def on_failure(sender: App, message: Message, handler: Any, exception: BaseException) -> None:
        failures.append((message, handler, exception))

    signals.handler_failed.connect(on_failure, sender=app)
    try:
        running(app)
        push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
        for body in (b"ok1", b"bad", b"ok2"):
            push.send(body)
        wait_for(lambda: got == [b"ok1", b"ok2"])
    finally:
        signals.handler_failed.disconnect(on_failure, sender=app)
    [(message, handler, exception)] = failures
    assert message.body == b"bad" and handler is fragile
    assert isinstance(exception, ValueError)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "fragile" in record.getMessage() and "'pull'" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is exception
    stats = app.channels["pull"].stats
    assert (stats.received, stats.handled, stats.failed) == (3, 3, 1)


def test_raising_rep_handler_still_replies(app: App, running: Any, peer: Any) -> None:
    @app.channel("rep", endpoint=TCP, type="REP")
    def fragile(body: bytes) -> bytes:
        if body == b"bad":
            raise KeyError("secret")
        return b"fine"

    running(app)
    req = peer(zmq.REQ, connect=app.channels["rep"].bound[0])
    req.send(b"bad")
    [reply] = req.recv_multipart()
    assert reply == (
        b'ZMQAPP-ERROR {"kind":"handler_failed","error":"KeyError","detail":"","channel":"rep"}'
    )
    req.send(b"good")
    assert req.recv() == b"fine"


def test_error_detail_is_opt_in(app: App, running: Any, peer: Any) -> None:
    app.config["ERROR_DETAIL"] = True
    app.channel("router", endpoint=TCP, type="ROUTER")(lambda body: 1 / 0)
    running(app)
    req = peer(zmq.REQ, connect=app.channels["router"].bound[0])
    req.send(b"x")
    assert b'"detail":"division by zero"' in req.recv()


def test_a_busy_channel_does_not_starve_another(ctx: Any, peer: Any, running: Any) -> None:
    """With a small batch, a flooded channel and a trickle channel interleave.

    The peers use inproc on the app's context: an inproc send puts the message straight
    into the app's queue, so both queues are known to be full before the loop is let go.
    """
    app = App("fairness", context=ctx)
    app.config.update(BATCH_SIZE=8, LINGER=0)
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    @app.channel("flood", endpoint="@inproc://flood", type="PULL")
    def on_flood(body: bytes) -> None:
        entered.set()
        release.wait(5)  # hold the loop until both queues are full
        order.append("flood")

    app.channel("trickle", endpoint="@inproc://trickle", type="PULL")(
        lambda body: order.append("trickle")
    )
    running(app)
    flood = peer(zmq.PUSH, connect="inproc://flood")
    trickle = peer(zmq.PUSH, connect="inproc://trickle")
    flood.send(b"f")
    assert entered.wait(5)
    for _ in range(199):
        flood.send(b"f")
    for _ in range(5):
        trickle.send(b"t")
    release.set()
    wait_for(lambda: len(order) == 205)
    first_trickle = order.index("trickle")
    assert first_trickle <= 2 * 8, f"trickle waited behind {first_trickle} flood messages"


def test_bursts_on_many_channels_are_all_read(app: App, running: Any, peer: Any) -> None:
    """Edge-triggered descriptors: bursts on 20 channels at once, none left unread."""
    counts = {f"c{i}": 0 for i in range(20)}

    def make(name: str) -> Any:
        def handler(body: bytes) -> None:
            counts[name] += 1

        return handler

    for name in counts:
        app.channel(name, endpoint=TCP, type="PULL")(make(name))
    running(app)
    pushes = [peer(zmq.PUSH, connect=app.channels[name].bound[0]) for name in counts]
    for round_ in range(5):
        for push in pushes:
            for _ in range(round_ * 37 + 1):
                push.send(b"x")
    expected = sum(r * 37 + 1 for r in range(5))
    wait_for(lambda: all(n == expected for n in counts.values()))


def test_sending_on_a_socket_does_not_lose_its_read_wakeups(
    app: App, running: Any, peer: Any
) -> None:
    """A DEALER that both sends (from a timer) and receives: sends must not eat read edges."""
    router = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    got: list[bytes] = []
    app.channel("dealer", endpoint=router.last_endpoint.decode(), type="DEALER")(got.append)

    @app.timer(0.001)
    def chatter() -> None:
        app.send("dealer", b"tick")

    running(app)
    identity = router.recv_multipart()[0]
    for i in range(300):
        router.send_multipart([identity, b"%d" % i])
    wait_for(lambda: len(got) == 300)
    assert got == [b"%d" % i for i in range(300)]


def test_a_raising_signal_receiver_does_not_wedge_the_channel(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[bytes] = []
    app.channel("pull", endpoint=TCP, type="PULL")(got.append)

    def broken(sender: App, message: Message) -> None:
        raise RuntimeError("receiver bug")

    running(app)
    push = peer(zmq.PUSH, connect=app.channels["pull"].bound[0])
    signals.message_received.connect(broken, sender=app)
    try:
        push.send(b"handled all the same")
        wait_for(lambda: "a receiver of a zmqapp signal failed on channel 'pull'" in caplog.text)
    finally:
        signals.message_received.disconnect(broken, sender=app)
    push.send(b"after")
    wait_for(lambda: got == [b"handled all the same", b"after"])


def test_a_raising_message_received_receiver_does_not_leave_a_router_client_waiting(
    app: App, running: Any, peer: Any
) -> None:
    """An observer that raises must not cost a client its answer: a ROUTER has no way to
    notice later that it owes one (a REP does)."""

    @app.channel("r", endpoint=TCP, type="ROUTER")
    def echo(body: bytes) -> bytes:
        return b"echo " + body

    def broken(sender: App, message: Message) -> None:
        raise RuntimeError("receiver bug")

    running(app)
    client = peer(zmq.DEALER, connect=app.channels["r"].bound[0])
    signals.message_received.connect(broken, sender=app)
    try:
        for body in (b"one", b"two"):
            client.send_multipart([b"", body])
            assert client.poll(5000), f"no answer to {body!r}"
            assert client.recv_multipart() == [b"", b"echo " + body]
    finally:
        signals.message_received.disconnect(broken, sender=app)


def test_several_plain_handlers_each_run_when_one_fails(app: App, running: Any, peer: Any) -> None:
    """Several plain handlers share the fast path: each gets every message, in order; one
    that raises is reported and answered for, and does not keep the others from running."""
    calls: list[str] = []
    failures: list[str] = []

    @app.channel("ask", endpoint="@tcp://127.0.0.1:*", type="REP")
    def first(body: bytes) -> bytes | None:
        calls.append("first " + body.decode())
        return body.upper() if body == b"ok" else None

    @app.handler("ask")
    def second(body: bytes) -> None:
        calls.append("second " + body.decode())
        if body == b"bad":
            raise KeyError("second fails")

    def failed(sender: App, message: Any, handler: Any, exception: Any) -> None:
        failures.append(handler.__name__)

    from zmqapp import signals

    signals.handler_failed.connect(failed, sender=app)
    try:
        running(app)
        req = peer(zmq.REQ, connect=app.channels["ask"].bound[0])
        req.send(b"ok")
        assert req.recv() == b"OK"
        req.send(b"bad")
        assert req.recv().startswith(b'ZMQAPP-ERROR {"kind":"handler_failed","error":"KeyError"')
    finally:
        signals.handler_failed.disconnect(failed, sender=app)
    assert calls == ["first ok", "second ok", "first bad", "second bad"]
    assert failures == ["second"]
    stats = app.channels["ask"].stats
    assert (stats.handled, stats.failed) == (2, 1)


@pytest.mark.parametrize("handlers", [1, 2])
def test_a_rep_reply_that_cannot_be_encoded_is_a_failure_and_the_service_answers_on(
    app: App, running: Any, peer: Any, handlers: int
) -> None:
    """An unencodable result is its handler's failure, answered with an error reply, on the
    fast path (one or several plain handlers) as on the general one; the next request is
    answered as usual."""

    @app.channel("svc", endpoint=TCP, type="REP", codec="json")
    def svc(body: str) -> Any:
        return object() if body == "bad" else {"echo": body}

    for _ in range(handlers - 1):
        app.handler("svc")(lambda body: None)
    running(app)
    req = peer(zmq.REQ, connect=app.channels["svc"].bound[0])
    replies = []
    for body in ("ok1", "bad", "ok2"):
        req.send_json(body)
        replies.append(req.recv())
    assert replies[0] == b'{"echo":"ok1"}' and replies[2] == b'{"echo":"ok2"}'
    assert replies[1].startswith(b'ZMQAPP-ERROR {"kind":"handler_failed","error":"TypeError"')
    stats = app.channels["svc"].stats
    # Counted once the batch ends, which may be just after the last reply went out.
    wait_for(lambda: (stats.received, stats.handled, stats.failed) == (3, 3, 1), timeout=5)


def test_a_forwarded_result_that_cannot_be_encoded_does_not_stall_the_channel(
    app: App, running: Any, peer: Any
) -> None:
    """One result send_to cannot encode: that message fails, the rest of its batch (already
    queued, announced by no new edge) is still read and forwarded."""

    @app.channel("in", endpoint=TCP, type="PULL", codec="json", send_to="out")
    def work(body: int) -> Any:
        return object() if body == 0 else body

    app.add_channel("out", endpoint=TCP, type="PUSH", codec="json")
    running(app)
    sink = peer(zmq.PULL, connect=app.channels["out"].bound[0])
    push = peer(zmq.PUSH, connect=app.channels["in"].bound[0])
    for i in range(50):
        push.send_json(i)
    assert sorted(sink.recv_json() for _ in range(49)) == list(range(1, 50))
    wait_for(lambda: app.channels["in"].stats.handled == 50)
    assert app.channels["in"].stats.failed == 1


@pytest.mark.parametrize("kind", ["PULL", "REP"])
def test_a_raising_handler_failed_receiver_does_not_wedge_the_fast_path(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """A receiver of handler_failed that raises, on the fast path: the rest of the batch is
    read, and a REP service answers the request it could not finish with an error."""
    got: list[bytes] = []

    @app.channel("svc", endpoint=TCP, type=kind)
    def svc(body: bytes) -> bytes:
        if body == b"bad":
            raise ValueError("bad")
        got.append(body)
        return body

    def broken(sender: App, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.handler_failed.connect(broken, sender=app)
    try:
        running(app)
        if kind == "PULL":
            push = peer(zmq.PUSH, connect=app.channels["svc"].bound[0])
            for i in range(20):
                push.send(b"bad" if i == 3 else b"%d" % i)
            wait_for(lambda: len(got) == 19)
        else:
            req = peer(zmq.REQ, connect=app.channels["svc"].bound[0])
            req.send(b"bad")
            assert req.recv().startswith(b'ZMQAPP-ERROR {"kind":"handler_failed"')
            req.send(b"after")
            assert req.recv() == b"after"
    finally:
        signals.handler_failed.disconnect(broken, sender=app)
    assert "a receiver of a zmqapp signal failed on channel 'svc'" in caplog.text


def test_a_broken_receiver_of_every_signal_does_not_wedge_a_rep_service(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """One receiver that raises, connected to handler_failed and message_sent: the error
    reply a REP owes raises in its turn, and a request queued behind it is still answered."""

    @app.channel("svc", endpoint=TCP, type="REP")
    def svc(body: bytes) -> bytes:
        if body == b"bad":
            raise ValueError("bad")
        return body

    def broken(sender: App, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.handler_failed.connect(broken, sender=app)
    signals.message_sent.connect(broken, sender=app)
    try:
        running(app)
        first = peer(zmq.REQ, connect=app.channels["svc"].bound[0])
        second = peer(zmq.REQ, connect=app.channels["svc"].bound[0])
        first.send(b"bad")
        second.send(b"good")
        assert first.recv().startswith(b"ZMQAPP-ERROR")
        assert second.recv() == b"good"
    finally:
        signals.handler_failed.disconnect(broken, sender=app)
        signals.message_sent.disconnect(broken, sender=app)
    assert "a receiver of a zmqapp signal failed on channel 'svc'" in caplog.text


def test_a_raising_message_sent_receiver_does_not_resend_queued_messages(
    app: App, running: Any, peer: Any
) -> None:
    """Messages queued while no peer was there go out once each when one comes, even if a
    message_sent receiver raises on every one of them."""
    app.add_channel("out", endpoint=TCP, type="PUSH")
    running(app)
    for i in range(50):
        app.send("out", b"%d" % i)
    assert app.runtime is not None
    runtime = app.runtime
    wait_for(lambda: len(runtime.pumps["out"].outbox) == 50)  # no peer yet: all queued

    def broken(sender: App, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.message_sent.connect(broken, sender=app)
    try:
        pull = peer(zmq.PULL, connect=app.channels["out"].bound[0])
        got = [pull.recv() for _ in range(50)]
        pull.setsockopt(zmq.RCVTIMEO, 300)
        with pytest.raises(zmq.Again):
            pull.recv()  # nothing sent twice
    finally:
        signals.message_sent.disconnect(broken, sender=app)
    assert got == [b"%d" % i for i in range(50)]
