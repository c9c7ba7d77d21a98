"""zmqapp benchmarks: every case against a raw pyzmq baseline and the peers a user would pick.

Run from the project root, after ``pip install -e '.[bench]'``::

    python benchmarks/bench.py --rounds 5          # every case (5 to 6 minutes here)
    python benchmarks/bench.py pull-tcp sub        # some cases
    python benchmarks/bench.py --quick             # smaller counts, 3 rounds: a quick look

Each case runs all its variants once per round, in an order rotated every round, and prints
one table: each variant's median over the rounds, the spread (min-max), and its ratio to the
case's baseline. The ratio is computed *within* each round (variant / baseline of the same
round) and the table shows the median of those per-round ratios, so a round on a busy
machine moves both sides of a ratio together. Every producer, consumer, server and client is
its own process; on a 2-core machine that is one core for each side, shared with libzmq's I/O
threads. See README.md for the method and the measured tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import oneway
import roundtrip
import zmq
from procs import Child, ChildFailed, free_ipc_endpoint, free_tcp_endpoint, remove_ipc

Sample = dict[str, Any]  # what one run of one variant measured: {"rate": ...} or {"p50": ...}


# -- targets and variants ----------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    """A goal from the issue, on a variant's median ratio (or, for memory, its growth)."""

    op: str  # ">=", "<=" or "<"
    value: float
    unit: str = "x"

    def met(self, x: float) -> bool:
        return {">=": x >= self.value, "<=": x <= self.value, "<": x < self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}{self.unit}"


@dataclasses.dataclass
class Variant:
    name: str
    run: Callable[[], Sample]
    target: Target | None = None
    skipped: str | None = None  # why it cannot run here
    samples: list[Sample | None] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [s[key] for s in self.samples if s is not None and key in s]


@dataclasses.dataclass
class Case:
    key: str
    title: str
    about: str  # one paragraph: what is measured, how
    metric: str  # the Sample key the table shows: "rate" or "p50"
    unit: str
    variants: list[Variant]  # the first is the baseline
    producer: Callable[[], float] | None = None  # the producer alone, measured every round
    producer_rates: list[float] = dataclasses.field(default_factory=list)
    extra: Callable[[Case], list[str]] | None = None  # more tables for this case
    load: list[float] = dataclasses.field(default_factory=list)  # 1-minute load, before/after

    @property
    def baseline(self) -> Variant:
        return self.variants[0]

    def ratios(self, variant: Variant, base: Variant | None = None) -> list[float]:
        """``variant / base`` (the baseline by default) within each round both completed."""
        base = base or self.baseline
        return [
            s[self.metric] / b[self.metric]
            for s, b in zip(variant.samples, base.samples, strict=True)
            if s is not None and b is not None
        ]


# -- running one variant once ------------------------------------------------------------------


def _timeout(count: int, slowest_rate: float = 2_000.0) -> float:
    return 60 + count / slowest_rate


def _after_preload(
    producer: Child,
    consumer: Callable[..., Any],
    endpoint: str,
    count: int,
    slowest_rate: float = 2_000.0,
    **options: Any,
) -> Any:
    """Once ``producer`` has queued its messages, ``consumer`` binding the endpoint it waits
    on; what the consumer measured. Both are stopped afterwards."""
    try:
        producer.get(timeout=_timeout(count, 100_000))
        sink = Child(consumer, endpoint, count, **options)
        try:
            return sink.get(timeout=_timeout(count, slowest_rate))
        finally:
            sink.stop()
    finally:
        producer.stop()


def pull_run(
    consumer: Callable[..., Sample],
    count: int,
    frames: list[bytes],
    transport: str = "tcp",
    **options: Any,
) -> Sample:
    """A preloaded producer, then ``consumer`` binding the endpoint it waits on."""
    endpoint = free_tcp_endpoint() if transport == "tcp" else free_ipc_endpoint()
    try:
        producer = Child(oneway.preload, endpoint, count, frames)
        return _after_preload(producer, consumer, endpoint, count, **options)  # type: ignore[no-any-return]
    finally:
        remove_ipc(endpoint)


