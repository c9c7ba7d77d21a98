"""The message model over real sockets: codecs, topics, envelopes, handler parameters, typed
bodies, and bad input that must never hurt the app."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, TypedDict

import msgpack
import pydantic
import pytest
import zmq

from zmqapp import App, Message, Multipart, SetupError, signals
from zmqapp.channel import Channel
from zmqapp.codecs import get_codec
from zmqapp.message import parse_error_reply
from zmqapp.testing import wait_for

TCP = "@tcp://127.0.0.1:*"


class B64Codec:
    """A user codec: any object with encode and decode."""

    def encode(self, obj: Any) -> bytes:
        return base64.b64encode(str(obj).encode())

    def decode(self, data: bytes) -> str:
        return base64.b64decode(data, validate=True).decode()


CODECS: dict[str, tuple[Any, Any, bytes]] = {
    # codec -> (a value, the same value decoded back, its frame)
    "raw": ("raw", b"\x00\xff", b"\x00\xff"),
    "utf8": ("utf8", "héllo", "héllo".encode()),
    "json": ("json", {"a": [1, 2.5, None], "b": "é"}, b'{"a":[1,2.5,null],"b":"\xc3\xa9"}'),
    "msgpack": ("msgpack", {"a": [1, 2.5, None]}, msgpack.packb({"a": [1, 2.5, None]})),
    "custom": (B64Codec(), "user codec", base64.b64encode(b"user codec")),
}


@pytest.mark.parametrize("name", list(CODECS))
def test_codec_round_trip(name: str, app: App, running: Any, peer: Any) -> None:
    codec, value, frame = CODECS[name]
    received: list[Any] = []

    @app.channel("in", endpoint=TCP, type="PULL", codec=codec, send_to="out")
    def forward(body: Any) -> Any:
        received.append(body)
        return body

    app.add_channel("out", endpoint=TCP, type="PUSH", codec=codec)
    app.channel("rep", endpoint=TCP, type="REP", codec=codec)(lambda body: body)
    app.add_channel("sent", endpoint=TCP, type="PUSH", codec=codec)
    running(app)
    out = peer(zmq.PULL, connect=app.channels["out"].bound[0])
    peer(zmq.PUSH, connect=app.channels["in"].bound[0]).send(frame)
    assert out.recv() == frame  # decoded for the handler, encoded again by send_to
    assert received == [value]
    req = peer(zmq.REQ, connect=app.channels["rep"].bound[0])
    req.send(frame)
    assert req.recv() == frame  # decoded request, encoded reply
    sent = peer(zmq.PULL, connect=app.channels["sent"].bound[0])
    app.send("sent", value)
    assert sent.recv() == frame  # app.send encodes


def test_msgpack_maps_may_have_integer_keys() -> None:
    codec = get_codec("msgpack")
    assert codec.decode(msgpack.packb({1: "one", "two": {2: [3]}})) == {1: "one", "two": {2: [3]}}


def test_pickle_only_by_name(app: App) -> None:
    assert app.add_channel("default", endpoint="inproc://a", type="PULL").codec.name == "raw"
    pickled = app.add_channel("trusted", endpoint="inproc://b", type="PULL", codec="pickle")
    assert pickled.codec.decode(pickled.codec.encode({"x": 1})) == {"x": 1}
    with pytest.raises(SetupError, match="there is no codec named 'yaml'"):
        app.add_channel("bad", endpoint="inproc://c", type="PULL", codec="yaml")


def test_multiframe_bodies_are_lists_and_go_back_as_frames(
    app: App, running: Any, peer: Any
) -> None:
    bodies: list[Any] = []

    @app.channel("rep", endpoint=TCP, type="REP", codec="json")
    def echo(body: Any) -> Any:
        bodies.append(body)
        return body

    running(app)
    req = peer(zmq.REQ, connect=app.channels["rep"].bound[0])
    req.send_multipart([b"1", b'"two"', b"[3]"])
    assert req.recv_multipart() == [b"1", b'"two"', b"[3]"]
    assert bodies == [[1, "two", [3]]] and isinstance(bodies[0], Multipart)
    req.send(b"[1,2]")  # one frame holding a list stays one frame
    assert req.recv_multipart() == [b"[1,2]"]


def test_every_injectable_parameter(app: App, running: Any, peer: Any) -> None:
    seen: dict[str, Any] = {}

    @app.channel("router", endpoint=TCP, type="ROUTER", codec="utf8")
    def everything(
        body: str,
        identity: bytes,
        frames: list[bytes],
        channel: Channel,
        message: Message,
        user_id: str | None,
    ) -> str:
        seen.update(
            body=body, identity=identity, frames=frames, channel=channel, message=message,
            user_id=user_id,
        )  # fmt: skip
        return body.upper()

    topics: list[Any] = []

    @app.channel("sub", endpoint=TCP, type="SUB", codec="utf8")
    def with_topic(topic: bytes | None, body: str) -> None:  # order does not matter
        topics.append((topic, body))

    running(app)
    dealer = peer(zmq.DEALER, connect=app.channels["router"].bound[0])
    dealer.setsockopt(zmq.ROUTING_ID, b"peer-7")  # too late for connect; set a fresh one:
    dealer2 = peer(zmq.DEALER)
    dealer2.setsockopt(zmq.ROUTING_ID, b"peer-7")
    dealer2.connect(app.channels["router"].bound[0])
    dealer2.send_multipart([b"", b"hi"])
    assert dealer2.recv_multipart() == [b"", b"HI"]
    assert seen["body"] == "hi"
    assert seen["identity"] == b"peer-7"
    assert seen["frames"] == [b"peer-7", b"", b"hi"]
    assert seen["channel"] is app.channels["router"]
    assert seen["message"].envelope == [b"peer-7", b""] and seen["message"].body == "hi"
    assert seen["user_id"] is None  # no CURVE on this channel

    pub = peer(zmq.PUB, connect=app.channels["sub"].bound[0])

    def publish() -> bool:
        pub.send_multipart([b"weather", b"sunny"])
        return bool(topics)

    wait_for(publish, interval=0.01)
    assert topics[0] == (b"weather", "sunny")


@dataclasses.dataclass
class Order:
    item: str
    quantity: int
    notes: list[str] = dataclasses.field(default_factory=list)


class Point(TypedDict):
    x: float
    y: float


class User(pydantic.BaseModel):
    name: str
    age: int


@pytest.mark.parametrize("use_pydantic", [True, False])
def test_typed_bodies(
    use_pydantic: bool, app: App, running: Any, peer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not use_pydantic:
        monkeypatch.setitem(sys.modules, "pydantic", None)  # zmqapp's own checks
    got: list[Any] = []
    failures: list[BaseException] = []
    app.channel("orders", endpoint=TCP, type="PULL", codec="json")(lambda o: got.append(o))
    # Registered through real functions, so the annotations are read as users write them:

    def on_order(order: Order) -> None:
        got.append(order)

    def on_point(point: Point) -> None:
        got.append(point)

    app.channels.pop("orders")
    app.channel("orders", endpoint=TCP, type="PULL", codec="json")(on_order)
    app.channel("points", endpoint=TCP, type="PULL", codec="msgpack")(on_point)
    if use_pydantic:

        def on_user(user: User) -> str:
            got.append(user)
            return f"hello {user.name}"

        app.channel("users", endpoint=TCP, type="REP", codec="json")(on_user)

    def on_failure(sender: App, channel: Channel, frames: list[bytes], exception: Any) -> None:
        failures.append(exception)

    signals.decode_failed.connect(on_failure, sender=app)
    try:
        running(app)
        orders = peer(zmq.PUSH, connect=app.channels["orders"].bound[0])
        orders.send(b'{"item": "tea", "quantity": 2}')
        orders.send(b'{"item": "tea"}')  # missing quantity
        orders.send(b'{"item": "tea", "quantity": "many"}')  # wrong type
        orders.send(b"[1, 2]")  # not an object
        orders.send(b'{"item": "cake", "quantity": 1, "notes": ["x"]}')
        wait_for(lambda: len(got) == 2 and len(failures) == 3)
        assert got == [Order("tea", 2), Order("cake", 1, ["x"])]
        points = peer(zmq.PUSH, connect=app.channels["points"].bound[0])
        points.send(msgpack.packb({"x": 1.5, "y": 2}))
        points.send(msgpack.packb({"x": "left"}))
        wait_for(lambda: len(got) == 3 and len(failures) == 4)
        assert got[2] == {"x": 1.5, "y": 2.0}
        if use_pydantic:
            req = peer(zmq.REQ, connect=app.channels["users"].bound[0])
            req.send(b'{"name": "Ada", "age": 36}')
            assert req.recv() == b'"hello Ada"'
            req.send(b'{"name": "Ada", "age": "old"}')
            error = parse_error_reply([req.recv()])
            assert error is not None and error.kind == "decode_failed"
            assert got[3] == User(name="Ada", age=36)
    finally:
        signals.decode_failed.disconnect(on_failure, sender=app)
    assert all("does not fit" in str(f) for f in failures)
    assert app.channels["orders"].stats.decode_failed == 3


def test_typed_body_on_a_bytes_codec_is_a_registration_error(app: App) -> None:
    def on_order(order: Order) -> None: ...

    with pytest.raises(SetupError, match="takes its body as Order, but channel 'c' uses the raw"):
        app.channel("c", endpoint="inproc://c", type="PULL")(on_order)


# -- bad input ---------------------------------------------------------------------------------

BAD_FRAMES = {
    "json": [b"{not json", b"\xff\xfe", b""],
    "utf8": [b"\xff\xfe\xfd", b"ok\xc3"],
    "msgpack": [b"\xc1", b"\x92\x01"],  # a reserved byte; an array missing an item
}


@pytest.mark.parametrize("codec", list(BAD_FRAMES))
@pytest.mark.parametrize("kind", ["PULL", "SUB", "PAIR", "DEALER", "REP", "ROUTER"])
def test_undecodable_input_is_counted_signalled_and_survived(
    codec: str, kind: str, app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[Any] = []
    failures: list[tuple[Channel, list[bytes]]] = []
    peer_kind = {
        "PULL": zmq.PUSH, "SUB": zmq.PUB, "PAIR": zmq.PAIR, "DEALER": zmq.ROUTER,
        "REP": zmq.REQ, "ROUTER": zmq.DEALER,
    }[kind]  # fmt: skip
    other = None
    if kind == "DEALER":  # a DEALER channel connects to a ROUTER the test binds
        other = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*")
        endpoint = other.last_endpoint.decode()
    else:
        endpoint = TCP

    @app.channel("c", endpoint=endpoint, type=kind, codec=codec)
    def handle(body: Any) -> Any:
        handled.append(body)
        return "ok"

    if kind == "DEALER":  # say hello first, so the ROUTER peer learns the channel's identity
        app.on_start(lambda: app.send("c", "hi"))

    def on_failure(sender: App, channel: Channel, frames: list[bytes], exception: Any) -> None:
        failures.append((channel, frames))

    signals.decode_failed.connect(on_failure, sender=app)
    try:
        running(app)
        encode = {"json": json.dumps, "utf8": str, "msgpack": msgpack.packb}[codec]

        def frame_of(text: str) -> bytes:
            data = encode(text)
            return data.encode() if isinstance(data, str) else data

        if other is None:
            other = peer(peer_kind, connect=app.channels["c"].bound[0])
        send, recv = _conversation(kind, other)
        if kind == "SUB":  # wait until the subscription has reached the publisher
            wait_for(lambda: send(frame_of("warm-up")) or handled, interval=0.01)
        for frame in BAD_FRAMES[codec]:
            send(frame)
            if kind in ("REP", "ROUTER"):  # the peer gets an answer and never waits forever
                error = parse_error_reply(recv())
                assert error is not None and error.kind == "decode_failed"
        send(frame_of("fine"))
        wait_for(lambda: "fine" in handled)
        wait_for(lambda: len(failures) == len(BAD_FRAMES[codec]))
        assert set(handled) <= {"warm-up", "fine"} and handled.count("fine") == 1
    finally:
        signals.decode_failed.disconnect(on_failure, sender=app)
    assert all(channel.name == "c" for channel, _ in failures)
    assert app.channels["c"].stats.decode_failed == len(BAD_FRAMES[codec])
    logged = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(logged) == len(BAD_FRAMES[codec]) and all("'c'" in line for line in logged)


def _conversation(kind: str, other: zmq.Socket[Any]) -> tuple[Any, Any]:
    if kind == "DEALER":
        identity: list[bytes] = []

        def send_to_dealer(frame: bytes) -> None:
            if not identity:
                identity.append(other.recv_multipart()[0])  # the channel's hello
            other.send_multipart([identity[0], frame])

        return send_to_dealer, other.recv_multipart
    if kind == "ROUTER":
        return (lambda frame: other.send_multipart([b"", frame])), (
            lambda: other.recv_multipart()[1:]
        )
    return other.send, other.recv_multipart


def test_empty_frames_and_envelope_shapes(app: App, running: Any, peer: Any) -> None:
    bodies: list[Any] = []

    @app.channel("router", endpoint=TCP, type="ROUTER")
    def echo(body: Any, message: Message) -> Any:
        bodies.append((body, message.envelope))
        return body or b"empty"

    running(app)
    dealer = peer(zmq.DEALER, connect=app.channels["router"].bound[0])
    dealer.send(b"")  # one empty frame, no delimiter
    assert dealer.recv_multipart() == [b"empty"]
    dealer.send_multipart([b"", b""])  # a delimiter, then an empty body
    assert dealer.recv_multipart() == [b"", b"empty"]
    dealer.send_multipart([b"a", b"", b"b", b""])  # hops, delimiter, then two body frames
    assert dealer.recv_multipart() == [b"a", b"", b"b", b""]
    assert [b for b, _ in bodies] == [b"", b"", [b"b", b""]]


def test_maxmsgsize_protects_bound_channels(app: App, running: Any, peer: Any) -> None:
    got: list[bytes] = []
    sizes: dict[str, int] = {}
    app.config["MAXMSGSIZE"] = 1000
    app.channel("bound", endpoint=TCP, type="PULL")(got.append)
    probe = peer(zmq.PUSH, bind="tcp://127.0.0.1:*")
    app.channel("connected", endpoint=probe.last_endpoint.decode(), type="PULL")(got.append)
    app.channel("own", endpoint=TCP, type="PULL", maxmsgsize=50)(got.append)

    @app.on_start
    def read_sizes() -> None:
        for name in ("bound", "connected", "own"):
            sizes[name] = app.channels[name].socket.getsockopt(zmq.MAXMSGSIZE)  # type: ignore[union-attr]

    running(app)
    assert sizes == {"bound": 1000, "connected": -1, "own": 50}
    push = peer(zmq.PUSH, connect=app.channels["bound"].bound[0])
    push.send(b"x" * 5000)  # ZeroMQ drops the connection that sent it; the peer reconnects
    wait_for(lambda: push.send(b"small") or got, interval=0.05)
    assert got[0] == b"small" and all(len(m) <= 1000 for m in got)


def test_a_message_with_too_many_frames_or_bytes_is_dropped_and_counted(
    app: App, running: Any, peer: Any
) -> None:
    """MAXFRAMES limits the frames of a message and MAXMSGSIZE the sum of their sizes (ZeroMQ
    checks only each frame): such a message is a decode failure, and the app goes on."""
    got: list[Any] = []
    failures: list[BaseException] = []
    app.config.update(MAXFRAMES=100, MAXMSGSIZE=5000)
    app.channel("c", endpoint=TCP, type="PULL")(got.append)

    def on_failure(sender: App, exception: BaseException, **kwargs: Any) -> None:
        failures.append(exception)

    signals.decode_failed.connect(on_failure, sender=app)
    try:
        running(app)
        push = peer(zmq.PUSH, connect=app.channels["c"].bound[0])
        push.send_multipart([b""] * 10_000)  # too many frames
        push.send_multipart([b"x" * 1000] * 10)  # each frame fits, together they do not
        push.send_multipart([b"a", b"b"])
        wait_for(lambda: got)
    finally:
        signals.decode_failed.disconnect(on_failure, sender=app)
    assert got == [[b"a", b"b"]]
    assert app.channels["c"].stats.decode_failed == 2
    assert "10000 frames, more than MAXFRAMES (100)" in str(failures[0])
    assert "add up to 10000 bytes, more than MAXMSGSIZE (5000)" in str(failures[1])


def json_pull(app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture) -> Any:
    """Run ``app`` with a JSON PULL channel "c" that ignores its bodies, its warnings in
    ``caplog``; return a PUSH peer connected to it."""
    caplog.set_level(logging.WARNING)
    app.channel("c", endpoint=TCP, type="PULL", codec="json")(lambda body: None)
    running(app)
    return peer(zmq.PUSH, connect=app.channels["c"].bound[0])


def test_the_summary_of_a_flood_comes_without_another_message(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    push = json_pull(app, running, peer, caplog)
    for _ in range(30):
        push.send(b"{")
    wait_for(lambda: app.channels["c"].stats.decode_failed == 30)
    # Nothing else arrives; the summary is written when the one-second window closes.
    wait_for(
        lambda: any("20 more undecodable messages" in r.getMessage() for r in caplog.records),
        timeout=3,
    )


def test_decode_failures_name_the_peer_and_show_the_bytes(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    push = json_pull(app, running, peer, caplog)
    push.send(b"\xffnot json")
    wait_for(lambda: app.channels["c"].stats.decode_failed == 1)
    [line] = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert "from 127.0.0.1:" in line  # ZeroMQ's Peer-Address: the IP address
    assert "b'\\xffnot json'" in line


def test_typed_bodies_are_strict_with_and_without_pydantic() -> None:
    """One declaration, one behaviour: the same inputs are accepted and refused whether
    pydantic validates them (installed) or zmqapp does (not installed)."""
    code = """
