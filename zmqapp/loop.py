"""The hot loop: one :class:`Pump` per socket moves messages between ZeroMQ and the handlers.

Why not ``ZMQStream`` or ``zmq.asyncio``: both read one message per event-loop wakeup, which
caps them near 70k small messages/s on a 2-core machine. A pump owns its socket's file
descriptor on the asyncio loop and, per wakeup, reads up to ``BATCH_SIZE`` messages with
non-blocking ``recv_multipart`` calls, then yields, so a busy channel cannot starve the others.

The subtle part is ZeroMQ's file descriptor (``ZMQ_FD``). It is *edge-triggered* and says only
"the socket's state may have changed": it becomes readable when commands reach the socket, and
any ``send``, ``recv`` or ``ZMQ_EVENTS`` read processes those commands and clears it. So a
message can be waiting while the descriptor stays quiet, for instance after a send on the same
socket swallowed the edge that announced it. The rules that keep every wakeup:

1. A drain ends either on ``zmq.Again`` (nothing left; the next arrival will raise the edge)
   or on the batch limit, and then the pump reschedules itself with ``call_soon``.
2. Any send made outside the pump's own callback (another channel's handler, a timer, a
   thread hopping onto the loop) schedules one extra check of ``ZMQ_EVENTS``; checks are
   coalesced, so a burst of sends costs one.
3. A pump that stops reading for a while (concurrency reached, downstream queue full)
   schedules a check when it resumes, because the edges of what arrived meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, cast

import zmq

from . import security
from ._handlers import Handler, Invoker, make_invoker
from .channel import Channel
from .codecs import RAW
from .errors import DecodeError, NotRunning, SendQueueFull, Unroutable
from .message import (
    Frames,
    Message,
    body_decoder,
    encode_body,
    error_reply,
    make_parser,
    split_envelope,
)
from .signals import (
    decode_failed,
    handler_failed,
    message_handled,
    message_received,
    message_sent,
)

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("zmqapp")

# Plain ints: pyzmq's constants are enums, and enum arithmetic per frame is measurable here.
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_Again = zmq.Again
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_EVENTS = int(zmq.EVENTS)


class Pump:
    """Reads, dispatches and writes for one channel's socket on the app's event loop."""

    def __init__(self, app: App, channel: Channel, sock: zmq.Socket[Any]) -> None:
        self.app = app
        self.channel = channel
        self.socket = sock
        self.loop = asyncio.get_running_loop()
        self.stats = channel.stats
        config = app.config
        self.batch = int(config["BATCH_SIZE"])
        self.queue_limit = int(config["SEND_QUEUE"])
        self.error_detail = bool(config["ERROR_DETAIL"])
        self.fd = sock.FD
        # getsockopt is typed int | bytes; ZMQ_EVENTS is always an int.
        self.get_option = cast("Callable[[int], int]", sock.getsockopt)
        self.recv: Callable[[int], Frames] = sock.recv_multipart
        self._send = sock.send
        self.parse = make_parser(channel)
        if security.is_server(channel):  # handlers may ask for the client's key: user_id
            self.recv = security.recv_with_user_id(sock)
            self.parse = _with_user_id(self.parse)
        self.body_of = body_decoder(channel.codec)
        self.raw = channel.codec is RAW
        self.fast_fn: Callable[[Any], Any] = _no_fast_path
        self.dispatch_inner: Callable[[Frames], None] = self.dispatch_message
        self.replies = channel.replies
        self.reply_type = channel.socket_type

        #: What each received message is handed to: built from the channel's receivers.
        self.invokers: tuple[Invoker, ...] = ()
        #: True when some receiver is a coroutine (or threaded) handler.
        self.is_async = False
        #: Where non-None return values go (the send_to channel's pump), if anywhere.
        self.forward: Pump | None = None
        #: Pumps that forward here and pause while this pump's queue is full.
        self.upstream: list[Pump] = []

        #: Frames waiting for the socket to become writable.
        self.outbox: deque[Frames] = deque()
        self.congested = False

        self.accepting = False  # the app wants this channel read
        self.reading = False  # accepting, and nothing (concurrency, downstream) holds it back
        self.in_flight = 0
        self.concurrency = channel.concurrency
        self.empty = False  # a read found nothing queued (since drain_for_stop)
        #: REQ/DEALER: offered each message first; True means it answered a request.
        self.intercept: Callable[[Frames], bool] | None = None
        self._room: list[asyncio.Future[None]] = []
        self._check_pending = False
        self._closed = False

    # -- wiring --------------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the socket and start reading (if the channel receives)."""
        self.loop.add_reader(self.fd, self.on_events)
        self.accepting = self.channel.receives
        self.update_reading()
        self.schedule_check()  # messages may have queued before we watched the descriptor

    def build_invokers(self) -> None:
        """Recompute what dispatch calls, after the channel's receivers changed."""
        receivers = self.channel.receivers(self.app)
        invokers = []
        is_async = False
        for receiver in receivers:
            invoker, receiver_async = make_invoker(receiver, self.app, self.app._run_in_thread)
            invokers.append(invoker)
            is_async = is_async or receiver_async
        self.invokers = tuple(invokers)
        self.is_async = is_async
        # Decide here, not per message, whether the fast path applies.
        handler = receivers[0] if len(receivers) == 1 else None
        fast = (
            isinstance(handler, Handler)
            and not is_async
            and handler.body_param is not None
            and not handler.inject
            and handler.convert is None
            and self.channel.socket_type not in (zmq.ROUTER, zmq.SUB, zmq.XSUB)
        )
        self.fast_fn = handler.fn if fast and handler is not None else _no_fast_path
        inner = self.dispatch_fast if fast else self.dispatch_message
        self.dispatch_inner = inner
        self.dispatch = self.dispatch_intercepted if self.intercept is not None else inner  # type: ignore[method-assign]

    # -- the descriptor callback ---------------------------------------------------------------

    def schedule_check(self) -> None:
        """Look at ZMQ_EVENTS again soon (rule 2); coalesced."""
        if not self._check_pending and not self._closed:
            self._check_pending = True
            self.loop.call_soon(self._scheduled_check)

    def _scheduled_check(self) -> None:
        self._check_pending = False
        self.on_events()

    def on_events(self) -> None:
        """The descriptor fired, or a check was scheduled: flush, then drain a batch."""
        if self._closed:
            return
        if self.outbox and self.get_option(_EVENTS) & _POLLOUT:
            self.flush()
        if self.reading:
            # A non-blocking recv processes the socket's commands like a ZMQ_EVENTS read, so
            # draining straight away clears the edge too.
            if self.drain():
                self.schedule_check()  # batch used up: let other channels run first (rule 1)
                return
        elif not self.outbox:
            # Not reading: still take the commands, or the level-triggered poller would call
            # us again and again. What arrived is read on resuming (rule 3).
            self.get_option(_EVENTS)
        if self.outbox:
            # The flush and the reads may have swallowed an edge: look once more, for both.
            events = self.get_option(_EVENTS)
            if (events & _POLLOUT) or (events & _POLLIN and self.reading):
                self.schedule_check()

    def drain(self) -> bool:
        """Read and dispatch up to one batch; True if the batch ran out first."""
        recv = self.recv
        dispatch = self.dispatch
        count = 0
        try:
            while count < self.batch:
                frames = recv(_NOBLOCK)
                count += 1
                try:
                    dispatch(frames)
                except Exception:  # a zmqapp bug: say so, and never let it wedge the channel
                    log.exception("zmqapp failed to dispatch a message on %r", self.channel.name)
                if not self.reading:
                    return False
                if count == 1 and not self.get_option(_EVENTS) & _POLLIN:
                    # A lone message (a REP request, a quiet channel): asking ZMQ_EVENTS costs
                    # a third of a recv that fails with zmq.Again, and clears the edge too.
                    self.empty = True
                    return False
            return True
        except _Again:
            self.empty = True
            return False
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EFSM:
                raise
            # A REQ socket with no request outstanding refuses to read (before it takes its
            # commands): nothing to read, but take the commands, or the descriptor stays set.
            self.get_option(_EVENTS)
            self.empty = True
            return False
        finally:
            self.stats.received += count

    # -- dispatch ------------------------------------------------------------------------------

    def dispatch(self, frames: Frames) -> None:
        """Hand one message to every receiver of the channel (the hot path).

        Rebound per instance to :meth:`dispatch_fast` when the channel allows, and wrapped by
        :meth:`dispatch_intercepted` on channels that make requests.
        """
        self.dispatch_message(frames)

    def dispatch_message(self, frames: Frames) -> None:
        """The general path: build a :class:`Message`, call every receiver, reply, signal."""
        try:
            message = self.parse(frames)
        except Exception as exc:
            self.decode_failed(frames, _as_decode_error(exc))
            return
        if message_received.receivers:
            message_received.send(self.app, message=message)
        if self.is_async:
            self.start_task(message)
            return
        reply: Frames | None = None
        error: Exception | None = None
        for invoke in self.invokers:
            try:
                result = invoke(message)
                if result is not None:
                    reply = self.take_result(result, reply)
            except Exception as exc:
                error = exc
                self.handler_failed(message, invoke, exc)
        self.finish(message, reply, error, own_callback=True)

    def dispatch_fast(self, frames: Frames) -> None:
        """The common case without building a Message: one plain function that takes only the
        body, on a socket without envelopes or topics, while no app-wide signal listens."""
        if message_received.receivers or message_handled.receivers:
            self.dispatch_message(frames)
            return
        if self.raw and len(frames) == 1:
            body = frames[0]
        else:
            try:
                body = self.body_of(frames)
            except DecodeError as exc:
                self.decode_failed(frames, exc)
                return
        try:
            result = self.fast_fn(body)
            if self.replies:  # REP: always answer
                self.send_reply(
                    [b""] if result is None else encode_body(self.channel.codec, result), True
                )
            elif result is not None and self.forward is not None:
                self.forward.send_body(result, force=True)
        except Exception as exc:
            message = Message(self.channel, frames, body)
            self.handler_failed(message, self.invokers[0], exc)
            self.finish(message, None, exc, own_callback=True)
            return
        self.stats.handled += 1

    def dispatch_intercepted(self, frames: Frames) -> None:
        """REQ/DEALER: a reply to :meth:`App.request` goes to its waiter, not the handlers."""
        assert self.intercept is not None
        if not self.intercept(frames):
            self.dispatch_inner(frames)

    async def dispatch_async(self, message: Message) -> None:
        """:meth:`dispatch` for channels with coroutine or threaded receivers."""
        reply: Frames | None = None
        error: Exception | None = None
        for invoke in self.invokers:
            try:
                result = invoke(message)
                if isawaitable(result):
                    result = await result
                if result is not None:
                    reply = self.take_result(result, reply)
            except asyncio.CancelledError:
                if self.replies:  # cancelled at stop: the peer still gets its answer
                    stopped = asyncio.CancelledError("the app stopped before the handler finished")
                    frames = [error_reply("cancelled", stopped, self.channel.name, True)]
                    self.send_reply((message.envelope or []) + frames, own_callback=False)
                raise
            except Exception as exc:
                error = exc
                self.handler_failed(message, invoke, exc)
        self.finish(message, reply, error, own_callback=False)

    def take_result(self, result: Any, reply: Frames | None) -> Frames | None:
        """A handler returned ``result``: on REP/ROUTER the first one is the reply (encoded
        here, so an encoding error is that handler's failure); elsewhere it goes to send_to."""
        if self.replies:
            return encode_body(self.channel.codec, result) if reply is None else reply
        if self.forward is not None:
            self.forward.send_body(result, force=True)
        return reply

    def finish(
        self, message: Message, reply: Frames | None, error: Exception | None, own_callback: bool
    ) -> None:
        """After every receiver ran: answer if the socket type answers, count, signal.

        REP always answers (an empty frame for None) so its peer is never left waiting; ROUTER
        answers when there is something to say. A failed handler answers with an error reply.
        """
        if self.replies:
            if error is not None:
                kind = "decode_failed" if isinstance(error, DecodeError) else "handler_failed"
                reply = [error_reply(kind, error, self.channel.name, self.error_detail)]
            elif reply is None and self.reply_type == zmq.REP:
                reply = [b""]
            if reply is not None:
                if message.envelope is not None:
                    reply = message.envelope + reply
                self.send_reply(reply, own_callback)
        self.stats.handled += 1
        if message_handled.receivers:
            message_handled.send(self.app, message=message)

    def start_task(self, message: Message) -> None:
        self.in_flight += 1
        if self.in_flight >= self.concurrency:
            self.update_reading()
        task = self.loop.create_task(self.dispatch_async(message))
        self.app._tasks[task] = message
        task.add_done_callback(self.task_done)

    def task_done(self, task: asyncio.Task[None]) -> None:
        self.app._tasks.pop(task, None)
        self.in_flight -= 1
        if not self.reading:
            self.update_reading()
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - a bug
            log.error("zmqapp dispatch failed", exc_info=task.exception())

    # -- failures ------------------------------------------------------------------------------

    def handler_failed(self, message: Message, invoke: Invoker, exc: BaseException) -> None:
        if isinstance(exc, DecodeError):  # a typed body that did not fit
            self.decode_failed(message.frames, exc, message)
            return
        self.stats.failed += 1
        handler = getattr(invoke, "handler", None)
        if handler is None:  # a receiver connected to the channel's signal, held weakly
            handler = getattr(invoke, "handler_ref", lambda: None)() or invoke
        self.app.logger.error(
            "handler %s of channel %r failed on %r",
            getattr(handler, "__qualname__", handler),
            self.channel.name,
            message,
            exc_info=exc,
        )
        if handler_failed.receivers:
            handler_failed.send(self.app, message=message, handler=handler, exception=exc)

    def decode_failed(
        self, frames: Frames, exc: BaseException, message: Message | None = None
    ) -> None:
        self.stats.decode_failed += 1
        self.app._decode_log.report(self.channel.name, exc)
        if decode_failed.receivers:
            decode_failed.send(self.app, channel=self.channel, frames=frames, exception=exc)
        if self.replies and message is None:
            # A peer still waits for an answer: tell it what went wrong.
            envelope = _envelope_of(frames) if self.reply_type == zmq.ROUTER else []
            if envelope is not None:
                reply = error_reply("decode_failed", exc, self.channel.name, self.error_detail)
                self.send_reply([*envelope, reply], own_callback=True)

    # -- replies -------------------------------------------------------------------------------

    def send_reply(self, frames: Frames, own_callback: bool) -> None:
        try:
            self.send_frames(frames)
        except zmq.ZMQError as exc:
            # A ROUTER whose peer is gone (EHOSTUNREACH) or whose queue to the peer is full
            # (EAGAIN): the reply is dropped, but counted and said, not lost in silence.
            self.stats.dropped += 1
            log.warning("channel %r dropped a reply: %s", self.channel.name, exc.strerror)
            return
        self.stats.sent += 1
        if message_sent.receivers:
            message_sent.send(self.app, channel=self.channel, frames=frames)
        if not own_callback:
            self.schedule_check()

    # -- sending -------------------------------------------------------------------------------

    def send_body(self, body: Any, *, force: bool = False) -> None:
        """Encode ``body`` with this channel's codec and send it (see :meth:`send`)."""
        self.send(encode_body(self.channel.codec, body), force=force)

    def send(self, frames: Frames, *, force: bool = False) -> None:
        """Send now if ZeroMQ takes it, else queue it; never blocks.

        A full queue raises :class:`SendQueueFull`, unless ``force`` (a message already taken
        off another socket, which must not be lost): then it is queued anyway and the
        channels forwarding here stop reading until the queue drains.
        """
        if self._closed:
            raise NotRunning(f"channel {self.channel.name!r} is closed")
        if self.reply_type == zmq.ROUTER:
            self.send_routed(frames)
            return
        if not self.outbox:
            try:
                self.send_frames(frames)
            except _Again:
                pass
            else:
                self.stats.sent += 1
                if message_sent.receivers:
                    message_sent.send(self.app, channel=self.channel, frames=frames)
                self.schedule_check()
                return
        if len(self.outbox) >= self.queue_limit and not force:
            raise SendQueueFull(
                f"channel {self.channel.name!r} has {len(self.outbox)} messages waiting for "
                "its peers (the SEND_QUEUE limit); slow down, await app.send_async() to wait "
                "for room, or raise SEND_QUEUE"
            )
        self.outbox.append(frames)
        if not self.congested and len(self.outbox) >= self.queue_limit:
            self.set_congested(True)

    def send_frames(self, frames: Frames) -> None:
        """``send_multipart(frames, NOBLOCK)`` without its per-frame checks and enum work.

        Only the first frame can raise ``zmq.Again``: ZeroMQ accepts the rest of a message
        once it has accepted its first frame."""
        send = self._send
        for frame in frames[:-1]:
            send(frame, _NOBLOCK_MORE)
        send(frames[-1], _NOBLOCK)

    def send_routed(self, frames: Frames) -> None:
        """ROUTER: send to one peer now or fail; never queue, so one slow peer cannot hold up
        the messages for every other one."""
        try:
            self.send_frames(frames)
        except zmq.ZMQError as exc:
            self.stats.dropped += 1
            if exc.errno == zmq.EHOSTUNREACH:
                raise Unroutable(
                    f"channel {self.channel.name!r} has no peer with identity {frames[0]!r} "
                    "(it disconnected, or never connected)"
                ) from None
            if exc.errno == zmq.EAGAIN:
                raise SendQueueFull(
                    f"channel {self.channel.name!r}: the queue to peer {frames[0]!r} is full "
                    "(its high-water mark); it is not reading fast enough"
                ) from None
            raise
        self.stats.sent += 1
        if message_sent.receivers:
            message_sent.send(self.app, channel=self.channel, frames=frames)
        self.schedule_check()

    def flush(self) -> None:
        """Send queued frames until ZeroMQ would block."""
        outbox = self.outbox
        send = self.send_frames
        while outbox:
            try:
                send(outbox[0])
            except _Again:
                break
            except zmq.ZMQError as exc:
                self.stats.dropped += 1
                log.warning("channel %r dropped a queued message: %s", self.channel.name, exc)
            else:
                self.stats.sent += 1
                if message_sent.receivers:
                    message_sent.send(self.app, channel=self.channel, frames=outbox[0])
            outbox.popleft()
        if self.congested and len(outbox) <= self.queue_limit // 2:
            self.set_congested(False)
        if self._room and len(outbox) < self.queue_limit:
            self._wake_room()

    async def wait_for_room(self) -> None:
        """Wait until the send queue is below ``SEND_QUEUE``."""
        while len(self.outbox) >= self.queue_limit:
            if self._closed:
                raise NotRunning(f"channel {self.channel.name!r} is closed")
            future = self.loop.create_future()
            self._room.append(future)
            await future

    def _wake_room(self) -> None:
        waiters, self._room = self._room, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def set_congested(self, congested: bool) -> None:
        self.congested = congested
        for pump in self.upstream:
            pump.update_reading()

    # -- reading state -------------------------------------------------------------------------

    def update_reading(self) -> None:
        """Recompute whether to read; on resuming, look at the socket again (rule 3)."""
        was = self.reading
        self.reading = (
            self.accepting
            and self.in_flight < self.concurrency
            and not (self.forward is not None and self.forward.congested)
        )
        if self.reading and not was:
            self.empty = False
            self.schedule_check()

    def pause(self) -> None:
        self.accepting = False
        self.update_reading()

    def drain_for_stop(self) -> None:
        """Begin the final drain: :attr:`empty` turns True once a read finds nothing left."""
        self.empty = False
        self.schedule_check()

    def close(self, linger: int) -> None:
        """Stop watching the descriptor and close the socket with a finite linger."""
        if self._closed:
            return
        self._closed = True
        self.accepting = self.reading = False
        self._wake_room()
        self.loop.remove_reader(self.fd)
        self.socket.close(linger=linger)


