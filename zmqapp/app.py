"""The :class:`App`: what a service declares (channels, handlers, hooks, timers, config), and
the facade through which it is run, stopped, and sends and requests while it runs.

Everything that exists only while the app runs belongs to a
:class:`~zmqapp.runtime.Runtime`, made afresh for each run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import zmq

from .channel import Channel, ChannelSignal
from .config import DEFAULTS, Config, default_app_name
from .errors import NotRunning, SetupError
from .message import frames_for
from .pump import Pump
from .rpc import Requests
from .runtime import Runtime
from .socket_types import FORWARDABLE, TYPE_NAMES

if TYPE_CHECKING:
    from .testing import TestClient

F = TypeVar("F", bound=Callable[..., Any])


def setupmethod(f: F) -> F:
    """Make a registration method fail clearly once the app has started."""

    @functools.wraps(f)
    def wrapper(self: App, *args: Any, **kwargs: Any) -> Any:
        if self.running:
            raise SetupError(
                f"The setup method {f.__name__!r} can no longer be called on app {self.name!r}: "
                "it is already running. Declare channels, handlers, hooks and timers before "
                "the app starts (at import time, or in a create_app() factory)."
            )
        return f(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _check_interval(seconds: Any) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise SetupError(f"a timer needs a positive number of seconds, not {seconds!r}")


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
    #: The class :meth:`test_client` makes (None: :class:`zmqapp.testing.TestClient`).
    test_client_class: type[TestClient] | None = None
    #: The class that runs the app, once per run.
    runtime_class: type[Runtime] = Runtime

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
        #: A context given to the constructor, used by every run and never terminated.
        self.given_context = context
        #: The current run, from :meth:`serve` (or :meth:`run`) until it has stopped.
        self.runtime: Runtime | None = None

    def __repr__(self) -> str:
        state = self.runtime.state if self.runtime is not None else "idle"
        return f"<App {self.name!r} {state}>"

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
        # Check everything before registering anything: a failed declaration leaves no trace,
        # so a corrected one can follow.
        channel = Channel(name, {"endpoint": endpoint, "type": type, **options})
        if handler is not None:
            channel.add_handler(handler)
        self._check_send_to(channel, self.channels)
        for other in self.channels.values():
            if other.send_to == name:
                self._check_send_to(other, {name: channel})
        self.channels[name] = channel
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

        Hooks run after every socket is bound or connected and before handlers get any message,
        so they may send, and ``await app.request(...)`` (replies are read meanwhile).
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
        _check_interval(seconds)

        def decorator(fn: F) -> F:
            self.add_timer(seconds, fn)
            return fn

        return decorator

    @setupmethod
    def add_timer(self, seconds: float, fn: Callable[[], Any]) -> None:
        """Run ``fn`` every ``seconds`` while the app runs."""
        _check_interval(seconds)
        if not callable(fn):
            raise SetupError(f"a timer needs a function to call, not {type(fn).__name__}")
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

    def _check_send_to(self, channel: Channel, channels: dict[str, Channel]) -> None:
        target = channels.get(channel.send_to or "")
        if target is not None and not target.kind.forwardable:
            kinds = ", ".join(sorted(TYPE_NAMES[t] for t in FORWARDABLE))
            raise SetupError(
                f"channel {channel.name!r} sends its handlers' return values to {target.name!r}, "
                f"a {target.type_name} socket, which cannot send them on; send_to must name a "
                f"{kinds} channel"
            )

    # -- running -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True from the call to :meth:`serve` (or :meth:`run`) until its stop has finished."""
        return self.runtime is not None

    @property
    def context(self) -> zmq.Context[Any]:
        """The ZeroMQ context the app's sockets live in (only while it runs, unless given)."""
        runtime = self.runtime
        context = runtime.context if runtime is not None else None
        context = context or self.given_context
        if context is None:
            raise NotRunning(f"app {self.name!r} has no ZeroMQ context until it starts")
        return context

    def _current(self) -> Runtime:
        runtime = self.runtime
        if runtime is None:
            raise NotRunning(f"app {self.name!r} is not running")
        return runtime

    def run(
        self,
        *,
        install_signal_handlers: bool = True,
        context: zmq.Context[Any] | None = None,
        load_config: bool = True,
    ) -> None:
        """Run the app until :meth:`stop` is called or SIGINT/SIGTERM arrives; then stop
        gracefully and return.

        Runs a fresh event loop (Tornado's IOLoop on asyncio). Inside an already running loop,
        ``await app.serve()`` instead. ``context`` runs this run in a context of the caller's
        (which the app does not terminate). Unless ``load_config`` is False, it first applies
        the config sources ``zmqapp run`` applies (``ZMQAPP_CONFIG``, ``ZMQAPP_*`` variables;
        see the README's Config section), once per app.
        """
        if load_config and not self.config.sources_loaded:
            self.config.load_sources(self.name, channels=self.channels)
        coroutine = self.serve(context=context, install_signal_handlers=install_signal_handlers)
        asyncio.run(coroutine)

    def serve(
        self,
        *,
        context: zmq.Context[Any] | None = None,
        install_signal_handlers: bool = False,
    ) -> Coroutine[Any, Any, None]:
        """Run the app inside the already running event loop until it is stopped.

        For Jupyter, or beside another framework::

            task = asyncio.create_task(app.serve())
            ...
            app.stop()
            await task

        The run begins when ``serve()`` is called, so a :meth:`stop` right after it (before
        the task has started) stops this run as soon as it has started.
        """
        if self.runtime is not None:
            raise RuntimeError(f"app {self.name!r} is already running")
        runtime = self.runtime_class(
            self,
            context=context or self.given_context,
            install_signal_handlers=install_signal_handlers,
        )
        self.runtime = runtime
        return self._serve(runtime)

    async def _serve(self, runtime: Runtime) -> None:
        try:
            await runtime.serve()
        finally:
            if self.runtime is runtime:
                self.runtime = None

    def stop(self) -> None:
        """Ask the app to stop gracefully. Safe from handlers, timers, hooks and any thread;
        returns at once (``run()`` / ``serve()`` return when the stop is complete). Asked while
        the app is not running, it does nothing: a stop belongs to one run."""
        runtime = self.runtime
        if runtime is not None:
            runtime.stop()

    def reload_keys(self) -> None:
        """Read every channel's ``authorized_keys`` directory again (also on SIGHUP when
        :meth:`run` installed signal handlers). Safe from any thread."""
        runtime = self.runtime
        if runtime is not None:
            runtime.reload_keys()

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
            self._check_send_to(channel, self.channels)
            if not channel.endpoints:
                raise SetupError(
                    f"channel {channel.name!r} has no endpoint; pass endpoint=... when declaring "
                    f"it or set CHANNELS.{channel.name}.endpoint in the config"
                )

    # -- sending -------------------------------------------------------------------------------

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
        channel = self._sending_channel(name, topic, identity)
        frames = frames_for(channel.codec, body, topic, identity)
        runtime = self._running_for(name)
        runtime.call(
            self._send_on_loop, runtime, name, frames, _body_start(frames, topic, identity)
        )

    @staticmethod
    def _send_on_loop(runtime: Runtime, name: str, frames: list[bytes], body_start: int) -> None:
        runtime.pump(name).send_message(frames, body_start)

    async def send_async(
        self,
        name: str,
        body: Any,
        *,
        topic: str | bytes | None = None,
        identity: bytes | Iterable[bytes] | None = None,
    ) -> None:
        """Like :meth:`send`, but wait while the channel's send queue is full, instead of
        raising: for producers that must not drop. Await it from any event loop."""
        channel = self._sending_channel(name, topic, identity)
        frames = frames_for(channel.codec, body, topic, identity)
        runtime = self._running_for(name)
        start = _body_start(frames, topic, identity)
        await runtime.call_async(self._send_when_room, runtime.pump(name), frames, start)

    @staticmethod
    async def _send_when_room(pump: Pump, frames: list[bytes], body_start: int) -> None:
        await pump.wait_for_room()
        pump.send_message(frames, body_start)

    def _running_for(self, name: str) -> Runtime:
        runtime = self.runtime
        if runtime is None or runtime.state == "stopped":
            raise NotRunning(
                f"app {self.name!r} is not running, so channel {name!r} has no socket yet; send "
                "from a handler, a hook or a timer, or once app.run() has started"
            )
        return runtime

    def _sending_channel(self, name: str, topic: Any, identity: Any) -> Channel:
        channel = self.get_channel(name)
        kind = channel.kind
        if not kind.sends:
            what = (
                "replies to requests by returning a value from its handler"
                if kind.replies
                else "only receives"
            )
            raise SetupError(
                f"channel {name!r} is a {channel.type_name} socket, which {what}; "
                "app.send cannot send on it"
            )
        if topic is not None and not kind.publishes:
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
        return channel

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
        matched to its own reply. Await it from any event loop: it runs on the app's.
        """
        channel, timeout, retries = self._request_args(name, timeout, retries)
        frames = frames_for(channel.codec, body)
        runtime = self._running_for(name)
        if runtime.on_loop_thread():  # the common case, without a hop
            return await self._requests_of(runtime, name).request(frames, timeout, retries)
        return await runtime.call_async(
            self._request_on_loop, runtime, name, frames, timeout, retries
        )

    def request_sync(
        self, name: str, body: Any, *, timeout: float | None = None, retries: int | None = None
    ) -> Any:
        """:meth:`request` for code outside the loop (scripts, threads, tests); blocks."""
        channel, timeout, retries = self._request_args(name, timeout, retries)
        frames = frames_for(channel.codec, body)
        runtime = self._running_for(name)
        return runtime.call_blocking(self._request_on_loop, runtime, name, frames, timeout, retries)

    def _request_args(
        self, name: str, timeout: float | None, retries: int | None
    ) -> tuple[Channel, float, int]:
        channel = self.get_channel(name)
        if not channel.kind.requests:
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
        return channel, float(timeout), int(retries)

    @staticmethod
    def _requests_of(runtime: Runtime, name: str) -> Requests:
        requests = runtime.requests.get(name)
        if requests is None:
            raise NotRunning(f"app {runtime.app.name!r} is not running; requests need its sockets")
        return requests

    @staticmethod
    async def _request_on_loop(
        runtime: Runtime, name: str, frames: list[bytes], timeout: float, retries: int
    ) -> Any:
        return await App._requests_of(runtime, name).request(frames, timeout, retries)

    # -- testing -------------------------------------------------------------------------------

    def test_client(self, **kwargs: Any) -> TestClient:
        """A :class:`~zmqapp.testing.TestClient` for this app: use it in a ``with`` block.

        ``kwargs`` go to the client (``raise_errors``, ``timeout``); see
        :attr:`test_client_class` to use a subclass.
        """
        cls = self.test_client_class
        if cls is None:
            from .testing import TestClient

            cls = TestClient
        return cls(self, **kwargs)


def _body_start(frames: list[bytes], topic: Any, identity: Any) -> int:
    """Where the body begins in frames made by ``frames_for``: after the identity frames
    and the topic."""
    start = 1 if topic is not None else 0
    if identity is not None:
        start += 1 if isinstance(identity, (bytes, bytearray)) else len(list(identity))
    return min(start, len(frames) - 1)


def _root_path(import_name: str) -> str:
    module = sys.modules.get(import_name)
    filename = getattr(module, "__file__", None)
    if filename:
        return os.path.dirname(os.path.abspath(str(filename)))
    return os.getcwd()
