"""One-way flows: PUSH producers into PULL consumers, a PUB producer into SUB consumers.

Producers. A PULL consumer's producer is *preloaded*: it connects before its consumer has
bound, with no send high-water mark, and queues every message in its own process; only then
does the consumer bind. From the first message on, the producer side is libzmq's I/O thread
alone, which delivers several million small messages a second (see :func:`ceiling`), so the
table measures the consumer, not the producer. A publisher cannot be preloaded (it drops
what no subscription has asked for yet), so a SUB consumer is fed by a :func:`relay`: an
XPUB that waits for the subscription, then moves a preloaded producer's messages across in
libzmq's proxy, again without Python per message.

Consumers count messages and time them from the first to the last; each also reports how far
its peak RSS rose over that time (:class:`procs.PeakGrowth`). The zmqapp consumers use the
public API only: ``App``, ``@app.channel``, ``@app.handler``, ``app.stop()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from procs import PeakGrowth, report, wait_released

clock = time.perf_counter
cpu_clock = time.thread_time  # this thread's CPU time: what the consumer itself spent

PAYLOAD = b"x" * 64
FRAMES_4 = [b"x" * 16] * 4
# A 64-byte JSON object: what a small typed body looks like on the wire.
READING = b'{"id":123456,"sensor":"boiler-7","celsius":21.5,"ok":true,"n":7}'
assert len(READING) == 64, len(READING)
START, END = b"START", b"END"
NUMBERED = struct.Struct("!I12x")  # the memory flood: a 4-byte sequence number, 16 bytes


@dataclasses.dataclass
class Reading:
    """The typed body of the typed-body case."""

    id: int
    sensor: str
    celsius: float
    ok: bool
    n: int


# -- producers ---------------------------------------------------------------------------------


def _pusher(endpoint: str) -> tuple[zmq.Context[Any], zmq.Socket[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 0)  # queue every message here, however many
    sock.setsockopt(zmq.RECONNECT_IVL, 20)  # find the consumer soon after it binds
    sock.connect(endpoint)
    return ctx, sock


def _send_all(sock: zmq.Socket[Any], count: int, frames: list[bytes]) -> float:
    """Send ``count`` copies of the message ``frames``; returns the send loop's rate."""
    send = sock.send
    start = clock()
    if len(frames) == 1:
        frame = frames[0]
        for _ in range(count):
            send(frame)
    else:
        # A loop of send(frame, SNDMORE) is about 1.5x send_multipart for small frames.
        head, last, more = frames[:-1], frames[-1], int(zmq.SNDMORE)
        for _ in range(count):
            for frame in head:
                send(frame, more)
            send(last)
    return count / (clock() - start)


def preload(endpoint: str, count: int, frames: list[bytes], markers: bool = False) -> None:
    """Queue ``count`` messages for a consumer that will bind ``endpoint`` later.

    Reports the preload's send rate once everything is queued, then keeps the socket open
    until released. With ``markers``, a START message comes first and an END message last
    (for :func:`ceiling`)."""
    ctx, sock = _pusher(endpoint)
    if markers:
        sock.send(START)
    rate = _send_all(sock, count, frames)
    if markers:
        sock.send(END)
    report(rate)
    wait_released()
    sock.close(linger=0)
    ctx.term()


def preload_numbered(endpoint: str, count: int) -> None:
    """:func:`preload` for the memory flood: numbered 16-byte messages, then END."""
    ctx, sock = _pusher(endpoint)
    send, pack = sock.send, NUMBERED.pack
    start = clock()
    for i in range(count):
        send(pack(i))
    rate = count / (clock() - start)
    sock.send(END)
    report(rate)
    wait_released()
    sock.close(linger=0)
    ctx.term()


def relay(front: str, back: str) -> None:
    """The publisher of the SUB case: an XPUB bound at ``back`` that, once a subscription has
    arrived, binds ``front``, where a preloaded producer waits, and moves its messages across
    in libzmq's proxy (C, no Python per message) until released.

    A publisher cannot be preloaded itself: it drops whatever no subscription has asked for
    yet. With no high-water mark it drops nothing after that either."""
    ctx: zmq.Context[Any] = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(back)
    report("bound")
    pub.recv()  # the subscriber's subscription: from here on nothing is dropped
    pull = ctx.socket(zmq.PULL)
    pull.bind(front)
    stop = start_proxy(ctx, pull, pub)
    wait_released()
    stop()
    ctx.destroy(linger=0)


def start_proxy(
    ctx: zmq.Context[Any], front: zmq.Socket[Any], back: zmq.Socket[Any]
) -> Callable[[], None]:
    """Run libzmq's proxy from ``front`` to ``back`` in a thread; returns what stops it."""
    control_in, control_out = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    address = f"inproc://proxy-control-{id(front)}"
    control_in.bind(address)
    control_out.connect(address)

    def run() -> None:
        try:
            zmq.proxy_steerable(front, back, None, control_in)
        except zmq.ZMQError:
            pass  # a subscriber left: its unsubscription cannot go back to a PULL socket

    thread = threading.Thread(target=run)
    thread.start()

    def stop() -> None:
        control_out.send(b"TERMINATE")
        thread.join(5)

    return stop


