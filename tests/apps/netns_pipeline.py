"""A three-role zmqapp pipeline for the multi-host test (``tests/test_netns.py``).

``ingest --bind EP``: a PUSH that sends numbered events at ``--rate`` once told ``start``,
until ``stop``. ``worker --source EP --sink EP``: a PULL that forwards every event, through
``send_to``, to a PUSH. ``sink --bind EP``: a PULL that counts. Every channel has
``heartbeat=--heartbeat``. Each prints JSON lines on stdout (``event`` and ``t``, its
``time.monotonic()``): ``peer_connected``/``peer_disconnected`` (from zmqapp's signals),
``count`` now and then, and on ``quit`` a ``summary`` (the ingest: every send time; the
sink: every number received), then stops the app. Commands come one per line on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from zmqapp import App, signals


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("ingest", "worker", "sink"))
    parser.add_argument("--bind")
    parser.add_argument("--source")
    parser.add_argument("--sink")
    parser.add_argument("--heartbeat", type=float, default=0.2)
    parser.add_argument("--rate", type=float, default=200)
    args = parser.parse_args()

    app = App(args.role)
    app.config.update(LINGER=0, SHUTDOWN_TIMEOUT=2.0, HEARTBEAT=args.heartbeat)
    sent: list[float] = []
    received: list[int] = []
    state = {"sending": False}

    if args.role == "ingest":
        app.add_channel("events", endpoint=f"@{args.bind}", type="PUSH")

        @app.timer(1 / args.rate)
        def produce() -> None:
            if state["sending"]:
                app.send("events", b"%d" % len(sent))
                sent.append(time.monotonic())

    elif args.role == "worker":
        app.add_channel("results", endpoint=args.sink, type="PUSH")

        @app.channel("events", endpoint=args.source, type="PULL", send_to="results")
        def forward(body: bytes) -> bytes:
            return body

    else:

        @app.channel("results", endpoint=f"@{args.bind}", type="PULL")
        def count(body: bytes) -> None:
            received.append(int(body))

    @signals.peer_connected.connect_via(app)
    def connected(sender: App, channel: Any, address: str) -> None:
        emit("peer_connected", channel=channel.name, address=address)

    @signals.peer_disconnected.connect_via(app)
    def disconnected(sender: App, channel: Any, address: str) -> None:
        emit("peer_disconnected", channel=channel.name, address=address)

    @app.timer(0.1)
    def report() -> None:
        emit("count", sent=len(sent), received=len(received))

    @app.on_start
    def listen_to_the_test() -> None:
        loop = asyncio.get_running_loop()
        buffer = b""

        def command() -> None:
            nonlocal buffer
            data = os.read(sys.stdin.fileno(), 4096)
            if not data:
                app.stop()
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                word = line.decode().strip()
                if word == "start":
                    state["sending"] = True
                elif word == "stop":
                    state["sending"] = False
                elif word == "quit":
                    emit("summary", sent=sent, received=received)
                    app.stop()

        loop.add_reader(sys.stdin.fileno(), command)
        emit("ready")

    @app.on_stop
    def stop_listening() -> None:
        asyncio.get_running_loop().remove_reader(sys.stdin.fileno())

    app.run()


if __name__ == "__main__":
    main()
