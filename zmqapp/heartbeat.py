"""ZeroMQ's own ZMTP heartbeats, as the socket options of the ``heartbeat=SECONDS`` option.

libzmq sends and answers the heartbeats on its I/O thread, so a handler that keeps the app's
loop busy never makes a healthy peer look dead. :func:`heartbeat_options` turns one number,
the interval, into every option that detecting a lost peer and getting it back depend on.
"""

from __future__ import annotations

import math

import zmq

from .errors import SetupError

#: How many intervals a peer may stay silent before it is dropped.
MISSED_HEARTBEATS = 3

#: libzmq sends ``HEARTBEAT_TTL`` in deciseconds in a 16-bit field.
_TTL_MAX_MS = 6553500


def heartbeat_options(seconds: float | None) -> dict[int, int]:
    """The socket options that make a connection send a heartbeat every ``seconds``.

    ``None`` or ``0`` means heartbeats are off and gives ``{}``, so a caller can always write
    ``options.update(heartbeat_options(value))``. With ``s`` the interval in milliseconds:

    ``HEARTBEAT_IVL = s``
        libzmq sends a ZMTP PING on every connection each interval.
    ``HEARTBEAT_TIMEOUT = 3 s``
        When a PING goes out, libzmq starts this timer (unless one is running); anything
        received from the peer stops it, and when it fires the connection is dropped. The PING
        that starts it is the first one after the peer falls silent, so a dead peer is dropped
        after three unanswered heartbeats: **between 3 and 4 intervals** after it went
        silent. A busy peer never looks dead, because libzmq answers PINGs on its I/O thread.
    ``HEARTBEAT_TTL = 3 s``
        Sent inside each PING: it tells the peer to drop the connection if it hears nothing
        from us for that long, so a peer that sets no heartbeat of its own still notices us
        die. libzmq counts it from each PING received and stops it on any other message, so it
        only helps a peer whose side of the link is quiet; a zmqapp peer with ``heartbeat=``
        times out on its own PINGs instead. Rounded up to the tenth of a second that the wire
        format carries.
    ``TCP_MAXRT = 3 s`` (``TCP_USER_TIMEOUT`` on Linux)
        libzmq can only queue a PING once its write buffer has drained. A socket that keeps
        sending to a peer that stopped acknowledging fills the kernel's send buffer, the PING
        never goes out, and the heartbeat timer never starts. The kernel then drops the
        connection itself once data stays unacknowledged this long. A receiver that is alive
        but slow still acknowledges (its window merely closes), so it is not dropped.
    ``CONNECT_TIMEOUT = 3 s``
        Getting a peer back. After a drop libzmq reconnects at once; while the link is still
        cut, the SYN is lost and the kernel would retry it with its own backoff (1, 3, 7,
        15 ... seconds), so a peer that returns can wait many seconds more for the next SYN.
        Abandoning an attempt after three intervals makes libzmq start a fresh one (after
        ``RECONNECT_IVL``), so a returning peer is reconnected within about three intervals.

    ``TCP_KEEPALIVE`` is left to the operating system: the PINGs are real TCP payload every
    interval, so they already keep NAT and firewall idle timers from expiring and notice a
    silent peer sooner than any keepalive timing would; and keepalive probes are only sent
    on a connection with nothing in flight, which is exactly the case the heartbeats cover.

    Intervals much below the TCP minimum retransmission timeout (200 ms on Linux) make one
    lost segment look like a dead peer; they suit tests on one machine, not real networks.
    Raises :class:`~zmqapp.SetupError` for a negative, non-finite or too large value.
    """
    if seconds is None or seconds == 0:
        return {}
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise SetupError(
            f"heartbeat={seconds!r} is not a number of seconds; give the interval between "
            "heartbeats as a positive number, e.g. heartbeat=1.0, or 0 to turn them off"
        )
    interval = max(1, round(seconds * 1000))
    timeout = MISSED_HEARTBEATS * interval
    ttl = math.ceil(timeout / 100) * 100
    if ttl > _TTL_MAX_MS:
        raise SetupError(
            f"heartbeat={seconds!r} is too long: ZeroMQ can tell a peer to wait at most "
            f"{_TTL_MAX_MS / 1000:g} s, which is {MISSED_HEARTBEATS} intervals of "
            f"{_TTL_MAX_MS / 1000 / MISSED_HEARTBEATS:g} s; use a shorter interval"
        )
    return {
        zmq.HEARTBEAT_IVL: interval,
        zmq.HEARTBEAT_TIMEOUT: timeout,
        zmq.HEARTBEAT_TTL: ttl,
        zmq.TCP_MAXRT: timeout,
        zmq.CONNECT_TIMEOUT: timeout,
    }
