"""The hot loop: one :class:`Pump` per socket moves messages between ZeroMQ and the handlers.

Why not ``ZMQStream`` or ``zmq.asyncio``: both read one message per event-loop wakeup, which
caps them near 70k small messages/s on a 2-core machine. A pump owns its socket's file
descriptor on the asyncio loop and, per wakeup, reads up to ``BATCH_SIZE`` messages, then
yields, so a busy channel cannot starve the others.

Reading: a message is read frame by frame with ``recv(NOBLOCK, copy=False)``, whose frame
says whether more frames follow. ``recv_multipart`` asks ``getsockopt(RCVMORE)`` after every
frame instead, which costs more than the read itself. ZeroMQ delivers a message whole, so
once its first frame is readable the rest are too.

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

Counters: ``received`` and (on the fast path) ``handled`` are added once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Any, Protocol, cast

import zmq
import zmq.backend

from . import security
from ._handlers import Handler, Invoker, make_invoker
from ._problems import ProblemLog
from .channel import Channel
from .codecs import RAW, JsonCodec
from .errors import DecodeError, NotRunning, SendQueueFull, Unroutable
from .message import (
    Frames,
    Message,
    Multipart,
    body_decoder,
    body_error,
    encode_body,
    error_reply,
    make_parser,
    show_bytes,
    split_envelope,
)
from .metrics import Timing
from .signals import (
    decode_failed,
    handler_failed,
    message_handled,
    message_received,
    message_sent,
)
from .sockets import IoBarrier, stays_empty
from .tap import Tap
from .tracing import Tracer, body_size, header_index

log = logging.getLogger("zmqapp")

# Plain ints: pyzmq's constants are enums, and enum arithmetic per frame is measurable here.
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_Again = zmq.Again
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_EVENTS = int(zmq.EVENTS)
_REP = int(zmq.REP)
_ROUTER = int(zmq.ROUTER)
_COPY_THRESHOLD = int(zmq.COPY_THRESHOLD)
_backend_send = zmq.backend.Socket.send
#: Seconds one drain may take before other callbacks (channels, timers, signals) get a turn,
#: whatever BATCH_SIZE says. The general path reads the clock after every message; the fast
#: path, where that would cost a few percent, every 16 messages, unless its first message
#: took longer than SLOW seconds.
SLICE = 0.01
SLOW = 0.0005
_monotonic = time.monotonic

#: A pump's modes. Idle: not reading (before start, after the drain). Holding: the app is
#: starting; REQ/DEALER replies are delivered, other messages wait for the start hooks.
#: Running: handlers get every message. Draining: running, within a stop's deadline.
#: Refusing: a stopping REP/ROUTER answers what is queued with an ``unavailable`` error.
IDLE, HOLDING, RUNNING, DRAINING, REFUSING = "idle", "holding", "running", "draining", "refusing"


class Host(Protocol):
    """What a pump needs from the run it belongs to (the :class:`~zmqapp.runtime.Runtime`)."""

    #: The app: the sender of every signal.
    app: Any
    logger: logging.Logger
    problems: ProblemLog

    def run_in_thread(self, call: Callable[[], Any]) -> Awaitable[Any]: ...


class Pump:
    """Reads, dispatches and writes for one channel's socket on the app's event loop."""

    def __init__(
        self, host: Host, channel: Channel, sock: zmq.Socket[Any], config: dict[str, Any]
    ) -> None:
        self.host = host
        self.app = host.app
        self.channel = channel
        self.name = channel.name
        self.socket = sock
        self.loop = asyncio.get_running_loop()
        self.stats = channel.stats
        self.batch = int(config["BATCH_SIZE"])
        self.queue_limit = int(config["SEND_QUEUE"])
        self.error_detail = bool(config["ERROR_DETAIL"])
        self.maxframes = int(channel.maxframes or config.get("MAXFRAMES") or 0) or None
        limit = channel.maxmsgsize
        if limit is None and any(e.bind for e in channel.endpoints):
            limit = config.get("MAXMSGSIZE")
        self.maxsize = int(limit) if limit is not None and int(limit) >= 0 else None
        self.fd = sock.FD
        # getsockopt is typed int | bytes; ZMQ_EVENTS is always an int.
        self.get_option = cast("Callable[[int], int]", sock.getsockopt)
        self.recv = cast("Callable[[int, bool], zmq.Frame]", sock.recv)
        # pyzmq's Socket.send is Python wrapped around the compiled one, and costs twice as
        # much; its only extra for bytes is sending large frames without a copy, which
        # send_frames keeps for frames of COPY_THRESHOLD bytes and more.
        self._send = cast("Callable[[bytes, int], Any]", types.MethodType(_backend_send, sock))
        self._send_large = sock.send
        self.parse = make_parser(channel)
        self.user_ids = security.is_server(channel)  # handlers may ask for the client's key
        self.body_of = body_decoder(channel.codec)
        self.replies = channel.replies
        self.reply_type = channel.socket_type
        self.mode = IDLE

        #: What each received message is handed to: built from the channel's receivers.
        self.invokers: tuple[Invoker, ...] = ()
        #: True when some receiver is a coroutine (or threaded) handler.
        self.is_async = False
        #: The fast path's handler, its single-frame body decoder (None: raw bytes), and its
        #: multipart body maker (None: multipart messages take the general path). With several
        #: handlers, ``fast_fans`` holds each one's function and invoker.
        self.fast_fans: tuple[tuple[Callable[[Any], Any], Invoker], ...] | None = None
        self.fast_fn: Callable[[Any], Any] | None = None
        self.fast_decode: Callable[[bytes], Any] | None = None
        self.fast_multi: Callable[[Frames], Any] | None = None
        #: Where non-None return values go (the send_to channel's pump), if anywhere.
        self.forward: Pump | None = None
        #: Pumps that forward here and pause while this pump's queue is full.
        self.upstream: list[Pump] = []
        #: REQ/DEALER: offered each message first; True means it answered a request.
        self.intercept: Callable[[Frames], bool] | None = None
        #: Messages read while the app was starting, waiting for the start hooks to finish.
        self.held: deque[Frames] = deque()
        #: Coroutine and threaded handlers in flight, and the message each is handling.
        self.tasks: dict[asyncio.Task[Any], Message] = {}

        #: Frames waiting for the socket to become writable.
        self.outbox: deque[Frames] = deque()
        self.congested = False

        self.reading = False  # the mode reads, and nothing (concurrency, downstream) holds it
        self.in_flight = 0
        self.concurrency = channel.concurrency
        #: Since when a read last found the socket empty (None: it had messages since).
        self.empty_since: float | None = None
        #: The first frame of the message being dispatched (for its peer's address).
        self.current: zmq.Frame | None = None
        self.deadline = float("inf")
        self.paused = False
        #: Processing-time histogram, kept only while the app serves HTTP.
        self.timing: Timing | None = None
        #: Spans, when a tracer provider is configured (set before build_invokers).
        self.tracer: Tracer | None = None
        #: The taps watching this channel (``GET /tap/{channel}``).
        self.taps: list[Tap] = []
        self._timed: Timing | None = None  # the histogram the current mode records into
        self.drain: Callable[[], bool] = self.drain_messages
        self.dispatch: Callable[[Frames], None] = self.dispatch_message
        self._room: list[asyncio.Future[None]] = []
        self._check_pending = False
        self._closed = False

    # -- wiring --------------------------------------------------------------------------------

    def watch(self) -> None:
        """Watch the socket's descriptor (reading starts with :meth:`set_mode`)."""
        self.loop.add_reader(self.fd, self.on_events)
        self.schedule_check()  # messages may have queued before we watched the descriptor

    def build_invokers(self) -> None:
        """Recompute what dispatch calls, after the channel's receivers changed."""
        channel = self.channel
        receivers = channel.receivers(self.app)
        invokers = []
        is_async = False
        for receiver in receivers:
            threaded = isinstance(receiver, Handler) and channel.runs_in_thread(receiver)
            invoker, receiver_async = make_invoker(
                receiver, self.app, self.host.run_in_thread, threaded=threaded
            )
            invokers.append(invoker)
            is_async = is_async or receiver_async
        self.invokers = tuple(invokers)
        self.is_async = is_async
        # Decide here, not per message, whether the fast path applies: plain functions that
        # take only the body (typed: just one), on a socket without envelopes.
        self.fast_fn = self.fast_decode = self.fast_multi = None
        self.fast_fans = None
        plain = all(
            isinstance(r, Handler)
            and r.body_param is not None
            and r.body_positional
            and not r.inject
            and (r.convert is None or len(receivers) == 1)
            for r in receivers
        )
        if (
            receivers
            and plain
            and self.tracer is None
            and not channel.trace
            and not is_async
            and channel.socket_type != _ROUTER
            and not self.user_ids
        ):
            handler = receivers[0]
            if len(receivers) > 1:  # every handler gets every message, in order
                self.fast_fans = tuple(zip((r.fn for r in receivers), invokers, strict=True))
            convert = handler.convert
            codec = channel.codec
            decode: Callable[[bytes], Any] | None = None
            if isinstance(codec, JsonCodec):
                decode = json.loads  # what JsonCodec.decode calls, one call less per message
            elif codec is not RAW:
                decode = codec.decode
            if convert is None:
                self.fast_fn, self.fast_decode = handler.fn, decode
                self.fast_multi = Multipart if decode is None else _each(decode)
            elif convert.from_json is not None and isinstance(codec, JsonCodec):
                self.fast_fn, self.fast_decode = handler.fn, convert.from_json
            elif decode is not None:
                self.fast_fn, self.fast_decode = handler.fn, _then(decode, convert.convert)
        self.set_mode(self.mode)

    def keep_timing(self) -> None:
        """Start keeping the processing-time histogram (for an HTTP side elsewhere)."""
        if self.timing is None:
            self.timing = Timing()
            self.set_mode(self.mode)

    def set_mode(self, mode: str) -> None:
        """Switch to ``mode`` (see the module's mode constants) and pick the matching loop."""
        if mode != self.mode:
            self.paused = False  # a stop's pause lasts until the stop sets the next mode
        self.mode = mode
        if mode in (DRAINING, REFUSING):
            self.empty_since = None  # the stop's quiet period starts now, not at the last read
        dispatch: Callable[[Frames], None]
        if mode == REFUSING:
            dispatch = self.refuse
        elif mode == HOLDING:
            dispatch = self.hold
        elif self.intercept is not None:
            dispatch = self.start_or_hold
        else:
            dispatch = self.dispatch_message
        if self.intercept is not None:
            inner = dispatch

            def dispatch(frames: Frames) -> None:
                assert self.intercept is not None
                if not self.intercept(frames):
                    inner(frames)

        self.dispatch = dispatch
        self._timed = self.timing if mode in (RUNNING, DRAINING) else None
        fast = (
            mode == RUNNING
            and self.fast_fn is not None
            and self.intercept is None
            and not self.taps
        )
        self.drain = self.drain_fast if fast else self.drain_messages
        self.update_reading()

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
        try:
            self.take_events()
        except zmq.ZMQError:
            raise
        except Exception as exc:
            # A signal receiver (handler_failed, message_sent...) raised in the middle of a
            # batch or a flush. Say so, and go on: what is queued raised no new edge, so work
            # left unfinished here would never be done.
            self.receiver_failed(exc)
            self.schedule_check()

    def take_events(self) -> None:
        if self.outbox and self.get_option(_EVENTS) & _POLLOUT:
            self.flush()
        if self.held and self.mode in (RUNNING, DRAINING):
            self.release_held()  # they came before anything still in the socket
        if self.reading:
            try:
                more = self.drain()
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EFSM:
                    raise
                more = False
                refused = True
            else:
                refused = False
            if refused:  # outside the except clause: what it sends may raise in its turn
                more = self.refused_read()
            if more:
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

    def refused_read(self) -> bool:
        """The socket refused to read (EFSM); True to look again soon.

        A REQ socket with no request outstanding refuses: nothing to read, but take its
        commands, or the descriptor stays set. A REP socket refuses when the last request got
        no answer, which only happens when code around a handler failed (a signal receiver
        raised before the reply went out): answer it with an error now, or the service
        would never answer again."""
        if self.reply_type == _REP and self.in_flight == 0:
            failed = RuntimeError("zmqapp could not answer this request (see the service's log)")
            log.error("channel %r owed a reply and answers with an error", self.name)
            self.send_reply([error_reply("handler_failed", failed, self.name, True)], True)
            return True
        self.get_option(_EVENTS)
        self.found_empty(0)
        return False

    def found_empty(self, count: int) -> None:
        """A read found the socket empty after ``count`` messages in this drain."""
        if count or self.empty_since is None:
            self.empty_since = time.monotonic()

    def drain_fast(self) -> bool:
        """The common case, as tight as it gets: one plain handler that takes only the body,
        nobody listening to the app-wide message signals.

        Returns True if the batch ran out before the socket did."""
        if message_received.receivers or message_handled.receivers:
            return self.drain_messages()
        recv = self.recv
        fn = cast("Callable[[Any], Any]", self.fast_fn)
        fans = self.fast_fans
        decode = self.fast_decode
        multi = self.fast_multi
        topical = self.channel.kind.topical
        replies = self.replies
        forward = self.forward
        codec = self.channel.codec
        count = handled = 0
        began = mark = _monotonic()
        until = began + SLICE
        every = 15  # a mask: read the clock every 16 messages
        timing = self._timed
        marked = 0
        frames: Frames | None = None
        try:
            while count < self.batch:
                frame = recv(_NOBLOCK, False)
                count += 1
                body: Any
                if frame.more:  # a multipart message
                    self.current = frame
                    frames = self.read_rest(frame)
                    if frames is None:  # too large: counted as a decode failure
                        body = _SKIP
                    elif topical and len(frames) == 2:  # [topic, body]: the usual SUB message
                        try:
                            body = frames[1] if decode is None else decode(frames[1])
                        except Exception as exc:
                            self.decode_failed(frames, body_error(codec, exc))
                            body = _SKIP
                    elif multi is None:  # a typed multipart body: the general path says no
                        self.dispatch_message(frames)
                        body = _SKIP
                    else:
                        try:
                            body = multi(frames[1:] if topical else frames)
                        except Exception as exc:
                            self.decode_failed(frames, body_error(codec, exc))
                            body = _SKIP
                elif decode is None:
                    body = frame.bytes
                    frames = None
                else:
                    frames = None
                    try:
                        body = decode(frame.bytes)
                    except Exception as exc:
                        self.current = frame
                        self.decode_failed([frame.bytes], body_error(codec, exc))
                        body = _SKIP
                if body is not _SKIP and fans is not None:  # several handlers, in order
                    reply: Any = None
                    failures: list[tuple[Invoker, Exception]] | None = None
                    # A result that cannot be encoded is its handler's failure, as on the
                    # general path: encoding happens inside each handler's ``try``.
                    for each, invoke in fans:
                        try:
                            result = each(body)
                            if result is not None:
                                if not replies:
                                    if forward is not None:
                                        forward.send_body(result, force=True)
                                elif reply is None:
                                    reply = encode_body(codec, result)
                        except Exception as exc:
                            failures = [*(failures or []), (invoke, exc)]
                    if failures is not None:
                        self.fast_failed(failures, body, frame, frames, topical)
                    else:
                        handled += 1
                        if replies:  # REP: always answer
                            self.send_reply([b""] if reply is None else reply, True)
                elif body is not _SKIP:
                    try:
                        result = fn(body)
                        if replies:  # REP: always answer
                            reply = [b""] if result is None else encode_body(codec, result)
                        elif result is not None and forward is not None:
                            forward.send_body(result, force=True)
                    except Exception as exc:
                        self.fast_failed([(self.invokers[0], exc)], body, frame, frames, topical)
                    else:
                        handled += 1
                        if replies:
                            self.send_reply(reply, True)
                if not self.reading:
                    self.empty_since = None
                    return False
                if count == 1:
                    if not self.get_option(_EVENTS) & _POLLIN:
                        # A lone message (a REP request, a quiet channel): asking ZMQ_EVENTS
                        # costs a third of a recv that fails with zmq.Again, and clears the
                        # edge too.
                        self.found_empty(count)
                        return False
                    if _monotonic() - began > SLOW:
                        every = 0  # slow handler: read the clock after every message
                if not count & every:
                    now = _monotonic()
                    if timing is not None:  # each of the group at the group's average
                        timing.observe((now - mark) / (count - marked), count - marked)
                        mark, marked = now, count
                    if now >= until:
                        break
            self.empty_since = None
            return True
        except _Again:
            self.found_empty(count)
            return False
        finally:
            self.stats.received += count
            self.stats.handled += handled
            if timing is not None and count > marked:
                timing.observe((_monotonic() - mark) / (count - marked), count - marked)

    def fast_failed(
        self,
        failures: list[tuple[Invoker, Exception]],
        body: Any,
        frame: zmq.Frame,
        frames: Frames | None,
        topical: bool,
    ) -> None:
        """Fast-path handlers raised (one, or some of several): report each, and finish the
        message as failed (an error reply on REP)."""
        self.current = frame
        topic = frames[0] if topical and frames else None
        message = Message(self.channel, frames or [frame.bytes], body, None, topic)
        for failed, error in failures:
            self.handler_failed(message, failed, error)
        self.finish(message, None, failures[-1][1], own_callback=True)

    def drain_messages(self) -> bool:
        """Read and dispatch up to one batch through the general path; True if the batch ran
        out first. While stopping, it also ends at the stop's deadline."""
        recv = self.recv
        count = 0
        until = _monotonic() + SLICE
        try:
            while count < self.batch:
                frame = recv(_NOBLOCK, False)
                count += 1
                self.current = frame
                frames = self.read_rest(frame) if frame.more else [frame.bytes]
                if frames is not None:
                    timing = self._timed
                    started = _monotonic() if timing is not None else 0.0
                    try:
                        self.dispatch(frames)
                    except Exception:  # a zmqapp bug: say so, and never let it wedge the channel
                        log.exception("zmqapp failed to dispatch a message on %r", self.name)
                    if timing is not None and not self.is_async:
                        timing.observe(_monotonic() - started)
                if not self.reading or (
                    self.mode == DRAINING and self.loop.time() >= self.deadline
                ):
                    self.empty_since = None
                    return False
                if count == 1 and not self.get_option(_EVENTS) & _POLLIN:
                    self.found_empty(count)
                    return False
                if _monotonic() >= until:
                    break
            self.empty_since = None
            return True
        except _Again:
            self.found_empty(count)
            return False
        finally:
            self.stats.received += count

    def read_rest(self, first: zmq.Frame) -> Frames | None:
        """The frames of a multipart message whose first frame is ``first``; None (and a
        decode failure) if it has more than MAXFRAMES frames or more than MAXMSGSIZE bytes."""
        recv = self.recv
        frames = [first.bytes]
        size = len(frames[0])
        limit = self.maxframes
        frame = first
        count = 1
        while frame.more:
            frame = recv(_NOBLOCK, False)
            count += 1
            if limit is None or count <= limit:
                data = frame.bytes
                size += len(data)
                frames.append(data)
        if limit is not None and count > limit:
            self.too_large(frames, f"it has {count} frames, more than MAXFRAMES ({limit})")
            return None
        if self.maxsize is not None and size > self.maxsize:
            self.too_large(
                frames, f"its frames add up to {size} bytes, more than MAXMSGSIZE ({self.maxsize})"
            )
            return None
        return frames

    # -- dispatch ------------------------------------------------------------------------------

    def dispatch_message(self, frames: Frames) -> None:
        """The general path: build a :class:`Message`, call every receiver, reply, signal."""
        parent = None
        if self.channel.trace:
            frames, parent = self.strip_trace(frames)
        try:
            message = self.parse(frames)
        except Exception as exc:
            self.decode_failed(frames, _as_decode_error(exc))
            return
        if self.user_ids and self.current is not None:
            message.user_id = security.user_id_of(self.current)
        message.trace_context = parent
        if self.taps:
            for tap in self.taps:
                tap.offer("in", frames, message)
        if message_received.receivers:
            self.notify(message_received, message=message)
        if self.is_async:
            self.start_task(message)
        elif self.tracer is None:
            self.run_handlers(message)
        else:
            with self.tracer.process(self.channel, body_size(frames), parent):
                self.run_handlers(message)

    def strip_trace(self, frames: Frames) -> tuple[Frames, Any]:
        """A ``trace=True`` channel's message without its trace-context frame, and the
        context that frame carried (None without one, or without a tracer)."""
        start = split_envelope(frames) if self.reply_type == _ROUTER else 0
        index = header_index(frames, self.channel, start)
        if index is None:
            return frames, None
        header = frames[index]
        frames = frames[:index] + frames[index + 1 :]
        return frames, self.tracer.context_of(header) if self.tracer is not None else None

    def run_handlers(self, message: Message) -> None:
        """Call every receiver of a plain channel, then :meth:`finish`."""
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

    def hold(self, frames: Frames) -> None:
        """While the app starts: keep a message for when the start hooks have finished."""
        self.held.append(frames)
        if len(self.held) >= self.queue_limit:
            self.update_reading()  # enough: the rest waits in ZeroMQ's queue

    def start_or_hold(self, frames: Frames) -> None:
        """A REQ or DEALER channel's message that is not a reply. The channel goes on reading
        at its concurrency limit, since replies to requests must still come in (a handler may
        be awaiting one); a message with no room to start waits in :attr:`held`, in order."""
        if self.held or not self.has_room():
            self.hold(frames)
        else:
            self.dispatch_message(frames)

    def release_held(self) -> None:
        """Dispatch what was held (during the start, or at the concurrency limit), in order,
        while there is room."""
        while (
            self.held
            and self.mode in (RUNNING, DRAINING)
            and self.has_room()
            and not self.paused
            and not (self.mode == DRAINING and self.loop.time() >= self.deadline)
        ):
            frames = self.held.popleft()
            try:
                self.dispatch_message(frames)
            except Exception:  # pragma: no cover - a zmqapp bug
                log.exception("zmqapp failed to dispatch a message on %r", self.name)
        self.update_reading()

    def refuse(self, frames: Frames) -> None:
        """A stopping REP/ROUTER: answer a request that was queued but not started with an
        ``unavailable`` error reply, so its client can retry elsewhere at once."""
        if self.reply_type == _ROUTER:
            if len(frames) < 2:
                return
            envelope = frames[: split_envelope(frames)]
        else:
            envelope = []
        stopped = NotRunning("the service is stopping")
        reply = error_reply("unavailable", stopped, self.name, True)
        self.stats.refused += 1
        self.send_reply([*envelope, reply], own_callback=True)

    async def dispatch_async(self, message: Message) -> None:
        """:meth:`dispatch_message` for channels with coroutine or threaded receivers."""
        if self.tracer is None:
            await self.run_async(message)
            return
        size = body_size(message.frames)
        with self.tracer.process(self.channel, size, message.trace_context):
            await self.run_async(message)

    async def run_async(self, message: Message) -> None:
        reply: Frames | None = None
        error: Exception | None = None
        started = _monotonic()
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
                    frames = [error_reply("cancelled", stopped, self.name, True)]
                    self.send_reply((message.envelope or []) + frames, own_callback=False)
                raise
            except Exception as exc:
                error = exc
                self.handler_failed(message, invoke, exc)
        self.finish(message, reply, error, own_callback=False)
        if self.timing is not None:
            self.timing.observe(_monotonic() - started)

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
                reply = [error_reply(kind, error, self.name, self.error_detail)]
            elif reply is None and self.reply_type == _REP:
                reply = [b""]
            if reply is not None:
                if message.envelope is not None:
                    reply = message.envelope + reply
                self.send_reply(reply, own_callback)
        if error is None:
            self.stats.handled += 1
        elif not isinstance(error, DecodeError):  # a typed body's failure is counted there
            self.stats.handled += 1
            self.stats.failed += 1
        if message_handled.receivers:
            self.notify(message_handled, message=message)

    def notify(self, signal: Any, **kwargs: Any) -> None:
        """Send one of zmqapp's signals about a message: a receiver that raises is logged
        (rate-limited), and the message goes on, so its peer is still answered."""
        try:
            signal.send(self.app, **kwargs)
        except Exception as exc:
            self.receiver_failed(exc, signal.name)

    def receiver_failed(self, exc: BaseException, signal_name: str = "") -> None:
        """A receiver of one of zmqapp's signals raised: say so (rate-limited)."""
        self.host.problems.report(
            self.name,
            "handler_failed",
            "a receiver of a zmqapp signal failed on channel %r%s",
            self.name,
            f" ({signal_name})" if signal_name else "",
            level=logging.ERROR,
            exc_info=exc,
        )

    def start_task(self, message: Message) -> None:
        self.in_flight += 1
        if self.in_flight >= self.concurrency:
            self.update_reading()
        task = self.loop.create_task(self.dispatch_async(message))
        self.tasks[task] = message
        task.add_done_callback(self.task_done)

    def task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.pop(task, None)
        self.in_flight -= 1
        if not self.reading or self.held:
            self.update_reading()
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - a bug
            log.error("zmqapp dispatch failed", exc_info=task.exception())

    # -- failures ------------------------------------------------------------------------------

    def peer(self) -> str | None:
        """The address of the peer that sent the message being dispatched, if ZeroMQ knows."""
        frame = self.current
        if frame is None:
            return None
        try:
            return str(frame.get("Peer-Address"))
        except (zmq.ZMQError, UnicodeDecodeError):
            return None

    def handler_failed(self, message: Message, invoke: Invoker, exc: BaseException) -> None:
        if isinstance(exc, DecodeError):  # a typed body that did not fit
            self.decode_failed(message.frames, exc, message)
            return
        if self.tracer is not None:
            self.tracer.failed(exc)
        handler = getattr(invoke, "handler", None)
        if handler is None:  # a receiver connected to the channel's signal, held weakly
            handler = getattr(invoke, "handler_ref", lambda: None)() or invoke
        self.host.problems.report(
            self.name,
            "handler_failed",
            "handler %s of channel %r failed on %r",
            getattr(handler, "__qualname__", handler),
            self.name,
            message,
            level=logging.ERROR,
            exc_info=exc,
            peer=self.peer(),
        )
        if handler_failed.receivers:
            self.notify(handler_failed, message=message, handler=handler, exception=exc)

    def decode_failed(
        self, frames: Frames, exc: BaseException, message: Message | None = None
    ) -> None:
        self.stats.decode_failed += 1
        if self.taps and message is None:
            for tap in self.taps:
                tap.offer("in", frames)
        peer = self.peer()
        self.host.problems.report(
            self.name,
            "decode_failed",
            "channel %r dropped an undecodable message from %s: %s (%s)",
            self.name,
            peer or "an unknown peer",
            exc,
            _sample(frames),
            peer=peer,
        )
        if decode_failed.receivers:
            self.notify(decode_failed, channel=self.channel, frames=frames, exception=exc)
        if self.replies and message is None:
            # A peer still waits for an answer: tell it what went wrong.
            envelope = _envelope_of(frames) if self.reply_type == _ROUTER else []
            if envelope is not None:
                reply = error_reply("decode_failed", exc, self.name, self.error_detail)
                self.send_reply([*envelope, reply], own_callback=True)

    def too_large(self, frames: Frames, why: str) -> None:
        """A message over MAXFRAMES or MAXMSGSIZE: dropped and counted as a decode failure."""
        self.decode_failed(frames, DecodeError(f"message too large: {why}"))

    # -- replies -------------------------------------------------------------------------------

    def send_reply(self, frames: Frames, own_callback: bool) -> None:
        try:
            self.send_frames(frames)
        except zmq.ZMQError as exc:
            # A ROUTER whose peer is gone (EHOSTUNREACH) or whose queue to the peer is full
            # (EAGAIN): the reply is dropped, but counted and said, not lost in silence.
            self.stats.drop(_drop_reason(exc))
            log.warning("channel %r dropped a reply: %s", self.name, exc.strerror)
            if not own_callback:
                self.schedule_check()  # the failed send took the socket's edge too (rule 2)
            return
        self.stats.sent += 1
        if self.taps:
            self.tap_out(frames)
        if message_sent.receivers:
            message_sent.send(self.app, channel=self.channel, frames=frames)
        if not own_callback:
            self.schedule_check()

    def tap_out(self, frames: Frames) -> None:
        for tap in self.taps:
            tap.offer("out", frames)

    # -- sending -------------------------------------------------------------------------------

    def send_body(self, body: Any, *, force: bool = False) -> None:
        """Encode ``body`` with this channel's codec and send it (see :meth:`send`)."""
        self.send_message(encode_body(self.channel.codec, body), 0, force=force)

    def send_message(self, frames: Frames, body_start: int = 0, *, force: bool = False) -> None:
        """:meth:`send` a message whose body begins at ``body_start``, in a PRODUCER span
        when tracing, with the trace-context frame on a ``trace=True`` channel."""
        tracer = self.tracer
        if tracer is None:
            self.send(frames, force=force)
            return
        with tracer.send(self.channel, body_size(frames[body_start:])):
            if self.channel.trace:
                frames.insert(body_start, tracer.header())
            self.send(frames, force=force)

    def send(self, frames: Frames, *, force: bool = False) -> None:
        """Send now if ZeroMQ takes it, else queue it; never blocks.

        A full queue raises :class:`SendQueueFull`, unless ``force`` (a message already taken
        off another socket, which must not be lost): then it is queued anyway and the
        channels forwarding here stop reading until the queue drains.
        """
        if self._closed:
            raise NotRunning(f"channel {self.name!r} is closed")
        if self.reply_type == _ROUTER:
            self.send_routed(frames)
            return
        if not self.outbox:
            try:
                self.send_frames(frames)
            except _Again:
                self.schedule_check()  # it took the socket's edge (rule 2); queued below
            else:
                self.stats.sent += 1
                if self.taps:
                    self.tap_out(frames)
                if message_sent.receivers:
                    message_sent.send(self.app, channel=self.channel, frames=frames)
                self.schedule_check()
                return
        if len(self.outbox) >= self.queue_limit and not force:
            raise SendQueueFull(
                f"channel {self.name!r} has {len(self.outbox)} messages waiting for "
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
            if len(frame) < _COPY_THRESHOLD:
                send(frame, _NOBLOCK_MORE)
            else:
                self._send_large(frame, _NOBLOCK_MORE)
        last = frames[-1]
        if len(last) < _COPY_THRESHOLD:
            send(last, _NOBLOCK)
        else:
            self._send_large(last, _NOBLOCK)

    def send_routed(self, frames: Frames) -> None:
        """ROUTER: send to one peer now or fail; never queue, so one slow peer cannot hold up
        the messages for every other one."""
        try:
            self.send_frames(frames)
        except zmq.ZMQError as exc:
            self.schedule_check()  # a refused send takes the socket's edge too (rule 2)
            self.stats.drop(_drop_reason(exc))
            if exc.errno == zmq.EHOSTUNREACH:
                raise Unroutable(
                    f"channel {self.name!r} has no peer with identity {frames[0]!r} "
                    "(it disconnected, or never connected)"
                ) from None
            if exc.errno == zmq.EAGAIN:
                raise SendQueueFull(
                    f"channel {self.name!r}: the queue to peer {frames[0]!r} is full "
                    "(its high-water mark); it is not reading fast enough"
                ) from None
            raise
        self.stats.sent += 1
        if self.taps:
            self.tap_out(frames)
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
                outbox.popleft()
                self.stats.drop(_drop_reason(exc))
                log.warning("channel %r dropped a queued message: %s", self.name, exc)
            else:
                frames = outbox.popleft()  # sent: gone from the queue before anyone is told
                self.stats.sent += 1
                if self.taps:
                    self.tap_out(frames)
                if message_sent.receivers:
                    message_sent.send(self.app, channel=self.channel, frames=frames)
        if self.congested and len(outbox) <= self.queue_limit // 2:
            self.set_congested(False)
        if self._room and len(outbox) < self.queue_limit:
            self._wake_room()

    async def wait_for_room(self) -> None:
        """Wait until the send queue is below ``SEND_QUEUE``."""
        while len(self.outbox) >= self.queue_limit:
            if self._closed:
                raise NotRunning(f"channel {self.name!r} is closed")
            future = self.loop.create_future()
            self._room.append(future)
            try:
                await future
            finally:
                if not future.done() or future.cancelled():  # its waiter gave up
                    with contextlib.suppress(ValueError):
                        self._room.remove(future)

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

    def pause(self) -> None:
        """Stop reading at once (a stop was asked): a drain in progress ends after the message
        it is handling, and none starts until the stop sets the channel's mode."""
        self.paused = True
        self.update_reading()

    def update_reading(self) -> None:
        """Recompute whether to read; on resuming, look at the socket again (rule 3)."""
        was = self.reading
        mode = self.mode
        if mode == IDLE or self._closed or self.paused or not self.channel.receives:
            reading = False
        elif mode == HOLDING:
            reading = self.intercept is not None and len(self.held) < self.queue_limit
        elif mode == REFUSING:
            reading = self.in_flight == 0 or self.reply_type == _ROUTER
        else:
            # A REQ or DEALER channel reads on at its limit, for replies (see start_or_hold).
            reading = self.has_room() or (
                self.intercept is not None and len(self.held) < self.queue_limit
            )
        self.reading = reading
        if (reading and not was) or (self.held and mode in (RUNNING, DRAINING) and self.has_room()):
            self.schedule_check()  # resume reading, or start what was held

    def has_room(self) -> bool:
        """Room to start one more message: under the concurrency limit, and the ``send_to``
        channel's queue not full."""
        return self.in_flight < self.concurrency and not (
            self.forward is not None and self.forward.congested
        )

    def settled(self, quiet: float) -> bool:
        """True when nothing is in flight or held and the socket has been empty for ``quiet``
        seconds, confirmed by asking the socket once more.

        A read that finds the socket empty may race libzmq's I/O thread, which refills the
        queue from the kernel's buffers a moment later; waiting a few milliseconds and asking
        again tells "empty for now" from "empty"."""
        if not self.channel.receives:
            return True
        if self.in_flight or self.held:
            return False
        events = self.get_option(_EVENTS)
        if events & _POLLIN or (self.outbox and events & _POLLOUT):
            self.empty_since = None
            self.schedule_check()  # the read above took the edge: look now (rule 2)
            return False
        now = time.monotonic()
        if self.empty_since is None:
            self.empty_since = now
            return False
        return now - self.empty_since >= quiet

    def discard_queued(self, seconds: float, barrier: IoBarrier | None = None) -> tuple[int, bool]:
        """Read and drop what is queued on the socket (the stop's deadline passed), for up to
        ``seconds``; return how many messages that was, so the loss can be said, and whether
        the socket was found empty (else ``seconds`` ran out first: there was more).

        Empty is asked as the stop asks it: quiet for SETTLE and, with ``barrier``, libzmq's
        I/O thread caught up; with a small RCVHWM most of what peers sent is still in the
        kernel's buffers, moved into the socket only as it is read."""
        count = 0
        until = time.monotonic() + seconds
        recv = self.recv
        empty = False
        try:
            while (left := until - time.monotonic()) > 0:
                try:
                    frame = recv(_NOBLOCK, False)
                except zmq.Again:
                    if stays_empty(self.socket, left, barrier):
                        empty = True
                        break
                    continue
                while frame.more:
                    frame = recv(_NOBLOCK, False)
                count += 1
        except zmq.ZMQError:
            empty = True  # the socket cannot be read at all
        self.stats.received += count
        self.stats.drop("stop_deadline", count)
        return count, empty

    def close(self, linger: int) -> None:
        """Stop watching the descriptor and close the socket with a finite linger."""
        if self._closed:
            return
        self._closed = True
        self.mode = IDLE
        self.reading = False
        self._wake_room()
        self.loop.remove_reader(self.fd)
        self.socket.close(linger=linger)
        self.current = None


def _drop_reason(exc: zmq.ZMQError) -> str:
    if exc.errno == zmq.EHOSTUNREACH:
        return "unroutable"
    if exc.errno == zmq.EAGAIN:
        return "peer_full"
    return "send_error"


#: "No body to hand to the handler" (it failed to decode, or went the general path).
_SKIP = object()


def _each(decode: Callable[[bytes], Any]) -> Callable[[Frames], Any]:
    def decode_each(frames: Frames) -> Any:
        return Multipart(decode(frame) for frame in frames)

    return decode_each


def _then(decode: Callable[[bytes], Any], convert: Callable[[Any], Any]) -> Callable[[bytes], Any]:
    def decode_then_convert(data: bytes) -> Any:
        return convert(decode(data))

    return decode_then_convert


def _as_decode_error(exc: Exception) -> DecodeError:
    if isinstance(exc, DecodeError):
        return exc
    error = DecodeError(f"malformed message: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _envelope_of(frames: Frames) -> Frames | None:
    """The envelope of a ROUTER message that failed to parse, if it has one at all."""
    if len(frames) < 2:
        return [frames[0]] if frames else None
    return frames[: split_envelope(frames)]


def _sample(frames: Frames, limit: int = 48) -> str:
    """A short, escaped look at a message's frames for the log."""
    shown = " | ".join(show_bytes(frame, limit) for frame in frames[:4])
    more = f" | ... {len(frames) - 4} more frames" if len(frames) > 4 else ""
    return f"{len(frames)} frame{'s' if len(frames) != 1 else ''}: {shown}{more}"