import dataclasses, json, sys
from typing import Optional
if sys.argv[1] == "without":
    sys.modules["pydantic"] = None
from zmqapp import App

@dataclasses.dataclass
class Item:
    weight: float

@dataclasses.dataclass
class Order:
    item: str
    quantity: int
    pair: tuple = (0, 0)
    extra: Optional[Item] = None
    urgent: bool = False

app = App("typed")
results = []
def take(order: Order):
    results.append(order)
app.add_channel("orders", endpoint="inproc://orders", type="PULL", codec="json", handler=take)
inputs = [
    {"item": "tea", "quantity": 3},
    {"item": "tea", "quantity": "3"},
    {"item": "tea", "quantity": 3.0},
    {"item": "tea", "quantity": True},
    {"item": 5, "quantity": 3},
    {"item": "tea", "quantity": 3, "extra": {"weight": 2}},
    {"item": "tea", "quantity": 3, "extra": {"weight": "2"}},
    {"item": "tea", "quantity": 3, "urgent": 1},
    {"item": "tea", "quantity": 3, "unknown": 1},
    {"item": "tea"},
]
verdicts = []
with app.test_client(raise_errors=False) as client:
    for doc in inputs:
        before = len(results)
        client.send("orders", doc)
        verdicts.append("ok" if len(results) > before else "refused")
