"""The programs the multi-host tests run inside their hosts (see ``netns.py``): raw pyzmq.

``push --connect EP ... [--immediate]`` sends numbered messages at ``--rate`` per second once
told ``start``; ``stop`` ends the numbered messages and starts sending ``flush`` markers, which
reach each peer after everything sent to it before; ``quit`` prints a summary (the send
time of every message) and exits. ``pull --bind EP`` receives; ``quit`` prints a summary
(every number received, in order) and exits. Both print their socket monitor's events as
they happen, with ``--heartbeat`` setting ``zmqapp.heartbeat.heartbeat_options`` and
``--option NAME=VALUE`` overriding one socket option.

Every event is one JSON line with ``t``, the sender's ``time.monotonic()``. Both programs
stop by themselves after ``--max-seconds``, and the sender after ``--max-count`` messages.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from zmqapp.heartbeat import heartbeat_options

EVENTS = {
    int(value): name[len("EVENT_") :].lower()
    for name, value in vars(zmq).items()
    if name.startswith("EVENT_") and isinstance(value, int) and name != "EVENT_ALL"
}
FLUSH = b"flush"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


class Commands:
    """Lines from stdin, read without blocking once ``poll`` says there are some."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        self._buffer = b""

    def read(self) -> list[str]:
        data = os.read(self.fd, 4096)
        if not data:
            return ["quit"]  # the test went away
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line.decode().strip() for line in lines]


def make_socket(args: argparse.Namespace, kind: int) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(kind)
    sock.linger = 0
    options = heartbeat_options(args.heartbeat)
    for override in args.option:
        name, _, value = override.partition("=")
        options[getattr(zmq, name.upper())] = int(value)
    for option, value in options.items():
        sock.setsockopt(option, value)
    if getattr(args, "immediate", False):
        sock.immediate = 1
    return sock, sock.get_monitor_socket()


def report_monitor(monitor: zmq.Socket[Any]) -> None:
    while True:
        try:
            event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return
        name = EVENTS.get(int(event["event"]), str(event["event"]))
        emit(name, endpoint=bytes(event["endpoint"]).decode(), value=event["value"])


def push(args: argparse.Namespace) -> None:
    sock, monitor = make_socket(args, zmq.PUSH)
    for endpoint in args.connect:
        sock.connect(endpoint)
    commands = Commands()
    poller = zmq.Poller()
    poller.register(monitor, zmq.POLLIN)
    poller.register(commands.fd, zmq.POLLIN)
    sent: list[float] = []
    mode = "idle"  # "sending" numbered messages, then "flushing"
    started = time.monotonic()
    next_send = started
    period = 1.0 / args.rate
    padding = bytes(max(0, args.size - 4))
    emit("ready")
    while time.monotonic() - started < args.max_seconds:
        now = time.monotonic()
        wait = max(0.0, next_send - now) if mode != "idle" else 0.1
        ready = dict(poller.poll(wait * 1000))
        if monitor in ready:
            report_monitor(monitor)
        if commands.fd in ready:
            for command in commands.read():
                if command == "start":
                    mode, next_send = "sending", time.monotonic()
                elif command == "stop":
                    mode = "flushing"
                elif command == "quit":
                    emit("summary", sent=sent)
                    return
        now = time.monotonic()
        if mode == "idle" or now < next_send:
            continue
        next_send = max(next_send + period, now - period)  # catch up, but never in a burst
        if mode == "sending" and len(sent) >= args.max_count:
            mode = "flushing"
            emit("limit", sent=len(sent))
        body = struct.pack("!I", len(sent)) + padding if mode == "sending" else FLUSH
        try:
            sock.send(body, zmq.NOBLOCK)
        except zmq.Again:
            continue  # every peer is full or gone: not sent, not counted
        if mode == "sending":
            sent.append(now)
    emit("timeout")


def pull(args: argparse.Namespace) -> None:
    sock, monitor = make_socket(args, zmq.PULL)
    sock.bind(args.bind)
    commands = Commands()
    poller = zmq.Poller()
    for item in (sock, monitor, commands.fd):
        poller.register(item, zmq.POLLIN)
    received: list[int] = []
    flushed = False
    reported, reported_at = 0, 0.0
    started = time.monotonic()
    emit("ready")
    while time.monotonic() - started < args.max_seconds:
        ready = dict(poller.poll(50))
        if monitor in ready:
            report_monitor(monitor)
        while sock in ready:
            try:
                body = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if body == FLUSH:
                if not flushed:
                    flushed = True
                    emit("flushed", received=len(received))
            else:
                received.append(struct.unpack_from("!I", body)[0])
        now = time.monotonic()
        if len(received) != reported and now - reported_at >= 0.02:
            reported, reported_at = len(received), now
            emit("count", n=reported, last=received[-1])
        if commands.fd in ready and "quit" in commands.read():
            emit("summary", received=received)
            return
    emit("timeout")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["push", "pull"])
    parser.add_argument("--connect", action="append", default=[])
    parser.add_argument("--bind")
    parser.add_argument("--heartbeat", type=float, default=0.0)
    parser.add_argument("--immediate", action="store_true")
    parser.add_argument("--option", action="append", default=[], help="e.g. TCP_MAXRT=0")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--size", type=int, default=4, help="bytes per message")
    parser.add_argument("--max-count", type=int, default=20_000)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    args = parser.parse_args()
    try:
        (push if args.role == "push" else pull)(args)
    finally:
        zmq.Context.instance().destroy(linger=0)


if __name__ == "__main__":
    main()
