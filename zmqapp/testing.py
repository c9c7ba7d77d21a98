"""Testing zmqapp apps.

:class:`TestClient` (``app.test_client()``) runs an app in-process with no network endpoint
and lets a test send to its channels and read what it sent. :class:`AppThread` runs an app for
real, with real sockets, in a background thread, for integration tests::

    with AppThread(app) as running:
        peer.connect(app.channels["tasks"].bound[0])
        ...

The pytest plugin (:mod:`zmqapp.pytest_plugin`) wraps both in fixtures.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import zmq

from .channel import Channel
from .errors import Timeout
from .message import Frames, body_decoder, frames_for, parse_error_reply
from .signals import app_started, decode_failed, handler_failed

if TYPE_CHECKING:
    from .app import App


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.002) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that.

    Raises :class:`TimeoutError` after ``timeout`` seconds: a deadline, never a bare sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout} s: {condition!r}")
        time.sleep(interval)


class AppThread:
    """Run ``app`` in a background thread; a context manager that starts and stops it.

    Entering waits until the app has started (its sockets are bound, so
    ``app.channels[name].bound`` holds the real addresses); leaving stops it and waits for the
    thread, re-raising anything the app raised.
    """

    def __init__(
        self, app: App, timeout: float = 10.0, *, context: zmq.Context[Any] | None = None
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.context = context
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"zmqapp-{app.name}", daemon=True)

    def _run(self) -> None:
        try:
            self.app.run(install_signal_handlers=False, context=self.context, load_config=False)
        except BaseException as exc:
            self.error = exc
        finally:
            self._started.set()
            self._stopped.set()

    def start(self) -> AppThread:
        def started(sender: Any) -> None:
            self._started.set()

        # connected_to disconnects it for good: disconnect(fn, sender=...) would only unlink
        # the sender, and the signal would keep the closure (and this object) forever.
        with app_started.connected_to(started, sender=self.app):
            self._thread.start()
            if not self._started.wait(self.timeout):
                raise TimeoutError(f"app {self.app.name!r} did not start within {self.timeout} s")
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        self.app.stop()
        self._thread.join(self.timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"app {self.app.name!r} did not stop within {self.timeout} s")
        if self.error is not None:
            raise self.error

    def __enter__(self) -> AppThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        """True once the app's run() has returned."""
        return self._stopped.is_set()


#: Options the test client drops: over inproc there is no network to secure.
_NETWORK_ONLY = ("curve_secret_key", "curve_server_key", "authorized_keys", "allow", "deny")


