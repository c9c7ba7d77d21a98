"""app.test_client() and the pytest plugin's fixtures."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from zmqapp import App, DecodeError, Message, Multipart, RemoteError, Timeout, signals
from zmqapp.testing import TestClient


def network_sockets() -> set[tuple[str, str]]:
    """The TCP sockets and named unix sockets (ipc endpoints) this process has open, as lsof
    would list them. Unnamed unix sockets are socketpairs, like asyncio's self-pipe."""
    found = set()
    for conn in psutil.Process().net_connections(kind="all"):
        name = conn.family.name
        if name in ("AF_INET", "AF_INET6") or (name == "AF_UNIX" and conn.laddr):
            found.add((name, str(conn.laddr)))
    return found


def full_app() -> App:
    """A channel of every type, each reachable only over the network when run for real."""
    app = App("everything")
    app.config.update(SHUTDOWN_TIMEOUT=1.0)
    log: dict[str, list[Any]] = {"pull": [], "sub": [], "xpub": [], "xsub": [], "pair": [],
                                 "dealer": [], "req": []}  # fmt: skip
    app.log = log  # type: ignore[attr-defined]
    app.channel("pull", endpoint="tcp://*:7001", type="PULL", send_to="push")(
        lambda body: log["pull"].append(body) or body.upper()
    )
    app.add_channel("push", endpoint="tcp://10.255.255.1:7002", type="PUSH")
    app.add_channel("pub", endpoint="tcp://*:7003", type="PUB")

    @app.channel("sub", endpoint="tcp://10.255.255.1:7004", type="SUB", subscribe="news")
    def on_sub(body: bytes, topic: bytes | None) -> None:
        log["sub"].append((topic, body))
        app.send("pub", body, topic="echo")

    app.channel("xpub", endpoint="tcp://*:7005", type="XPUB")(log["xpub"].append)
    app.channel("xsub", endpoint="tcp://10.255.255.1:7006", type="XSUB", subscribe="t")(
        log["xsub"].append
    )
    app.channel("rep", endpoint="ipc:///tmp/never-7007", bind=True, type="REP")(
        lambda body: b"rep:" + body
    )
    app.channel("router", endpoint="tcp://*:7008", type="ROUTER")(lambda body: b"router:" + body)

    @app.channel("dealer", endpoint="tcp://10.255.255.1:7009", type="DEALER")
    def on_dealer(body: bytes) -> None:
        log["dealer"].append(body)
        app.send("dealer", b"dealer:" + body)

    app.channel("req", endpoint="tcp://10.255.255.1:7010", type="REQ")(log["req"].append)

    @app.channel("pair", endpoint="tcp://*:7011", type="PAIR")
    def on_pair(body: bytes) -> bytes:
        log["pair"].append(body)
        app.send("pair", b"pair:" + body)
        return body

    @app.on_start
    def ask() -> None:
        app.send("req", b"question")

    return app


def test_every_channel_type_without_opening_a_network_socket() -> None:
    app = full_app()
    log = app.log  # type: ignore[attr-defined]
    before = network_sockets()
    with app.test_client() as client:
        assert network_sockets() == before  # nothing bound, nothing connected: lsof agrees
        client.send("pull", b"job")
        assert client.sent("push") == [b"JOB"]
        client.send("sub", b"hello", topic="news")
        client.send("sub", b"dropped", topic="sports")  # filtered by the subscription
        assert log["sub"] == [(b"news", b"hello")]
        assert client.sent("pub") == [b"hello"]
        assert client.sent_frames("pub") == [[b"echo", b"hello"]]
        client.send("xpub", frames=[b"\x01weather"])  # a subscription arriving at an XPUB
        assert log["xpub"] == [b"\x01weather"]
        client.send("xsub", b"payload", topic="t")
        assert log["xsub"] == [b"payload"]
        assert client.sent_frames("xsub") == [[b"\x01t"]]  # the XSUB's subscription
        assert client.request("rep", b"a") == b"rep:a"
        assert client.request("router", b"b") == b"router:b"
        client.send("router", b"c")  # a reply to send() is kept as sent on the channel
        assert client.sent("router") == [b"router:c"]
        client.send("dealer", b"d")
        assert log["dealer"] == [b"d"] and client.sent("dealer") == [b"dealer:d"]
        assert client.sent("req") == [b"question"]  # sent by an on_start hook
        client.send("req", b"answer")  # answers the request
        assert log["req"] == [b"answer"]
        client.send("pair", b"e")
        assert client.sent("pair") == [b"pair:e"]
        assert network_sockets() == before
    assert not app.running