print(json.dumps(verdicts))
print(repr(results[-1]))
"""
    outputs = []
    for install in ("with", "without"):
        done = subprocess.run(
            [sys.executable, "-c", code, install], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines())
    with_pydantic, without = outputs
    assert with_pydantic == without
    verdicts = json.loads(with_pydantic[0])
    assert verdicts == [
        "ok", "refused", "refused", "refused", "refused",
        "ok", "refused", "refused", "ok", "refused",
    ]  # fmt: skip


def test_a_flood_of_bad_input_is_logged_briefly(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    push = json_pull(app, running, peer, caplog)
    for _ in range(200):
        push.send(b"{")
    wait_for(lambda: app.channels["c"].stats.decode_failed == 200)
    lines = [r.getMessage() for r in caplog.records if "'c'" in r.getMessage()]
    assert 1 <= len(lines) <= 11  # at most BURST lines per second, then a summary


def test_error_reply_json_is_parseable() -> None:
    from zmqapp.message import error_reply

    frame = error_reply("handler_failed", ValueError("boom"), "rep", detail=True)
    assert json.loads(frame[len(b"ZMQAPP-ERROR ") :]) == {
        "kind": "handler_failed", "error": "ValueError", "detail": "boom", "channel": "rep",
    }  # fmt: skip
    remote = parse_error_reply([frame])
    assert remote is not None and (remote.error, remote.detail) == ("ValueError", "boom")
    assert parse_error_reply([b"ordinary reply"]) is None


def test_a_typed_body_may_name_a_class_defined_after_its_handler(running: Any, peer: Any) -> None:
    """The body's check is built at the first message, once its module has run: a class
    the body type names further down the module is checked like any other."""
    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    try:
        import typed_forward
    finally:
        sys.path.pop(0)
    app = typed_forward.app
    running(app)
    push = peer(zmq.PUSH, connect=app.channels["orders"].bound[0])
    push.send(msgpack.packb({"item": "not an item", "quantity": "two"}))
    push.send(msgpack.packb({"item": {"sku": "B2"}, "quantity": 3}))
    wait_for(lambda: typed_forward.got)
    assert typed_forward.got == [typed_forward.Order(typed_forward.Item("B2"), 3)]
    assert app.channels["orders"].stats.decode_failed == 1
