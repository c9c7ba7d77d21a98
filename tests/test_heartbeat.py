"""``heartbeat=SECONDS``: the ZMTP heartbeat options, and that libzmq takes them as given."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from zmqapp import SetupError
from zmqapp.heartbeat import heartbeat_options


def test_one_interval_gives_every_option_in_milliseconds() -> None:
    assert heartbeat_options(0.2) == {
        zmq.HEARTBEAT_IVL: 200,
        zmq.HEARTBEAT_TIMEOUT: 400,
        zmq.HEARTBEAT_TTL: 600,
        zmq.CONNECT_TIMEOUT: 600,
    }
    assert heartbeat_options(2)[zmq.HEARTBEAT_TIMEOUT] == 4000


def test_the_ttl_is_rounded_up_to_the_tenth_of_a_second_the_wire_carries() -> None:
    options = heartbeat_options(0.15)
    assert options[zmq.CONNECT_TIMEOUT] == 450
    assert options[zmq.HEARTBEAT_TTL] == 500


@pytest.mark.parametrize("off", [None, 0, 0.0])
def test_none_or_zero_is_off(off: float | None) -> None:
    assert heartbeat_options(off) == {}


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, True, "1"])
def test_a_bad_interval_is_a_setup_error(bad: Any) -> None:
    with pytest.raises(SetupError, match="give the interval between heartbeats"):
        heartbeat_options(bad)


def test_an_interval_beyond_what_the_ttl_can_carry_is_a_setup_error() -> None:
    assert heartbeat_options(2184)[zmq.HEARTBEAT_TTL] == 6552000
    with pytest.raises(SetupError, match="use a shorter interval"):
        heartbeat_options(2185)


def test_libzmq_takes_every_option(ctx: zmq.Context[Any]) -> None:
    sock = ctx.socket(zmq.DEALER)
    try:
        for option, value in heartbeat_options(0.25).items():
            sock.setsockopt(option, value)
            assert sock.getsockopt(option) == value
    finally:
        sock.close(linger=0)


@pytest.mark.timeout(10)
def test_a_peer_that_stops_reading_is_dropped_like_a_dead_one(ctx: zmq.Context[Any]) -> None:
    """What heartbeats cannot do, kept here so that nothing is built on it: libzmq stops
    reading a connection once the application is RCVHWM messages behind, the PINGs on it go
    unanswered, and the sender drops it, losing what its TCP buffers held."""
    options = heartbeat_options(0.1)
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    for sock in (pull, push):
        sock.linger = 0
        for option, value in options.items():
            sock.setsockopt(option, value)
    pull.rcvhwm = push.sndhwm = 10
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    monitor = push.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    try:
        push.connect(f"tcp://127.0.0.1:{port}")
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        sent, body = 0, bytes(100_000)
        started = time.monotonic()
        # The sender keeps offering work, as a producer does; the reader never reads.
        while not monitor.poll(0) and time.monotonic() - started < 3:
            try:
                push.send(body, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                time.sleep(0.001)
        assert monitor.poll(0), "the sender kept a peer that stopped reading for 3 s"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        took = time.monotonic() - started
        received = 0
        while pull.poll(500):
            pull.recv()
            received += 1
        print(f"dropped {took * 1000:.0f} ms after sending began; {sent - received} lost")
    finally:
        push.disable_monitor()
        for sock in (monitor, push, pull):
            sock.close(linger=0)