def ceiling(endpoint: str, count: int, sub: bool = False) -> float:
    """The producer alone: how fast a preloaded producer (through the relay, with ``sub``)
    delivers into a consumer process that does no Python work per message.

    libzmq's proxy (C, without the GIL) moves every message from a PULL socket (or a SUB
    socket connected to the relay) to a PUB socket that drops them, except the START and END
    markers, which a SUB socket here waits for. Messages per second between the two markers
    is the rate the producer side can sustain; every consumer should be well below it."""
    ctx: zmq.Context[Any] = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind("inproc://sink")
    markers = ctx.socket(zmq.SUB)
    markers.setsockopt(zmq.RCVHWM, 0)
    markers.subscribe(START)
    markers.subscribe(END)
    markers.connect("inproc://sink")
    time.sleep(0.05)  # let the subscriptions reach the PUB socket before anything is sent
    if sub:
        front = ctx.socket(zmq.SUB)
        front.subscribe(b"")
        front.connect(endpoint)
    else:
        front = ctx.socket(zmq.PULL)
        front.bind(endpoint)
    stop = start_proxy(ctx, front, pub)
    markers.recv()
    start = clock()
    markers.recv()
    elapsed = clock() - start
    stop()
    ctx.destroy(linger=0)
    return count / elapsed


# -- counting ----------------------------------------------------------------------------------


class Tally:
    """First-to-last timing and peak-RSS growth of a consumer handed one message at a time."""

    def __init__(self, count: int, on_last: Callable[[], None] = lambda: None) -> None:
        self.count = count
        self.on_last = on_last
        self.memory = PeakGrowth()
        self.start = self.elapsed = self.cpu_start = self.cpu = 0.0
        self.rss_mb = 0.0

    def first(self) -> None:
        self.memory.start()
        self.cpu_start = cpu_clock()
        self.start = clock()

    def last(self) -> None:
        self.elapsed = clock() - self.start
        self.cpu = cpu_clock() - self.cpu_start
        self.rss_mb = self.memory.growth_mb()
        self.on_last()

    def result(self) -> dict[str, Any]:
        return _result(self.count, self.elapsed, self.cpu, self.rss_mb)


def _result(count: int, elapsed: float, cpu: float, rss_mb: float) -> dict[str, Any]:
    """Messages per second (first to last), the consuming thread's CPU µs per message, and
    the peak RSS growth in MB."""
    return {"rate": (count - 1) / elapsed, "cpu_us": cpu / (count - 1) * 1e6, "rss_mb": rss_mb}


def counter(tally: Tally, body_type: Any = Any) -> Callable[[Any], None]:
    """A handler that counts: what every callback-driven consumer does per message (the raw
    loop only counts iterations, as a hand-written loop would). Its body parameter is
    annotated ``body_type``: a :class:`Reading` asks zmqapp for a checked, typed body."""
    n = 0
    first, last, count = tally.first, tally.last, tally.count

    def handle(body: Any) -> None:
        nonlocal n
        n += 1
        if n == 1:
            first()
        elif n == count:
            last()

    handle.__annotations__["body"] = body_type
    return handle


# -- raw pyzmq ---------------------------------------------------------------------------------


def raw_loop(endpoint: str, count: int, decode: str = "none", sub: bool = False) -> dict[str, Any]:
    """The hand-written blocking loop: ``recv_multipart`` (and, for the JSON cases,
    ``json.loads`` of the frame, and building the dataclass)."""
    ctx: zmq.Context[Any] = zmq.Context()
    if sub:
        sock = ctx.socket(zmq.SUB)
        sock.subscribe(b"")
        sock.connect(endpoint)
    else:
        sock = ctx.socket(zmq.PULL)
        sock.bind(endpoint)
    recv, loads, tally = sock.recv_multipart, json.loads, Tally(count)
    if decode == "json":
        loads(recv()[0])
        tally.first()
        for _ in range(count - 1):
            loads(recv()[0])
    elif decode == "dataclass":
        Reading(**loads(recv()[0]))
        tally.first()
        for _ in range(count - 1):
            Reading(**loads(recv()[0]))
    else:
        recv()
        tally.first()
        for _ in range(count - 1):
            recv()
    tally.last()
    sock.close(linger=0)
    ctx.term()
    return tally.result()


# -- event-loop peers --------------------------------------------------------------------------


def zmqstream_loop(endpoint: str, count: int) -> dict[str, Any]:
    """pyzmq's ``ZMQStream.on_recv`` on Tornado's (asyncio) loop."""
    from zmq.eventloop.zmqstream import ZMQStream

    async def main() -> dict[str, Any]:
        done = asyncio.get_running_loop().create_future()
        tally = Tally(count, lambda: done.set_result(None))
        ctx: zmq.Context[Any] = zmq.Context()
        sock = ctx.socket(zmq.PULL)
        sock.bind(endpoint)
        stream = ZMQStream(sock)
        stream.on_recv(counter(tally))
        await done
        stream.close(linger=0)
        ctx.term()
        return tally.result()

    return asyncio.run(main())


