"""Requests and their replies: what ``app.request`` uses on REQ and DEALER channels."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import struct
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import zmq

from .errors import NotRunning, Timeout
from .message import ERROR_PREFIX, Frames, body_decoder, parse_error_reply

if TYPE_CHECKING:
    from .pump import Pump


class _Expired(Exception):
    """One attempt's time ran out (internal)."""


class Requests:
    """The requests in flight on one REQ or DEALER channel, matched to their replies.

    DEALER requests go out as ``[request id, b"", body...]``, so a ROUTER server (zmqapp, or
    any that keeps the envelope) or a REP socket sends the id back with the reply; any number
    may be in flight, across any number of servers. REQ channels run with ``REQ_RELAXED`` and
    ``REQ_CORRELATE``: libzmq numbers each request and drops replies to older ones, so a timed
    out request never leaves the socket stuck, and a lock gives requests one at a time.
    """

    def __init__(self, pump: Pump) -> None:
        self.pump = pump
        self.loop = pump.loop
        self.body_of = body_decoder(pump.channel.codec)
        self.dealer = pump.channel.socket_type == zmq.DEALER
        self.pending: dict[bytes, asyncio.Future[Frames]] = {}
        self.lock = asyncio.Lock()
        self.current: asyncio.Future[Frames] | None = None
        self._prefix = os.urandom(4)  # so replies meant for an earlier run are not mistaken
        self._counter = 0
        self._pack = struct.Struct("!I").pack
        #: (deadline, sequence, future, request id) of every attempt, and the one timer that
        #: expires them.
        self._deadlines: list[tuple[float, int, asyncio.Future[Frames], bytes | None]] = []
        self._sequence = itertools.count()  # breaks ties, so futures are never compared
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        pump.intercept = self.deliver

    def deliver(self, frames: Frames) -> bool:
        """Offered every message the channel receives; True if it answered a request."""
        if self.dealer:
            if len(frames) >= 3 and not frames[1]:
                future = self.pending.pop(frames[0], None)
                if future is not None:
                    if future.done():  # its caller gave up waiting (cancelled)
                        self.pump.stats.drop("late_reply")
                    else:
                        future.set_result(frames[2:])
                    return True
                # A late reply to a request that timed out (or was cancelled) is dropped,
                # and counted as such, not dispatched.
                if len(frames[0]) == 8 and frames[0][:4] == self._prefix:
                    self.pump.stats.drop("late_reply")
                    return True
            return False
        future = self.current
        if future is not None and not future.done():
            future.set_result(frames)
            return True
        return False

    async def request(self, frames: Frames, timeout: float, retries: int) -> Any:
        """Send ``frames``, wait for the reply, count the outcome, and return the decoded body
        (or raise :class:`~zmqapp.Timeout`, :class:`~zmqapp.RemoteError`, DecodeError)."""
        pump = self.pump
        stats = pump.stats
        try:
            if pump.tracer is None and self.dealer:
                reply = await self._ask_dealer(frames, timeout, retries)
            elif pump.tracer is None:
                reply = await self.ask(frames, timeout, retries)
            else:
                with pump.tracer.request(pump.channel, sum(len(f) for f in frames)):
                    if pump.channel.trace:
                        frames = [pump.tracer.header(), *frames]
                    reply = await self.ask(frames, timeout, retries)
        except _Expired:  # the one attempt of _ask_dealer
            stats.request("timeout")
            raise self._timeout(timeout, retries) from None
        except Timeout:
            stats.request("timeout")
            raise
        except asyncio.CancelledError:  # the caller gave up first (asyncio.wait_for, a stop)
            stats.request("cancelled")
            raise
        if len(reply) == 1 and reply[0].startswith(ERROR_PREFIX):  # parse only error replies
            error = parse_error_reply(reply)
            if error is not None:
                stats.request("remote_error")
                raise error
        try:
            body = self.body_of(reply)
        except Exception:
            stats.request("decode_failed")
            raise  # a DecodeError: the reply is not in the channel's codec
        stats.request("ok")
        return body

    def _ask_dealer(self, frames: Frames, timeout: float, retries: int) -> Awaitable[Frames]:
        """A DEALER request's reply frames. The first attempt is sent here, at once, and its
        future returned to be awaited: one coroutine less per request, which counts at tens
        of thousands of requests a second. Retries, and a full send queue, take :meth:`ask`."""
        pump = self.pump
        if retries or len(pump.outbox) >= pump.queue_limit:
            return self.ask(frames, timeout, retries)
        self._counter = (self._counter + 1) & 0xFFFFFFFF
        request_id = self._prefix + self._pack(self._counter)
        future: asyncio.Future[Frames] = self.loop.create_future()
        self.pending[request_id] = future
        pump.send([request_id, b"", *frames])
        self._arm(future, timeout, request_id)
        return future

    async def ask(self, frames: Frames, timeout: float, retries: int) -> Frames:
        """Send ``frames`` and return the reply's frames, resending up to ``retries`` times."""
        if self.dealer:
            self._counter = (self._counter + 1) & 0xFFFFFFFF
            request_id = self._prefix + self._pack(self._counter)
            try:
                for _ in range(retries + 1):
                    future = self.pending[request_id] = self.loop.create_future()
                    try:
                        return await self._attempt([request_id, b"", *frames], future, timeout)
                    except _Expired:
                        continue
            finally:
                self.pending.pop(request_id, None)
        else:
            async with self.lock:
                for _ in range(retries + 1):
                    future = self.current = self.loop.create_future()
                    try:
                        return await self._attempt(list(frames), future, timeout)
                    except _Expired:
                        continue
                    finally:
                        self.current = None
        raise self._timeout(timeout, retries)

    def _timeout(self, timeout: float, retries: int) -> Timeout:
        attempts = f" after {retries + 1} attempts" if retries else ""
        return Timeout(
            f"no reply on channel {self.pump.channel.name!r} within {timeout:g} s{attempts}"
        )

    async def _attempt(
        self, frames: Frames, future: asyncio.Future[Frames], timeout: float
    ) -> Frames:
        left = await self._room(timeout)
        self.pump.send(frames)
        self._arm(future, left)
        return await future

    async def _room(self, timeout: float) -> float:
        """Wait for room in the send queue, within the attempt's ``timeout``; the time left
        of it (an attempt that finds no room in time has expired)."""
        pump = self.pump
        if len(pump.outbox) < pump.queue_limit:
            return timeout
        began = self.loop.time()
        try:
            await asyncio.wait_for(pump.wait_for_room(), timeout)
        except asyncio.TimeoutError:
            raise _Expired() from None
        return max(0.0, timeout - (self.loop.time() - began))

    def _arm(
        self, future: asyncio.Future[Frames], timeout: float, request_id: bytes | None = None
    ) -> None:
        """Expire ``future`` after ``timeout`` (and forget ``request_id``'s entry in
        :attr:`pending`). One asyncio timer per channel serves every request: asyncio's timer
        heap compares in Python, a heap of tuples compares in C."""
        deadline = self.loop.time() + timeout
        heapq.heappush(self._deadlines, (deadline, next(self._sequence), future, request_id))
        if self._timer is None or deadline < self._timer_when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(deadline, self._expire_due)
            self._timer_when = deadline
        elif len(self._deadlines) > 64 and len(self._deadlines) > 4 * (
            len(self.pending) + (self.current is not None)
        ):
            # Answered requests leave their entries behind until their deadline; keep the
            # heap proportional to what is actually waiting.
            waiting = []
            for entry in self._deadlines:
                if entry[2].done():
                    self._forget(entry[2], entry[3])
                else:
                    waiting.append(entry)
            heapq.heapify(waiting)
            self._deadlines = waiting

    def _expire_due(self) -> None:
        self._timer = None
        deadlines = self._deadlines
        now = self.loop.time()
        while deadlines and (deadlines[0][0] <= now or deadlines[0][2].done()):
            _, _, future, request_id = heapq.heappop(deadlines)
            if not future.done():
                future.set_exception(_Expired())
            self._forget(future, request_id)
        if deadlines:
            self._timer_when = deadlines[0][0]
            self._timer = self.loop.call_at(self._timer_when, self._expire_due)

    def _forget(self, future: asyncio.Future[Frames], request_id: bytes | None) -> None:
        """Drop ``request_id``'s entry in :attr:`pending` if it is still ``future``'s: a
        request that expired, or whose caller gave up (cancelled) while it waited."""
        if request_id is not None and self.pending.get(request_id) is future:
            del self.pending[request_id]

    def cancel_all(self) -> None:
        """Fail every request still waiting: the app is stopping."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        for future in [*self.pending.values(), self.current]:
            if future is not None and not future.done():
                future.set_exception(NotRunning("the app stopped before the reply came"))
        self.pending.clear()