class TestClient:
    """Run an app in-process, with no network endpoint, and talk to its channels.

    ::

        with app.test_client() as client:
            client.send("tasks", b"job")            # delivered as if from the network,
            assert client.sent("results") == [b"JOB"]   # returns once handlers have run
            assert client.request("hello", b"Hi") == b"World"

    Every channel's endpoints are replaced by an inproc stand-in (the rest of the app's
    config, from files or the environment, is kept), a peer socket is connected to each, then
    the app starts for real in a background thread: ``on_start`` hooks and timers run, and
    messages go through the same decode, dispatch and encode code as in production.

    With ``raise_errors`` (the default) an exception raised by a handler while a ``send`` or
    ``request`` is handled is raised again in the test, as is a :class:`~zmqapp.DecodeError`
    for a message that did not decode. Either way, all of them are in :attr:`errors`.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, app: App, *, raise_errors: bool = True, timeout: float = 5.0) -> None:
        self.app = app
        self.raise_errors = raise_errors
        self.timeout = timeout
        #: Every exception raised by a handler or a decode, in order.
        self.errors: list[BaseException] = []
        self.context: zmq.Context[Any] | None = None
        self.peers: dict[str, zmq.Socket[Any]] = {}
        self._sent: dict[str, list[Frames]] = {}
        self._requests: dict[str, list[Frames]] = {}  # REQ channels: envelopes to answer
        self._subscribed: set[str] = set()
        self._thread: AppThread | None = None
        self._saved: Any = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> TestClient:
        app = self.app
        if app.running:
            raise RuntimeError(f"app {app.name!r} is already running")
        self.context = zmq.Context()
        self._saved = app.config.get("CHANNELS")
        overrides = copy.deepcopy(app.config.get("CHANNELS") or {})
        prefix = f"inproc://zmqapp-test-{uuid.uuid4().hex}"
        for name, channel in app.channels.items():
            options = overrides.setdefault(name, {})
            options["endpoint"] = f"@{prefix}-{name}"
            options.pop("bind", None)
            for key in _NETWORK_ONLY:
                options[key] = None
            # Peers connect before the app binds (inproc allows it), so that nothing the app
            # sends while it starts, even on a PUB, is missed.
            peer = self.context.socket(channel.kind.test_peer)
            peer.setsockopt(zmq.LINGER, 0)
            # A send the app is not taking fails after the client's timeout, never hangs.
            peer.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
            if channel.socket_type == zmq.PUB:
                peer.setsockopt(zmq.SUBSCRIBE, b"")
            peer.connect(f"{prefix}-{name}")
            self.peers[name] = peer
            self._sent[name] = []
        app.config["CHANNELS"] = overrides
        handler_failed.connect(self._record_error, sender=app)
        decode_failed.connect(self._record_error, sender=app)
        try:
            self._thread = AppThread(app, timeout=self.timeout, context=self.context).start()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self._thread is not None:
                self._thread.stop()
            self._collect()  # what on_stop hooks sent
        finally:
            self._restore()

    def _restore(self) -> None:
        self._closed = True
        handler_failed.disconnect(self._record_error)
        decode_failed.disconnect(self._record_error)
        channels, self._saved = self._saved, None
        self.app.config["CHANNELS"] = channels if channels is not None else {}
        for peer in self.peers.values():
            peer.close(linger=0)
        if self.context is not None:
            # Every socket is closed by now (the app's run closed its own): nothing lingers.
            self.context.destroy(linger=0)
            self.context = None

    def _record_error(self, sender: Any, exception: BaseException, **kwargs: Any) -> None:
        self.errors.append(exception)

    # -- talking to channels -------------------------------------------------------------------

    def send(
        self,
        channel: str,
        body: Any = None,
        *,
        topic: str | bytes | None = None,
        frames: list[bytes] | None = None,
        wait: bool = True,
    ) -> None:
        """Deliver a message to ``channel`` as if it arrived from the network.

        ``body`` is encoded with the channel's codec (``topic`` goes first on SUB/XSUB);
        ``frames`` sends raw frames instead, for testing bad input. Returns once the channel
        has read it and its handlers have run (``wait=False``: at once; at once too for a
        message a SUB channel's subscriptions filter out, as it never arrives). Replies the app
        sends (REP/ROUTER) are kept for :meth:`sent`. On a REQ channel, this answers the
        oldest request the app has sent.
        """
        chan, peer = self._channel(channel)
        if not chan.receives:
            raise TypeError(
                f"channel {channel!r} is a {chan.type_name} socket, which only sends, so the "
                f"app never reads what is sent to it; read what it sent with "
                f"client.sent({channel!r})"
            )
        payload = self._frames(chan, body, topic, frames)
        if chan.socket_type in (zmq.REP, zmq.ROUTER):
            payload = [b"", *payload]
        elif chan.socket_type == zmq.SUB:
            self._wait_subscribed(channel, peer)
        elif chan.socket_type == zmq.REQ:
            self._collect()
            pending = self._requests.get(channel)
            if not pending:
                raise AssertionError(f"channel {channel!r} has sent no request to answer")
            payload = [*pending.pop(0), *payload]
        before = (chan.stats.received, len(self.errors))
        self._deliver(chan, peer, payload)
        if chan.socket_type in (zmq.SUB, zmq.XSUB) and not any(
            payload[0].startswith(topic) for topic in chan.subscribe
        ):
            return  # ZeroMQ filters it out by its first frame: the app never sees it
        if wait:
            self._wait_done(chan, before[0])
            self._raise_new(before[1])

    def request(
        self,
        channel: str,
        body: Any = None,
        *,
        frames: list[bytes] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request to a REP or ROUTER channel and return its decoded reply.

        A handler that failed is raised again (with ``raise_errors``), else its error reply
        becomes a :class:`~zmqapp.RemoteError`. No reply in ``timeout`` seconds (a ROUTER
        handler that returned None) raises :class:`~zmqapp.Timeout`.
        """
        chan, peer = self._channel(channel)
        if chan.socket_type not in (zmq.REP, zmq.ROUTER):
            raise TypeError(
                f"client.request needs a REP or ROUTER channel; {channel!r} is a "
                f"{chan.type_name} socket: use client.send"
            )
        self._collect()
        errors_before = len(self.errors)
        self._deliver(chan, peer, [b"", *self._frames(chan, body, None, frames)])
        if not peer.poll(int((timeout or self.timeout) * 1000)):
            self._raise_new(errors_before)
            raise Timeout(f"channel {channel!r} sent no reply within {timeout or self.timeout} s")
        reply = peer.recv_multipart()[1:]  # drop the delimiter
        error = parse_error_reply(reply)
        if error is not None:
            wait_for(lambda: len(self.errors) > errors_before, timeout=self.timeout)
            self._raise_new(errors_before)
            raise error
        return self._decode(chan, reply)[0]

    def sent(self, channel: str) -> list[Any]:
        """The bodies the app sent on ``channel`` so far, decoded, in order.

        That is what ``app.send`` and ``send_to`` sent, and on REP/ROUTER the replies to
        :meth:`send`; on a REQ channel, the requests. Use :meth:`sent_frames` for the raw
        frames (topics, envelopes), :meth:`clear` to forget them.
        """
        chan, _ = self._channel(channel, live=False)
        self._collect()
        return [self._decode(chan, frames)[0] for frames in self._sent[channel]]

    def sent_frames(self, channel: str) -> list[Frames]:
        """The raw frames of each message the app sent on ``channel``."""
        self._channel(channel, live=False)
        self._collect()
        return [list(frames) for frames in self._sent[channel]]

    def clear(self, channel: str | None = None) -> None:
        """Forget what was sent on ``channel`` (or on every channel) so far."""
        self._collect()
        for name in [channel] if channel else list(self._sent):
            self._sent[name].clear()

    # -- helpers -------------------------------------------------------------------------------

    def _channel(self, name: str, live: bool = True) -> tuple[Channel, zmq.Socket[Any]]:
        channel = self.app.get_channel(name)
        if self._closed and live:
            raise RuntimeError(
                "this test client's with block has ended and the app has stopped; send and "
                "request inside the block (what was sent stays readable with client.sent())"
            )
        if name not in self.peers:
            raise RuntimeError("use the test client in a with block: with app.test_client() as c")
        return channel, self.peers[name]

    def _deliver(self, channel: Channel, peer: zmq.Socket[Any], frames: Frames) -> None:
        try:
            peer.send_multipart(frames)
        except zmq.Again:
            raise Timeout(
                f"channel {channel.name!r} did not take the message within {self.timeout} s: "
                "it is not reading (stopped, or held back by its concurrency limit)"
            ) from None

    @staticmethod
    def _frames(channel: Channel, body: Any, topic: Any, frames: list[bytes] | None) -> Frames:
        if frames is not None:
            return [bytes(f) for f in frames]
        return frames_for(channel.codec, body, topic)

    def _decode(self, channel: Channel, frames: Frames) -> tuple[Any, bytes | None]:
        """A message the app sent, as (decoded body, topic)."""
        topic = None
        if channel.socket_type in (zmq.PUB, zmq.XPUB) and len(frames) >= 2:
            topic, frames = frames[0], frames[1:]
        if channel.socket_type in (zmq.REP, zmq.ROUTER) and len(frames) >= 2 and not frames[0]:
            frames = frames[1:]  # the delimiter our DEALER peer sent comes back first
        return body_decoder(channel.codec)(frames), topic

    def _collect(self) -> None:
        """Read everything the app has sent so far off the peer sockets."""
        if self.context is None:  # closed: what was collected is all there is
            return
        for name, peer in self.peers.items():
            kind = self.app.channels[name].socket_type
            if peer.type == zmq.PUSH:  # the channel only receives
                continue
            while True:
                try:
                    frames = peer.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if kind in (zmq.SUB, zmq.XSUB):  # subscriptions reaching our XPUB
                    self._subscribed.add(name)
                    if kind == zmq.SUB:
                        continue
                if kind == zmq.REQ:  # [peer id, request id, b"", body...]: keep the envelope
                    split = frames.index(b"") + 1 if b"" in frames else 1
                    self._requests.setdefault(name, []).append(frames[:split])
                    frames = frames[split:]
                self._sent[name].append(frames)

    def _wait_subscribed(self, name: str, peer: zmq.Socket[Any]) -> None:
        if name in self._subscribed or not self.app.channels[name].subscribe:
            return

        def subscribed() -> bool:
            self._collect()
            return name in self._subscribed

        wait_for(subscribed, timeout=self.timeout)

    def _wait_done(self, channel: Channel, received_before: int) -> None:
        """Until the channel has read past ``received_before`` and has nothing in flight."""
        runtime = self.app.runtime
        pump = runtime.pumps.get(channel.name) if runtime is not None else None

        def done() -> bool:
            return channel.stats.received > received_before and (
                pump is None or pump.in_flight == 0
            )

        try:
            wait_for(done, timeout=self.timeout, interval=0.0002)
        except TimeoutError:
            raise Timeout(
                f"channel {channel.name!r} did not finish handling the message within "
                f"{self.timeout} s (a handler still running? use send(..., wait=False))"
            ) from None

    def _raise_new(self, errors_before: int) -> None:
        if self.raise_errors and len(self.errors) > errors_before:
            raise self.errors[errors_before]
