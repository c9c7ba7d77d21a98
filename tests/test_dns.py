"""``tcp+dns://`` endpoints: a socket that follows every address of a DNS name.

A real DNS server on 127.0.0.1 (``dnsserver.py``) changes its answers while a PUSH socket,
driven by a :class:`~zmqapp.dns.DnsEndpoint` on an asyncio loop, sends numbered messages to
real PULL peers bound on the same port of 127.0.0.2, 127.0.0.3 and 127.0.0.4. Every message
is counted: sent, received by each peer, lost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import struct
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import zmq
import zmq.asyncio
from dnsserver import DnsServer

from zmqapp import SetupError
from zmqapp.dns import SOCKET_OPTIONS, DnsEndpoint, parse_dns_endpoint, parse_nameservers

NAME = "svc.test"
REFRESH = 0.2
PEERS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
def dns_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="zmqapp.dns")
    return caplog


def run(scenario: Coroutine[Any, Any, None], timeout: float = 10.0) -> None:
    """Run one scenario on a fresh loop, failing it after ``timeout`` seconds."""
    asyncio.run(asyncio.wait_for(scenario, timeout))


async def wait_until(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Wait for ``condition`` with a deadline; return how long it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.002)
    return time.monotonic() - start


class Rig:
    """A PUSH socket that a DnsEndpoint keeps connected, numbered messages sent on it at a
    steady pace, and PULL peers bound on one port of several loopback addresses."""

    def __init__(self, server: DnsServer, peers: tuple[str, ...] = PEERS) -> None:
        self.server = server
        self.context: zmq.Context[Any] = zmq.Context()
        self.async_context = zmq.asyncio.Context.shadow(self.context.underlying)
        self.push = self.context.socket(zmq.PUSH)
        self.push.linger = 2000
        for option, value in SOCKET_OPTIONS.items():
            self.push.setsockopt(option, value)
        self.pulls: dict[str, zmq.asyncio.Socket] = {}
        self.port = self._bind(peers)
        #: seq -> the time it was sent
        self.sent: list[float] = []
        #: peer -> seqs it received, in order
        self.received: dict[str, list[int]] = {ip: [] for ip in peers}
        #: (time, "connect" | "disconnect", address, seq of the last message sent before)
        self.calls: list[tuple[float, str, str, int]] = []
        self.changes: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sending = True

    def _bind(self, peers: tuple[str, ...]) -> int:
        """Bind a PULL on each peer address, all on one port the OS chose for the first."""
        for _ in range(20):
            socks = [self.async_context.socket(zmq.PULL) for _ in peers]
            try:
                socks[0].setsockopt(zmq.IPV6, 1)
                socks[0].bind(f"tcp://{bracket(peers[0])}:*")
                port = int(socks[0].last_endpoint.rsplit(b":", 1)[1])
                for ip, sock in zip(peers[1:], socks[1:], strict=True):
                    sock.setsockopt(zmq.IPV6, 1)
                    sock.bind(f"tcp://{bracket(ip)}:{port}")
            except zmq.ZMQError as exc:
                for sock in socks:
                    sock.close(linger=0)
                if exc.errno != zmq.EADDRINUSE:
                    raise
                continue
            self.pulls = dict(zip(peers, socks, strict=True))
            return port
        raise RuntimeError("no port was free on every peer address")

    def endpoint(self, name: str = NAME, **options: Any) -> DnsEndpoint:
        options.setdefault("refresh", REFRESH)
        options.setdefault("nameservers", [self.server.nameserver])
        return DnsEndpoint(
            name,
            self.port,
            connect=lambda a: self._call("connect", a),
            disconnect=lambda a: self._call("disconnect", a),
            on_change=lambda added, removed: self.changes.append((added, removed)),
            **options,
        )

    def _call(self, what: str, address: str) -> None:
        getattr(self.push, what)(address)
        self.calls.append((time.monotonic(), what, address, len(self.sent) - 1))

    def address(self, ip: str) -> str:
        return f"tcp://{bracket(ip)}:{self.port}"

    async def __aenter__(self) -> Rig:
        self._tasks = [asyncio.create_task(self._receive(ip)) for ip in self.pulls]
        self._tasks.append(asyncio.create_task(self._send()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in self.pulls.values():
            sock.close(linger=0)
        self.context.destroy(linger=0)

    async def _send(self, pace: float = 0.001, limit: int = 20_000) -> None:
        while self._sending and len(self.sent) < limit:
            try:
                self.push.send(struct.pack("!I", len(self.sent)), zmq.NOBLOCK)
            except zmq.Again:
                pass  # no peer yet: nothing was sent, nothing is counted
            else:
                self.sent.append(time.monotonic())
            await asyncio.sleep(pace)

    async def _receive(self, ip: str) -> None:
        sock, got = self.pulls[ip], self.received[ip]
        while True:
            got.append(struct.unpack("!I", await sock.recv())[0])

    def count(self, ip: str) -> int:
        return len(self.received[ip])

    async def stop_and_drain(self, timeout: float = 5.0) -> list[int]:
        """Stop sending, wait until every message sent has arrived, and return the seqs that
        did not (the wait ends at ``timeout``: a lost message cannot arrive)."""
        self._sending = False
        total = len(self.sent)
        try:
            await wait_until(lambda: sum(map(len, self.received.values())) >= total, timeout, "")
        except AssertionError:
            pass
        got = [seq for seqs in self.received.values() for seq in seqs]
        assert len(got) == len(set(got)), "a message was received twice"
        return sorted(set(range(total)) - set(got))


def bracket(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


# -- following the name ------------------------------------------------------------------------


@pytest.mark.timeout(15)
def test_messages_reach_every_current_address(dns_server: DnsServer) -> None:
    async def scenario() -> None:
        async with Rig(dns_server) as rig:
            dns_server.set(NAME, PEERS)
            endpoint = rig.endpoint()
            endpoint.start()
            await wait_until(
                lambda: all(rig.count(ip) >= 20 for ip in PEERS), 3, "every peer gets messages"
            )
            assert endpoint.addresses == {rig.address(ip) for ip in PEERS}
            assert rig.changes == [(tuple(sorted(rig.address(ip) for ip in PEERS)), ())]
            lost = await rig.stop_and_drain()
            endpoint.close()
            await endpoint.wait_closed()
            counts = {ip: rig.count(ip) for ip in PEERS}
            assert not lost, f"sent {len(rig.sent)}, received {counts}, lost {len(lost)}"
            assert sum(counts.values()) == len(rig.sent)

    run(scenario())


@pytest.mark.timeout(15)
def test_a_new_address_gets_traffic_within_two_refreshes(
    dns_server: DnsServer, dns_log: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with Rig(dns_server) as rig:
            dns_server.set(NAME, PEERS[:2])
            endpoint = rig.endpoint()
            endpoint.start()
            await wait_until(lambda: all(rig.count(ip) for ip in PEERS[:2]), 3, "first peers")
            assert rig.count(PEERS[2]) == 0
            dns_server.set(NAME, PEERS)
            took = await wait_until(lambda: rig.count(PEERS[2]), 2 * REFRESH, "new peer")
            print(f"a new address got its first message {took * 1000:.0f} ms after DNS had it")
            assert rig.changes[-1] == ((rig.address(PEERS[2]),), ())
            await wait_until(lambda: rig.count(PEERS[2]) >= 20, 2, "new peer keeps getting some")
            lost = await rig.stop_and_drain()
            endpoint.close()
            await endpoint.wait_closed()
            assert not lost, f"sent {len(rig.sent)}, lost {len(lost)}"
        assert f"{rig.address(PEERS[2])} appeared, none vanished" in dns_log.text

    run(scenario())


@pytest.mark.timeout(15)
def test_a_removed_address_stops_getting_traffic(
    dns_server: DnsServer, dns_log: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with Rig(dns_server) as rig:
            gone = rig.address(PEERS[0])
            dns_server.set(NAME, PEERS)
            endpoint = rig.endpoint()
            endpoint.start()
            await wait_until(lambda: all(rig.count(ip) for ip in PEERS), 3, "every peer")
            dns_server.set(NAME, PEERS[1:])
            removed_at = time.monotonic()
            await wait_until(
                lambda: any(c[1] == "disconnect" for c in rig.calls), 2 * REFRESH, "disconnect"
            )
            when, _, address, last_before = rig.calls[-1]
            assert address == gone
            print(f"disconnected {(when - removed_at) * 1000:.0f} ms after DNS dropped it")
            # Traffic goes on, to the other peers only.
            sent_then = len(rig.sent)
            await wait_until(lambda: len(rig.sent) >= sent_then + 300, 3, "300 more messages")
            lost = await rig.stop_and_drain()
            endpoint.close()
            await endpoint.wait_closed()
            late = [seq for seq in rig.received[PEERS[0]] if seq > last_before]
            assert not late, f"{len(late)} messages sent after the disconnect reached it"
            assert not lost, f"sent {len(rig.sent)}, lost {len(lost)}: {lost[:10]}"
            assert endpoint.addresses == {rig.address(ip) for ip in PEERS[1:]}
            assert rig.changes[-1] == ((), (gone,))
        assert f"none appeared, {gone} vanished; connected to 2 addresses" in dns_log.text

    run(scenario())


@pytest.mark.timeout(15)
def test_ipv6_addresses_are_connected_in_brackets(dns_server: DnsServer) -> None:
    try:
        rig = Rig(dns_server, peers=("127.0.0.2", "::1"))
    except zmq.ZMQError as exc:
        pytest.skip(f"cannot bind on IPv6 loopback here: {exc}")

    async def scenario() -> None:
        async with rig:
            dns_server.set(NAME, ["127.0.0.2", "::1"])
            endpoint = rig.endpoint()
            endpoint.start()
            await wait_until(lambda: rig.count("::1") and rig.count("127.0.0.2"), 3, "both")
            assert f"tcp://[::1]:{rig.port}" in endpoint.addresses
            assert not await rig.stop_and_drain()
            endpoint.close()
            await endpoint.wait_closed()

    run(scenario())


@pytest.mark.timeout(10)
def test_a_swap_connects_the_new_address_before_it_disconnects_the_old(
    dns_server: DnsServer,
) -> None:
    calls: list[str] = []

    async def scenario() -> None:
        endpoint = DnsEndpoint(
            NAME,
            5555,
            connect=lambda a: calls.append(f"connect {a}"),
            disconnect=lambda a: calls.append(f"disconnect {a}"),
            refresh=REFRESH,
            nameservers=[dns_server.nameserver],
        )
        dns_server.set(NAME, ["127.0.0.2"])
        endpoint.start()
        await wait_until(lambda: calls, 2, "first address")
        dns_server.set(NAME, ["127.0.0.3"])
        await wait_until(lambda: len(calls) == 3, 2 * REFRESH, "the swap")
        endpoint.close()
        await endpoint.wait_closed()

    run(scenario())
    # A PUSH socket is never left without a peer, so a send never blocks mid-rollout.
    assert calls == [
        "connect tcp://127.0.0.2:5555",
        "connect tcp://127.0.0.3:5555",
        "disconnect tcp://127.0.0.2:5555",
    ]


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.timeout(15)
def test_an_unresolvable_name_is_retried_with_backoff_and_logged_once(
    dns_server: DnsServer, dns_log: pytest.LogCaptureFixture
) -> None:
    refresh = 0.4
    connected: list[str] = []

    async def scenario() -> None:
        endpoint = DnsEndpoint(
            "nowhere.test",
            5555,
            connect=connected.append,
            disconnect=connected.remove,
            refresh=refresh,
            nameservers=[dns_server.nameserver],
        )
        endpoint.warn_every = 1.0
        endpoint.start()
        queries = await asyncio.to_thread(dns_server.wait_queries, 7, "nowhere.test")
        gaps = [b.time - a.time for a, b in itertools.pairwise(queries)]
        print("gaps between lookups:", ", ".join(f"{g * 1000:.0f} ms" for g in gaps))
        # refresh / 4, doubled each time (less up to 25 % jitter), then capped at refresh.
        assert gaps[0] < gaps[1] < gaps[2], gaps
        assert 0.75 * 0.1 - 0.01 < gaps[0] < 0.1 + 0.05, gaps
        assert all(0.75 * refresh - 0.01 < gap < refresh + 0.05 for gap in gaps[2:]), gaps
        await wait_until(lambda: endpoint.failures >= 7, 1, "seven failures counted")
        assert "NXDOMAIN" in (endpoint.last_error or "")
        assert connected == []
        dns_server.set("nowhere.test", ["127.0.0.2"])
        await wait_until(lambda: connected, 2 * refresh, "connect once it resolves")
        assert endpoint.failures == 0
        endpoint.close()
        await endpoint.wait_closed()

    run(scenario())
    warnings = [r for r in dns_log.records if r.levelno == logging.WARNING]
    # Every failed lookup is logged, all but the first few at DEBUG.
    failures = [r for r in dns_log.records if "in a row failed" in r.getMessage()]
    assert len(failures) + len(warnings) >= 7
    assert {r.levelno for r in failures} == {logging.DEBUG}
    assert (
        warnings[0]
        .getMessage()
        .startswith(
            "tcp+dns://nowhere.test:5555: cannot resolve nowhere.test: the name does not exist "
            "(NXDOMAIN); not connected to any address yet, retrying with backoff"
        )
    )
    # Once when it starts, then at most every warn_every (1 s) while it lasts.
    assert 2 <= len(warnings) <= 3, [r.getMessage() for r in warnings]
    assert "still cannot resolve nowhere.test after" in warnings[1].getMessage()
    assert "resolves again after" in dns_log.text
    assert not [r for r in dns_log.records if r.levelno >= logging.ERROR]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("outage", ["servfail", "drop", "nxdomain", "no records"])
def test_a_dns_outage_keeps_existing_peers_connected(
    dns_server: DnsServer, dns_log: pytest.LogCaptureFixture, outage: str
) -> None:
    async def scenario() -> None:
        async with Rig(dns_server, peers=PEERS[:2]) as rig:
            dns_server.set(NAME, PEERS[:2])
            endpoint = rig.endpoint(timeout=0.2)
            endpoint.start()
            await wait_until(lambda: all(rig.count(ip) for ip in PEERS[:2]), 3, "both peers")
            before = len(dns_server.queries(NAME, "A"))
            if outage in ("servfail", "drop"):
                dns_server.mode = outage  # type: ignore[assignment]
            elif outage == "nxdomain":
                dns_server.remove(NAME)
            else:
                dns_server.set(NAME, [])
            counts = {ip: rig.count(ip) for ip in PEERS[:2]}
            # Several failed lookups, while both peers keep getting messages.
            await asyncio.to_thread(dns_server.wait_queries, before + 4, NAME)
            await wait_until(lambda: endpoint.failures >= 3, 3, "three failed lookups")
            await wait_until(
                lambda: all(rig.count(ip) >= counts[ip] + 50 for ip in PEERS[:2]),
                3,
                "both peers keep getting messages during the outage",
            )
            assert [c for c in rig.calls if c[1] == "disconnect"] == []
            assert endpoint.addresses == {rig.address(ip) for ip in PEERS[:2]}
            dns_server.mode = "answer"
            dns_server.set(NAME, PEERS[:2])
            await wait_until(lambda: endpoint.failures == 0, 2, "recovery")
            lost = await rig.stop_and_drain()
            endpoint.close()
            await endpoint.wait_closed()
            assert not lost, f"sent {len(rig.sent)}, lost {len(lost)}"
            assert len(rig.changes) == 1

    run(scenario())
    warnings = [r.getMessage() for r in dns_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "keeping the 2 connected addresses, retrying with backoff" in warnings[0]
    assert "resolves again after" in dns_log.text


@pytest.mark.timeout(15)
def test_a_failing_aaaa_lookup_keeps_ipv6_addresses_and_updates_ipv4(
    dns_server: DnsServer,
) -> None:
    connected: set[str] = set()

    async def scenario() -> None:
        endpoint = DnsEndpoint(
            NAME,
            5555,
            connect=connected.add,
            disconnect=connected.remove,
            refresh=REFRESH,
            nameservers=[dns_server.nameserver],
        )
        dns_server.set(NAME, ["127.0.0.2", "127.0.0.3", "::1"])
        endpoint.start()
        await wait_until(lambda: len(connected) == 3, 2, "three addresses")
        dns_server.modes["AAAA"] = "servfail"
        dns_server.set(NAME, ["127.0.0.3"])
        await wait_until(lambda: len(connected) == 2, 2 * REFRESH, "the IPv4 change")
        assert connected == {"tcp://127.0.0.3:5555", "tcp://[::1]:5555"}
        assert endpoint.failures >= 1 and "SERVFAIL" in (endpoint.last_error or "")
        endpoint.close()
        await endpoint.wait_closed()

    run(scenario())


@pytest.mark.timeout(15)
def test_a_callback_that_fails_is_logged_and_retried(
    dns_server: DnsServer, dns_log: pytest.LogCaptureFixture
) -> None:
    connected: list[str] = []
    refusals = ["tcp://127.0.0.3:5555"]

    def connect(address: str) -> None:
        if address in refusals:
            refusals.remove(address)
            raise zmq.ZMQError(zmq.EINVAL)
        connected.append(address)

    async def scenario() -> None:
        endpoint = DnsEndpoint(
            NAME,
            5555,
            connect=connect,
            disconnect=connected.remove,
            refresh=REFRESH,
            nameservers=[dns_server.nameserver],
        )
        dns_server.set(NAME, ["127.0.0.2", "127.0.0.3"])
        endpoint.start()
        await wait_until(lambda: len(connected) == 2, 3 * REFRESH, "both, the second late")
        assert connected == ["tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555"]
        endpoint.close()
        await endpoint.wait_closed()

    run(scenario())
    errors = [r.getMessage() for r in dns_log.records if r.levelno == logging.ERROR]
    assert errors == [
        "tcp+dns://svc.test:5555: could not connect to tcp://127.0.0.3:5555; trying again at "
        "the next lookup"
    ]


# -- lifecycle ---------------------------------------------------------------------------------


@pytest.mark.timeout(15)
def test_close_abandons_a_lookup_in_flight_and_leaves_nothing_behind(
    dns_server: DnsServer,
) -> None:
    calls: list[str] = []

    async def scenario() -> None:
        dns_server.mode = "drop"
        endpoint = DnsEndpoint(
            NAME,
            5555,
            connect=calls.append,
            disconnect=calls.append,
            refresh=5,
            nameservers=[dns_server.nameserver],
        )
        endpoint.start()
        await asyncio.to_thread(dns_server.wait_queries, 1, NAME)
        started = time.monotonic()
        endpoint.close()
        endpoint.close()
        await endpoint.wait_closed()
        assert time.monotonic() - started < 0.5
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("zmqapp ")] == []
        with pytest.raises(RuntimeError, match="already started"):
            endpoint.start()

    run(scenario())
    assert calls == []


@pytest.mark.timeout(10)
def test_an_ip_address_stands_for_itself(dns_server: DnsServer) -> None:
    calls: list[str] = []

    async def scenario() -> None:
        endpoint = DnsEndpoint.from_address(
            "tcp+dns://[::1]:5555",
            connect=calls.append,
            disconnect=calls.append,
            nameservers=[dns_server.nameserver],
        )
        endpoint.start()
        await endpoint.wait_closed()  # nothing to follow: the task ends at once
        assert calls == ["tcp://[::1]:5555"]
        assert endpoint.addresses == {"tcp://[::1]:5555"}

    run(scenario())
    assert dns_server.queries() == []


def test_without_dnspython_constructing_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "dns.asyncresolver", None)
    with pytest.raises(SetupError, match=r"pip install 'zmqapp\[dns\]'"):
        DnsEndpoint(NAME, 5555, connect=print, disconnect=print, nameservers=["127.0.0.1"])


@pytest.mark.parametrize("refresh", [0, -1, math.inf, math.nan, "10", True])
def test_a_bad_refresh_is_a_setup_error(refresh: Any) -> None:
    with pytest.raises(SetupError, match="set DNS_REFRESH"):
        DnsEndpoint(NAME, 5555, connect=print, disconnect=print, refresh=refresh)


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("tcp+dns://svc.test:5555", ("svc.test", 5555)),
        (">tcp+dns://workers:1", ("workers", 1)),
        ("TCP+DNS://Svc.Test.:65535", ("Svc.Test.", 65535)),
        ("tcp+dns://_grpc._tcp.svc:80", ("_grpc._tcp.svc", 80)),
        ("tcp+dns://10.0.0.1:5555", ("10.0.0.1", 5555)),
        ("tcp+dns://[::1]:5555", ("::1", 5555)),
        ("tcp+dns://[fd00::1:2]:7", ("fd00::1:2", 7)),
        ("tcp://svc.test:5555", None),
        ("@tcp://*:5555", None),
        ("ipc:///tmp/x", None),
        ("tcp+dnsx://a:1", None),
    ],
)
def test_parse_dns_endpoint(address: str, expected: tuple[str, int] | None) -> None:
    assert parse_dns_endpoint(address) == expected


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("tcp+dns://svc.test", "has no port; write it as tcp+dns://NAME:PORT"),
        ("tcp+dns://svc.test:", "has the port ''"),
        ("tcp+dns://svc.test:0", "as a number from 1 to 65535"),
        ("tcp+dns://svc.test:65536", "as a number from 1 to 65535"),
        ("tcp+dns://svc.test:*", "has the port '*'"),
        ("tcp+dns://svc.test:http", "has the port 'http'"),
        ("tcp+dns://:5555", "has no name"),
        ("tcp+dns://*:5555", "give the DNS name of the peers"),
        ("tcp+dns://0.0.0.0:5555", "give the DNS name of the peers"),
        ("tcp+dns://::1:5555", "without brackets; write tcp+dns://[ADDRESS]:PORT"),
        ("tcp+dns://[::1]5555", "has no port; write tcp+dns://[::1]:PORT"),
        ("tcp+dns://[::1]", "has no port; write tcp+dns://[::1]:PORT"),
        ("tcp+dns://[::1:5555", "no closing ']'"),
        ("tcp+dns://[svc.test]:5555", "not an IPv6 address"),
        ("tcp+dns://bad name:5555", "is not a DNS name"),
        ("tcp+dns://a..b:5555", "is not a DNS name"),
        ("tcp+dns://-a.b:5555", "is not a DNS name"),
        (f"tcp+dns://{'a' * 64}.b:5555", "is not a DNS name"),
        ("tcp+dns://eth0;svc.test:5555", "remove the part before ';'"),
        ("@tcp+dns://svc.test:5555", "cannot be bound"),
    ],
)
def test_parse_dns_endpoint_errors_say_how_to_fix_them(address: str, problem: str) -> None:
    with pytest.raises(SetupError) as info:
        parse_dns_endpoint(address)
    assert str(info.value).startswith(f"endpoint {address!r} ")
    assert problem in str(info.value)


def test_binding_a_dns_endpoint_is_an_error() -> None:
    with pytest.raises(SetupError, match="cannot be bound: a tcp\\+dns:// endpoint names"):
        parse_dns_endpoint("tcp+dns://svc.test:5555", bind=True)
    assert parse_dns_endpoint("tcp://*:5555", bind=True) is None


def test_parse_nameservers() -> None:
    assert parse_nameservers(["10.0.0.1", "10.0.0.2:5353", "[fd00::1]:54", "::1", "[::2]"]) == [
        ("10.0.0.1", 53),
        ("10.0.0.2", 5353),
        ("fd00::1", 54),
        ("::1", 53),
        ("::2", 53),
    ]
    assert parse_nameservers("10.0.0.1, 10.0.0.2:54") == [("10.0.0.1", 53), ("10.0.0.2", 54)]
    for bad in ["dns.google", "10.0.0.1:", "10.0.0.1:99999", "[::1]:x", "[::1", "[::1]53"]:
        with pytest.raises(SetupError, match="is not an IP address with an optional port"):
            parse_nameservers([bad])
    with pytest.raises(SetupError, match="is not an IP address"):
        DnsEndpoint(NAME, 5555, connect=print, disconnect=print, nameservers=["dns.google"])


def test_an_app_channel_follows_a_dns_name(dns_server: DnsServer, running: Any, peer: Any) -> None:
    """The app-level option: ``tcp+dns://`` in a channel's endpoint, DNS_NAMESERVERS and
    DNS_REFRESH from config, peers that come and go as the name's records change."""
    from zmqapp import App
    from zmqapp.testing import wait_for

    pulls = {}
    port = 0
    for ip in PEERS:
        pull = peer(zmq.PULL)
        if port:
            pull.bind(f"tcp://{ip}:{port}")
        else:
            port = pull.bind_to_random_port(f"tcp://{ip}")
        pulls[ip] = pull
    dns_server.set(NAME, PEERS[:2])
    app = App("dns-client")
    app.config.update(LINGER=0, DNS_REFRESH=REFRESH, DNS_NAMESERVERS=[dns_server.nameserver])
    app.add_channel("out", endpoint=f"tcp+dns://{NAME}:{port}", type="PUSH", heartbeat=1)
    counter = itertools.count()

    @app.timer(0.005)
    def produce() -> None:
        app.send("out", b"%d" % next(counter))

    running(app)
    sock = app.channels["out"].socket
    assert sock is not None and sock.getsockopt(zmq.HEARTBEAT_IVL) == 1000

    def got(ip: str) -> bool:
        return bool(pulls[ip].poll(0)) and bool(pulls[ip].recv())

    wait_for(lambda: got(PEERS[0]), timeout=5)
    wait_for(lambda: got(PEERS[1]), timeout=5)
    dns_server.set(NAME, PEERS[1:])  # .2 leaves, .4 joins
    wait_for(lambda: got(PEERS[2]), timeout=5)

    def drained_and_quiet() -> bool:
        while pulls[PEERS[0]].poll(0):
            pulls[PEERS[0]].recv()
        return not pulls[PEERS[0]].poll(300)  # nothing more for .2 once it is disconnected

    wait_for(drained_and_quiet, timeout=5, interval=0.01)


def test_the_scheme_is_case_insensitive_as_validation_says(running: Any, peer: Any) -> None:
    """``TCP+DNS://`` passes validation, so it must also be connected as a DNS endpoint (it
    once went to libzmq as it was, which knows no such transport)."""
    from zmqapp import App

    pull = peer(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    app = App("dns-upper")
    app.config.update(LINGER=0)
    app.add_channel("out", endpoint=f"TCP+DNS://127.0.0.1:{port}", type="PUSH")
    running(app)
    app.send("out", b"hello")
    assert pull.poll(5000), "nothing arrived through the upper-case endpoint"
    assert pull.recv() == b"hello"


def test_a_dns_endpoint_cannot_be_bound() -> None:
    from zmqapp import App

    app = App("x")
    with pytest.raises(SetupError, match="tcp\\+dns"):
        app.add_channel("c", endpoint="@tcp+dns://svc.test:5555", type="PULL", handler=print)
    with pytest.raises(SetupError, match="tcp\\+dns"):
        app.add_channel("d", endpoint="tcp+dns://svc.test:5555", bind=True, type="PULL",
                        handler=print)  # fmt: skip
    assert app.channels == {}