def sub_run(consumer: Callable[..., Any], count: int, markers: bool = False, **options: Any) -> Any:
    """A preloaded producer behind a relay (an XPUB), and a SUB ``consumer`` connecting to
    the relay; the relay starts moving messages once the consumer has subscribed."""
    front, back = free_tcp_endpoint(), free_tcp_endpoint()
    producer = Child(oneway.preload, front, count, [oneway.PAYLOAD], markers=markers)
    relay = None
    try:
        producer.get(timeout=_timeout(count, 100_000))
        relay = Child(oneway.relay, front, back)
        relay.get(timeout=60)
        sink = Child(consumer, back, count, sub=True, **options)
        try:
            return sink.get(timeout=_timeout(count))
        finally:
            sink.stop()
    finally:
        if relay is not None:
            relay.stop()
        producer.stop()


def flood_run(consumer: Callable[..., Sample], count: int, **options: Any) -> Sample:
    endpoint = free_tcp_endpoint()
    producer = Child(oneway.preload_numbered, endpoint, count)
    return _after_preload(producer, consumer, endpoint, count, **options)  # type: ignore[no-any-return]


def ceiling_run(count: int, frames: list[bytes], transport: str = "tcp") -> float:
    """The producer alone: a preloaded producer into :func:`oneway.ceiling`."""
    endpoint = free_tcp_endpoint() if transport == "tcp" else free_ipc_endpoint()
    try:
        producer = Child(oneway.preload, endpoint, count, frames, markers=True)
        return _after_preload(producer, oneway.ceiling, endpoint, count, 100_000)  # type: ignore[no-any-return]
    finally:
        remove_ipc(endpoint)


def rpc_run(
    server: Callable[..., None],
    client: Callable[..., Sample],
    count: int,
    own_group: bool = False,
    **server_options: Any,
) -> Sample:
    """A server process (terminated afterwards) and a client process that measures."""
    endpoint = free_tcp_endpoint()
    srv = Child(server, endpoint, own_group=own_group, **server_options)
    try:
        srv.get(timeout=60)
        cli = Child(client, endpoint, count)
        try:
            return cli.get(timeout=_timeout(count, 500))  # type: ignore[no-any-return]
        finally:
            cli.stop()
    finally:
        srv.terminate()


# -- peers -------------------------------------------------------------------------------------

PEERS = {"aiozmq": "aiozmq", "zeroapi": "zero", "zerorpc": "zerorpc"}  # distribution: module


def peer_status() -> dict[str, str | None]:
    """For each optional peer: None if it imports here, else why it is skipped."""
    status: dict[str, str | None] = {}
    for dist, module in PEERS.items():
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            status[dist] = "not installed (pip install -e '.[bench]')"
            continue
        # Import it in a child: zerorpc brings gevent, which this process should not load.
        proc = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
        )
        lines = proc.stderr.strip().splitlines()
        status[dist] = None if proc.returncode == 0 else f"does not import: {lines[-1]}"
    return status


# -- the cases ---------------------------------------------------------------------------------