def asyncio_loop(endpoint: str, count: int) -> dict[str, Any]:
    """pyzmq's ``zmq.asyncio``: ``await sock.recv_multipart()`` in a loop."""
    import zmq.asyncio

    async def main() -> dict[str, Any]:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.PULL)
        sock.bind(endpoint)
        tally = Tally(count)
        handle = counter(tally)
        for _ in range(count):
            handle(await sock.recv_multipart())
        sock.close(linger=0)
        ctx.term()
        return tally.result()

    return asyncio.run(main())


def aiozmq_loop(endpoint: str, count: int) -> dict[str, Any]:
    """aiozmq's low-level API (a transport and ``ZmqProtocol.msg_received``), its fastest."""
    import aiozmq

    async def main() -> dict[str, Any]:
        done = asyncio.get_running_loop().create_future()
        tally = Tally(count, lambda: done.set_result(None))
        handle = counter(tally)

        class Counting(aiozmq.ZmqProtocol):  # type: ignore[misc]
            def msg_received(self, data: list[bytes]) -> None:
                handle(data)

        transport, _ = await aiozmq.create_zmq_connection(Counting, zmq.PULL, bind=endpoint)
        await done
        transport.close()
        return tally.result()

    return asyncio.run(main())


# -- zmqapp ------------------------------------------------------------------------------------


def zmqapp_consumer(
    endpoint: str,
    count: int,
    codec: str = "raw",
    typed: bool = False,
    sub: bool = False,
    handlers: int = 1,
    without_pydantic: bool = False,
    http: bool = False,
) -> dict[str, Any]:
    """A zmqapp app with one PULL channel (or a SUB channel connecting to ``endpoint``) and
    ``handlers`` handlers: the first counts, the others do nothing.

    ``without_pydantic`` makes pydantic unimportable in this process, as on an install
    without it, so typed bodies go through zmqapp's own checks. ``http`` serves the HTTP side
    (on a port the OS picks), which keeps the processing-time histogram and peer counts."""
    if without_pydantic:
        sys.modules["pydantic"] = None  # type: ignore[assignment]
    from zmqapp import App

    app = App("bench-consumer")
    if http:
        app.config["HTTP"] = "127.0.0.1:0"
    tally = Tally(count, app.stop)
    handle = counter(tally, Reading if typed else Any)
    if sub:
        app.channel("feed", endpoint=">" + endpoint, type="SUB", codec=codec)(handle)
    else:
        app.channel("feed", endpoint="@" + endpoint, type="PULL", codec=codec)(handle)
    for _ in range(handlers - 1):
        app.handler("feed")(_nothing())
    app.run(install_signal_handlers=False)
    return tally.result()


def _nothing() -> Callable[[Any], None]:
    def extra_handler(body: Any) -> None:
        return None

    return extra_handler


# -- memory: a flood of numbered messages ------------------------------------------------------


def _flood_result(seen: bytearray, tally: Tally) -> dict[str, Any]:
    result = tally.result()
    result["lost"] = seen.count(0)
    result["duplicates"] = sum(1 for n in seen if n > 1)
    return result


def raw_flood(endpoint: str, count: int) -> dict[str, Any]:
    """The raw loop over the numbered flood, checking every number arrives once."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.bind(endpoint)
    seen = bytearray(count)
    recv, unpack = sock.recv_multipart, NUMBERED.unpack
    tally = Tally(count)
    body = recv()[0]
    tally.first()
    while body != END:
        (i,) = unpack(body)
        seen[i] += 1
        body = recv()[0]
    tally.last()
    sock.close(linger=0)
    ctx.term()
    return _flood_result(seen, tally)


def zmqapp_flood(endpoint: str, count: int, concurrency: int = 0) -> dict[str, Any]:
    """A zmqapp PULL channel over the numbered flood: a plain handler, or (``concurrency``
    > 0) a coroutine handler with that many in flight."""
    from zmqapp import App

    app = App("bench-flood")
    app.config.update(SHUTDOWN_TIMEOUT=30.0)
    seen = bytearray(count)
    unpack = NUMBERED.unpack
    tally = Tally(count, app.stop)
    started = False

    def handle(body: bytes) -> None:
        nonlocal started
        if not started:
            started = True
            tally.first()
        if body == END:
            tally.last()
            return
        (i,) = unpack(body)
        seen[i] += 1

    if concurrency:

        async def handle_async(body: bytes) -> None:
            handle(body)

        app.channel("flood", endpoint="@" + endpoint, type="PULL", concurrency=concurrency)(
            handle_async
        )
    else:
        app.channel("flood", endpoint="@" + endpoint, type="PULL")(handle)
    app.run(install_signal_handlers=False)
    return _flood_result(seen, tally)
