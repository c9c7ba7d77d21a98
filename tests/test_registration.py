from __future__ import annotations

import pytest
import zmq

from zmqapp import App, SetupError
from zmqapp.channel import Endpoint, parse_endpoints


def test_decorator_returns_function_unchanged(app: App) -> None:
    def work(body: bytes) -> None: ...

    assert app.channel("tasks", endpoint="tcp://localhost:5557", type=zmq.PULL)(work) is work
    channel = app.channels["tasks"]
    assert channel.socket_type == zmq.PULL
    assert [h.fn for h in channel.handlers] == [work]


@pytest.mark.parametrize("spec", [zmq.PULL, "PULL", "pull", "Pull", " pull "])
def test_type_by_constant_or_name_any_case(app: App, spec: object) -> None:
    channel = app.add_channel("c", endpoint="tcp://localhost:1", type=spec)  # type: ignore[arg-type]
    assert channel.socket_type == zmq.PULL
    assert channel.type_name == "PULL"


def test_every_classic_type_is_accepted(app: App) -> None:
    names = ["PAIR", "PUB", "SUB", "REQ", "REP", "DEALER", "ROUTER", "PULL", "PUSH", "XPUB", "XSUB"]
    for name in names:
        app.add_channel(name.lower(), endpoint="inproc://x", type=name)
    assert {c.type_name for c in app.channels.values()} == set(names)


def test_unknown_type_is_a_clear_error(app: App) -> None:
    with pytest.raises(SetupError, match="'PULLL' is not a socket type zmqapp knows; use one of"):
        app.add_channel("c", endpoint="tcp://localhost:1", type="PULLL")


def test_missing_type_is_a_clear_error(app: App) -> None:
    with pytest.raises(SetupError, match=r"needs a socket type, e\.g\. type=zmq\.PULL"):
        app.add_channel("c", endpoint="tcp://localhost:1")


def test_subscribe_on_non_sub_is_an_error(app: App) -> None:
    with pytest.raises(SetupError, match="only SUB and XSUB channels take subscribe="):
        app.add_channel("c", endpoint="tcp://localhost:1", type="PULL", subscribe="x")


def test_sub_defaults_to_everything_and_str_topics_are_utf8(app: App) -> None:
    everything = app.add_channel("all", endpoint="tcp://localhost:1", type="SUB")
    some = app.add_channel(
        "some", endpoint="tcp://localhost:1", type="SUB", subscribe=["é", b"\x01"]
    )
    assert everything.subscribe == [b""]
    assert some.subscribe == ["é".encode(), b"\x01"]


def test_duplicate_channel_name(app: App) -> None:
    app.add_channel("c", endpoint="tcp://localhost:1", type="PUSH")
    with pytest.raises(SetupError, match=r"already declared.*@app.handler\('c'\)"):
        app.add_channel("c", endpoint="tcp://localhost:2", type="PUSH")


def test_unfillable_parameter(app: App) -> None:
    def handler(body: bytes, database: object) -> None: ...

    with pytest.raises(SetupError, match="parameter 'database' that zmqapp cannot fill"):
        app.channel("c", endpoint="tcp://localhost:1", type="PULL")(handler)
    assert "c" not in app.channels


def test_parameter_with_default_is_left_alone(app: App) -> None:
    def handler(body: bytes, retries: int = 3) -> None: ...

    app.channel("c", endpoint="tcp://localhost:1", type="PULL")(handler)
    assert app.channels["c"].handlers[0].inject == ()


def test_parameter_the_socket_type_never_fills(app: App) -> None:
    def handler(body: bytes, topic: bytes) -> None: ...

    with pytest.raises(SetupError, match="asks for 'topic', but channel 'c' is a PULL socket"):
        app.channel("c", endpoint="tcp://localhost:1", type="PULL")(handler)


def test_handler_on_send_only_type(app: App) -> None:
    with pytest.raises(SetupError, match="is a PUSH socket, which only sends"):
        app.channel("c", endpoint="tcp://localhost:1", type="PUSH")(lambda body: None)