def build_cases(args: argparse.Namespace, peers: dict[str, str | None]) -> list[Case]:
    n, requests, flood = args.messages, args.requests, args.flood
    one, four = [oneway.PAYLOAD], oneway.FRAMES_4
    zmqapp_c, raw_c = oneway.zmqapp_consumer, oneway.raw_loop

    def pull(consumer: Callable[..., Sample], frames: list[bytes], **kw: Any) -> Callable[[], Any]:
        return lambda: pull_run(consumer, n, frames, **kw)

    def peer(dist: str, run: Callable[[], Sample]) -> dict[str, Any]:
        return {"run": run, "skipped": peers[dist]}

    cases = [
        Case(
            "pull-tcp",
            f"1. PULL, 1 x 64 B over tcp ({n:,} messages)",
            "Each consumer counts messages, timed from the first to the last.",
            "rate",
            "messages/s",
            [
                Variant("raw pyzmq recv_multipart loop", pull(raw_c, one)),
                Variant("zmqapp", pull(zmqapp_c, one), Target(">=", 1.2)),
                Variant("zmqapp, HTTP on (metrics, timing)", pull(zmqapp_c, one, http=True)),
                Variant("ZMQStream.on_recv", pull(oneway.zmqstream_loop, one)),
                Variant("zmq.asyncio", pull(oneway.asyncio_loop, one)),
                Variant("aiozmq (ZmqProtocol)", **peer("aiozmq", pull(oneway.aiozmq_loop, one))),
            ],
            producer=lambda: ceiling_run(n, one),
            extra=both(
                peer_table("zmqapp", ["ZMQStream.on_recv", "zmq.asyncio", "aiozmq (ZmqProtocol)"]),
                peer_table("zmqapp, HTTP on (metrics, timing)", ["zmqapp"], [Target(">=", 0.9)]),
            ),
        ),
        Case(
            "pull-ipc",
            f"2. PULL, 1 x 64 B over ipc ({n:,} messages)",
            "As case 1, over an ipc:// endpoint.",
            "rate",
            "messages/s",
            [
                Variant("raw pyzmq recv_multipart loop", pull(raw_c, one, transport="ipc")),
                Variant("zmqapp", pull(zmqapp_c, one, transport="ipc"), Target(">=", 1.2)),
            ],
            producer=lambda: ceiling_run(n, one, "ipc"),
        ),
        Case(
            "pull-4frames",
            f"3. PULL, 4 x 16 B frames over tcp ({n:,} messages)",
            "The handler gets the four frames as a list; the raw loop, recv_multipart's list.",
            "rate",
            "messages/s",
            [
                Variant("raw pyzmq recv_multipart loop", pull(raw_c, four)),
                Variant("zmqapp", pull(zmqapp_c, four), Target(">=", 1.2)),
            ],
            producer=lambda: ceiling_run(n, four),
        ),
        Case(
            "json",
            f"4. PULL, a 64 B JSON object over tcp, decoded ({n:,} messages)",
            "zmqapp with codec='json' against the raw loop plus json.loads of the frame.",
            "rate",
            "messages/s",
            [
                Variant("raw loop + json.loads", pull(raw_c, [oneway.READING], decode="json")),
                Variant(
                    "zmqapp, codec='json'",
                    pull(zmqapp_c, [oneway.READING], codec="json"),
                    Target(">=", 1.0),
                ),
            ],
            producer=lambda: ceiling_run(n, [oneway.READING]),
        ),
        Case(
            "typed",
            f"5. PULL, the same JSON object as a typed dataclass body ({n:,} messages)",
            "A handler whose body parameter is annotated with a 5-field dataclass, against the "
            "same handler unannotated (the baseline), and the raw loop plus json.loads plus "
            "building the dataclass (which checks nothing). zmqapp validates typed bodies with "
            "pydantic when it is installed, else with its own checks; the last zmqapp row "
            "hides pydantic from its process to measure those. The producer is case 4's.",
            "rate",
            "messages/s",
            [
                Variant(
                    "zmqapp, codec='json', untyped",
                    pull(zmqapp_c, [oneway.READING], codec="json"),
                ),
                Variant(
                    "zmqapp, codec='json', body: Reading (pydantic)",
                    pull(zmqapp_c, [oneway.READING], codec="json", typed=True),
                    Target(">=", 0.75),
                    skipped=None if has_pydantic() else "pydantic is not installed",
                ),
                Variant(
                    "zmqapp, codec='json', body: Reading (zmqapp's own checks)",
                    pull(
                        zmqapp_c,
                        [oneway.READING],
                        codec="json",
                        typed=True,
                        without_pydantic=True,
                    ),
                    Target(">=", 0.75),
                ),
                Variant(
                    "raw loop + json.loads + Reading(**d)",
                    pull(raw_c, [oneway.READING], decode="dataclass"),
                ),
            ],
        ),
        Case(
            "sub",
            f"6. SUB fan-out, 1 x 64 B over tcp, 1, 2 and 4 handlers ({n:,} messages)",
            "One channel subscribed to everything; the first handler counts, the others do "
            "nothing. A relay (an XPUB) moves a preloaded producer's messages in libzmq's "
            "proxy once the consumer has subscribed.",
            "rate",
            "messages/s",
            [
                Variant("raw pyzmq SUB recv_multipart loop", lambda: sub_run(raw_c, n)),
                Variant("zmqapp, 1 handler", lambda: sub_run(zmqapp_c, n), Target(">=", 1.0)),
                Variant("zmqapp, 2 handlers", lambda: sub_run(zmqapp_c, n, handlers=2)),
                Variant("zmqapp, 4 handlers", lambda: sub_run(zmqapp_c, n, handlers=4)),
            ],
            producer=lambda: sub_run(oneway.ceiling, n, markers=True),
            extra=handler_cost_table,
        ),
        Case(
            "rep",
            f"7. REQ/REP round trip, 64 B ({requests:,} requests, one at a time)",
            "The same raw REQ client against each server; the value is the median round trip "
            "of the run (p99 in its own column).",
            "p50",
            "p50 µs",
            [
                Variant(
                    "raw pyzmq REP server",
                    lambda: rpc_run(roundtrip.raw_rep_server, roundtrip.req_client, requests),
                ),
                Variant(
                    "zmqapp REP server",
                    lambda: rpc_run(roundtrip.zmqapp_rep_server, roundtrip.req_client, requests),
                    Target("<=", 1.05),
                ),
            ],
        ),
        Case(
            "rpc",
            f"8. Requests with {roundtrip.WINDOW} in flight, 64 B ({requests:,} requests)",
            "Each client keeps 64 requests in flight against an echo server. The raw pair is a "
            "blocking DEALER against a blocking ROUTER loop; zmqapp is `await app.request()` "
            "from 64 coroutines against a zmqapp ROUTER channel with a plain handler. The rows "
            "after the peers mix the sides to show where the time goes; the two with a "
            "request-id frame are the raw client doing what `app.request` must do to match "
            "each reply to its request with any number of servers in any order: an 8-byte id "
            "frame before the empty delimiter, sent back by any REP or ROUTER server.",
            "rate",
            "requests/s",
            [
                Variant(
                    "raw DEALER -> raw ROUTER",
                    lambda: rpc_run(
                        roundtrip.raw_router_server, roundtrip.raw_dealer_client, requests
                    ),
                ),
                Variant(
                    "app.request -> zmqapp ROUTER",
                    lambda: rpc_run(
                        roundtrip.zmqapp_router_server, roundtrip.zmqapp_client, requests
                    ),
                    Target(">=", 0.9),
                ),
                Variant(
                    "zeroapi AsyncZeroClient -> ZeroServer (1 worker)",
                    **peer(
                        "zeroapi",
                        lambda: rpc_run(
                            roundtrip.zeroapi_server,
                            roundtrip.zeroapi_client,
                            requests,
                            own_group=True,
                        ),
                    ),
                ),
                Variant(
                    "zerorpc Client -> Server (gevent)",
                    **peer(
                        "zerorpc",
                        lambda: rpc_run(
                            roundtrip.zerorpc_server, roundtrip.zerorpc_client, requests
                        ),
                    ),
                ),
                Variant(
                    "app.request -> raw ROUTER",
                    lambda: rpc_run(roundtrip.raw_router_server, roundtrip.zmqapp_client, requests),
                ),
                Variant(
                    "raw DEALER -> zmqapp ROUTER",
                    lambda: rpc_run(
                        roundtrip.zmqapp_router_server, roundtrip.raw_dealer_client, requests
                    ),
                ),
                Variant(
                    "raw DEALER with a request-id frame -> raw ROUTER",
                    lambda: rpc_run(
                        roundtrip.raw_router_server, roundtrip.raw_correlating_client, requests
                    ),
                ),
                Variant(
                    "raw DEALER with a request-id frame -> zmqapp ROUTER",
                    lambda: rpc_run(
                        roundtrip.zmqapp_router_server, roundtrip.raw_correlating_client, requests
                    ),
                ),
                Variant(
                    "app.request -> zmqapp ROUTER, async handler, concurrency=64",
                    lambda: rpc_run(
                        roundtrip.zmqapp_router_server,
                        roundtrip.zmqapp_client,
                        requests,
                        concurrency=64,
                    ),
                ),
            ],
            extra=peer_table(
                "app.request -> zmqapp ROUTER",
                [
                    "zeroapi AsyncZeroClient -> ZeroServer (1 worker)",
                    "zerorpc Client -> Server (gevent)",
                ],
                [Target(">=", 2.6), Target(">=", 9.9)],
            ),
        ),
        Case(
            "memory",
            f"9. Memory: a flood of {flood:,} numbered 16 B messages into a PULL consumer",
            "Peak RSS (VmHWM, reset at the first message) minus RSS at the first message, and a "
            "check that every number arrived exactly once. The producer is preloaded, so the "
            "consumer is flooded at libzmq's speed from its first message to its last.",
            "rss_mb",
            "peak RSS growth (MB)",
            [
                Variant(
                    "raw pyzmq recv_multipart loop", lambda: flood_run(oneway.raw_flood, flood)
                ),
                Variant(
                    "zmqapp, plain handler",
                    lambda: flood_run(oneway.zmqapp_flood, flood),
                    Target("<", 1.0, " MB"),
                ),
                Variant(
                    "zmqapp, coroutine handler, concurrency=64",
                    lambda: flood_run(oneway.zmqapp_flood, flood, concurrency=64),
                    Target("<", 1.0, " MB"),
                ),
            ],
            producer=lambda: ceiling_run(flood, [oneway.NUMBERED.pack(0)]),
        ),
    ]
    return cases


