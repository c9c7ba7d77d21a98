"""``heartbeat=SECONDS``: the ZMTP heartbeat options, and that libzmq takes them as given."""

from __future__ import annotations

import math
from typing import Any

import pytest
import zmq

from zmqapp import SetupError
from zmqapp.heartbeat import heartbeat_options


def test_one_interval_gives_every_option_in_milliseconds() -> None:
    assert heartbeat_options(0.2) == {
        zmq.HEARTBEAT_IVL: 200,
        zmq.HEARTBEAT_TIMEOUT: 600,
        zmq.HEARTBEAT_TTL: 600,
        zmq.TCP_MAXRT: 600,
        zmq.CONNECT_TIMEOUT: 600,
    }
    assert heartbeat_options(2)[zmq.HEARTBEAT_TIMEOUT] == 6000


def test_the_ttl_is_rounded_up_to_the_tenth_of_a_second_the_wire_carries() -> None:
    options = heartbeat_options(0.15)
    assert options[zmq.HEARTBEAT_TIMEOUT] == 450
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