def _with_user_id(parse: Callable[[Frames], Message]) -> Callable[[Frames], Message]:
    def parse_with_user_id(frames: Frames) -> Message:
        message = parse(frames)
        message.user_id = getattr(frames, "user_id", None)
        return message

    return parse_with_user_id


def _as_decode_error(exc: Exception) -> DecodeError:
    if isinstance(exc, DecodeError):
        return exc
    error = DecodeError(f"malformed message: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _no_fast_path(body: Any) -> Any:  # pragma: no cover - never called
    raise AssertionError("dispatch_fast without a fast-path handler")


def _envelope_of(frames: Frames) -> Frames | None:
    """The envelope of a ROUTER message that failed to parse, if it has one at all."""
    if len(frames) < 2:
        return [frames[0]] if frames else None
    return frames[: split_envelope(frames)]


class RateLimitedLog:
    """Logs each problem once, but at most ``burst`` lines per channel per ``period`` seconds,
    then a summary of how many were not logged, so a flood of bad input cannot flood the log."""

    def __init__(self, logger: logging.Logger, burst: int = 10, period: float = 1.0) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self._window: dict[str, tuple[float, int, int]] = {}

    def report(self, channel: str, exc: BaseException) -> None:
        now = time.monotonic()
        start, logged, suppressed = self._window.get(channel, (now, 0, 0))
        if now - start >= self.period:
            if suppressed:
                self.logger.warning(
                    "channel %r: %d more undecodable messages were not logged", channel, suppressed
                )
            start, logged, suppressed = now, 0, 0
        if logged < self.burst:
            self.logger.warning("channel %r dropped an undecodable message: %s", channel, exc)
            logged += 1
        else:
            suppressed += 1
        self._window[channel] = (start, logged, suppressed)