# -- tables ------------------------------------------------------------------------------------


def _fmt(value: float, metric: str) -> str:
    if metric == "rate":
        return f"{value:,.0f}"
    if metric == "rss_mb":
        return f"{value:.2f}"
    return f"{value:,.1f}"


def _spread(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(min(values))} to {fmt(max(values))}" if values else ""


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _met(target: Target | None, value: float | None) -> str:
    if target is None or value is None:
        return ""
    return "yes" if target.met(value) else "**no**"


def _rounds_note(variant: Variant) -> str:
    if not variant.failures:
        return ""
    done = len(variant.samples) - len(variant.failures)
    return f" ({done} of {len(variant.samples)} rounds; failed: {variant.failures[0]})"


def table(case: Case) -> str:
    """The case's main table, as Markdown."""
    lines = [f"### {case.title}", "", case.about, ""]
    if case.metric == "rss_mb":
        lines += _memory_rows(case)
    else:
        lines += _ratio_rows(case)
    if case.producer_rates:
        lines += ["", _producer_line(case)]
    if case.extra is not None:
        lines += case.extra(case)
    if case.load:
        loads = " and ".join(f"{x:.2f}" for x in case.load)
        lines += ["", f"Load average (1 minute) before and after the case: {loads}."]
    return "\n".join(lines)


