"""Socket monitoring: ZeroMQ's monitor events as signals, peer counts and log lines.

A channel is monitored when it asks (``monitor=True``), when the ``MONITOR`` config key is
set, when it uses CURVE (so failed handshakes are seen), or when something is connected to
:data:`~zmqapp.signals.socket_event`, :data:`~zmqapp.signals.peer_connected` or
:data:`~zmqapp.signals.peer_disconnected` as the app starts. Events are named after
libzmq's ``ZMQ_EVENT_*`` constants, lower case: ``connected``, ``accepted``,
``disconnected``, ``handshake_failed_auth``, ``handshake_failed_protocol`` ...

A monitored channel knows its connected peers: one per TCP or IPC connection, from
``connected``/``accepted`` to ``disconnected``, by the peer's address where ZeroMQ's file
descriptor tells it (TCP), else by the endpoint.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Any

import zmq

from ._problems import ProblemLog
from .channel import Channel
from .security import needs_zap
from .signals import peer_connected, peer_disconnected, socket_event
from .socket_types import KINDS

log = logging.getLogger("zmqapp")

#: libzmq event numbers to the names socket-event receivers get.
EVENT_NAMES: dict[int, str] = {
    int(value): name[len("EVENT_") :].lower()
    for name, value in vars(zmq).items()
    if name.startswith("EVENT_") and isinstance(value, int) and not name.startswith("EVENT_ALL")
}
#: libzmq's ZMTP and ZAP protocol error codes to their names, for handshake failures.
PROTOCOL_ERRORS: dict[int, str] = {
    int(value): name[len("PROTOCOL_ERROR_") :].lower()
    for name, value in vars(zmq).items()
    if name.startswith("PROTOCOL_ERROR_") and isinstance(value, int)
}

#: A handshake that failed because the peer hung up (its errno).
_PEER_CLOSED = {errno.EPIPE, errno.ECONNRESET}
#: The ZAP status of a refusal by the app's authenticator (which counts it itself).
ZAP_REFUSED = 400
_FAILED = {"handshake_failed_auth", "handshake_failed_protocol", "handshake_failed_no_detail"}
#: The events zmqapp asks the monitor for.
EVENTS = int(zmq.EVENT_ALL)


def describe_value(event: str, value: int) -> str:
    """An event's value as a person reads it: an errno name, a protocol error, a ZAP status."""
    if event == "handshake_failed_protocol":
        return PROTOCOL_ERRORS.get(value, f"protocol error {value:#x}")
    if event == "handshake_failed_auth":
        return f"ZAP status {value}"
    if event in ("handshake_failed_no_detail", "bind_failed", "accept_failed", "close_failed"):
        name = errno.errorcode.get(value)
        return f"{name}: {os.strerror(value)}" if name else str(value)
    if event == "connect_retried":
        return f"retrying in {value} ms"
    return str(value)


def _pairs_with(channel: Channel) -> str:
    names = sorted(KINDS[t].name for t in channel.kind.peers)
    return "it talks to " + " or ".join(names)


