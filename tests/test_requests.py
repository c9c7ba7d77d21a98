"""app.request on REQ and DEALER channels: matching, timeouts, retries, remote errors."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import zmq

from zmqapp import App, DecodeError, NotRunning, RemoteError, SendQueueFull, SetupError, Timeout
from zmqapp.testing import wait_for

TCP = "@tcp://127.0.0.1:*"


def server(name: str, **options: Any) -> App:
    """A zmqapp ROUTER server answering ``<name>:<body>``; ``b"fail"`` raises."""
    app = App(name)
    app.config.update(LINGER=0, SHUTDOWN_TIMEOUT=1.0)

    @app.channel("rpc", endpoint=TCP, type="ROUTER", **options)
    async def answer(body: bytes) -> bytes:
        if body == b"fail":
            raise ValueError("asked to fail")
        await asyncio.sleep(0)
        return name.encode() + b":" + body

    return app


def test_a_timed_out_request_leaves_the_req_channel_usable(
    app: App, running: Any, peer: Any
) -> None:
    rep = peer(zmq.REP, bind="tcp://127.0.0.1:*")
    app.add_channel("req", endpoint=rep.last_endpoint.decode(), type="REQ")
    running(app)

    def ignore_then_answer() -> None:
        assert rep.recv() == b"first"  # received, never answered...
        rep.send(b"late answer to first")  # ...until the client gave up: REQ_CORRELATE drops it
        assert rep.recv() == b"second"
        rep.send(b"answer to second")

    with pytest.raises(Timeout, match=r"no reply on channel 'req' within 0\.2 s"):
        app.request_sync("req", b"first", timeout=0.2)
    thread = threading.Thread(target=ignore_then_answer)
    thread.start()
    assert app.request_sync("req", b"second", timeout=5) == b"answer to second"
    thread.join(5)


def test_requests_on_req_take_turns(app: App, running: Any, peer: Any) -> None:
    rep = peer(zmq.REP, bind="tcp://127.0.0.1:*")
    app.add_channel("req", endpoint=rep.last_endpoint.decode(), type="REQ")

    def echo() -> None:
        for _ in range(20):
            rep.send(b"re:" + rep.recv())

    thread = threading.Thread(target=echo)
    thread.start()
    running(app)

    async def many() -> list[Any]:
        return await asyncio.gather(*(app.request("req", b"%d" % i) for i in range(20)))

    loop = app.runtime.loop if app.runtime else None
    assert loop is not None
    replies = asyncio.run_coroutine_threadsafe(many(), loop).result(10)
    thread.join(5)
    assert replies == [b"re:%d" % i for i in range(20)]


def test_a_thousand_dealer_requests_across_two_servers(running: Any) -> None:
    servers = [server("alpha", concurrency=16), server("beta", concurrency=16)]
    for srv in servers:
        running(srv)
    client = App("client")
    client.config.update(LINGER=0)
    client.add_channel("rpc", endpoint=[s.channels["rpc"].bound[0] for s in servers], type="DEALER")
    running(client)

    async def ask_all() -> list[Any]:
        return await asyncio.gather(
            *(client.request("rpc", b"%d" % i, timeout=10) for i in range(1000))
        )

    loop = client.runtime.loop if client.runtime else None
    assert loop is not None
    replies = asyncio.run_coroutine_threadsafe(ask_all(), loop).result(30)
    for i, reply in enumerate(replies):
        name, _, body = reply.partition(b":")
        assert body == b"%d" % i, f"request {i} got the reply to {body!r}"
        assert name in (b"alpha", b"beta")
    by_server = {name: sum(r.startswith(name) for r in replies) for name in (b"alpha", b"beta")}
    assert all(count > 0 for count in by_server.values()), by_server  # both servers did work


@pytest.mark.parametrize("kind", ["REQ", "DEALER"])
@pytest.mark.parametrize("server_type", ["ROUTER", "REP"])
def test_remote_failures_raise_remote_error(
    kind: str, server_type: str, app: App, running: Any
) -> None:
    srv = App("srv")
    srv.config.update(LINGER=0, ERROR_DETAIL=True)

    @srv.channel("rpc", endpoint=TCP, type=server_type)
    def answer(body: bytes) -> bytes:
        if body == b"fail":
            raise ValueError("asked to fail")
        return body

    running(srv)
    app.add_channel("rpc", endpoint=srv.channels["rpc"].bound[0], type=kind)
    running(app)
    with pytest.raises(RemoteError, match="ValueError: asked to fail") as info:
        app.request_sync("rpc", b"fail")
    assert (info.value.kind, info.value.error, info.value.info["channel"]) == (
        "handler_failed",
        "ValueError",
        "rpc",
    )
    assert app.request_sync("rpc", b"fine") == b"fine"  # and the channel goes on


def test_retries_resend_like_lazy_pirate(app: App, running: Any) -> None:
    srv = App("flaky")
    srv.config.update(LINGER=0)
    seen: dict[bytes, int] = {}

    @srv.channel("rpc", endpoint=TCP, type="ROUTER")
    def answer(body: bytes) -> bytes | None:
        seen[body] = seen.get(body, 0) + 1
        return None if seen[body] < 3 else b"third time lucky"  # drop two attempts

    running(srv)
    app.add_channel("dealer", endpoint=srv.channels["rpc"].bound[0], type="DEALER", retries=2)
    app.add_channel("req", endpoint=srv.channels["rpc"].bound[0], type="REQ")
    running(app)
    assert app.request_sync("dealer", b"a", timeout=0.3) == b"third time lucky"
    assert seen[b"a"] == 3
    assert app.request_sync("req", b"b", timeout=0.3, retries=2) == b"third time lucky"
    with pytest.raises(Timeout, match=r"within 0\.1 s after 2 attempts"):
        app.request_sync("req", b"c", timeout=0.1, retries=1)


def test_request_decodes_with_the_channel_codec(app: App, running: Any) -> None:
    srv = App("json-server")
    srv.config.update(LINGER=0)
    srv.channel("rpc", endpoint=TCP, type="REP", codec="json")(lambda body: {"sum": sum(body)})
    running(srv)
    app.add_channel("rpc", endpoint=srv.channels["rpc"].bound[0], type="REQ", codec="json")
    running(app)
    assert app.request_sync("rpc", [1, 2, 3]) == {"sum": 6}


def test_default_timeouts_come_from_channel_then_config(app: App, running: Any, peer: Any) -> None:
    silent = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    app.config["REQUEST_TIMEOUT"] = 0.1
    app.add_channel("a", endpoint=silent.last_endpoint.decode(), type="DEALER")
    app.add_channel("b", endpoint=silent.last_endpoint.decode(), type="DEALER", timeout=0.2)
    running(app)
    with pytest.raises(Timeout, match=r"within 0\.1 s"):
        app.request_sync("a", b"x")
    with pytest.raises(Timeout, match=r"within 0\.2 s"):
        app.request_sync("b", b"x")


def test_late_replies_do_not_reach_handlers(app: App, running: Any, peer: Any) -> None:
    router = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    unsolicited: list[bytes] = []
    app.channel("dealer", endpoint=router.last_endpoint.decode(), type="DEALER")(unsolicited.append)
    running(app)
    with pytest.raises(Timeout):
        app.request_sync("dealer", b"q", timeout=0.1)
    request = router.recv_multipart()
    router.send_multipart([*request[:3], b"late"])  # identity, request id, delimiter, body
    router.send_multipart([request[0], b"pushed"])  # an unsolicited message
    wait_for(lambda: unsolicited)
    assert unsolicited == [b"pushed"]
    assert app.channels["dealer"].stats.drops == {"late_reply": 1}  # dropped, but counted


def test_request_misuse(app: App, running: Any) -> None:
    app.add_channel("push", endpoint=TCP, type="PUSH")
    app.add_channel("req", endpoint="tcp://127.0.0.1:9", type="REQ")
    with pytest.raises(NotRunning):
        app.request_sync("req", b"x")
    running(app)
    with pytest.raises(SetupError, match="needs a REQ or DEALER channel; 'push' is a PUSH"):
        app.request_sync("push", b"x")


def test_a_short_timeout_behind_a_long_one_still_expires_first(
    app: App, running: Any, peer: Any
) -> None:
    silent = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    app.add_channel("dealer", endpoint=silent.last_endpoint.decode(), type="DEALER")
    running(app)
    loop = app.runtime.loop if app.runtime else None
    assert loop is not None
    long = asyncio.run_coroutine_threadsafe(app.request("dealer", b"long", timeout=30), loop)
    with pytest.raises(Timeout, match=r"within 0\.1 s"):
        app.request_sync("dealer", b"short", timeout=0.1)
    assert not long.done()  # still waiting: its own deadline is far away
    app.stop()
    with pytest.raises(NotRunning):
        long.result(5)


def test_answered_requests_do_not_pile_up(running: Any) -> None:
    srv = server("echo", concurrency=8)
    running(srv)
    client = App("client")
    client.config.update(LINGER=0)
    client.add_channel("rpc", endpoint=srv.channels["rpc"].bound[0], type="DEALER", timeout=60)
    running(client)

    async def ask_all() -> None:
        for _ in range(20):
            await asyncio.gather(*(client.request("rpc", b"x") for _ in range(50)))

    loop = client.runtime.loop if client.runtime else None
    assert loop is not None
    asyncio.run_coroutine_threadsafe(ask_all(), loop).result(30)
    # 1,000 answered requests, each with a 60 s deadline: the bookkeeping stays small.
    assert len(client.runtime.requests["rpc"]._deadlines) <= 4 * 50 + 1


def test_request_and_send_async_from_another_event_loop(running: Any, peer: Any) -> None:
    """Awaited on a loop of another thread, both hop onto the app's loop: the app's sockets
    are only ever used from its own thread."""
    srv = server("echo", concurrency=8)
    running(srv)
    sink = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    client = App("client")
    client.config.update(LINGER=0)
    client.add_channel("rpc", endpoint=srv.channels["rpc"].bound[0], type="DEALER")
    client.add_channel("out", endpoint=sink.last_endpoint.decode(), type="PUSH")
    running(client)
    used_from: set[int] = set()
    for pump in (client.runtime.pumps["rpc"], client.runtime.pumps["out"]):  # type: ignore[union-attr]
        original = pump.send_frames

        def spy(frames: list[bytes], original: Any = original) -> None:
            used_from.add(threading.get_ident())
            original(frames)

        pump.send_frames = spy  # type: ignore[method-assign]

    async def elsewhere() -> list[Any]:
        await client.send_async("out", b"from another loop")
        return await asyncio.gather(*(client.request("rpc", b"%d" % i) for i in range(50)))

    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(elsewhere())))
    thread.start()
    thread.join(20)
    assert results and results[0] == [b"echo:%d" % i for i in range(50)]
    assert sink.recv() == b"from another loop"
    assert used_from == {client.runtime.loop_thread}  # type: ignore[union-attr]


def test_cancelled_requests_are_counted_and_forgotten(app: App, running: Any, peer: Any) -> None:
    """A caller that stops waiting (asyncio.wait_for shorter than the request's timeout): the
    request is counted ``cancelled``, and its bookkeeping goes by its own deadline."""
    silent = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    app.add_channel("dealer", endpoint=silent.last_endpoint.decode(), type="DEALER", timeout=0.3)
    running(app)
    assert app.runtime is not None
    requests = app.runtime.requests["dealer"]

    async def give_up(i: int) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(app.request("dealer", b"%d" % i), 0.05)

    async def all_give_up() -> None:
        await asyncio.gather(*(give_up(i) for i in range(200)))

    asyncio.run_coroutine_threadsafe(all_give_up(), app.runtime.loop).result(10)
    assert app.channels["dealer"].stats.requests == {"cancelled": 200}
    wait_for(lambda: not requests.pending)  # gone once their 0.3 s deadlines passed


@pytest.mark.timeout(30)
def test_a_request_waiting_for_room_still_times_out(app: App, running: Any) -> None:
    """SEND_QUEUE full (a bound DEALER with no peer yet): the wait for room is part of the
    request's timeout, not in addition to it."""
    app.config["SEND_QUEUE"] = 1
    app.add_channel("dealer", endpoint=TCP, type="DEALER")
    running(app)
    for retries in (0, 0, 1):
        with pytest.raises(Timeout, match=r"within 0\.2 s"):
            app.request_sync("dealer", b"x", timeout=0.2, retries=retries)
    assert app.channels["dealer"].stats.requests == {"timeout": 3}


def test_a_reply_that_does_not_decode_is_not_counted_ok(app: App, running: Any, peer: Any) -> None:
    rep = peer(zmq.REP, bind="tcp://127.0.0.1:*")
    app.add_channel("req", endpoint=rep.last_endpoint.decode(), type="REQ", codec="json")
    running(app)

    def answer() -> None:
        rep.recv()
        rep.send(b"{not json")

    thread = threading.Thread(target=answer)
    thread.start()
    with pytest.raises(DecodeError):
        app.request_sync("req", {"q": 1}, timeout=5)
    thread.join(5)
    assert app.channels["req"].stats.requests == {"decode_failed": 1}


@pytest.mark.timeout(30)
def test_a_timeout_error_raised_across_threads_is_the_callers(app: App, running: Any) -> None:
    """From another thread, a call whose own error is a TimeoutError (a request's Timeout is
    one) raises it at once: the cross-thread wait does not take it for its own running out."""
    running(app)
    runtime = app.runtime
    assert runtime is not None

    def late() -> None:
        raise TimeoutError("the call's own")

    with pytest.raises(TimeoutError, match="the call's own"):
        runtime.call(late)

    async def late_async() -> None:
        raise Timeout("a request's")

    with pytest.raises(Timeout, match="a request's"):
        runtime.call_blocking(late_async)


def test_a_handler_at_its_concurrency_limit_still_gets_replies_to_its_requests(
    app: App, running: Any, peer: Any
) -> None:
    """A coroutine handler on a DEALER channel asks the same channel a question: the channel
    is at its limit (1), yet the reply must be read, or the request could only time out."""
    router = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    results: list[Any] = []

    @app.channel("svc", endpoint=">" + router.last_endpoint.decode(), type="DEALER",
                 options={"identity": b"client"})  # fmt: skip
    async def notified(body: bytes) -> None:
        results.append(await app.request("svc", b"details?", timeout=5))

    running(app)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    wait_for(lambda: _sent(router, [b"client", b"note"]), timeout=5)
    request = router.recv_multipart()  # [identity, request id, b"", body]
    assert request[2:] == [b"", b"details?"]
    router.send_multipart([*request[:3], b"the details"])
    wait_for(lambda: results == [b"the details"], timeout=5)


def _sent(sock: zmq.Socket[Any], frames: list[bytes]) -> bool:
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
    except zmq.ZMQError:  # not connected yet (ROUTER_MANDATORY)
        return False
    return True


def test_requests_that_gave_up_waiting_for_room_leave_nothing_behind(
    app: App, running: Any
) -> None:
    """While a peer is away and the send queue is full, each request that times out waiting
    for room must not leave its waiter behind: memory stays bounded however long it lasts."""
    app.config.update(SEND_QUEUE=2, SNDHWM=1)
    app.add_channel("backend", endpoint=">tcp://127.0.0.1:1", type="DEALER")  # nobody there
    running(app)
    with pytest.raises(SendQueueFull):
        for i in range(10):  # ZeroMQ's queue takes one, zmqapp's two
            app.send("backend", b"queued %d" % i)

    async def ask_many() -> int:
        timeouts = 0
        for _ in range(300):
            try:
                await app.request("backend", b"question", timeout=0.001)
            except Timeout:
                timeouts += 1
        return timeouts

    assert app.runtime is not None
    assert app.runtime.call_blocking(ask_many) == 300
    pump = app.runtime.pumps["backend"]
    assert len(pump._room) <= 1  # the waiters of requests that gave up are gone
