"""ZeroMQ's own ZMTP heartbeats, as the socket options of the ``heartbeat=SECONDS`` option.

libzmq sends and answers the heartbeats on its I/O thread, so a handler that keeps the app's
loop busy never makes a healthy peer look dead (one that stops reading does: see
:func:`heartbeat_options`). It turns one number, the interval, into every option that
detecting a lost peer and getting it back depend on.
"""

from __future__ import annotations

import math

import zmq

from .errors import SetupError

#: A connection is dropped when a PING goes unanswered for this many intervals.
TIMEOUT_INTERVALS = 2
#: A peer is told to drop us after hearing nothing for this many intervals.
TTL_INTERVALS = 3

#: libzmq sends ``HEARTBEAT_TTL`` in deciseconds in a 16-bit field.
_TTL_MAX_MS = 6553500


def heartbeat_options(seconds: float | None) -> dict[int, int]:
    """The socket options that make a connection send a heartbeat every ``seconds``.

    ``None`` or ``0`` means heartbeats are off and gives ``{}``, so a caller can always write
    ``options.update(heartbeat_options(value))``. A peer that falls silent (its host died,
    the network between is cut) is dropped **within three intervals**: more than two after
    the silence began, at most three. With ``s`` the interval in milliseconds:

    ``HEARTBEAT_IVL = s``
        libzmq sends a ZMTP PING on every connection each interval, from its I/O thread.
    ``HEARTBEAT_TIMEOUT = 2 s``
        When a PING goes out, libzmq starts this timer (unless one is running); anything
        received from the peer stops it, and when it fires the connection is dropped. The
        first PING after the peer falls silent leaves within one interval, so this drops it
        2 to 3 intervals after the silence began.
    ``HEARTBEAT_TTL = 3 s``
        Sent inside each PING: the peer drops the connection when it hears nothing from us
        for that long after a PING, so a peer without heartbeats of its own notices us die.
        libzmq stops that timer on any other message, so it only fires where the last thing
        heard was a PING; from our side it does the same for the peer's PINGs, within three
        intervals too. Rounded up to the tenth of a second the wire carries.
    ``CONNECT_TIMEOUT = 3 s``
        Getting the peer back. After a drop libzmq reconnects at once; while the link is
        still cut the SYN is lost and the kernel retries it with its own backoff (1, 3, 7,
        15 ... seconds), so a peer that returns after a long cut could wait many seconds for
        the next SYN (measured: 1.3 s after a 6 s cut). Abandoning an attempt after three
        intervals makes libzmq start a fresh one (after ``RECONNECT_IVL``), so a returning
        peer is reconnected within about three intervals (measured: 0.2 s).

    Left alone, on purpose:

    ``TCP_MAXRT`` (``TCP_USER_TIMEOUT`` on Linux)
        would catch the one case heartbeats miss (libzmq can only queue a PING once its
        write buffer drains), but Linux applies it to a peer that is merely slow too (a zero
        window), and with libzmq 4.3.5 the reset it causes aborts a peer process that has
        heartbeats on and has stopped reading (``Assertion failed: !_io_error``).
    ``TCP_KEEPALIVE``
        The PINGs are real TCP payload every interval, so they already keep NAT and firewall
        idle timers from expiring and notice a silent peer sooner than keepalive timing would.

    A slow peer is told from a dead one only while it keeps reading: libzmq stops reading a
    connection once the application is ``RCVHWM`` messages behind, PINGs then go
    unanswered, and the connection is dropped with whatever was in its TCP buffers (from
    either end, each times out its own PINGs). A busy handler is safe while fewer than
    ``RCVHWM`` messages pile up behind it; a channel that stops reading for longer than
    the timeout is not.

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
    ttl = math.ceil(TTL_INTERVALS * interval / 100) * 100
    if ttl > _TTL_MAX_MS:
        raise SetupError(
            f"heartbeat={seconds!r} is too long: ZeroMQ can tell a peer to wait at most "
            f"{_TTL_MAX_MS / 1000:g} s, which is {TTL_INTERVALS} intervals of "
            f"{_TTL_MAX_MS / 1000 / TTL_INTERVALS:g} s; use a shorter interval"
        )
    return {
        zmq.HEARTBEAT_IVL: interval,
        zmq.HEARTBEAT_TIMEOUT: TIMEOUT_INTERVALS * interval,
        zmq.HEARTBEAT_TTL: ttl,
        zmq.CONNECT_TIMEOUT: TTL_INTERVALS * interval,
    }
