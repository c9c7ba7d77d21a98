"""One run of an app: the :class:`Runtime` owns everything that exists from start to stop.

:class:`~zmqapp.App` declares (channels, handlers, hooks, timers, config); each
:meth:`~zmqapp.App.serve` or :meth:`~zmqapp.App.run` makes a new Runtime, which owns the
loop, the ZeroMQ context, the authenticator, the socket monitors, one
:class:`~zmqapp.pump.Pump` per channel, the requests in flight, the tasks, the thread pool,
the problem log and the stop sequence, and is thrown away when the run ends. Nothing of one
run survives into the next.

Start, in order: config is applied and checked; sockets are made, set up and bound or
connected (the authenticator first); replies to requests are read from then on, so an
``on_start`` hook may ``await app.request(...)``, while other messages wait for the hooks;
the hooks run; handlers get messages; timers start; the app is ready.

Stop, in order (README: Lifecycle):

1. Readiness goes false, timers stop.
2. Channels stop taking new work but keep their connections: REP and ROUTER answer
   requests that are queued but not started with an ``unavailable`` error reply; XSUB takes
   back its subscriptions (publishers stop sending); every other receiving channel reads and
   handles what already reached it, until its socket has been empty for a few milliseconds.
3. In-flight handlers (coroutines, threads) and timer ticks finish. What is left at
   ``SHUTDOWN_TIMEOUT`` is cancelled (threads abandoned) and logged with a count per channel.
4. ``on_stop`` hooks run; they may still send and request.
5. Queued sends are flushed, up to the deadline.
6. Sockets close with a finite ``LINGER``; the app's own context is terminated, and a socket
   that user code left open on it is closed rather than allowed to hang the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import faulthandler
import os
import signal as _signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import zmq
from tornado.ioloop import PeriodicCallback

from . import __version__, logs, security, tracing
from ._handlers import describe, is_async_callable
from ._problems import ProblemLog
from ._threads import DaemonThreadPool
from ._watchdog import LoopWatchdog
from .channel import Channel
from .dns import DnsEndpoint
from .errors import NotRunning, SetupError
from .metrics import Timing
from .monitor import SocketMonitor
from .pump import DRAINING, HOLDING, IDLE, REFUSING, RUNNING, Pump
from .rpc import Requests
from .signals import (
    app_started,
    app_starting,
    app_stopped,
    app_stopping,
    handler_failed,
    peer_connected,
    peer_disconnected,
    socket_event,
)
from .sockets import SETTLE, IoBarrier, RunContext, is_dns, open_socket, unsubscribe_upstream
from .tap import Tap
from .web import HttpServer, LoopLag

if TYPE_CHECKING:
    from .app import App

T = TypeVar("T")

#: A run's states, in the order they happen.
STARTING, RUNNING_STATE, STOPPING, STOPPED = "starting", "running", "stopping", "stopped"
#: Seconds the stop waits for cancelled tasks to unwind, and for the context to terminate
#: beyond ``LINGER``.
UNWIND = 1.0
#: Seconds the stop spends at most reading and counting what its deadline left queued.
DISCARD = 0.5
#: Seconds a coroutine stop hook gets at least, even when the deadline has passed.
MIN_HOOK_TIME = 0.05
#: Seconds between the loop-lag timer's ticks (while the app serves HTTP), and between the
#: checks for channels that have no peer.
LAG_TICK = 0.25
PEER_CHECK = 1.0


class Runtime:
    """Everything of one run of ``app``; made by :meth:`App.serve`, discarded at its end."""

    def __init__(
        self,
        app: App,
        *,
        context: zmq.Context[Any] | None = None,
        install_signal_handlers: bool = False,
    ) -> None:
        self.app = app
        self.config = app.config
        self.logger = app.logger
        self.install_signal_handlers = install_signal_handlers
        #: ``starting``, ``running``, ``stopping`` or ``stopped``.
        self.state = STARTING
        #: True from the end of the start hooks until a stop begins.
        self.is_ready = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        #: The ZeroMQ context of this run (the app's own unless one was given).
        self.context: zmq.Context[Any] | None = context
        self.owns_context = context is None
        #: Channel name -> its pump.
        self.pumps: dict[str, Pump] = {}
        #: Channel name -> the requests in flight on it (REQ and DEALER channels).
        self.requests: dict[str, Requests] = {}
        self.problems = ProblemLog(app.logger)
        self.monitors: list[SocketMonitor] = []
        self.authenticator: security.Authenticator | None = None
        self.executor: DaemonThreadPool | None = None
        self.periodic: list[PeriodicCallback] = []
        self.ticks: set[asyncio.Task[Any]] = set()
        self.started = False  # app_started was sent
        self.hooks_began = False
        #: The HTTP server (``HTTP`` config), while it runs.
        self.http: HttpServer | None = None
        #: True when the run keeps what the HTTP side shows: timing and peers.
        self.observed = False
        #: How late the loop runs its timers (measured while the app serves HTTP).
        self.lag = LoopLag(LAG_TICK)
        self.watchdog: LoopWatchdog | None = None
        #: The ``tcp+dns://`` endpoints being kept up to date.
        self.resolvers: list[DnsEndpoint] = []
        self.shipper: logs.LogShipper | None = None
        self._warned: set[tuple[str, str]] = set()
        #: Channel name -> (since when it has had no peer, messages sent by then).
        self._since_peer: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._stop_asked = False
        #: When (loop time) the stop was asked: its deadline counts from then.
        self._stop_asked_at: float | None = None
        self._stop_event: asyncio.Event | None = None
        self._signals: list[int] = []
        self._dumps = False
        self._listeners: list[tuple[Any, Callable[..., None]]] = []

    def __repr__(self) -> str:
        return f"<Runtime of {self.app.name!r} {self.state}>"

    # -- the run -------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Start, run until a stop is asked, then stop: the whole life of this run."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self.loop = loop
            self.loop_thread = threading.get_ident()
            self._stop_event = asyncio.Event()
            if self._stop_asked:
                self._stop_asked_at = loop.time()
                self._stop_event.set()
        self.problems.loop = loop
        stop_event = self._stop_event
        start = loop.create_task(self.start())
        stopped = loop.create_task(stop_event.wait())
        try:
            await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not start.done():
                # A stop asked while starting: let the start finish, within the timeout,
                # counted from when the stop was asked (a plain hook may have held the loop).
                timeout = float(self.config["SHUTDOWN_TIMEOUT"])
                await asyncio.wait({start}, timeout=max(0.0, self._deadline(loop) - loop.time()))
                if not start.done():
                    self.logger.warning(
                        "stop: the app was still starting after SHUTDOWN_TIMEOUT (%s s); "
                        "cancelling its start",
                        timeout,
                    )
                    start.cancel()
                    await asyncio.wait({start}, timeout=UNWIND)
            if start.done() and not start.cancelled():
                start.result()  # a failed start raises here, after the stop below
            await stopped
        finally:
            stopped.cancel()
            await self.stop_sequence()

    async def start(self) -> None:
        """Open every socket, run the start hooks, then let handlers have messages."""
        app = self.app
        app.apply_config()
        try:
            if logs.check_format(self.config.get("LOG_FORMAT")) == "json":
                logs.use_json(app.name)
        except ValueError as exc:
            raise SetupError(str(exc)) from None
        self._install_signal_handlers()
        self.shipper = logs.ship_to(self.config, app.name)
        blocked = self.config.get("LOOP_BLOCKED_WARN")
        if blocked:
            self.watchdog = LoopWatchdog(float(blocked), self.logger)
            self.watchdog.start()
        address = self.config.get("HTTP")
        if address:
            self.observed = True
            self.http = HttpServer(self, str(address), token=self.config.get("HTTP_TOKEN"))
            self.http.start()  # probes answer (503) while the app starts
            self.lag.start()
        app_starting.send(app)
        if self.context is None:
            self.context = RunContext()
        context = self.context
        # The authenticator runs before any socket binds, so no client slips in unchecked.
        self.authenticator = security.authenticator_for(app, context, app.channels.values())
        tracer = tracing.tracer_for(app.name)
        for name, channel in app.channels.items():
            sock = open_socket(context, channel, self.config, monitor=self._watch)
            channel.socket = sock
            pump = self.pumps[name] = Pump(self, channel, sock, self.config)
            pump.tracer = tracer
        for name, pump in self.pumps.items():
            channel = pump.channel
            if channel.send_to is not None:
                target = self.pumps[channel.send_to]
                pump.forward = target
                target.upstream.append(pump)
            if channel.kind.requests:
                self.requests[name] = Requests(pump)
            self._follow_receivers(channel, pump)
            if self.observed:
                pump.timing = Timing()
            pump.build_invokers()
        for pump in self.pumps.values():
            pump.watch()
            pump.set_mode(HOLDING)  # replies to requests are read from now on
            self._resolve(pump)
        self.hooks_began = True
        for fn in app.start_hooks:
            await self._run_hook(fn, keep_subscribing=True)
        self.state = RUNNING_STATE
        for pump in self.pumps.values():
            pump.set_mode(RUNNING)
            pump.release_held()
        for seconds, fn in app.timers:
            periodic = PeriodicCallback(self._timer_callback(fn), seconds * 1000)
            periodic.start()
            self.periodic.append(periodic)
        checks = PeriodicCallback(self._check_peers, PEER_CHECK * 1000)
        checks.start()
        self.periodic.append(checks)
        self.is_ready = True
        self.started = True
        app_started.send(app)

    def _resolve(self, pump: Pump) -> None:
        """Connect the pump's socket to every address of each ``tcp+dns://`` endpoint, and
        keep it so as DNS changes (see :mod:`zmqapp.dns`)."""
        sock = pump.socket

        def connect(address: str) -> None:
            sock.connect(address)
            pump.schedule_check()  # the call took the socket's commands: look again (rule 2)

        def disconnect(address: str) -> None:
            try:
                sock.disconnect(address)
            except zmq.ZMQError:  # pragma: no cover - never connected
                pass
            pump.schedule_check()

        for endpoint in pump.channel.endpoints:
            if is_dns(endpoint):
                resolver = DnsEndpoint.from_address(
                    endpoint.address,
                    connect=connect,
                    disconnect=disconnect,
                    refresh=float(self.config.get("DNS_REFRESH") or 10.0),
                    nameservers=self.config.get("DNS_NAMESERVERS"),
                    logger=self.logger,
                )
                resolver.start()
                self.resolvers.append(resolver)

    def _watch(self, channel: Channel, sock: zmq.Socket[Any]) -> None:
        """Start monitoring ``sock`` if ``channel`` is to be monitored (before it binds)."""
        wanted = (
            self.config.get("MONITOR")
            or self.observed
            or socket_event.receivers
            or peer_connected.receivers
            or peer_disconnected.receivers
        )
        if wanted or channel.monitor or channel.security:
            self.monitors.append(SocketMonitor(self.app, channel, sock, problems=self.problems))

    def _follow_receivers(self, channel: Channel, pump: Pump) -> None:
        """Rebuild the pump's receivers whenever something connects to or disconnects from
        the channel's signal (blinker's own notifications). From another thread, the
        connect returns once the loop has rebuilt them, so every message that arrives after
        it reaches the new receiver."""

        def changed(signal: Any, **kwargs: Any) -> None:
            try:
                self.call(pump.build_invokers)
            except NotRunning:  # the run is over: the next one builds them afresh
                pass

        for notice in (channel.signal.receiver_connected, channel.signal.receiver_disconnected):
            notice.connect(changed, weak=False)
            self._listeners.append((notice, changed))

    async def _run_hook(self, fn: Callable[[], Any], *, keep_subscribing: bool = False) -> None:
        if keep_subscribing and not is_async_callable(fn):
            result = self._run_blocking_hook(fn)
        else:
            result = fn()
        if result is not None and asyncio.iscoroutine(result):
            await result

    def _run_blocking_hook(self, fn: Callable[[], Any]) -> Any:
        """Run a plain start hook. It holds the loop, so SUB sockets would not process the
        connections made meanwhile, and their subscriptions would not be sent: a helper
        thread asks them for ZMQ_EVENTS (which processes their commands) until the hook
        returns. Nothing else touches those sockets meanwhile (the loop is in the hook)."""
        subs = [p.socket for p in self.pumps.values() if p.channel.socket_type == zmq.SUB]
        if not subs:
            return fn()
        done = threading.Event()

        def keep_subscribing() -> None:
            while not done.wait(0.005):
                for sock in subs:
                    sock.getsockopt(zmq.EVENTS)

        helper = threading.Thread(target=keep_subscribing, name="zmqapp-subscribe", daemon=True)
        helper.start()
        try:
            return fn()
        finally:
            done.set()
            helper.join()

    def _timer_callback(self, fn: Callable[[], Any]) -> Callable[[], Awaitable[None]]:
        async def tick() -> None:
            if self.state != RUNNING_STATE:
                return
            task = asyncio.current_task()
            if task is not None:
                self.ticks.add(task)  # a stop waits for a tick that is running
            try:
                result = fn()
                if result is not None and asyncio.iscoroutine(result):
                    await result
            except Exception as exc:
                self.logger.error("timer %s failed", describe(fn), exc_info=exc)
                if handler_failed.receivers:
                    handler_failed.send(self.app, message=None, handler=fn, exception=exc)
            finally:
                if task is not None:
                    self.ticks.discard(task)

        return tick

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask this run to stop; safe from any thread, and before the run has begun."""
        with self._lock:
            loop = self.loop
            if loop is None:
                self._stop_asked = True
                return
        if threading.get_ident() == self.loop_thread:
            self._request_stop()
            return
        try:
            loop.call_soon_threadsafe(self._request_stop)
        except RuntimeError:  # the loop closed meanwhile: already stopped
            pass

    def _request_stop(self) -> None:
        self._stop_asked = True
        if self._stop_asked_at is None and self.loop is not None:
            self._stop_asked_at = self.loop.time()
        if self.state == RUNNING_STATE:
            for pump in self.pumps.values():
                pump.pause()  # no new batch until the stop sequence says what to read
        if self._stop_event is not None:
            self._stop_event.set()

    async def stop_sequence(self) -> None:
        """Stop in the documented order (see the module docstring), within the deadline."""
        if self.state == STOPPED:
            return
        self.state = STOPPING
        self.is_ready = False
        try:
            if self.started:
                app_stopping.send(self.app)
            await self._stop_within_deadline()
        finally:
            self._close()
            if self.http is not None:  # it answered (503) until the drain was done
                await self.http.close()
                self.http = None
            self.lag.stop()
            if self.watchdog is not None:
                self.watchdog.stop()
            await self._terminate_context()
            self._remove_signal_handlers()
            self.problems.flush()
            for notice, listener in self._listeners:
                notice.disconnect(listener)
            self._listeners.clear()
            self.state = STOPPED
            if self.started:
                app_stopped.send(self.app)
            logs.stop_shipping(self.shipper)
            self.shipper = None

    async def _stop_within_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = float(self.config["SHUTDOWN_TIMEOUT"])
        deadline = self._deadline(loop)
        # Past the deadline only unwinding is left (cancelled tasks, cut-short stop hooks,
        # counting what is dropped), and all of it shares one more second.
        hard = deadline + UNWIND
        for periodic in self.periodic:
            periodic.stop()
        self.periodic.clear()
        pumps = list(self.pumps.values())
        received = {pump.name: pump.stats.received for pump in pumps}

        unstarted: list[Pump] = []
        refusing: list[Pump] = []
        if not self.started:  # the start never finished: no handler may run
            for pump in pumps:
                if pump.channel.replies:
                    pump.set_mode(REFUSING)  # queued requests get an "unavailable" answer
                    refusing.append(pump)
                elif pump.channel.receives:
                    unstarted.append(pump)  # the rest is read, dropped and counted below
            pumps = []
        # 1-2. Stop taking new work; read and handle what already came in.
        for pump in pumps:
            pump.deadline = deadline
            if not pump.channel.receives:
                continue
            if pump.channel.replies:
                pump.set_mode(REFUSING)
            else:
                if pump.channel.socket_type == zmq.XSUB:
                    unsubscribe_upstream(pump.socket, pump.channel)
                pump.set_mode(DRAINING)
                pump.release_held()
        # Polling is fine here: this runs once per stop, for a few milliseconds. Quiet for
        # SETTLE is not enough on a busy machine, where libzmq's I/O thread may not have run:
        # the barrier says when it has read what the kernel held, and the sockets are asked
        # once more.
        context = self.context
        barrier = IoBarrier.for_context(context) if context and (pumps or unstarted) else None
        try:
            while loop.time() < deadline:
                if self._settled(pumps) and not self.ticks:
                    if barrier is None or (barrier.passed() and self._settled(pumps)):
                        break
                elif barrier is not None:
                    barrier.reset()
                await asyncio.sleep(0.002)
            late = loop.time() >= deadline
            unhandled: dict[str, tuple[int, bool]] = {}
            # Within the second everything past the deadline shares, if any is left.
            counting_until = max(loop.time(), min(loop.time() + DISCARD, hard))
            for pump in pumps:
                if late and pump.mode == DRAINING:
                    left = max(0.0, counting_until - loop.time())
                    unhandled[pump.name] = pump.discard_queued(left, barrier)
                if pump.mode == DRAINING:
                    # Requests made by hooks still get their replies; nothing else is read.
                    pump.set_mode(HOLDING if pump.intercept is not None else IDLE)
            for pump in unstarted:  # what came in for handlers that never got to run
                left = max(0.0, counting_until - loop.time())
                dropped, empty = pump.discard_queued(left, barrier)
                if dropped:
                    self.logger.warning(
                        "stop: the app never finished starting; channel %r dropped %d "
                        "message(s) queued for its handlers%s",
                        pump.name,
                        dropped,
                        _more_than_counted(empty),
                    )
            for pump in refusing:  # answer what was queued, as far as time allows
                while loop.time() < counting_until and pump.socket.poll(0):
                    pump.on_events()
        finally:
            if barrier is not None:
                barrier.close()

        # 3. What is still in flight at the deadline is cancelled, and said.
        leftovers = {pump.name: len(pump.tasks) for pump in pumps if pump.tasks}
        if leftovers or late:
            self._report_deadline(timeout, pumps, leftovers, received, unhandled)
        tasks = [task for pump in pumps for task in pump.tasks]
        tasks += list(self.ticks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, hard - loop.time()))
        for requests in self.requests.values():
            requests.cancel_all()

        # 4. Stop hooks, which may still send and request: a coroutine hook still running a
        # second past the deadline is cancelled; a plain one, like a plain handler, is never
        # interrupted.
        if self.hooks_began:
            self.hooks_began = False
            for fn in self.app.stop_hooks:
                try:
                    if is_async_callable(fn):
                        await self._run_stop_hook(fn, max(MIN_HOOK_TIME, hard - loop.time()))
                    else:
                        await self._run_hook(fn)
                except Exception as exc:
                    self.logger.error("stop hook %s failed", describe(fn), exc_info=exc)

        # 5. Flush what zmqapp still queues, up to the deadline.
        while loop.time() < deadline and any(pump.outbox for pump in pumps):
            await asyncio.sleep(0.005)

    async def _run_stop_hook(self, fn: Callable[[], Any], seconds: float) -> None:
        """Run a coroutine stop hook for at most ``seconds``; cancel it then, and say so.
        (Not asyncio.wait_for: a hook's own TimeoutError, an ``app.request`` Timeout, is its
        failure, not its running out of time.)"""
        task = asyncio.get_running_loop().create_task(self._run_hook(fn))
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if done:
            task.result()  # its own failure, if any, raises here
            return
        task.cancel()
        await asyncio.wait({task}, timeout=MIN_HOOK_TIME)
        self.logger.error(
            "stop hook %s was still running a second after SHUTDOWN_TIMEOUT (%s s); cancelled",
            describe(fn),
            float(self.config["SHUTDOWN_TIMEOUT"]),
        )

    def _report_deadline(
        self,
        timeout: float,
        pumps: list[Pump],
        leftovers: dict[str, int],
        received: dict[str, int],
        unhandled: dict[str, tuple[int, bool]],
    ) -> None:
        for pump in pumps:
            running = leftovers.get(pump.name, 0)
            if running:
                names = ", ".join(h.name for h in pump.channel.handlers) or "a receiver"
                self.logger.warning(
                    "stop: channel %r still had %d handler call(s) of %s running at "
                    "SHUTDOWN_TIMEOUT (%s s); cancelling them",
                    pump.name,
                    running,
                    names,
                    timeout,
                )
            dropped, empty = unhandled.get(pump.name, (0, True))
            if dropped:
                read = pump.stats.received - received.get(pump.name, 0) - dropped
                self.logger.warning(
                    "stop: channel %r still had messages queued at SHUTDOWN_TIMEOUT (%s s): it "
                    "handled %d during the stop and dropped %d unhandled%s; what its peers send "
                    "from now on is lost when its socket closes",
                    pump.name,
                    timeout,
                    read,
                    dropped,
                    _more_than_counted(empty),
                )

    def _deadline(self, loop: asyncio.AbstractEventLoop) -> float:
        """The stop's deadline: SHUTDOWN_TIMEOUT from when the stop was asked (a stop asked
        while starting includes the wait for the start)."""
        asked = self._stop_asked_at if self._stop_asked_at is not None else loop.time()
        return asked + float(self.config["SHUTDOWN_TIMEOUT"])

    @staticmethod
    def _settled(pumps: list[Pump]) -> bool:
        """Ask every pump (not ``all()``, which stops at the first that is not: each one's
        quiet period must run at the same time as the others')."""
        return all([pump.settled(SETTLE) for pump in pumps])

    def _close(self) -> None:
        """Close monitors, sockets, the authenticator and the thread pool."""
        linger = int(self.config["LINGER"])
        for resolver in self.resolvers:
            resolver.close()
        self.resolvers.clear()
        for pump in self.pumps.values():
            if pump.mode == REFUSING and not pump.socket.closed:
                pump.on_events()  # answer what arrived since, rather than drop it silently
            lost = len(pump.outbox) + len(pump.held)
            if lost:
                pump.stats.drop("stop_deadline", lost)
                self.logger.warning(
                    "stop: channel %r had %d queued message(s) left at the deadline "
                    "(%d to send, %d received and not handled); they are dropped",
                    pump.name,
                    lost,
                    len(pump.outbox),
                    len(pump.held),
                )
        for monitor in self.monitors:
            monitor.close()
        self.monitors.clear()
        for pump in self.pumps.values():
            pump.close(linger)
            pump.channel.socket = None
        for requests in self.requests.values():
            requests.cancel_all()
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            busy = self.executor.busy()
            if busy:
                self.logger.warning(
                    "stop: abandoning %d handler thread(s) still blocked (%s); threads cannot "
                    "be interrupted, and they will not keep the process alive",
                    len(busy),
                    ", ".join(busy),
                )
            self.executor = None

    async def _terminate_context(self) -> None:
        """Terminate the app's own context, within ``LINGER`` and a second.

        ``term()`` waits until every socket made on the context is closed. It runs in a
        daemon thread: if it has not finished shortly, the sockets user code left open on
        ``app.context`` are closed (their blocking calls have returned ``ETERM`` by then), and
        if even that does not let it finish, the context is abandoned with an error logged,
        rather than hanging the process."""
        context = self.context
        if context is None or not self.owns_context or context.closed:
            return
        loop = asyncio.get_running_loop()
        finished = threading.Event()

        def term() -> None:
            try:
                context.term()
            finally:
                finished.set()

        threading.Thread(target=term, name="zmqapp-term", daemon=True).start()
        bound = int(self.config["LINGER"]) / 1000 + UNWIND
        give_up = loop.time() + max(bound, 0.0)
        patience = loop.time() + min(0.1, bound)
        closed_leftovers = False
        while not finished.is_set() and loop.time() < give_up:
            if not closed_leftovers and loop.time() >= patience:
                closed_leftovers = True
                leftovers = context.open_sockets() if isinstance(context, RunContext) else []
                if leftovers:
                    self.logger.warning(
                        "stop: %d socket(s) made on app.context were left open (%s); closing "
                        "them so the context can terminate. Close sockets you make in an "
                        "on_stop hook",
                        len(leftovers),
                        ", ".join(repr(sock) for sock in leftovers),
                    )
                    for sock in leftovers:
                        sock.close(linger=0)
            await asyncio.sleep(0.005)
        if not finished.is_set():
            self.logger.error(
                "stop: the ZeroMQ context did not terminate within %.1f s; abandoning it",
                give_up - patience,
            )

    # -- what the HTTP side shows ----------------------------------------------------------------

    def live(self) -> tuple[bool, str]:
        """Alive unless the loop ran its lag timer more than LOOP_LAG_LIMIT seconds late (or
        has not run it for that long)."""
        return self.lag.live(float(self.config.get("LOOP_LAG_LIMIT") or 5.0))

    def ready(self) -> tuple[bool, str]:
        """Ready from the end of the start hooks until a stop begins."""
        if self.is_ready:
            return True, ""
        return False, "stopping" if self.state in (STOPPING, STOPPED) else self.state

    async def snapshots(self) -> list[dict[str, Any]]:
        return [self.snapshot()]

    async def status(self) -> dict[str, Any]:
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The run's state and every channel's numbers, as ``/status`` shows them."""
        channels: dict[str, Any] = {}
        monitors = {monitor.channel.name: monitor for monitor in self.monitors}
        for name, channel in self.app.channels.items():
            pump = self.pumps.get(name)
            stats = channel.stats
            monitor = monitors.get(name)
            channels[name] = {
                "type": channel.type_name,
                "endpoints": [str(e) for e in channel.endpoints],
                "bound": list(channel.bound),
                "received": stats.received,
                "handled": stats.handled,
                "errors": stats.failed,
                "decode_failed": stats.decode_failed,
                "sent": stats.sent,
                "dropped": stats.dropped,
                "queue": len(pump.outbox) if pump is not None else 0,
                "in_flight": pump.in_flight if pump is not None else 0,
                "peers": len(monitor.peers) if monitor is not None else 0,
                "peer_addresses": sorted(set(monitor.peers.values())) if monitor else [],
                "refused": stats.refused,
                "drops": dict(stats.drops),
                "handshake_failures": dict(stats.handshakes),
                "requests": dict(stats.requests),
                "timing": pump.timing.as_dict() if pump and pump.timing else None,
                "send_to": channel.send_to,
                "subscribe": [t.decode("utf-8", "replace") for t in channel.subscribe],
                "codec": str(getattr(channel.codec, "name", type(channel.codec).__name__)),
                "handlers": [h.name for h in channel.handlers],
            }
        return {
            "app": self.app.name,
            "state": self.state,
            "ready": self.is_ready,
            "pid": os.getpid(),
            "version": __version__,
            "loop_lag": self.lag.current(),
            "channels": channels,
            "workers": [],
        }

    def open_tap(self, name: str) -> Tap:
        """Start watching channel ``name`` (on the loop); see :mod:`zmqapp.tap`."""
        pump = self.pump(name)
        tap = Tap(pump.channel)
        pump.taps.append(tap)
        pump.set_mode(pump.mode)  # off the fast path while tapped
        return tap

    def close_tap(self, name: str, tap: Tap) -> None:
        tap.close()
        pump = self.pumps.get(name)
        if pump is not None and tap in pump.taps:
            pump.taps.remove(tap)
            if pump.mode != IDLE:
                pump.set_mode(pump.mode)

    def _check_peers(self) -> None:
        """Warn, once, about what looks like a misconfiguration: a channel that has had no
        peer for NO_PEER_WARN seconds while messages wait for one, or a bound channel nobody
        has connected to."""
        limit = float(self.config.get("NO_PEER_WARN") or 10.0)
        now = time.monotonic()
        monitors = {monitor.channel.name: monitor for monitor in self.monitors}
        for name, pump in self.pumps.items():
            monitor = monitors.get(name)
            if monitor is not None and monitor.peers:
                self._since_peer.pop(name, None)
                continue
            if monitor is None and not pump.outbox:
                continue  # without a monitor, only a send queue that does not drain tells
            since, sent_then = self._since_peer.setdefault(name, (now, pump.stats.sent))
            if now - since < limit:
                continue
            channel = pump.channel
            # Messages wait: in zmqapp's queue, or handed to ZeroMQ with nobody to take them.
            waiting = len(pump.outbox) + pump.stats.sent - sent_then
            if waiting and (name, "queue") not in self._warned:
                self._warned.add((name, "queue"))
                self.logger.warning(
                    "channel %r has had no peer taking messages for %.0f s and %d wait to be "
                    "sent; check that something binds or connects at %s with a socket type "
                    "that pairs with %s",
                    name, now - since, waiting,
                    ", ".join(map(str, channel.endpoints)), channel.type_name,
                    extra={"channel": name, "peer": None},
                )  # fmt: skip
            elif monitor is not None and channel.bound and (name, "bound") not in self._warned:
                self._warned.add((name, "bound"))
                self.logger.warning(
                    "channel %r is bound at %s, and nobody has connected for %.0f s; if its "
                    "peers also bind, or connect elsewhere, nothing will ever arrive",
                    name, ", ".join(channel.bound), now - since,
                    extra={"channel": name, "peer": None},
                )  # fmt: skip

    # -- signals -------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM stop; SIGHUP reads authorized keys again (when config has
        secured channels: installed after the config is applied, so keys from config count)."""
        if not self.install_signal_handlers:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        wanted: dict[int, Callable[..., None]] = {
            _signal.SIGINT: self._on_signal,
            _signal.SIGTERM: self._on_signal,
        }
        if any(security.needs_zap(c) for c in self.app.channels.values()):
            wanted[_signal.SIGHUP] = self._on_reload
        for signum, handler in wanted.items():
            try:
                loop.add_signal_handler(signum, handler, signum)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix
                continue
            self._signals.append(signum)
            if signum != _signal.SIGHUP:
                # The loop's callback waits for the loop, which a plain start hook (or
                # handler) may be blocking, and the stop's deadline counts from when the
                # signal came: Python runs this handler between two bytecodes of the main
                # thread (asyncio's wake-up descriptor still wakes the loop for the callback).
                _signal.signal(signum, self._note_signal)
        # SIGUSR1 prints every thread's stack to stderr: what is this process doing?
        faulthandler.register(_signal.SIGUSR1, all_threads=True)
        self._dumps = True

    def _remove_signal_handlers(self) -> None:
        if self._signals and self.loop is not None and not self.loop.is_closed():
            for signum in self._signals:
                self.loop.remove_signal_handler(signum)
        self._signals.clear()
        if self._dumps:
            faulthandler.unregister(_signal.SIGUSR1)
            self._dumps = False

    def _note_signal(self, signum: int, frame: Any) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed() and self._stop_asked_at is None:
            self._stop_asked_at = loop.time()  # the deadline counts from now

    def _on_signal(self, signum: int) -> None:
        self.logger.info("received %s, stopping", _signal.Signals(signum).name)
        self._request_stop()

    def _on_reload(self, signum: int) -> None:
        self.logger.info("received SIGHUP: reading authorized keys again")
        try:
            self.reload_keys()
        except Exception as exc:
            self.logger.error("could not reload keys: %s", exc)

    def reload_keys(self) -> None:
        """Read every channel's ``authorized_keys`` directory again (on the loop)."""
        if self.authenticator is not None:
            self.call(self.authenticator.reload)

    # -- crossing threads ----------------------------------------------------------------------

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.loop_thread

    def soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop: now on the loop's thread, else at its next turn."""
        if self.on_loop_thread():
            fn()
        elif self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(fn)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` on the loop's thread and return its result, from any thread.

        This and :meth:`call_async` are the one way into a run from another thread or loop.
        """
        if self.on_loop_thread():
            return fn(*args)
        loop = self.loop
        if loop is None or self.state == STOPPED:
            raise NotRunning(f"app {self.app.name!r} is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)

        try:
            # In the caller's context, so its current span (tracing) is the parent there too.
            loop.call_soon_threadsafe(run, context=contextvars.copy_context())
        except RuntimeError:
            raise NotRunning(f"app {self.app.name!r} is not running") from None
        return self._wait(future, loop)

    def _wait(self, future: concurrent.futures.Future[T], loop: asyncio.AbstractEventLoop) -> T:
        """``future``'s result, from a thread other than the loop's; NotRunning if the run
        ends first (the loop may close before the callback that would settle it runs)."""
        # Not future.result(timeout): the call's own exception may be a TimeoutError (a
        # request's Timeout is one), which must not be taken for the wait running out.
        while not concurrent.futures.wait([future], timeout=0.25).done:
            if self.state == STOPPED or loop.is_closed():
                future.cancel()
                raise NotRunning(f"app {self.app.name!r} stopped first")
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise NotRunning(f"app {self.app.name!r} stopped first") from None

    async def call_async(
        self, coroutine_fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> T:
        """Await ``coroutine_fn(*args)`` on the run's loop, from any loop."""
        if self.on_loop_thread():
            return await coroutine_fn(*args)
        loop = self.loop
        future = asyncio.wrap_future(self._submit(coroutine_fn, *args))
        assert loop is not None  # _submit said NotRunning otherwise
        # As in _wait: the run's loop may close before it settles the future.
        try:
            while not (await asyncio.wait([future], timeout=0.25))[0]:
                if self.state == STOPPED or loop.is_closed():
                    raise NotRunning(f"app {self.app.name!r} stopped first")
        finally:
            if not future.done():  # the caller gave up (cancelled), or the run ended
                future.cancel()
        try:
            return future.result()
        except asyncio.CancelledError:
            raise NotRunning(f"app {self.app.name!r} stopped first") from None

    def call_blocking(self, coroutine_fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``coroutine_fn(*args)`` on the run's loop and wait for it, from a plain thread."""
        if self.on_loop_thread():
            raise RuntimeError(
                "this would block the app's own loop; await the async version instead"
            )
        loop = self.loop
        future = self._submit(coroutine_fn, *args)
        assert loop is not None  # _submit said NotRunning otherwise
        return self._wait(future, loop)

    def _submit(
        self, coroutine_fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> concurrent.futures.Future[T]:
        """Start ``coroutine_fn(*args)`` as a task on the loop; its future, for any thread.
        The coroutine is made on the loop, so a closed loop never leaves one un-awaited."""
        loop = self.loop
        if loop is None or self.state == STOPPED:
            raise NotRunning(f"app {self.app.name!r} is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        caller = contextvars.copy_context()

        def start() -> None:
            if not future.set_running_or_notify_cancel():
                return
            # The task runs in a copy of the caller's context (its current span, if any).
            task = caller.run(loop.create_task, coroutine_fn(*args))

            def done(task: asyncio.Task[T]) -> None:
                if task.cancelled():
                    future.cancel()
                elif (error := task.exception()) is not None:
                    future.set_exception(error)
                else:
                    future.set_result(task.result())

            task.add_done_callback(done)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:
            raise NotRunning(f"app {self.app.name!r} is not running") from None
        return future

    # -- what pumps ask for --------------------------------------------------------------------

    def run_in_thread(self, call: Callable[[], Any]) -> Awaitable[Any]:
        """Run a blocking handler in the run's daemon thread pool."""
        if self.executor is None:
            threads = self.config.get("THREADS")
            self.executor = DaemonThreadPool(threads, name=f"zmqapp-{self.app.name}")
        assert self.loop is not None
        return self.loop.run_in_executor(self.executor, call)

    def pump(self, name: str) -> Pump:
        """The pump of channel ``name`` (for tools and the test client)."""
        try:
            return self.pumps[name]
        except KeyError:
            raise NotRunning(
                f"app {self.app.name!r} has no socket for channel {name!r} "
                f"({'it is ' + self.state if self.state != RUNNING_STATE else 'no such channel'})"
            ) from None


def _more_than_counted(empty: bool) -> str:
    """What to add to a count of dropped messages whose socket was not read empty."""
    return "" if empty else f" (and more: counting stopped after {DISCARD} s)"
