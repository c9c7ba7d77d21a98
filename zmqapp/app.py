"""The :class:`App`: registration (channels, handlers, hooks, timers), sending and requesting,
and the lifecycle (``run``, ``serve``, ``stop``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import signal as _signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import zmq
from tornado.ioloop import PeriodicCallback

from . import security
from ._handlers import describe
from ._threads import DaemonThreadPool
from .channel import FORWARDABLE, SENDING, TYPE_NAMES, Channel, ChannelSignal
from .config import DEFAULTS, Config, default_app_name
from .errors import NotRunning, SetupError
from .loop import Pump, RateLimitedLog
from .message import encode_body, frames_for, parse_error_reply
from .monitor import SocketMonitor
from .rpc import Requests
from .security import Authenticator
from .signals import (
    app_started,
    app_starting,
    app_stopped,
    app_stopping,
    handler_failed,
    socket_event,
)
from .sockets import close_door, open_socket
from .testing import TestClient

F = TypeVar("F", bound=Callable[..., Any])

_IDLE, _STARTING, _RUNNING, _STOPPING = "idle", "starting", "running", "stopping"


def setupmethod(f: F) -> F:
    """Make a registration method fail clearly once the app has started."""

    @functools.wraps(f)
    def wrapper(self: App, *args: Any, **kwargs: Any) -> Any:
        if self._state != _IDLE:
            raise SetupError(
                f"The setup method {f.__name__!r} can no longer be called on app {self.name!r}: "
                "it is already running. Declare channels, handlers, hooks and timers before "
                "the app starts (at import time, or in a create_app() factory)."
            )
        return f(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class App:
    """A ZeroMQ service: channels declared with decorators, run on one event loop.

    ``import_name`` is the name of the module the app lives in (usually ``__name__``); it
    names the app's logger and locates relative config files. ``name`` is what config
    (``APPS.<name>`` tables), logs and tools call the app: by default the module's last
    dotted component, or a script's file name (``python ingest.py`` is app ``ingest``).
    Pass ``context`` to share a ZeroMQ context (the app then never terminates it); by
    default the app makes its own each time it starts and terminates it when it stops.

    ::

        app = App(__name__)

        @app.channel("tasks", endpoint="tcp://*:5557", type="PULL")
        def work(body):
            ...

        app.run()
    """

    #: The class of :attr:`config`.
    config_class: type[Config] = Config
    #: Config defaults; copied into every app's config.
    default_config: dict[str, Any] = DEFAULTS
    #: The class :meth:`test_client` makes.
    test_client_class: type[TestClient] = TestClient

    def __init__(
        self,
        import_name: str,
        *,
        context: zmq.Context[Any] | None = None,
        root_path: str | None = None,
        name: str | None = None,
    ) -> None:
        self.import_name = import_name
        #: What config (``APPS.<name>``), logs and tools call the app.
        self.name = name if name is not None else default_app_name(import_name)
        if root_path is None:
            root_path = _root_path(import_name)
        self.root_path = root_path
        #: The app's configuration (see :class:`~zmqapp.config.Config`).
        self.config = self.config_class(root_path, self.default_config)
        #: Channel names to the :class:`~zmqapp.channel.Channel` declared under them.
        self.channels: dict[str, Channel] = {}
        #: Functions run when the app starts, after its sockets are open.
        self.start_hooks: list[Callable[[], Any]] = []
        #: Functions run when the app stops, before its sockets close.
        self.stop_hooks: list[Callable[[], Any]] = []
        #: (interval in seconds, function) pairs run periodically while the app runs.
        self.timers: list[tuple[float, Callable[[], Any]]] = []
        #: The app's logger, named after ``import_name``.
        self.logger = logging.getLogger(import_name)

        self._context = context
        self._state = _IDLE
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stop_event: asyncio.Event | None = None
        self._stop_asked = False
        self._pumps: dict[str, Pump] = {}
        self._tasks: dict[asyncio.Task[Any], Any] = {}
        self._periodic: list[PeriodicCallback] = []
        self._ticks: set[asyncio.Task[Any]] = set()
        self._executor: DaemonThreadPool | None = None
        self._requests: dict[str, Requests] = {}
        self._decode_log = RateLimitedLog(self.logger)
        self._owned_context: zmq.Context[Any] | None = None
        self._monitors: list[SocketMonitor] = []
        self._authenticator: Authenticator | None = None
        self._hooks_ran = False

    def __repr__(self) -> str:
        return f"<App {self.name!r} {self._state}>"

    # -- registration --------------------------------------------------------------------------

    def channel(
        self,
        name: str,
        *,
        endpoint: str | Iterable[str] | None = None,
        type: int | str | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Declare a channel with the decorated function as its handler.

        Takes the options of :meth:`add_channel` and returns the function unchanged::

            @app.channel("hello", endpoint="tcp://*:5555", type="REP")
            def hello(body):
                return b"World"
        """

        def decorator(fn: F) -> F:
            self.add_channel(name, endpoint=endpoint, type=type, handler=fn, **options)
            return fn

        return decorator

    @setupmethod
    def add_channel(
        self,
        name: str,
        *,
        endpoint: str | Iterable[str] | None = None,
        type: int | str | None = None,
        handler: Callable[..., Any] | None = None,
        **options: Any,
    ) -> Channel:
        """Declare a channel, optionally with a handler; returns the :class:`Channel`.

        ``endpoint`` is an address or a list of them (``@`` binds, ``>`` connects; unprefixed,
        ``bind=`` decides, else wildcard hosts bind). ``type`` is a socket type constant or
        name. Other options: ``bind``, ``subscribe``, ``codec``, ``send_to``, ``concurrency``,
        ``threaded``, ``options`` (socket options), ``maxmsgsize``, ``timeout``, ``retries``,
        ``monitor`` and the CURVE options; see the README. Any option can be overridden from
        the ``CHANNELS`` config key.
        """
        if name in self.channels:
            raise SetupError(
                f"a channel named {name!r} is already declared; channel names must be unique. "
                f"To give it another handler, use @app.handler({name!r})"
            )
        channel = Channel(name, {"endpoint": endpoint, "type": type, **options})
        if handler is not None:
            channel.add_handler(handler)
        self._check_send_to(channel)
        self.channels[name] = channel
        for other in self.channels.values():
            if other.send_to == name:
                self._check_send_to(other)
        return channel

    def handler(self, name: str, *, threaded: bool = False) -> Callable[[F], F]:
        """Attach the decorated function as one more handler of channel ``name``.

        Every handler of a channel gets every message.
        """

        def decorator(fn: F) -> F:
            self.add_handler(name, fn, threaded=threaded)
            return fn

        return decorator

    @setupmethod
    def add_handler(self, name: str, fn: Callable[..., Any], *, threaded: bool = False) -> None:
        """Attach ``fn`` as one more handler of channel ``name``."""
        self.get_channel(name).add_handler(fn, threaded=threaded)

    @setupmethod
    def on_start(self, fn: F) -> F:
        """Register a function (plain or async) to run when the app starts.

        Hooks run after every socket is bound or connected, before any message is read, so
        they may send.
        """
        self.start_hooks.append(fn)
        return fn

    @setupmethod
    def on_stop(self, fn: F) -> F:
        """Register a function (plain or async) to run when the app stops.

        Hooks run after in-flight handlers finish and before sockets close, so they may send.
        """
        self.stop_hooks.append(fn)
        return fn

    def timer(self, seconds: float) -> Callable[[F], F]:
        """Run the decorated function (plain or async) every ``seconds`` while the app runs.

        The first call comes ``seconds`` after start. An async function's next call is
        scheduled after it finishes, so calls never overlap.
        """
        if not isinstance(seconds, (int, float)) or seconds <= 0:
            raise SetupError(f"a timer needs a positive number of seconds, not {seconds!r}")

        def decorator(fn: F) -> F:
            self.add_timer(seconds, fn)
            return fn

        return decorator

    @setupmethod
    def add_timer(self, seconds: float, fn: Callable[[], Any]) -> None:
        """Run ``fn`` every ``seconds`` while the app runs."""
        self.timers.append((float(seconds), fn))

    def get_channel(self, name: str) -> Channel:
        """The channel declared as ``name``, or a :class:`SetupError` naming the known ones."""
        try:
            return self.channels[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self.channels) or "none yet"
            raise SetupError(
                f"app {self.name!r} has no channel named {name!r} (channels: {known})"
            ) from None

    def signal(self, name: str) -> ChannelSignal:
        """Channel ``name``'s blinker signal.

        Its receivers are the channel's handlers; anything connected at any time also receives
        the channel's messages, called as ``receiver(app, message=message)``.
        """
        return self.get_channel(name).signal

    def _check_send_to(self, channel: Channel) -> None:
        target = self.channels.get(channel.send_to or "")
        if target is not None and target.socket_type not in FORWARDABLE:
            kinds = ", ".join(sorted(TYPE_NAMES[t] for t in FORWARDABLE))
            raise SetupError(
                f"channel {channel.name!r} sends its handlers' return values to {target.name!r}, "
                f"a {target.type_name} socket, which cannot send them on; send_to must name a "
                f"{kinds} channel"
            )

    # -- sending -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between the start of :meth:`serve` and the end of its shutdown."""
        return self._state != _IDLE

    @property
    def context(self) -> zmq.Context[Any]:
        """The ZeroMQ context the app's sockets live in (only while it runs, unless given)."""
        context = self._context or self._owned_context
        if context is None:
            raise NotRunning(f"app {self.name!r} has no ZeroMQ context until it starts")
        return context

    def send(
        self,
        name: str,
        body: Any,
        *,
        topic: str | bytes | None = None,
        identity: bytes | Iterable[bytes] | None = None,
    ) -> None:
        """Encode ``body`` with the channel's codec and send it. Never blocks the loop.

        ``topic`` (PUB/XPUB) goes out as frame 0; ``identity`` (ROUTER, required there) picks
        the peer. If the peers are not taking messages they are queued, up to ``SEND_QUEUE``
        per channel; beyond that :class:`~zmqapp.SendQueueFull` is raised. Safe to call from
        any thread: it hops onto the app's loop and returns once the message is queued.
        """
        pump = self._sending_pump(name, topic, identity)
        frames = frames_for(pump.channel.codec, body, topic, identity)
        self._call_in_loop(pump.send, frames)

    async def send_async(
        self,
        name: str,
        body: Any,
        *,
        topic: str | bytes | None = None,
        identity: bytes | Iterable[bytes] | None = None,
    ) -> None:
        """Like :meth:`send`, but wait while the channel's send queue is full, instead of
        raising: for producers that must not drop. Call it on the app's loop."""
        pump = self._sending_pump(name, topic, identity)
        frames = frames_for(pump.channel.codec, body, topic, identity)
        await pump.wait_for_room()
        pump.send(frames)

    def _sending_pump(self, name: str, topic: Any, identity: Any) -> Pump:
        channel = self.get_channel(name)
        if channel.socket_type not in SENDING:
            what = (
                "replies to requests by returning a value from its handler"
                if channel.socket_type == zmq.REP
                else "only receives"
            )
            raise SetupError(
                f"channel {name!r} is a {channel.type_name} socket, which {what}; "
                "app.send cannot send on it"
            )
        if topic is not None and channel.socket_type not in (zmq.PUB, zmq.XPUB):
            raise SetupError(
                f"topic= is for PUB and XPUB channels; {name!r} is a {channel.type_name} socket"
            )
        if channel.socket_type == zmq.ROUTER and identity is None:
            raise SetupError(
                f"channel {name!r} is a ROUTER socket: pass identity= (the peer's identity, "
                "as handlers get it in their 'identity' parameter) to say whom to send to"
            )
        if identity is not None and channel.socket_type != zmq.ROUTER:
            raise SetupError(
                f"identity= is for ROUTER channels; {name!r} is a {channel.type_name} socket"
            )
        pump = self._pumps.get(name)
        if pump is None:
            raise NotRunning(
                f"app {self.name!r} is not running, so channel {name!r} has no socket yet; send "
                "from a handler, a hook or a timer, or once app.run() has started"
            )
        return pump

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn`` on the app's loop thread and return its result, from any thread."""
        loop = self._loop
        if loop is None:
            raise NotRunning(f"app {self.name!r} is not running")
        if threading.get_ident() == self._loop_thread:
            return fn(*args)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:
            raise NotRunning(f"app {self.name!r} is not running") from None
        while True:
            try:
                return future.result(timeout=0.25)
            except concurrent.futures.TimeoutError:
                if self._loop is not loop or loop.is_closed():
                    future.cancel()
                    raise NotRunning(f"app {self.name!r} stopped before sending") from None

    # -- requests ------------------------------------------------------------------------------

    async def request(
        self,
        name: str,
        body: Any,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Any:
        """Send ``body`` on a REQ or DEALER channel and return the decoded reply.

        Raises :class:`~zmqapp.Timeout` after ``timeout`` seconds (default: the channel's
        ``timeout`` option, else ``REQUEST_TIMEOUT``), having resent up to ``retries`` times
        (the Lazy Pirate pattern); the channel stays usable either way. An error reply from a
        zmqapp server raises :class:`~zmqapp.RemoteError`. A REQ channel serves one request
        at a time (others wait their turn); a DEALER channel has any number in flight, each
        matched to its own reply.
        """
        channel = self.get_channel(name)
        if channel.socket_type not in (zmq.REQ, zmq.DEALER):
            raise SetupError(
                f"app.request needs a REQ or DEALER channel; {name!r} is a {channel.type_name} "
                "socket"
            )
        if timeout is None:
            timeout = (
                channel.timeout if channel.timeout is not None else self.config["REQUEST_TIMEOUT"]
            )
        if retries is None:
            retries = channel.retries
        pump = self._pumps.get(name)
        requests = self._requests.get(name)
        if pump is None or requests is None:
            raise NotRunning(f"app {self.name!r} is not running; requests need its sockets")
        frames = encode_body(channel.codec, body)
        reply = await requests.ask(frames, float(timeout), int(retries))
        error = parse_error_reply(reply)
        if error is not None:
            raise error
        return pump.parse(reply).body  # a reply that does not decode raises DecodeError

    def request_sync(
        self, name: str, body: Any, *, timeout: float | None = None, retries: int | None = None
    ) -> Any:
        """:meth:`request` for code outside the loop (scripts, threads, tests); blocks."""
        loop = self._loop
        if loop is None:
            raise NotRunning(f"app {self.name!r} is not running")
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("request_sync would block the app's own loop; await app.request()")
        future = asyncio.run_coroutine_threadsafe(
            self.request(name, body, timeout=timeout, retries=retries), loop
        )
        return future.result()

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self, *, install_signal_handlers: bool = True, load_config: bool = True) -> None:
        """Run the app until :meth:`stop` is called or SIGINT/SIGTERM arrives; then stop
        gracefully and return.

        Runs a fresh event loop (Tornado's IOLoop on asyncio). Inside an already running loop,
        ``await app.serve()`` instead. With ``load_config``, the app first reads the config
        sources ``zmqapp run`` reads, once (:meth:`Config.load_sources`): the file
        ``ZMQAPP_CONFIG`` names, then ``ZMQAPP_*`` variables, its ``APPS.<name>`` table winning.
        """
        if load_config and not self.config.sources_loaded:
            self.config.load_sources(self.name, channels=self.channels)
        asyncio.run(self._main(install_signal_handlers))

    async def _main(self, install_signal_handlers: bool) -> None:
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (_signal.SIGINT, _signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix
                    pass
            if any(security.needs_zap(c) for c in self.channels.values()):
                loop.add_signal_handler(_signal.SIGHUP, self._on_reload)
                installed.append(_signal.SIGHUP)
        try:
            await self.serve()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    def reload_keys(self) -> None:
        """Read every channel's ``authorized_keys`` directory again (also on SIGHUP when
        :meth:`run` installed signal handlers). Safe from any thread."""
        if self._authenticator is not None:
            self._call_in_loop(self._authenticator.reload)

    def _on_reload(self) -> None:
        self.logger.info("received SIGHUP: reading authorized keys again")
        try:
            self.reload_keys()
        except SetupError as exc:
            self.logger.error("could not reload keys: %s", exc)

    def _on_signal(self, signum: int) -> None:
        self.logger.info("received %s, stopping", _signal.Signals(signum).name)
        self.stop()

    def stop(self) -> None:
        """Ask the app to stop gracefully. Safe from handlers, timers, hooks and any thread;
        returns at once (``run()`` / ``serve()`` return when the stop is complete). Asked
        before the app runs, it makes the next run stop as soon as it has started."""
        loop = self._loop
        if loop is None:
            # Not running yet (say, just after asyncio.create_task(app.serve())): the stop is
            # kept, and the run stops as soon as it has started.
            self._stop_asked = True
            return
        if threading.get_ident() == self._loop_thread:
            self._request_stop()
        else:
            try:
                loop.call_soon_threadsafe(self._request_stop)
            except RuntimeError:  # the loop closed meanwhile: already stopped
                pass

    def _request_stop(self) -> None:
        self._stop_asked = True
        if self._stop_event is not None:
            self._stop_event.set()

    async def serve(self) -> None:
        """Run the app inside the already running event loop until it is stopped.

        For Jupyter, or beside another framework::

            task = asyncio.create_task(app.serve())
            ...
            app.stop()
            await task
        """
        if self._state != _IDLE:
            raise RuntimeError(f"app {self.name!r} is already running")
        self._state = _STARTING
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stop_event = asyncio.Event()
        try:
            await self._startup()
            self._state = _RUNNING
            if not self._stop_asked:
                app_started.send(self)
                await self._stop_event.wait()
        finally:
            await self._shutdown()

    def apply_config(self) -> None:
        """Apply the ``CHANNELS`` config to every channel and check that the app is complete.

        The app does this when it starts; tools (``zmqapp channels``, ``zmqapp graph``) call it
        to see the channels as they would run. Raises :class:`SetupError` naming the problem.
        """
        overrides = self.config.get("CHANNELS") or {}
        if not isinstance(overrides, dict):
            raise SetupError("config key CHANNELS must map channel names to option dicts")
        unknown = sorted(set(overrides) - set(self.channels))
        if unknown:
            known = ", ".join(repr(n) for n in self.channels) or "none"
            raise SetupError(
                f"config CHANNELS names channel {unknown[0]!r}, which app {self.name!r} does "
                f"not declare (channels: {known})"
            )
        for name, channel in self.channels.items():
            options = overrides.get(name) or {}
            if not isinstance(options, dict):
                raise SetupError(f"config CHANNELS.{name} must be a dict of channel options")
            try:
                channel.configure(options)
            except SetupError as exc:
                if options:
                    raise SetupError(f"{exc} (with config CHANNELS.{name} = {options!r})") from None
                raise
        for channel in self.channels.values():
            if channel.send_to is not None and channel.send_to not in self.channels:
                raise SetupError(
                    f"channel {channel.name!r} has send_to={channel.send_to!r}, but there is no "
                    f"channel of that name; declare it with app.add_channel({channel.send_to!r}, "
                    "endpoint=..., type=...)"
                )
            self._check_send_to(channel)
            if not channel.endpoints:
                raise SetupError(
                    f"channel {channel.name!r} has no endpoint; pass endpoint=... when declaring "
                    f"it or set CHANNELS.{channel.name}.endpoint in the config"
                )

    def _make_context(self) -> zmq.Context[Any]:
        if self._context is not None:
            return self._context
        self._owned_context = zmq.Context()
        return self._owned_context

    def _open_sockets(self, context: zmq.Context[Any]) -> None:
        for name, channel in self.channels.items():
            sock = open_socket(context, channel, self.config, monitor=self._watch)
            channel.socket = sock
            self._pumps[name] = Pump(self, channel, sock)

    def _watch(self, channel: Channel, sock: zmq.Socket[Any]) -> None:
        """Start monitoring ``sock`` if ``channel`` is to be monitored (before it binds)."""
        wanted = self.config.get("MONITOR") or socket_event.receivers
        if wanted or channel.monitor or channel.security:
            self._monitors.append(SocketMonitor(self, channel, sock))

    async def _startup(self) -> None:
        self.apply_config()
        app_starting.send(self)
        context = self._make_context()
        # The authenticator runs before any socket binds, so no client slips in unchecked.
        self._authenticator = security.authenticator_for(self, context, self.channels.values())
        self._open_sockets(context)
        for name, pump in self._pumps.items():
            channel = pump.channel
            if channel.send_to is not None:
                target = self._pumps[channel.send_to]
                pump.forward = target
                target.upstream.append(pump)
            if channel.socket_type in (zmq.REQ, zmq.DEALER):
                self._requests[name] = Requests(pump)
            pump.build_invokers()
            channel._on_receivers_changed = functools.partial(self._soon, pump.build_invokers)
        self._hooks_ran = True
        for fn in self.start_hooks:
            result = fn()
            if result is not None and asyncio.iscoroutine(result):
                await result
        for pump in self._pumps.values():
            pump.start()
        for seconds, fn in self.timers:
            periodic = PeriodicCallback(self._timer_callback(fn), seconds * 1000)
            periodic.start()
            self._periodic.append(periodic)

    def _soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop: now if this is the loop's thread, else at its next turn."""
        if threading.get_ident() == self._loop_thread:
            fn()
        elif self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(fn)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _timer_callback(self, fn: Callable[[], Any]) -> Callable[[], Awaitable[None]]:
        async def tick() -> None:
            if self._state != _RUNNING:
                return
            task = asyncio.current_task()
            if task is not None:
                self._ticks.add(task)  # a stop waits for a tick that is running
            try:
                result = fn()
                if result is not None and asyncio.iscoroutine(result):
                    await result
            except Exception as exc:
                self.logger.error("timer %s failed", describe(fn), exc_info=exc)
                if handler_failed.receivers:
                    handler_failed.send(self, message=None, handler=fn, exception=exc)
            finally:
                self._ticks.discard(task)

        return tick

    async def _shutdown(self) -> None:
        """Stop reading, finish in-flight work, flush, close, terminate: in that order."""
        try:
            await self._stop_gracefully()
        finally:
            self._state = _IDLE
            self._loop = None
            self._loop_thread = None
            self._stop_event = None
            self._stop_asked = False
            app_stopped.send(self)

    async def _stop_gracefully(self) -> None:
        self._state = _STOPPING
        loop = asyncio.get_running_loop()
        app_stopping.send(self)
        for periodic in self._periodic:
            periodic.stop()
        self._periodic.clear()
        deadline = loop.time() + float(self.config["SHUTDOWN_TIMEOUT"])
        pumps = list(self._pumps.values())
        receiving = [p for p in pumps if p.accepting]
        if self._ticks:
            await asyncio.wait(list(self._ticks), timeout=max(0.0, deadline - loop.time()))

        # 1. Close the door (unbind, so peers send elsewhere) and handle what already came in:
        # each channel is drained until a read finds nothing left.
        for pump in receiving:
            close_door(pump.socket, pump.channel)
            pump.drain_for_stop()
        while loop.time() < deadline and (self._tasks or not all(p.empty for p in receiving)):
            await asyncio.sleep(0.005)
        for pump in pumps:
            pump.pause()

        # 2. In-flight handlers get what is left of the timeout, then are cancelled.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - loop.time()))
        if self._tasks:
            timeout = self.config["SHUTDOWN_TIMEOUT"]
            for task, message in list(self._tasks.items()):
                names = ", ".join(h.name for h in message.channel.handlers) or "a receiver"
                self.logger.warning(
                    "stop: cancelled %s of channel %r, still running on %r after "
                    "SHUTDOWN_TIMEOUT (%s s)",
                    names,
                    message.channel.name,
                    message,
                    timeout,
                )
                task.cancel()
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for requests in self._requests.values():
            requests.cancel_all()

        # 3. Stop hooks, which may still send.
        if self._hooks_ran:
            self._hooks_ran = False
            for fn in self.stop_hooks:
                try:
                    result = fn()
                    if result is not None and asyncio.iscoroutine(result):
                        await result
                except Exception as exc:
                    self.logger.error("stop hook %s failed", describe(fn), exc_info=exc)

        # 4. Flush what is still queued in zmqapp, then close with a finite linger.
        while loop.time() < deadline and any(p.outbox for p in pumps):
            await asyncio.sleep(0.005)
        for pump in pumps:
            if pump.outbox:
                pump.stats.dropped += len(pump.outbox)
                self.logger.warning(
                    "channel %r: %d queued messages were not sent before the shutdown timeout",
                    pump.channel.name,
                    len(pump.outbox),
                )
        linger = int(self.config["LINGER"])
        for monitor in self._monitors:
            monitor.close()
        self._monitors.clear()
        for pump in pumps:
            pump.close(linger)
            pump.channel.socket = None
            pump.channel._on_receivers_changed = None
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        self._pumps.clear()
        self._requests.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            busy = self._executor.busy()
            if busy:
                self.logger.warning(
                    "stop: abandoning %d handler thread(s) still blocked (%s); threads cannot "
                    "be interrupted, and they will not keep the process alive",
                    len(busy),
                    ", ".join(busy),
                )
            self._executor = None
        if self._owned_context is not None:
            # term() waits for lingering sockets; do it off the loop.
            await loop.run_in_executor(None, self._owned_context.term)
            self._owned_context = None

    # -- testing -------------------------------------------------------------------------------

    def test_client(self, **kwargs: Any) -> TestClient:
        """A :class:`~zmqapp.testing.TestClient` for this app: use it in a ``with`` block.

        ``kwargs`` go to the client (``raise_errors``, ``timeout``); see
        :attr:`test_client_class` to use a subclass.
        """
        return self.test_client_class(self, **kwargs)

    # -- helpers for the loop ------------------------------------------------------------------

    def _run_in_thread(self, call: Callable[[], Any]) -> Awaitable[Any]:
        if self._executor is None:
            threads = self.config.get("THREADS")
            self._executor = DaemonThreadPool(threads, name=f"zmqapp-{self.name}")
        assert self._loop is not None
        return self._loop.run_in_executor(self._executor, call)


def _root_path(import_name: str) -> str:
    module = sys.modules.get(import_name)
    filename = getattr(module, "__file__", None)
    if filename:
        return os.path.dirname(os.path.abspath(str(filename)))
    return os.getcwd()