def test_send_to_must_name_a_sending_type(app: App) -> None:
    app.add_channel("in", endpoint="tcp://localhost:2", type="PULL")
    with pytest.raises(SetupError, match="send_to must name a"):
        app.channel("c", endpoint="tcp://localhost:1", type="PULL", send_to="in")(lambda b: b)


def test_send_to_declared_later_is_checked_when_declared(app: App) -> None:
    app.channel("c", endpoint="tcp://localhost:1", type="PULL", send_to="out")(lambda b: b)
    with pytest.raises(SetupError, match="cannot send them on"):
        app.add_channel("out", endpoint="tcp://localhost:2", type="SUB")


def test_send_to_naming_no_channel_fails_at_start(app: App) -> None:
    app.channel("c", endpoint="tcp://127.0.0.1:1", type="PULL", send_to="nowhere")(lambda b: b)
    with pytest.raises(SetupError, match="send_to='nowhere', but there is no channel of that name"):
        app.run(install_signal_handlers=False)
    assert not app.running


def test_send_to_on_replying_type(app: App) -> None:
    with pytest.raises(SetupError, match="return values are replies; remove send_to"):
        app.add_channel("c", endpoint="tcp://localhost:1", type="REP", send_to="x")


def test_concurrency_on_rep(app: App) -> None:
    with pytest.raises(SetupError, match="use type='ROUTER' to serve requests concurrently"):
        app.add_channel("c", endpoint="tcp://localhost:1", type="REP", concurrency=4)


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_concurrency_must_be_positive_int(app: App, value: object) -> None:
    with pytest.raises(SetupError, match="concurrency must be a whole number"):
        app.add_channel("c", endpoint="tcp://localhost:1", type="PULL", concurrency=value)


def test_unknown_option(app: App) -> None:
    with pytest.raises(SetupError, match="has no option 'endpoints'; channel options are"):
        app.add_channel("c", endpoints="tcp://localhost:1", type="PULL")


def test_socket_options_by_name_or_constant(app: App) -> None:
    channel = app.add_channel(
        "c", endpoint="tcp://localhost:1", type="PUSH", options={"sndhwm": 5, zmq.RCVHWM: 7}
    )
    assert channel.options == {zmq.SNDHWM: 5, zmq.RCVHWM: 7}
    with pytest.raises(SetupError, match="'sndhvm' is not a ZeroMQ socket option"):
        app.add_channel("d", endpoint="tcp://localhost:1", type="PUSH", options={"sndhvm": 5})


def test_handler_decorator_adds_to_existing_channel(app: App) -> None:
    @app.channel("c", endpoint="tcp://localhost:1", type="PULL")
    def first(body: bytes) -> None: ...

    @app.handler("c")
    def second(body: bytes) -> None: ...

    assert [h.fn for h in app.channels["c"].handlers] == [first, second]
    with pytest.raises(SetupError, match="has no channel named 'nope'"):
        app.handler("nope")(second)


def test_endpoint_rules() -> None:
    assert parse_endpoints("@tcp://127.0.0.1:5", None) == [Endpoint("tcp://127.0.0.1:5", True)]
    assert parse_endpoints(">tcp://*:5", None) == [Endpoint("tcp://*:5", False)]
    assert parse_endpoints("tcp://*:5", None) == [Endpoint("tcp://*:5", True)]
    assert parse_endpoints("tcp://0.0.0.0:5", None) == [Endpoint("tcp://0.0.0.0:5", True)]
    assert parse_endpoints("tcp://localhost:5", None) == [Endpoint("tcp://localhost:5", False)]
    assert parse_endpoints("tcp://127.0.0.1:*", None) == [Endpoint("tcp://127.0.0.1:*", True)]
    assert parse_endpoints("tcp://localhost:5", True) == [Endpoint("tcp://localhost:5", True)]
    assert parse_endpoints("tcp://*:5", False) == [Endpoint("tcp://*:5", False)]
    assert parse_endpoints("@tcp://*:5", False) == [Endpoint("tcp://*:5", True)]
    assert parse_endpoints(["ipc:///tmp/a", ">inproc://b"], True) == [
        Endpoint("ipc:///tmp/a", True),
        Endpoint("inproc://b", False),
    ]
    assert parse_endpoints("@tcp://*:1,>tcp://h:2", None) == [
        Endpoint("tcp://*:1", True),
        Endpoint("tcp://h:2", False),
    ]
    with pytest.raises(SetupError, match="has no transport"):
        parse_endpoints("localhost:5", None)