#: Columns a table gets when its runs measured them: key, heading, format.
MORE_COLUMNS = [
    ("p99", "p99 µs (median)", "{:,.1f}"),
    ("cpu_us", "consumer CPU µs/msg (median)", "{:.3f}"),
    ("rss_mb", "peak RSS growth MB (median)", "{:.2f}"),
]


def _ratio_rows(case: Case) -> list[str]:
    fmt = lambda v: _fmt(v, case.metric)  # noqa: E731
    more = [c for c in MORE_COLUMNS if any(v.values(c[0]) for v in case.variants)]
    heads = [f"{case.unit} (median)", "min to max", "ratio to baseline", "ratio min to max"]
    heads += [head for _, head, _ in more]
    lines = [
        "| variant | " + " | ".join(heads) + " | target | met |",
        "|---|" + "---:|" * len(heads) + "---|---|",
    ]
    blank = " |" * (len(heads) + 1)
    for i, v in enumerate(case.variants):
        values = v.values(case.metric)
        if v.skipped or not values:
            why = f"skipped: {v.skipped}" if v.skipped else f"failed: {v.failures[0]}"
            lines.append(f"| {v.name} | {why} |{blank}")
            continue
        ratios = case.ratios(v) if i else []
        ratio = statistics.median(ratios) if ratios else None
        cells = [fmt(statistics.median(values)), _spread(values, fmt)]
        cells.append("1.00x (baseline)" if i == 0 else _x(ratio) if ratio is not None else "")
        cells.append(_spread(ratios, _x))
        for key, _, form in more:
            column = v.values(key)
            cells.append(form.format(statistics.median(column)) if column else "")
        cells += [str(v.target or ""), _met(v.target, ratio)]
        lines.append(f"| {v.name}{_rounds_note(v)} | " + " | ".join(cells) + " |")
    return lines