def test_sync_threaded_and_coroutine_handlers() -> None:
    app = App("kinds")
    threads: list[int] = []
    order: list[str] = []

    @app.channel("sync", endpoint="tcp://*:7101", type="REP")
    def sync(body: bytes) -> bytes:
        order.append("sync")
        return body

    @app.channel("threaded", endpoint="tcp://*:7102", type="REP", threaded=True)
    def blocking(body: bytes) -> bytes:
        threads.append(threading.get_ident())
        time.sleep(0.01)
        order.append("threaded")
        return body * 2

    @app.channel("coro", endpoint="tcp://*:7103", type="PULL", send_to="out")
    async def coro(body: bytes) -> bytes:
        await asyncio.sleep(0.01)
        order.append("coro")
        return body * 3

    app.add_channel("out", endpoint="tcp://*:7104", type="PUSH")
    with app.test_client() as client:
        assert client.request("sync", b"a") == b"a"
        assert client.request("threaded", b"b") == b"bb"
        client.send("coro", b"c")  # returns after the coroutine finished
        assert order == ["sync", "threaded", "coro"]
        assert client.sent("out") == [b"ccc"]
    assert threads and threads[0] != threading.get_ident()


def test_handler_errors_are_raised_or_recorded() -> None:
    app = App("errors")

    @app.channel("pull", endpoint="tcp://*:7201", type="PULL", codec="json")
    def fragile(body: Any) -> None:
        raise KeyError(body["missing"])

    app.channel("rep", endpoint="tcp://*:7202", type="REP")(lambda body: 1 / 0)
    with app.test_client() as client:
        with pytest.raises(KeyError, match="missing"):
            client.send("pull", {"present": 1})
        with pytest.raises(ZeroDivisionError):
            client.request("rep", b"x")
        with pytest.raises(DecodeError, match="could not decode"):
            client.send("pull", frames=[b"{not json"])
        assert [type(e) for e in client.errors] == [KeyError, ZeroDivisionError, DecodeError]
    with app.test_client(raise_errors=False) as client:
        client.send("pull", {"present": 1})  # recorded, not raised
        with pytest.raises(RemoteError, match="ZeroDivisionError"):
            client.request("rep", b"x")  # the error reply, as a remote client sees it
        assert [type(e) for e in client.errors] == [KeyError, ZeroDivisionError]


def test_signals_fire_as_in_production() -> None:
    app = App("signals")
    app.channel("pull", endpoint="tcp://*:7301", type="PULL")(lambda body: None)
    received: list[Message] = []
    channel_messages: list[Message] = []

    def on_received(sender: App, message: Message) -> None:
        received.append(message)

    app.signal("pull").connect(lambda sender, message: channel_messages.append(message), weak=False)
    signals.message_received.connect(on_received, sender=app)
    try:
        with app.test_client() as client:
            client.send("pull", frames=[b"a", b"b"])
    finally:
        signals.message_received.disconnect(on_received, sender=app)
    assert [m.body for m in received] == [Multipart([b"a", b"b"])]
    assert channel_messages[0].frames == [b"a", b"b"]


def test_hooks_and_timers_run(tmp_path: Path) -> None:
    app = App("hooks")
    ticks: list[int] = []
    app.add_channel("out", endpoint="tcp://*:7401", type="PUSH")
    app.on_start(lambda: app.send("out", b"started"))
    app.on_stop(lambda: app.send("out", b"stopping"))
    app.timer(0.005)(lambda: ticks.append(1))
    with app.test_client() as client:
        assert client.sent("out") == [b"started"]
        from zmqapp.testing import wait_for

        wait_for(lambda: len(ticks) >= 3)
    assert client.sent("out") == [b"started", b"stopping"]  # still readable after the block


def test_config_from_files_and_env_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "settings.toml").write_text('[CHANNELS.api]\ncodec = "json"\n')
    monkeypatch.setenv("ZMQAPP_CHANNELS__api__endpoint", "tcp://10.255.255.1:7501")
    app = App("configured", root_path=str(tmp_path))
    app.channel("api", endpoint="tcp://*:7500", type="REP")(lambda body: {"got": body})
    app.config.from_file("settings.toml")
    app.config.from_prefixed_env()
    with app.test_client() as client:
        assert client.request("api", [1, 2]) == {"got": [1, 2]}  # json, from the file
    assert app.config["CHANNELS"]["api"] == {
        "codec": "json", "endpoint": "tcp://10.255.255.1:7501",
    }  # fmt: skip


def test_a_router_that_does_not_answer_times_out() -> None:
    app = App("quiet")
    app.channel("router", endpoint="tcp://*:7601", type="ROUTER")(lambda body: None)
    with app.test_client(timeout=0.2) as client, pytest.raises(Timeout, match="no reply"):
        client.request("router", b"x")


def test_a_hundred_messages(capsys: pytest.CaptureFixture[str]) -> None:
    app = App("speed")
    seen: list[bytes] = []
    app.channel("pull", endpoint="tcp://*:7701", type="PULL", send_to="out")(
        lambda body: seen.append(body) or body
    )
    app.add_channel("out", endpoint="tcp://*:7702", type="PUSH")
    with app.test_client() as client:
        start = time.perf_counter()
        for i in range(100):
            client.send("pull", b"%d" % i)
        elapsed = time.perf_counter() - start
        assert client.sent("out") == [b"%d" % i for i in range(100)]
    with capsys.disabled():
        print(f"\n100 messages through the test client: {elapsed * 1000:.0f} ms")
    assert len(seen) == 100