def test_bind_must_be_bool(app: App) -> None:
    with pytest.raises(SetupError, match="bind must be True or False"):
        app.add_channel("c", endpoint="tcp://localhost:1", type="PULL", bind="yes")


def test_timer_needs_positive_interval(app: App) -> None:
    with pytest.raises(SetupError, match="positive number of seconds"):
        app.timer(0)
    with pytest.raises(SetupError, match="positive number of seconds"):
        app.add_timer(0, lambda: None)  # the plain method checks too, not only the decorator
    with pytest.raises(SetupError, match="positive number of seconds"):
        app.add_timer(True, lambda: None)
    assert app.timers == []


def test_a_failed_declaration_leaves_no_trace(app: App) -> None:
    app.add_channel("a", endpoint="inproc://a", type="PULL", send_to="b", handler=lambda b: b)
    with pytest.raises(SetupError, match="send_to must name a"):
        app.add_channel("b", endpoint="inproc://b", type="PULL")  # cannot send a's results on
    assert "b" not in app.channels
    app.add_channel("b", endpoint="inproc://b", type="PUSH")  # the corrected one is accepted
    assert app.channels["b"].type_name == "PUSH"


def test_threaded_from_config_is_checked_and_does_not_stick(app: App) -> None:
    import threading

    threads: list[int] = []

    @app.channel("work", endpoint="@inproc://threaded-config", type="PULL")
    def work(body: bytes) -> None:
        threads.append(threading.get_ident())

    async def later(body: bytes) -> None: ...

    app.config["CHANNELS"] = {"work": {"threaded": "yes"}}
    with pytest.raises(SetupError, match="threaded must be True or False, not 'yes'"):
        app.apply_config()
    app.config["CHANNELS"] = {"work": {"threaded": True}}
    app.apply_config()
    assert app.channels["work"].runs_in_thread(app.channels["work"].handlers[0])
    app.config["CHANNELS"] = {}
    app.apply_config()
    assert not app.channels["work"].runs_in_thread(app.channels["work"].handlers[0])
    # A coroutine handler on a threaded channel is refused alike, declared or from config.
    other = App("other")
    other.add_channel("c", endpoint="inproc://c", type="PULL", handler=later)
    other.config["CHANNELS"] = {"c": {"threaded": True}}
    with pytest.raises(SetupError, match=r"threaded=True\), but handler .*later is a coroutine"):
        other.apply_config()
    with pytest.raises(SetupError, match=r"threaded=True\), but handler .*later is a coroutine"):
        other.add_channel("d", endpoint="inproc://d", type="PULL", threaded=True, handler=later)


def test_sending_a_channel_signal_calls_its_handlers(app: App) -> None:
    from zmqapp import Message

    got: list[bytes] = []
    app.channel("c", endpoint="inproc://c", type="PULL")(got.append)
    channel = app.channels["c"]
    results = app.signal("c").send(app, message=Message(channel, [b"hi"], b"hi"))
    assert got == [b"hi"]
    assert len(results) == 1


def test_setup_methods_fail_once_running(app: App, running: object) -> None:
    app.add_channel("c", endpoint="@inproc://setup-guard", type="PULL", handler=lambda b: None)
    running(app)  # type: ignore[operator]
    message = (
        "The setup method 'add_channel' can no longer be called on app 'test_app': it is "
        "already running. Declare channels, handlers, hooks and timers before the app starts"
    )
    with pytest.raises(SetupError, match=message):
        app.add_channel("d", endpoint="inproc://x", type="PUSH")
    with pytest.raises(SetupError, match="'add_handler' can no longer be called"):
        app.handler("c")(lambda b: None)
    with pytest.raises(SetupError, match="'on_start' can no longer be called"):
        app.on_start(lambda: None)
    with pytest.raises(SetupError, match="'add_timer' can no longer be called"):
        app.timer(1)(lambda: None)
