"""Requests and their replies: what ``app.request`` uses on REQ and DEALER channels."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import struct
from typing import TYPE_CHECKING

import zmq

from .errors import NotRunning, Timeout
from .message import Frames

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
        self.dealer = pump.channel.socket_type == zmq.DEALER
        self.pending: dict[bytes, asyncio.Future[Frames]] = {}
        self.lock = asyncio.Lock()
        self.current: asyncio.Future[Frames] | None = None
        self._prefix = os.urandom(4)  # so replies meant for an earlier run are not mistaken
        self._counter = 0
        self._pack = struct.Struct("!I").pack
        #: (deadline, sequence, future) of every attempt, and the one timer that expires them.
        self._deadlines: list[tuple[float, int, asyncio.Future[Frames]]] = []
        self._sequence = itertools.count()  # breaks ties, so futures are never compared
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        pump.intercept = self.deliver

    def deliver(self, frames: Frames) -> bool:
        """Offered every message the channel receives; True if it answered a request."""
        if self.dealer:
            if len(frames) >= 3 and not frames[1]:
                future = self.pending.get(frames[0])
                if future is not None:
                    if not future.done():
                        future.set_result(frames[2:])
                    return True
                # A late reply to a request that timed out is dropped, not dispatched.
                return len(frames[0]) == 8 and frames[0][:4] == self._prefix
            return False
        future = self.current
        if future is not None and not future.done():
            future.set_result(frames)
            return True
        return False

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
        attempts = f" after {retries + 1} attempts" if retries else ""
        raise Timeout(
            f"no reply on channel {self.pump.channel.name!r} within {timeout:g} s{attempts}"
        )

    async def _attempt(
        self, frames: Frames, future: asyncio.Future[Frames], timeout: float
    ) -> Frames:
        if len(self.pump.outbox) >= self.pump.queue_limit:
            await self.pump.wait_for_room()
        self.pump.send(frames)
        self._arm(future, timeout)
        return await future

    def _arm(self, future: asyncio.Future[Frames], timeout: float) -> None:
        """Expire ``future`` after ``timeout``. One asyncio timer per channel serves every
        request: asyncio's timer heap compares in Python, a heap of tuples compares in C."""
        deadline = self.loop.time() + timeout
        heapq.heappush(self._deadlines, (deadline, next(self._sequence), future))
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
            self._deadlines = [entry for entry in self._deadlines if not entry[2].done()]
            heapq.heapify(self._deadlines)

    def _expire_due(self) -> None:
        self._timer = None
        deadlines = self._deadlines
        now = self.loop.time()
        while deadlines and (deadlines[0][0] <= now or deadlines[0][2].done()):
            future = heapq.heappop(deadlines)[2]
            if not future.done():
                future.set_exception(_Expired())
        if deadlines:
            self._timer_when = deadlines[0][0]
            self._timer = self.loop.call_at(self._timer_when, self._expire_due)

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
