"""Socket monitoring: ZeroMQ's monitor events as ``socket-event`` signals.

A channel is monitored when it asks (``monitor=True``), when the ``MONITOR`` config key is
set, when it uses CURVE (so failed handshakes are seen), or when something is connected to
:data:`zmqapp.signals.socket_event` as the app starts. Events are named after libzmq's
``ZMQ_EVENT_*`` constants, lower case: ``connected``, ``accepted``, ``disconnected``,
``handshake_failed_auth``, ``handshake_failed_protocol`` ...
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from .channel import Channel
from .signals import socket_event

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("zmqapp")

#: libzmq event numbers to the names socket-event receivers get.
EVENT_NAMES: dict[int, str] = {
    int(value): name[len("EVENT_") :].lower()
    for name, value in vars(zmq).items()
    if name.startswith("EVENT_") and isinstance(value, int) and name not in ("EVENT_ALL",)
}

_WARN = {"handshake_failed_auth", "handshake_failed_protocol", "handshake_failed_no_detail"}


class SocketMonitor:
    """Reads one socket's monitor events on the app's loop and sends them as signals."""

    def __init__(self, app: App, channel: Channel, sock: zmq.Socket[Any]) -> None:
        self.app = app
        self.channel = channel
        self.socket = sock
        self.loop = asyncio.get_running_loop()
        self.monitor: zmq.Socket[Any] = sock.get_monitor_socket()
        self.fd = self.monitor.FD
        self.loop.add_reader(self.fd, self.read)
        self.loop.call_soon(self.read)  # events may already be queued (binds happened first)

    def read(self) -> None:
        """Handle every queued event (the descriptor is edge-triggered: read until empty)."""
        monitor = self.monitor
        while not monitor.closed:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                event = parse_monitor_message(frames)
            except Exception:  # pragma: no cover - libzmq sends what pyzmq parses
                continue
            name = EVENT_NAMES.get(int(event["event"]), str(event["event"]))
            endpoint = bytes(event["endpoint"]).decode(errors="replace")
            value = event["value"]
            if name in _WARN:
                self.channel.stats.handshake_failed += 1
                log.warning("channel %r: %s on %s (%s)", self.channel.name, name, endpoint, value)
            if socket_event.receivers:
                socket_event.send(
                    self.app, channel=self.channel, event=name, endpoint=endpoint, value=value
                )

    def close(self) -> None:
        self.read()  # deliver what is left (e.g. 'closed'-adjacent events already queued)
        self.loop.remove_reader(self.fd)
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
