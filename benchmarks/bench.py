"""zmqapp benchmarks: throughput and latency against raw pyzmq, ZMQStream and zmq.asyncio.

Run from the project root::

    python benchmarks/bench.py              # everything, 3 rounds each
    python benchmarks/bench.py pull --rounds 5 --messages 500000
    python benchmarks/bench.py rep
    python benchmarks/bench.py rpc

Each benchmark runs every variant in the same process run, interleaved round by round, and
prints the median of the rounds and the ratio to the baseline. Producers and clients run in
their own processes (started with ``spawn``), so each side has a core, as in production.
Timings on a shared 2-core machine are noisy: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable

import zmq

PAYLOAD = b"x" * 64


# -- processes on the other end ----------------------------------------------------------------


def producer(address: str, count: int, payload: bytes = PAYLOAD) -> None:
    """PUSH ``count`` messages (64 bytes by default) to ``address`` as fast as pyzmq can."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(address)
    send = sock.send
    for _ in range(count):
        send(payload)
    sock.close(linger=-1)
    ctx.term()


def req_client(address: str, count: int, results: mp.Queue[float]) -> None:
    """A raw REQ client: ``count`` round trips; puts the median round trip (µs)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.connect(address)
    for _ in range(200):  # warm up connections and caches
        sock.send(PAYLOAD)
        sock.recv()
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        sock.send(PAYLOAD)
        sock.recv()
        samples.append(clock() - start)
    results.put(statistics.median(samples) * 1e6)
    sock.close(linger=0)
    ctx.term()


def raw_rep_server(address: str, ready: mp.Queue[str]) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.bind(address)
    ready.put(sock.last_endpoint.decode())
    while True:
        msg = sock.recv_multipart()
        if msg == [b"STOP"]:
            sock.send(b"")
            break
        sock.send_multipart(msg)
    sock.close(linger=0)
    ctx.term()


def zmqapp_rep_server(address: str, ready: mp.Queue[str]) -> None:
    from zmqapp import App

    app = App("bench-rep")

    @app.channel("echo", endpoint="@" + address, type="REP")
    def echo(body: bytes) -> bytes:
        if body == b"STOP":
            app.stop()
            return b""
        return body

    @app.on_start
    def announce() -> None:
        ready.put(app.channels["echo"].bound[0])

    app.run(install_signal_handlers=False)


# -- PULL throughput ---------------------------------------------------------------------------


def _start_producer(address: str, count: int, payload: bytes = PAYLOAD) -> mp.process.BaseProcess:
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=producer, args=(address, count, payload), daemon=True)
    proc.start()
    return proc


def pull_raw(count: int) -> float:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.bind("tcp://127.0.0.1:*")
    proc = _start_producer(sock.last_endpoint.decode(), count)
    recv = sock.recv_multipart
    recv()
    start = time.perf_counter()
    for _ in range(count - 1):
        recv()
    elapsed = time.perf_counter() - start
    proc.join()
    sock.close(linger=0)
    ctx.term()
    return (count - 1) / elapsed


def pull_zmqstream(count: int) -> float:
    from zmq.eventloop.zmqstream import ZMQStream

    async def main() -> float:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PULL)
        sock.bind("tcp://127.0.0.1:*")
        stream = ZMQStream(sock)
        done = asyncio.get_running_loop().create_future()
        state = {"n": 0, "start": 0.0}

        def on_recv(frames: list[bytes]) -> None:
            state["n"] += 1
            if state["n"] == 1:
                state["start"] = time.perf_counter()
            elif state["n"] == count:
                done.set_result(time.perf_counter() - state["start"])

        stream.on_recv(on_recv)
        proc = _start_producer(sock.last_endpoint.decode(), count)
        elapsed = await done
        stream.close(linger=0)
        proc.join()
        ctx.term()
        return (count - 1) / elapsed

    return asyncio.run(main())


def pull_asyncio(count: int) -> float:
    import zmq.asyncio

    async def main() -> float:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.PULL)
        sock.bind("tcp://127.0.0.1:*")
        proc = _start_producer(sock.last_endpoint.decode(), count)
        await sock.recv_multipart()
        start = time.perf_counter()
        for _ in range(count - 1):
            await sock.recv_multipart()
        elapsed = time.perf_counter() - start
        sock.close(linger=0)
        proc.join()
        ctx.term()
        return (count - 1) / elapsed

    return asyncio.run(main())


def _pull_zmqapp(count: int, codec: str, payload: bytes = PAYLOAD) -> float:
    from zmqapp import App

    app = App("bench-pull")
    state = {"n": 0, "start": 0.0, "elapsed": 0.0}
    procs = []

    @app.channel("pull", endpoint="@tcp://127.0.0.1:*", type="PULL", codec=codec)
    def on_pull(body: object) -> None:
        state["n"] += 1
        if state["n"] == 1:
            state["start"] = time.perf_counter()
        elif state["n"] == count:
            state["elapsed"] = time.perf_counter() - state["start"]
            app.stop()

    @app.on_start
    def start_producer() -> None:
        procs.append(_start_producer(app.channels["pull"].bound[0], count, payload))

    app.run(install_signal_handlers=False)
    procs[0].join()
    return (count - 1) / state["elapsed"]


def pull_zmqapp(count: int) -> float:
    return _pull_zmqapp(count, "raw")


def pull_zmqapp_json(count: int) -> float:
    # A 64-byte JSON document (a string) instead of 64 bytes of 'x', which is not JSON.
    return _pull_zmqapp(count, "json", b'"' + b"x" * 62 + b'"')


# -- REQ/REP latency ---------------------------------------------------------------------------


def rep_latency(server: Callable[[str, mp.Queue[str]], None], count: int) -> float:
    ctx = mp.get_context("spawn")
    ready: mp.Queue[str] = ctx.Queue()
    results: mp.Queue[float] = ctx.Queue()
    srv = ctx.Process(target=server, args=("tcp://127.0.0.1:*", ready), daemon=True)
    srv.start()
    address = ready.get(timeout=30)
    client = ctx.Process(target=req_client, args=(address, count, results), daemon=True)
    client.start()
    median_us = results.get(timeout=120)
    client.join()
    zctx = zmq.Context()
    stopper = zctx.socket(zmq.REQ)
    stopper.connect(address)
    stopper.send(b"STOP")
    stopper.recv()
    stopper.close(linger=0)
    zctx.term()
    srv.join(timeout=10)
    return median_us


# -- RPC through app.request -------------------------------------------------------------------

WINDOW = 64  # requests in flight from the client, in every variant


def raw_router_server(address: str, ready: mp.Queue[str]) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(address)
    ready.put(sock.last_endpoint.decode())
    while True:
        msg = sock.recv_multipart()
        sock.send_multipart(msg)
        if msg[-1] == b"STOP":
            break
    sock.close(linger=1000)
    ctx.term()


def zmqapp_router_server(
    address: str, ready: mp.Queue[str], concurrency: int = 1, delay: float = 0.0
) -> None:
    from zmqapp import App

    app = App("bench-router")

    @app.channel("rpc", endpoint="@" + address, type="ROUTER", concurrency=concurrency)
    async def echo(body: bytes) -> bytes:
        if body == b"STOP":
            app.stop()
        elif delay:
            await asyncio.sleep(delay)  # a handler that waits on I/O
        return body

    @app.on_start
    def announce() -> None:
        ready.put(app.channels["rpc"].bound[0])

    app.run(install_signal_handlers=False)


def _start_server(target: Callable[..., None], *args: object) -> tuple[mp.process.BaseProcess, str]:
    ctx = mp.get_context("spawn")
    ready: mp.Queue[str] = ctx.Queue()
    proc = ctx.Process(target=target, args=("tcp://127.0.0.1:*", ready, *args), daemon=True)
    proc.start()
    return proc, ready.get(timeout=30)


def _stop_server(proc: mp.process.BaseProcess, address: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(address)
    sock.send_multipart([b"", b"STOP"])
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.recv_multipart()
    sock.close(linger=0)
    ctx.term()
    proc.join(10)


def rpc_raw(count: int) -> float:
    """A raw DEALER keeping WINDOW requests in flight against a raw ROUTER echo server."""
    proc, address = _start_server(raw_router_server)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(address)
    start = time.perf_counter()
    sent = 0
    for _ in range(min(WINDOW, count)):
        sock.send_multipart([b"", PAYLOAD])
        sent += 1
    for _ in range(count):
        sock.recv_multipart()
        if sent < count:
            sock.send_multipart([b"", PAYLOAD])
            sent += 1
    elapsed = time.perf_counter() - start
    sock.close(linger=0)
    ctx.term()
    _stop_server(proc, address)
    return count / elapsed


def rpc_zmqapp(count: int, concurrency: int, delay: float = 0.0) -> float:
    """``app.request`` on a DEALER channel, WINDOW requests in flight, against a zmqapp ROUTER."""
    from zmqapp import App

    proc, address = _start_server(zmqapp_router_server, concurrency, delay)
    client = App("bench-client")
    client.add_channel("rpc", endpoint=address, type="DEALER", timeout=30)
    result: dict[str, float] = {}

    async def worker(n: int) -> None:
        for _ in range(n):
            await client.request("rpc", PAYLOAD)

    async def drive() -> None:
        start = time.perf_counter()
        share = [count // WINDOW + (1 if i < count % WINDOW else 0) for i in range(WINDOW)]
        await asyncio.gather(*(worker(n) for n in share))
        result["rate"] = count / (time.perf_counter() - start)
        client.stop()

    @client.on_start
    def begin() -> None:
        asyncio.get_running_loop().create_task(drive())

    client.run(install_signal_handlers=False)
    _stop_server(proc, address)
    return result["rate"]


# -- driver ------------------------------------------------------------------------------------


def run_rounds(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, fn in variants.items():
            value = fn()
            samples[name].append(value)
            print(f"  round {r + 1}: {name:<28} {value:>12,.1f}", file=sys.stderr)
    return {name: statistics.median(values) for name, values in samples.items()}


Ratio = tuple[str, str, str, str]  # label, numerator variant, denominator variant, target


def table(title: str, unit: str, results: dict[str, float], ratios: list[Ratio]) -> str:
    lines = [f"### {title}", "", f"| variant | {unit} |", "|---|---:|"]
    lines += [f"| {name} | {value:,.1f} |" for name, value in results.items()]
    lines += ["", "| ratio | value | target |", "|---|---:|---|"]
    for label, num, den, target in ratios:
        lines.append(f"| {label} | {results[num] / results[den]:.2f}x | {target} |")
    return "\n".join(lines)


def bench_pull(args: argparse.Namespace) -> str:
    n = args.messages
    variants = {
        "raw pyzmq recv_multipart": lambda: pull_raw(n),
        "ZMQStream.on_recv": lambda: pull_zmqstream(n),
        "zmq.asyncio": lambda: pull_asyncio(n),
        "zmqapp (raw codec)": lambda: pull_zmqapp(n),
        "zmqapp (json codec)": lambda: pull_zmqapp_json(n),
    }
    results = run_rounds(variants, args.rounds)
    return table(
        f"PULL throughput, {n:,} x 64-byte messages, median of {args.rounds}",
        "messages/s",
        results,
        [
            ("zmqapp / ZMQStream", "zmqapp (raw codec)", "ZMQStream.on_recv", ">= 5x"),
            ("zmqapp / zmq.asyncio", "zmqapp (raw codec)", "zmq.asyncio", ""),
            ("zmqapp / raw loop", "zmqapp (raw codec)", "raw pyzmq recv_multipart", ">= 0.7x"),
            ("zmqapp json / raw loop", "zmqapp (json codec)", "raw pyzmq recv_multipart", ""),
        ],
    )


def bench_rep(args: argparse.Namespace) -> str:
    n = args.requests
    variants = {
        "raw pyzmq REP server": lambda: rep_latency(raw_rep_server, n),
        "zmqapp REP server": lambda: rep_latency(zmqapp_rep_server, n),
    }
    results = run_rounds(variants, args.rounds)
    return table(
        f"REQ/REP round trip (same raw REQ client), {n:,} requests, median of {args.rounds}",
        "median round trip (µs)",
        results,
        [("zmqapp / raw", "zmqapp REP server", "raw pyzmq REP server", "<= 1.25x")],
    )


def bench_rpc(args: argparse.Namespace) -> str:
    n = args.requests
    slow = max(n // 20, WINDOW)  # with a 1 ms handler, fewer requests make the point
    variants = {
        "raw DEALER / raw ROUTER": lambda: rpc_raw(n),
        "app.request / zmqapp ROUTER, concurrency 1": lambda: rpc_zmqapp(n, 1),
        "app.request / zmqapp ROUTER, concurrency 64": lambda: rpc_zmqapp(n, 64),
        "1 ms handler, concurrency 1": lambda: rpc_zmqapp(slow, 1, 0.001),
        "1 ms handler, concurrency 64": lambda: rpc_zmqapp(slow, 64, 0.001),
    }
    results = run_rounds(variants, args.rounds)
    raw = "raw DEALER / raw ROUTER"
    return table(
        f"RPC through app.request on DEALER, {WINDOW} requests in flight, {n:,} requests "
        f"({slow:,} with the 1 ms handler), median of {args.rounds}",
        "requests/s",
        results,
        [
            ("concurrency 1 / raw", "app.request / zmqapp ROUTER, concurrency 1", raw, ""),
            ("concurrency 64 / raw", "app.request / zmqapp ROUTER, concurrency 64", raw, ""),
            (
                "1 ms handler: concurrency 64 / 1",
                "1 ms handler, concurrency 64",
                "1 ms handler, concurrency 1",
                "",
            ),
        ],
    )


BENCHMARKS = {"pull": bench_pull, "rep": bench_rep, "rpc": bench_rpc}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    which = args.which or list(BENCHMARKS)
    unknown = [w for w in which if w not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    out = []
    for name in which:
        print(f"running {name} ...", file=sys.stderr)
        out.append(BENCHMARKS[name](args))
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