def _peer_address(fd: int, endpoint: str) -> str:
    """The remote address of a TCP connection libzmq owns (``tcp://ip:port``), else
    ``endpoint``. The descriptor is duplicated and only asked for its peer."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            host, port = sock.getpeername()[:2]
    except OSError:
        return endpoint
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class SocketMonitor:
    """Reads one socket's monitor events on the loop: signals, peers, problems logged."""

    def __init__(
        self,
        app: Any,
        channel: Channel,
        sock: zmq.Socket[Any] | None,
        monitor: zmq.Socket[Any] | None = None,
        problems: ProblemLog | None = None,
    ) -> None:
        """Monitor ``sock``, or read ``monitor``, a monitor socket made by the thread that
        owns the monitored socket (a ``--workers`` proxy), which this one then never touches."""
        self.app = app
        self.channel = channel
        self.socket = sock
        self.problems = problems or ProblemLog(log)
        self.loop = asyncio.get_running_loop()
        #: Connected peers: libzmq's descriptor of each connection -> the peer's address.
        self.peers: dict[int, str] = {}
        #: Connections opened on each endpoint whose ZMTP handshake has not succeeded yet.
        self.unshaken: dict[str, int] = {}
        if monitor is None:
            assert sock is not None
            monitor = sock.get_monitor_socket(EVENTS)
        self.monitor: zmq.Socket[Any] = monitor
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
            if len(frames) != 2 or len(frames[0]) != 6:  # pragma: no cover - libzmq's format
                continue
            number = int.from_bytes(frames[0][:2], "little")
            value = int.from_bytes(frames[0][2:], "little")
            try:
                self.handle(
                    EVENT_NAMES.get(number, str(number)), value, frames[1].decode(errors="replace")
                )
            except Exception as exc:
                # A receiver of peer_connected, socket_event... raised. Say so and read on:
                # the events still queued announce themselves with no new edge.
                self.problems.report(
                    self.channel.name,
                    "handler_failed",
                    "a receiver of a zmqapp socket signal failed on channel %r",
                    self.channel.name,
                    level=logging.ERROR,
                    exc_info=exc,
                )

    def handle(self, name: str, value: int, endpoint: str) -> None:
        channel = self.channel
        if name in ("connected", "accepted"):
            address = endpoint if name == "connected" else _peer_address(value, endpoint)
            self.peers[value] = address
            self.unshaken[endpoint] = self.unshaken.get(endpoint, 0) + 1
            if peer_connected.receivers:
                peer_connected.send(self.app, channel=channel, address=address)
        elif name == "handshake_succeeded":
            self._shaken(endpoint)
        elif name == "disconnected":
            address = self.peers.pop(value, endpoint)
            if self._shaken(endpoint):
                self.closed_early(address)
            if peer_disconnected.receivers:
                peer_disconnected.send(self.app, channel=channel, address=address)
        elif name == "handshake_failed_no_detail" and value in _PEER_CLOSED:
            self._shaken(endpoint)
            self.closed_early(endpoint)  # the peer hung up mid-handshake
        elif name in _FAILED:
            # Each failed connection is counted once: its close is not counted again, and a
            # refusal by this app's authenticator is counted there (auth_refused). A CURVE
            # client refused by its server is counted here.
            self._shaken(endpoint)
            ours = name == "handshake_failed_auth" and value == ZAP_REFUSED and needs_zap(channel)
            if not ours:
                channel.stats.handshake(name)
            log.warning(
                "channel %r: %s on %s (%s)",
                channel.name,
                name.replace("_", " "),
                endpoint,
                describe_value(name, value),
                extra={"channel": channel.name, "peer": endpoint},
            )
        if socket_event.receivers:
            socket_event.send(self.app, channel=channel, event=name, endpoint=endpoint, value=value)

    def _shaken(self, endpoint: str) -> bool:
        """One connection on ``endpoint`` is done with its handshake, one way or another;
        True if one was waiting for it."""
        if self.unshaken.get(endpoint, 0) > 0:
            self.unshaken[endpoint] -= 1
            return True
        return False

    def closed_early(self, address: str) -> None:
        """A connection closed before its ZeroMQ handshake completed: libzmq says no more
        when socket types do not pair (a PUSH meeting a PUSH), or one side speaks CURVE and
        the other not. Counted once, as ``closed_before_handshake``, and said with a hint."""
        channel = self.channel
        channel.stats.handshake("closed_before_handshake")
        self.problems.report(
            channel.name,
            "handshake",
            "channel %r: a connection with %s closed before the ZeroMQ handshake completed; "
            "does the peer's socket type pair with %s (%s), and do both sides agree on CURVE?",
            channel.name,
            address,
            channel.type_name,
            _pairs_with(channel),
            peer=address,
        )

    def close(self) -> None:
        self.read()  # deliver what is left
        self.loop.remove_reader(self.fd)
        close_monitor(self.socket, self.monitor)


def close_monitor(sock: zmq.Socket[Any] | None, monitor: zmq.Socket[Any]) -> None:
    """Stop monitoring ``sock`` (None: a socket another thread owns) and close ``monitor``."""
    if sock is not None:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
    monitor.close(linger=0)
