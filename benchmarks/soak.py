"""Soak: a flood of small PUSH messages into a PULL channel with a slow coroutine handler.

Every message must be handled exactly once, and the receiving process's peak RSS must grow by
less than 1 MB: when the handlers are all busy the channel stops reading, and ZeroMQ's
high-water marks push back on the producer instead of memory filling up.

    python benchmarks/soak.py                        # 1,000,000 messages (about a minute)
    python benchmarks/soak.py --messages 100000      # the size the test suite runs

Prints one JSON object: messages, handled, duplicates, missing, seconds, rate, and the
receiver's RSS at start, at its peak, and the growth in MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import struct
import sys
import time

import psutil
import zmq
from procs import peak_rss

from zmqapp import App

PAD = b"." * 12  # 16-byte messages: a 4-byte sequence number and padding


def produce(address: str, count: int) -> None:
    """Send ``count`` numbered messages, blocking whenever the receiver pushes back."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(address)
    pack = struct.Struct("!I").pack
    for i in range(count):
        sock.send(pack(i) + PAD)
    sock.close(linger=-1)
    ctx.term()


def soak(count: int, concurrency: int, delay: float) -> dict[str, float]:
    app = App("soak")
    app.config.update(SHUTDOWN_TIMEOUT=30.0)
    seen = bytearray(count)  # how many times each message was handled
    state = {"handled": 0, "start": 0.0, "elapsed": 0.0}
    process = psutil.Process()
    producers: list[mp.process.BaseProcess] = []
    unpack = struct.Struct("!I").unpack_from

    @app.channel("flood", endpoint="@tcp://127.0.0.1:*", type="PULL", concurrency=concurrency)
    async def slow(body: bytes) -> None:
        await asyncio.sleep(delay)  # a slow dependency: a database, another service
        (i,) = unpack(body)
        seen[i] += 1
        state["handled"] += 1
        if state["handled"] == count:
            state["elapsed"] = time.perf_counter() - state["start"]
            app.stop()

    @app.on_start
    def start_producer() -> None:
        state["rss_start"] = process.memory_info().rss
        state["start"] = time.perf_counter()
        proc = mp.get_context("spawn").Process(
            target=produce, args=(app.channels["flood"].bound[0], count), daemon=True
        )
        proc.start()
        producers.append(proc)

    app.run(install_signal_handlers=False)
    producers[0].join(30)
    peak = peak_rss()
    return {
        "messages": count,
        "handled": state["handled"],
        "duplicates": sum(1 for n in seen if n > 1),
        "missing": seen.count(0),
        "seconds": round(state["elapsed"], 2),
        "rate": round(count / state["elapsed"]) if state["elapsed"] else 0,
        "rss_start_mb": round(state["rss_start"] / 2**20, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_growth_mb": round((peak - state["rss_start"]) / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.0005, help="seconds per handler call")
    args = parser.parse_args(argv)
    result = soak(args.messages, args.concurrency, args.delay)
    print(json.dumps(result))
    ok = (
        result["handled"] == args.messages
        and result["duplicates"] == 0
        and result["missing"] == 0
        and result["rss_growth_mb"] < 1.0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