def _memory_rows(case: Case) -> list[str]:
    lines = [
        "| variant | peak RSS growth MB (median) | min to max | lost (all rounds) "
        "| duplicated (all rounds) | messages/s (median) | target | met |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for v in case.variants:
        values = v.values("rss_mb")
        if not values:
            lines.append(
                f"| {v.name} | failed: {v.failures[0] if v.failures else '?'} | | | | | | |"
            )
            continue
        growth = statistics.median(values)
        lost, dups = sum(v.values("lost")), sum(v.values("duplicates"))
        met = _met(v.target, growth)
        if v.target is not None and (lost or dups or v.failures):
            met = "**no**"
        lines.append(
            f"| {v.name}{_rounds_note(v)} | {growth:.2f} | {_spread(values, lambda x: f'{x:.2f}')} "
            f"| {lost:,} | {dups:,} | {_fmt(statistics.median(v.values('rate')), 'rate')} "
            f"| {v.target or ''}{', nothing lost' if v.target else ''} | {met} |"
        )
    return lines


def _producer_line(case: Case) -> str:
    rates = case.producer_rates
    fastest = max(
        (statistics.median(v.values("rate")) for v in case.variants if v.values("rate")),
        default=0.0,
    )
    how = "a preloaded PUSH{} into libzmq's proxy, no Python per message, once per round"
    how = how.format(" through the relay" if case.key == "sub" else "")
    median = statistics.median(rates)
    return (
        f"Producer alone ({how}): {median:,.0f} messages/s (median; "
        f"{_spread(rates, lambda x: f'{x:,.0f}')}); the fastest consumer's median is "
        f"{fastest / median:.0%} of it."
    )


def both(*tables: Callable[[Case], list[str]]) -> Callable[[Case], list[str]]:
    """Several extra tables under one case."""
    return lambda case: [line for table in tables for line in table(case)]


def peer_table(
    ours: str, peers: list[str], targets: list[Target | None] | None = None
) -> Callable[[Case], list[str]]:
    """A table of ``ours / peer`` per-round ratios, for a case with peers."""

    def render(case: Case) -> list[str]:
        mine = next(v for v in case.variants if v.name == ours)
        lines = [
            "",
            f"{ours} against each peer (ratio within each round, median of the rounds):",
            "",
            "| peer | ratio | min to max | target | met |",
            "|---|---:|---:|---|---|",
        ]
        for i, name in enumerate(peers):
            other = next(v for v in case.variants if v.name == name)
            target = targets[i] if targets else None
            if other.skipped:
                lines.append(f"| {name} | skipped: {other.skipped} | | {target or ''} | |")
                continue
            ratios = case.ratios(mine, other)
            ratio = statistics.median(ratios) if ratios else None
            lines.append(
                f"| {name} | {_x(ratio) if ratio is not None else 'no data'} "
                f"| {_spread(ratios, _x)} | {target or ''} | {_met(target, ratio)} |"
            )
        return lines

    return render


def handler_cost_table(case: Case) -> list[str]:
    """What each handler past the first costs, per message, from each round's runs."""
    one = case.variants[1]
    target = Target("<", 0.1, " µs")
    three = lambda x: f"{x:.3f}"  # noqa: E731
    lines = [
        "",
        "Cost of each extra handler per message, (t(k handlers) - t(1 handler)) / (k - 1) "
        "within each round, where t is the consuming thread's CPU time per message (which "
        "other processes on the machine hardly move) or the wall-clock time per message "
        "(1 / rate). The target is judged on CPU time.",
        "",
        "| handlers | CPU µs (median) | min to max | wall-clock µs (median) | min to max "
        "| target | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for k, v in ((2, case.variants[2]), (4, case.variants[3])):
        pairs = [(s, b) for s, b in zip(v.samples, one.samples, strict=True) if s and b]
        cpu = [(s["cpu_us"] - b["cpu_us"]) / (k - 1) for s, b in pairs]
        wall = [(1 / s["rate"] - 1 / b["rate"]) * 1e6 / (k - 1) for s, b in pairs]
        if not pairs:
            lines.append(f"| {k} | no data | | | | {target} | |")
            continue
        cost = statistics.median(cpu)
        lines.append(
            f"| {k} | {three(cost)} | {_spread(cpu, three)} "
            f"| {three(statistics.median(wall))} | {_spread(wall, three)} "
            f"| {target} | {_met(target, cost)} |"
        )
    return lines


# -- the run -----------------------------------------------------------------------------------


def run_case(case: Case, rounds: int) -> None:
    case.load = [os.getloadavg()[0]]
    runnable = [v for v in case.variants if not v.skipped]
    for r in range(rounds):
        if case.producer is not None:
            try:
                case.producer_rates.append(case.producer())
                shown = _fmt(case.producer_rates[-1], "rate")
            except ChildFailed as exc:
                shown = f"failed: {exc}"
            print(
                f"  {case.key} round {r + 1}: {'producer alone':<55} {shown:>12}", file=sys.stderr
            )
        shift = r % len(runnable)
        for v in runnable[shift:] + runnable[:shift]:  # rotate: no variant always goes first
            try:
                sample: Sample | None = v.run()
            except ChildFailed as exc:
                sample = None
                v.failures.append(str(exc))
            v.samples.append(sample)
            shown = "failed" if sample is None else _fmt(sample[case.metric], case.metric)
            print(f"  {case.key} round {r + 1}: {v.name:<55} {shown:>12}", file=sys.stderr)
    case.load.append(os.getloadavg()[0])


def header(args: argparse.Namespace, peers: dict[str, str | None]) -> str:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        except OSError:
            return "?"
        return out.stdout.strip() or "?"

    # The package's own commit is what the numbers describe; the tree's may only add benchmarks.
    package = git("log", "-1", "--format=%h", "--", "zmqapp")
    dirty = (
        " (with uncommitted changes)" if git("status", "--porcelain", "--", "zmqapp") != "?" else ""
    )
    commit = f"zmqapp/ at {package}{dirty}, tree at {git('describe', '--always', '--dirty')}"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    peer_lines = [
        f"- {dist} {version(dist)}" + (f": skipped, {why}" if why else "")
        for dist, why in peers.items()
    ]
    return "\n".join(
        [
            f"zmqapp benchmarks, {datetime.date.today().isoformat()}: {commit}",
            "",
            f"- {os.cpu_count()} cores, load average at start {load}; {platform.platform()}",
            f"- Python {platform.python_version()}, pyzmq {zmq.__version__}, libzmq "
            f"{zmq.zmq_version()}, tornado {version('tornado')}",
            *peer_lines,
            f"- {args.rounds} rounds; command: python benchmarks/bench.py "
            + " ".join(sys.argv[1:]),
            "- ratios are computed within each round, then the median of the rounds is shown",
        ]
    )


def has_pydantic() -> bool:
    try:
        importlib.metadata.version("pydantic")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


FULL = {"rounds": 5, "messages": 300_000, "requests": 20_000, "flood": 1_000_000}
QUICK = {"rounds": 3, "messages": 100_000, "requests": 5_000, "flood": 200_000}
CASES = ["pull-tcp", "pull-ipc", "pull-4frames", "json", "typed", "sub", "rep", "rpc", "memory"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 5; quick: 3)")
    parser.add_argument(
        "--messages", type=int, help="per throughput run (default 300,000; quick: 100,000)"
    )
    parser.add_argument(
        "--requests", type=int, help="per REP and RPC run (default 20,000; quick: 5,000)"
    )
    parser.add_argument(
        "--flood", type=int, help="messages in the memory case (default 1,000,000; quick: 200,000)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds of smaller counts: a look, not a record"
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    started = time.monotonic()
    peers = peer_status()
    print(header(args, peers), flush=True)
    wanted = args.cases or CASES
    for case in build_cases(args, peers):
        if case.key in wanted:
            print(f"running {case.key} ...", file=sys.stderr)
            run_case(case, args.rounds)
            print("\n" + table(case), flush=True)
    minutes = (time.monotonic() - started) / 60
    print(f"\nThe whole run took {minutes:.1f} minutes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