def test_misuse_is_explained() -> None:
    app = App("misuse")
    app.channel("pull", endpoint="tcp://*:7801", type="PULL")(lambda body: None)
    client = app.test_client()
    with pytest.raises(RuntimeError, match="use the test client in a with block"):
        client.send("pull", b"x")
    with client, pytest.raises(TypeError, match="needs a REP or ROUTER channel"):
        client.request("pull", b"x")


# -- the pytest plugin -------------------------------------------------------------------------


def test_zmqapp_client_for_fixture(zmqapp_client_for: Any) -> None:
    app = App("fixture")
    app.channel("rep", endpoint="tcp://*:7901", type="REP")(lambda body: body[::-1])
    client = zmqapp_client_for(app)
    assert isinstance(client, TestClient)
    assert client.request("rep", b"abc") == b"cba"


def test_zmqapp_run_fixture_uses_free_ports(zmqapp_run: Any, peer: Any) -> None:
    import zmq

    app = App("for-real")
    app.channel("rep", endpoint="tcp://*:5555", type="REP")(lambda body: b"real:" + body)
    before = network_sockets()
    running = zmqapp_run(app)
    assert network_sockets() - before  # the probe the test client is checked with sees this
    [address] = app.channels["rep"].bound
    assert address.startswith("tcp://127.0.0.1:") and not address.endswith(":5555")
    req = peer(zmq.REQ, connect=address)
    req.send(b"x")
    assert req.recv() == b"real:x"
    assert not running.stopped


def test_the_plugin_loads_by_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from zmqapp import App

        @pytest.fixture
        def zmqapp_app():
            app = App("user")
            app.channel("hello", endpoint="tcp://*:5555", type="REP")(lambda body: b"World")
            return app
        """
    )
    pytester.makepyfile(
        """
        def test_hello(zmqapp_client):
            assert zmqapp_client.request("hello", b"Hello") == b"World"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_zmqapp_run_moves_connected_endpoints_too(zmqapp_run: Any, peer: Any) -> None:
    import zmq

    # A "live" pipeline on this machine, where the app's config points: a test must not
    # pull its events, nor push into it.
    live_events = peer(zmq.PUSH, bind="tcp://127.0.0.1:*")
    live_alerts = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    app = App("pipeline-stage")
    app.config["LINGER"] = 0
    app.channel(
        "events", endpoint=live_events.last_endpoint.decode(), type="PULL", send_to="alerts"
    )(lambda body: b"alert:" + body)
    app.add_channel("alerts", endpoint=live_alerts.last_endpoint.decode(), type="PUSH")
    app.add_channel("local", endpoint="inproc://stays", type="PUSH")
    running = zmqapp_run(app)

    [events] = running.connected["events"]
    [alerts] = running.connected["alerts"]
    assert events.startswith("tcp://127.0.0.1:") and events != live_events.last_endpoint.decode()
    assert "local" not in running.connected and running.endpoints["local"] == [">inproc://stays"]
    source = peer(zmq.PUSH, bind=events)  # the test binds its own peers where the app connects
    sink = peer(zmq.PULL, bind=alerts)
    source.send(b"test event")
    assert sink.recv() == b"alert:test event"
    with pytest.raises(zmq.Again):  # nobody ever connected to the live pipeline
        live_events.send(b"live event", zmq.NOBLOCK)
    assert live_alerts.poll(0) == 0


def test_zmqapp_run_takes_an_explicit_mapping(zmqapp_run: Any, peer: Any, tmp_path: Path) -> None:
    import zmq

    pull = peer(zmq.PULL, bind=f"ipc://{tmp_path}/mine.sock")
    app = App("explicit")
    app.config["LINGER"] = 0
    app.add_channel("out", endpoint="tcp://10.255.255.1:7002", type="PUSH")
    app.on_start(lambda: app.send("out", b"where the test said"))
    running = zmqapp_run(app, endpoints={"out": f">ipc://{tmp_path}/mine.sock"})
    assert running.endpoints == {"out": [f">ipc://{tmp_path}/mine.sock"]}
    assert running.connected == {}
    assert pull.recv() == b"where the test said"
    with pytest.raises(ValueError, match="names channel 'nope'"):
        zmqapp_run(App("other"), endpoints={"nope": "tcp://127.0.0.1:1"})


def test_app_threads_leave_no_signal_receivers_behind() -> None:
    """Each AppThread run connects a receiver to app_started; it must be gone afterwards,
    with the AppThread it holds (a disconnect by sender only would keep both forever)."""
    import gc
    import weakref

    from zmqapp.testing import AppThread

    app = App("receivers")
    app.config["SHUTDOWN_TIMEOUT"] = 0.2
    app.add_channel("out", endpoint="@inproc://receivers", type="PUSH")
    before = len(signals.app_started.receivers)
    refs = []
    for _ in range(5):
        runner = AppThread(app)
        refs.append(weakref.ref(runner))
        with runner:
            pass
        del runner
    gc.collect()
    assert len(signals.app_started.receivers) == before
    assert not any(ref() is not None for ref in refs)
