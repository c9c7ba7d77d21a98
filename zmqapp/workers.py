"""``zmqapp run --workers N``: N processes of one app, behind proxies bound once in the parent.

Each endpoint the app *binds* is bound by the parent instead, in a libzmq proxy device
(``zmq.proxy_steerable`` in a thread), and the workers connect to the proxy's other side over
ipc. Endpoints the app *connects* to are connected by every worker. So a worker pool looks to
its peers exactly like one process of the app, on the same addresses. Which proxy each
socket type gets is in :data:`zmqapp.socket_types.KINDS` (``proxy``).

The parent talks to each worker over a socket pair of its own (newline-delimited JSON): it
asks for a stop, and checks every second that the worker's event loop still answers. The
worker stops by itself when that socket closes, so workers never outlive their parent,
however it died. A worker that dies is logged and replaced (with a growing delay if it keeps
dying at once); one that stops answering for ``WORKER_TIMEOUT`` seconds is killed, logged
with its pid and its threads' stacks, and replaced.

A stop (SIGTERM or SIGINT to the parent) keeps what was received, within
``SHUTDOWN_TIMEOUT``: the proxies of one-way inbound channels (PULL, SUB, XSUB) keep their
connections and hand everything queued to the still running workers until their public
socket has been empty for a moment; then the workers stop as ``app.run()`` does (handling
what is queued, refusing queued requests, finishing in-flight work); the proxies close last,
so replies still reach their clients. A worker that has not exited by the deadline (plus
``LINGER`` and a second) is killed, and the pool exits 1.
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from . import __version__, logs
from .app import App
from .channel import Channel, Endpoint
from .errors import SetupError
from .monitor import EVENTS, SocketMonitor
from .signals import app_started, app_stopping, peer_connected
from .socket_types import INBOUND_ONLY, TYPE_NAMES
from .sockets import IoBarrier, set_option, socket_options, stays_empty
from .tap import Tap
from .web import HttpServer, LoopLag

log = logging.getLogger("zmqapp.workers")

#: How long a worker must live to count as started, the longest restart delay, and how many
#: quick deaths in a row make the supervisor give up (the app cannot start: a bug, a config).
QUICK_DEATH = 1.0
MAX_RESTART_DELAY = 5.0
GIVE_UP_AFTER = 5
#: Seconds between the parent's liveness checks of each worker.
PING_INTERVAL = 1.0
#: Seconds between looks at whether a worker whose link closed has exited.
REAP_INTERVAL = 0.02
#: Seconds the stop gives a worker beyond the deadline (and LINGER) before killing it.
GRACE = 1.0
#: Seconds a hand-over past its deadline spends at most counting what it drops.
DROP_COUNT_TIME = 0.2


@dataclass
class Proxy:
    """One bound endpoint of one channel, proxied from the parent to the workers."""

    channel: Channel
    address: str  # as declared, e.g. tcp://*:5557
    backend: str  # ipc:// address the workers connect to
    options: dict[int, Any] = field(default_factory=dict)  # for the public socket
    bound: str = ""  # the address actually bound (wildcard port resolved)
    thread: threading.Thread | None = None
    control: zmq.Socket[Any] | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    drained: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    deadline: float = 0.0  # time.monotonic() by which the hand-over ends
    dropped: int = 0
    #: The public socket's monitor, made by the proxy's thread, read on the parent's loop.
    monitor: zmq.Socket[Any] | None = None

    @property
    def inbound(self) -> bool:
        return self.channel.socket_type in INBOUND_ONLY

    def start(self, context: zmq.Context[Any]) -> None:
        control_address = f"inproc://zmqapp-proxy-{id(self)}"
        self.control = context.socket(zmq.PAIR)
        self.control.bind(control_address)
        self.thread = threading.Thread(
            target=self._run,
            args=(context, control_address),
            name=f"zmqapp-proxy-{self.channel.name}",
            daemon=True,
        )
        self.thread.start()
        self.ready.wait(10)
        if self.error is not None:
            raise self.error

    def _run(self, context: zmq.Context[Any], control_address: str) -> None:
        assert self.channel.kind.proxy is not None
        public_type, private_type = self.channel.kind.proxy
        public = context.socket(public_type)
        private = context.socket(private_type)
        control = context.socket(zmq.PAIR)
        sockets = (public, private, control)
        try:
            for sock in (public, private):
                sock.setsockopt(zmq.LINGER, 1000)
            if public_type == zmq.ROUTER:
                # Requests to a gone client are dropped either way; without mandatory routing
                # libzmq drops them silently instead of stalling the device.
                public.setsockopt(zmq.ROUTER_MANDATORY, 0)
            for option, value in self.options.items():  # the channel's, and MAXMSGSIZE
                set_option(public, self.channel, option, value)
            # Made here, by the socket's owner; only this pair socket crosses to the loop.
            self.monitor = public.get_monitor_socket(EVENTS)
            control.connect(control_address)
            try:
                public.bind(self.address)
            except zmq.ZMQError as exc:
                raise SetupError(
                    f"channel {self.channel.name!r} could not bind {self.address}: {exc}"
                ) from None
            self.bound = public.getsockopt(zmq.LAST_ENDPOINT).decode()
            private.bind(self.backend)
        except BaseException as exc:
            self.error = exc
            for sock in sockets:
                sock.close(linger=0)
            if self.monitor is not None:
                self.monitor.close(linger=0)
                self.monitor = None
            self.ready.set()
            return
        self.ready.set()
        try:
            # Serving, until the stop begins.
            zmq.proxy_steerable(public, private, None, control)
            if self.inbound:
                # One-way inbound: keep the connections (an unbind would throw away what the
                # kernel and libzmq hold), hand what came in to the workers, then take no more.
                self._hand_over(public, private)
                self.drained.set()
                control.recv()  # until told to close
            else:
                # Two-way and outbound: keep forwarding (replies, the workers' last sends).
                self.drained.set()
                zmq.proxy_steerable(public, private, None, control)
        except zmq.ContextTerminated:  # pragma: no cover - only if closing went wrong
            pass
        finally:
            self.drained.set()
            for sock in sockets:
                sock.close()

    def _hand_over(self, public: zmq.Socket[Any], private: zmq.Socket[Any]) -> None:
        """Pass what the public socket received to the workers, until it has been empty for
        a moment or the deadline passes; say what could not be handed over."""
        # Quiet for a moment is not enough on a busy machine (see the stop in runtime.py):
        # the barrier says when libzmq's I/O thread has read what the kernel held.
        barrier = IoBarrier.for_context(public.context)
        try:
            while True:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    break
                if not public.poll(0):
                    if stays_empty(public, left, barrier):
                        return  # empty, and it stayed empty: done
                    continue  # something came in after all (or time is up: see above)
                frames = public.recv_multipart(zmq.NOBLOCK)
                private.setsockopt(zmq.SNDTIMEO, max(1, int(left * 1000)))
                try:
                    private.send_multipart(frames)
                except zmq.Again:
                    self.dropped += 1
                    break
        finally:
            if barrier is not None:
                barrier.close()
        # Count what was queued at the deadline; bounded, as a peer may go on sending faster
        # than this loop drops (what comes later is "not taken", as the warning says).
        until = time.monotonic() + DROP_COUNT_TIME
        while public.poll(0) and time.monotonic() < until:
            public.recv_multipart()
            self.dropped += 1
        if self.dropped:
            log.error(
                "channel %r: the stop's deadline passed before the workers took everything; "
                "%d received message(s) were dropped",
                self.channel.name,
                self.dropped,
            )
        else:
            log.warning(
                "channel %r: still receiving at the stop's deadline; what its peers send from "
                "now on is not taken",
                self.channel.name,
            )

    def command(self, word: bytes) -> None:
        assert self.control is not None
        self.control.send(word)

    def stop_taking(self, deadline: float) -> None:
        """Begin the stop: hand over (inbound proxies) until ``deadline``."""
        self.deadline = deadline
        if self.thread is not None and self.thread.is_alive() and not self.drained.is_set():
            self.command(b"TERMINATE")

    def close(self) -> None:
        """End whichever phase the proxy is in, and close it."""
        if self.thread is not None and self.thread.is_alive():
            self.stop_taking(time.monotonic())
            self.drained.wait(10)
            self.command(b"TERMINATE")
            self.thread.join(10)
        if self.control is not None:
            self.control.close(linger=0)


def plan(app: App, ipc_dir: str) -> tuple[list[Proxy], dict[str, list[str]]]:
    """The proxies the parent runs, and each channel's endpoints as the workers see them."""
    app.apply_config()
    proxies: list[Proxy] = []
    endpoints: dict[str, list[str]] = {}
    for channel in app.channels.values():
        bound = [e for e in channel.endpoints if e.bind]
        if not bound:
            continue
        if channel.security:
            raise SetupError(
                f"channel {channel.name!r} binds with security options "
                f"({', '.join(sorted(channel.security))}), which --workers cannot keep: the "
                "parent's proxy would have to check clients, and the workers could not tell "
                "who sent what. Run it with --workers 1, or let the secured channel connect"
            )
        if channel.kind.proxy is None:
            raise SetupError(
                f"channel {channel.name!r} binds a {channel.type_name} socket, which cannot be "
                f"shared by several workers ({channel.type_name} talks to one peer at a time); "
                "run it with --workers 1, or let it connect instead"
            )
        workers_view: list[str] = []
        for i, endpoint in enumerate(channel.endpoints):
            if endpoint.bind:
                backend = f"ipc://{ipc_dir}/{len(proxies)}-{i}.sock"
                proxies.append(
                    Proxy(
                        channel,
                        endpoint.address,
                        backend,
                        socket_options(channel, app.config, binds=True),
                    )
                )
                workers_view.append(str(Endpoint(backend, False)))
            else:
                workers_view.append(str(endpoint))
        endpoints[channel.name] = workers_view
    return proxies, endpoints


def run_workers(
    app: App,
    count: int,
    app_spec: str,
    config_file: str | None,
    settings: Sequence[tuple[list[str], Any]],
    log_level: str,
    log_format: str = "text",
) -> int:
    """Run ``count`` worker processes of ``app`` under supervision; return the exit code."""
    supervisor = Supervisor(app, count, app_spec, config_file, settings, log_level, log_format)
    return asyncio.run(supervisor.run())


class Link:
    """One end of the socket pair between the parent and a worker, on the running loop:
    newline-delimited JSON messages each way, and its end-of-file when the other side is
    gone (however it died)."""

    def __init__(
        self,
        sock: socket.socket,
        on_message: Callable[[dict[str, Any]], None],
        on_closed: Callable[[], None],
    ) -> None:
        self.sock = sock
        self.on_message = on_message
        self.on_closed = on_closed
        self.buffer = b""
        self.outgoing = bytearray()  # what the socket has not taken yet
        self.loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            self.on_closed()
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:  # pragma: no cover - both ends write JSON
                continue
            if isinstance(message, dict):
                self.on_message(message)

    def send(self, message: dict[str, Any]) -> None:
        """Send ``message`` whole: what the socket does not take now (a large snapshot, a
        full buffer) is written when it can take more, so no line is cut or lost."""
        if self.sock.fileno() < 0:
            return
        waiting = bool(self.outgoing)
        self.outgoing += json.dumps(message).encode() + b"\n"
        if not waiting:
            self._writable()

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.outgoing)
        except BlockingIOError:
            sent = 0
        except OSError:  # the other side is gone; its end-of-file says so
            self.outgoing.clear()
            sent = 0
        del self.outgoing[:sent]
        if self.outgoing:
            self.loop.add_writer(self.sock.fileno(), self._writable)
        else:
            self.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
            self.sock.close()
        self.outgoing.clear()


@dataclass
class Worker:
    """One worker process, as the parent sees it."""

    slot: int
    proc: subprocess.Popen[bytes]
    started: float
    answered: float
    link: Link | None = None
    ready: bool = False
    stopping: bool = False
    status: dict[str, Any] = field(default_factory=dict)
    asked: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)


class Supervisor:
    """Starts, watches and restarts worker processes; stops them on SIGTERM/SIGINT."""

    def __init__(
        self,
        app: App,
        count: int,
        app_spec: str,
        config_file: str | None,
        settings: Sequence[tuple[list[str], Any]],
        log_level: str,
        log_format: str = "text",
    ) -> None:
        self.app = app
        self.count = count
        self.log_format = log_format
        self.app_spec = app_spec
        self.config_file = config_file
        self.settings = list(settings)
        self.log_level = log_level
        self.workers: dict[int, Worker] = {}
        self.quick_deaths: dict[int, int] = {}
        self.proxies: list[Proxy] = []
        self.endpoints: dict[str, list[str]] = {}
        self.ipc_dir = ""
        self.stopping = False
        self.gave_up = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._restarts: dict[int, asyncio.TimerHandle] = {}
        self._reaps: set[asyncio.Task[None]] = set()
        self.http: HttpServer | None = None
        self.lag = LoopLag()
        self.monitors: list[SocketMonitor] = []
        self.state = "starting"
        self._asks = 0

    # -- the pool's life -----------------------------------------------------------------------

    async def run(self) -> int:
        loop = self.loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        # Signals first: a stop asked at any moment of the start is a graceful one.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        self.ipc_dir = tempfile.mkdtemp(prefix="zmqapp-")
        context: zmq.Context[Any] = zmq.Context()
        shipper = logs.ship_to(self.app.config, self.app.name)
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        try:
            self.proxies, self.endpoints = plan(self.app, self.ipc_dir)
            address = self.app.config.get("HTTP")
            if address:  # the pool's HTTP side: every worker's numbers, from the parent
                self.http = HttpServer(self, str(address), token=self.app.config.get("HTTP_TOKEN"))
                self.http.start()
                self.lag.start()
            for proxy in self.proxies:
                proxy.start(context)
                if proxy.monitor is not None:
                    self.monitors.append(
                        SocketMonitor(self.app, proxy.channel, None, monitor=proxy.monitor)
                    )
                log.info(
                    "channel %r: %s is bound here and shared by %d workers (%s proxy)",
                    proxy.channel.name,
                    proxy.bound,
                    self.count,
                    "/".join(TYPE_NAMES[t] for t in proxy.channel.kind.proxy or ()),
                )
            if not self.stopping:
                for slot in range(self.count):
                    self.start(slot)
            self.state = "running"
            pings = loop.create_task(self._ping_forever())
            await self._stop_event.wait()
            pings.cancel()
            self.state = "stopping"
            return await self._stop()
        finally:
            self.state = "stopped"
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            for monitor in self.monitors:
                monitor.close()
            if self.http is not None:
                await self.http.close()
            self.lag.stop()
            for reap in list(self._reaps):
                reap.cancel()
            for worker in list(self.workers.values()):
                self._forget(worker)
                _kill(worker.proc)
                worker.proc.wait()
            for proxy in self.proxies:
                proxy.close()
            context.destroy(linger=0)
            shutil.rmtree(self.ipc_dir, ignore_errors=True)
            faulthandler.unregister(signal.SIGUSR1)
            logs.stop_shipping(shipper)

    def _on_signal(self, signum: int) -> None:
        if not self.stopping:
            log.info("received %s: stopping the workers gracefully", signal.Signals(signum).name)
        self._begin_stop()

    def _begin_stop(self) -> None:
        self.stopping = True
        for handle in self._restarts.values():
            handle.cancel()
        self._restarts.clear()
        if self._stop_event is not None:
            self._stop_event.set()

    def start(self, slot: int) -> None:
        """Start the worker of ``slot``, connected to the parent by a socket pair."""
        assert self.loop is not None
        parent_end, child_end = socket.socketpair()
        spec = {
            "slot": slot,
            "app": self.app_spec,
            "config": self.config_file,
            "settings": self.settings,
            "endpoints": self.endpoints,
            "log_level": self.log_level,
            "log_format": self.log_format,
            "link": child_end.fileno(),
            "ipc_dir": self.ipc_dir,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "zmqapp.workers", json.dumps(spec)],
            pass_fds=(child_end.fileno(),),
        )
        child_end.close()
        now = time.monotonic()
        worker = Worker(slot, proc, started=now, answered=now)
        worker.link = Link(
            parent_end,
            functools.partial(self._heard, worker),
            functools.partial(self._died, worker),  # its end closes when it exits
        )
        self.workers[slot] = worker
        log.info("worker %d started (pid %s)", slot, proc.pid)

    def _forget(self, worker: Worker) -> None:
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        if worker.link is not None:
            worker.link.close()

    def _heard(self, worker: Worker, message: dict[str, Any]) -> None:
        """A worker said something."""
        worker.answered = time.monotonic()
        op = message.get("op")
        if op == "ready":
            worker.ready = True
            log.info("worker %d (pid %s) is ready", worker.slot, worker.proc.pid)
        elif op == "stopping":
            worker.ready = False
        elif op == "pong":
            worker.status = message.get("status") or {}
        elif op == "snapshot":
            future = worker.asked.pop(int(message.get("id", -1)), None)
            if future is not None and not future.done():
                future.set_result(message.get("snapshot") or {})

    def _send(self, worker: Worker, message: dict[str, Any]) -> None:
        if worker.link is not None:
            worker.link.send(message)

    def _died(self, worker: Worker) -> None:
        """A worker's end of the link closed: it is exiting (or died). Wait for its exit
        without blocking the loop: a worker may take a while (a thread it started, atexit
        work), and the pool must go on pinging, serving HTTP and keeping its deadlines. It
        stays in ``workers`` until it has exited, so a stop waits for it (and kills it at the
        deadline), and one that never exits is killed after WORKER_TIMEOUT."""
        if worker.link is not None:
            worker.link.close()
            worker.link = None
        for future in worker.asked.values():
            if not future.done():
                future.cancel()
        assert self.loop is not None
        reap = self.loop.create_task(self._reap(worker))
        self._reaps.add(reap)
        reap.add_done_callback(self._reaps.discard)

    async def _reap(self, worker: Worker) -> None:
        code = worker.proc.poll()
        while code is None:
            await asyncio.sleep(REAP_INTERVAL)
            code = worker.proc.poll()
        self._forget(worker)
        if self.stopping:
            return
        lived = time.monotonic() - worker.started
        slot = worker.slot
        quick = self.quick_deaths[slot] = (
            self.quick_deaths.get(slot, 0) + 1 if lived < QUICK_DEATH else 0
        )
        if quick >= GIVE_UP_AFTER:
            log.error(
                "worker %d died within %.0f s of starting %d times in a row (last exit code "
                "%s); giving up: fix what makes it fail (see its log above)",
                slot,
                QUICK_DEATH,
                quick,
                code,
            )
            self.gave_up = True
            self._begin_stop()
            return
        delay = min(MAX_RESTART_DELAY, 0.1 * 2**quick) if quick else 0.0
        log.warning(
            "worker %d (pid %s) exited with code %s after %.1f s; restarting it%s",
            slot,
            worker.proc.pid,
            code,
            lived,
            f" in {delay:.1f} s" if delay else "",
        )
        self._restart_later(slot, delay)

    def _restart_later(self, slot: int, delay: float) -> None:
        assert self.loop is not None

        def restart() -> None:
            self._restarts.pop(slot, None)
            if not self.stopping:
                self.start(slot)

        self._restarts[slot] = self.loop.call_later(delay, restart)

    async def _ping_forever(self) -> None:
        """Ask every worker's loop for a sign of life each second; replace one that has not
        answered for WORKER_TIMEOUT seconds."""
        timeout = float(self.app.config.get("WORKER_TIMEOUT") or 10.0)
        while True:
            await asyncio.sleep(PING_INTERVAL)
            now = time.monotonic()
            for worker in list(self.workers.values()):
                if worker.stopping:
                    continue
                if now - worker.answered > timeout:
                    self._hung(worker, now - worker.answered)
                else:
                    self._send(worker, {"op": "ping"})

    def _hung(self, worker: Worker, silent: float) -> None:
        pid = worker.proc.pid
        state = _process_state(pid)
        busy = worker.status.get("in_flight") or {}
        doing = ", ".join(f"{name}: {n}" for name, n in busy.items()) or "no coroutine handlers"
        log.error(
            "worker %d (pid %s) has not answered for %.1f s (WORKER_TIMEOUT; process state: "
            "%s; in flight at its last answer: %s); killing and replacing it. Its threads' "
            "stacks follow if it could still print them",
            worker.slot,
            pid,
            silent,
            state,
            doing,
        )
        try:
            os.kill(pid, signal.SIGUSR1)  # faulthandler prints every thread's stack
        except OSError:
            pass
        assert self.loop is not None
        self.loop.call_later(0.5, _kill, worker.proc)
        worker.stopping = True  # its death restarts it through _died, as for any death
        worker.started = time.monotonic() - QUICK_DEATH  # a hang is not a quick death

    # -- the pool's HTTP side ------------------------------------------------------------------

    def live(self) -> tuple[bool, str]:
        return self.lag.live(float(self.app.config.get("LOOP_LAG_LIMIT") or 5.0))

    def ready(self) -> tuple[bool, str]:
        """Ready when every worker is, and the pool is not stopping."""
        if self.state != "running":
            return False, "stopping" if self.state in ("stopping", "stopped") else self.state
        ready = sum(1 for worker in self.workers.values() if worker.ready)
        if ready < self.count:
            return False, f"{ready} of {self.count} workers ready"
        return True, ""

    async def snapshots(self) -> list[dict[str, Any]]:
        """Every worker's snapshot, each marked with its ``worker`` slot (one that does not
        answer within a second is left out)."""
        workers = list(self.workers.values())
        answers = await asyncio.gather(*(self._ask(worker) for worker in workers))
        snapshots = []
        for worker, snapshot in zip(workers, answers, strict=True):
            if snapshot is not None:
                snapshot["worker"] = worker.slot
                snapshots.append(snapshot)
        return snapshots

    async def _ask(self, worker: Worker) -> dict[str, Any] | None:
        assert self.loop is not None
        self._asks += 1
        ask = self._asks
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        worker.asked[ask] = future
        self._send(worker, {"op": "snapshot", "id": ask})
        try:
            return await asyncio.wait_for(future, timeout=1.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            return None
        finally:
            worker.asked.pop(ask, None)

    async def status(self) -> dict[str, Any]:
        """The pool as one app: channels with the public endpoints and every worker's counters
        added up, then each worker's own status under ``workers``."""
        snapshots = await self.snapshots()
        by_slot = {snap["worker"]: snap for snap in snapshots}
        peers: dict[str, list[str]] = {}  # one monitor per proxy: a channel may have several
        for monitor in self.monitors:
            peers.setdefault(monitor.channel.name, []).extend(monitor.peers.values())
        bound: dict[str, list[str]] = {}
        for proxy in self.proxies:
            bound.setdefault(proxy.channel.name, []).append(proxy.bound)
        channels: dict[str, Any] = {}
        for name, channel in self.app.channels.items():
            totals = _add_up([snap["channels"].get(name, {}) for snap in snapshots])
            totals.update(
                type=channel.type_name,
                endpoints=[str(e) for e in channel.endpoints],
                bound=bound.get(name, []),
                send_to=channel.send_to,
                subscribe=[t.decode("utf-8", "replace") for t in channel.subscribe],
            )
            if name in peers:  # bound here by a proxy: its peers are the pool's
                totals["peers"] = len(peers[name])
                totals["peer_addresses"] = sorted(set(peers[name]))
            channels[name] = totals
        workers = []
        for slot, worker in sorted(self.workers.items()):
            snap = by_slot.get(slot, {})
            workers.append(
                {
                    "worker": slot,
                    "pid": worker.proc.pid,
                    "ready": worker.ready,
                    "answering": bool(snap),
                    "state": snap.get("state", "not answering"),
                    "loop_lag": snap.get("loop_lag"),
                    "channels": snap.get("channels", {}),
                }
            )
        return {
            "app": self.app.name,
            "state": self.state,
            "ready": self.ready()[0],
            "pid": os.getpid(),
            "version": __version__,
            "loop_lag": self.lag.current(),
            "channels": channels,
            "workers": workers,
        }

    def open_tap(self, name: str) -> Tap:
        raise SetupError(
            "a --workers pool has no tap of its own: each worker handles its share of the "
            "messages; tap one process (run it with --workers 1), or use zmqapp listen on a "
            "SUB/XPUB channel"
        )

    def close_tap(self, name: str, tap: Tap) -> None:  # pragma: no cover - never opened
        pass

    async def _stop(self) -> int:
        """Hand over, stop the workers, close the proxies: within SHUTDOWN_TIMEOUT."""
        config = self.app.config
        timeout = float(config["SHUTDOWN_TIMEOUT"])
        linger = int(config["LINGER"]) / 1000
        deadline = time.monotonic() + timeout
        # 1. Inbound proxies hand what they received to the (still running) workers.
        for proxy in self.proxies:
            proxy.stop_taking(deadline)
        while not all(p.drained.is_set() for p in self.proxies) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        # 2. The workers stop as app.run() does, within what is left of the deadline.
        left = max(0.5, deadline - time.monotonic())
        for worker in self.workers.values():
            worker.stopping = True
            self._send(worker, {"op": "stop", "timeout": left})
        kill_at = time.monotonic() + left + linger + GRACE
        while self.workers and time.monotonic() < kill_at:
            await asyncio.sleep(0.01)
        code = 1 if self.gave_up else 0
        for worker in list(self.workers.values()):
            if worker.link is None:  # its app stopped; something keeps the process alive
                log.error(
                    "worker %d (pid %s) stopped its app but its process did not exit within "
                    "SHUTDOWN_TIMEOUT (%s s): a non-daemon thread, or atexit work, keeps it "
                    "alive; killing it",
                    worker.slot,
                    worker.proc.pid,
                    timeout,
                )
            else:
                log.error(
                    "worker %d (pid %s) did not stop within SHUTDOWN_TIMEOUT (%s s); killing it",
                    worker.slot,
                    worker.proc.pid,
                    timeout,
                )
            _kill(worker.proc)
            self._forget(worker)
            code = 1
        for proxy in self.proxies:
            if proxy.dropped:
                code = 1
        log.info("all workers stopped")
        return code


_SUMMED = ("received", "handled", "errors", "decode_failed", "sent", "dropped", "queue",
           "in_flight", "peers", "refused")  # fmt: skip


def _add_up(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One channel's numbers over several workers: counters and gauges added, histograms
    added bucket by bucket."""
    total: dict[str, Any] = {key: 0 for key in _SUMMED}
    total.update(drops={}, handshake_failures={}, requests={}, timing=None, peer_addresses=[])
    for part in parts:
        for key in _SUMMED:
            total[key] += int(part.get(key) or 0)
        for key in ("drops", "handshake_failures", "requests"):
            for reason, value in (part.get(key) or {}).items():
                total[key][reason] = total[key].get(reason, 0) + value
        timing = part.get("timing")
        if timing:
            if total["timing"] is None:
                total["timing"] = {"buckets": timing["buckets"], "counts": [0] * len(
                    timing["counts"]), "sum": 0.0}  # fmt: skip
            counts = total["timing"]["counts"]
            for i, count in enumerate(timing["counts"]):
                counts[i] += count
            total["timing"]["sum"] += timing["sum"]
        total["peer_addresses"] += part.get("peer_addresses") or []
    return total


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()


def _process_state(pid: int) -> str:
    """The kernel's word for a process's state (Linux), e.g. 'stopped', 'sleeping'."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            code = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "unknown"
    names = {"R": "running", "S": "sleeping", "D": "in uninterruptible I/O", "T": "stopped",
             "t": "stopped by a tracer", "Z": "zombie"}  # fmt: skip
    return names.get(code, code)


# -- the worker's side ---------------------------------------------------------------------------


class ParentLink:
    """A worker's end of the socket pair to the parent: it answers pings and snapshot
    requests, obeys stops, and calls ``on_parent_gone`` when the parent is gone."""

    def __init__(self, app: App, sock: socket.socket, on_parent_gone: Callable[[], None]) -> None:
        self.app = app
        self.link = Link(sock, self.heard, on_parent_gone)

    def heard(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ping":
            self.send({"op": "pong", "status": self.status()})
        elif op == "snapshot":
            runtime = self.app.runtime
            snapshot = runtime.snapshot() if runtime is not None else {}
            self.send({"op": "snapshot", "id": message.get("id"), "snapshot": snapshot})
        elif op == "stop":
            timeout = message.get("timeout")
            if isinstance(timeout, (int, float)):
                current = float(self.app.config["SHUTDOWN_TIMEOUT"])
                self.app.config["SHUTDOWN_TIMEOUT"] = min(current, float(timeout))
            self.app.stop()

    def status(self) -> dict[str, Any]:
        runtime = self.app.runtime
        if runtime is None:
            return {}
        busy = {name: pump.in_flight for name, pump in runtime.pumps.items() if pump.in_flight}
        return {"state": runtime.state, "in_flight": busy}

    def send(self, message: dict[str, Any]) -> None:
        self.link.send(message)

    def close(self) -> None:
        self.link.close()


def worker_main(spec: dict[str, Any]) -> int:
    """A worker process: load the app as the parent did, connect where the parent binds, run.

    SIGINT is ignored (a terminal's Ctrl-C reaches every process in the group, but the parent
    decides the order of a stop); SIGTERM stops this worker gracefully; SIGUSR1 prints every
    thread's stack.
    """
    from ._discovery import load_app

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    slot = int(spec["slot"])
    level = str(spec["log_level"])
    log_format = str(spec["log_format"])  # the parent's, already chosen and checked
    logs.configure(level, log_format, worker=slot)
    link = socket.socket(fileno=int(spec["link"]))
    try:
        app = load_app(spec["app"], spec["config"], [tuple(s) for s in spec["settings"]])
    except Exception:
        log.exception("worker %d cannot start", slot)
        return 1
    logs.configure(level, log_format, app=app.name, worker=slot)
    for name, addresses in spec["endpoints"].items():
        app.config.set_path(["CHANNELS", name, "endpoint"], addresses)
    http = bool(app.config.get("HTTP"))
    app.config["HTTP"] = None  # the parent serves the pool's HTTP side
    backends = {
        name: [a[1:] for a in addresses if a.startswith(">ipc://")]
        for name, addresses in spec["endpoints"].items()
    }
    try:
        asyncio.run(_serve_worker(app, slot, link, backends, str(spec["ipc_dir"]), http))
    except Exception:
        log.exception("worker %d failed", slot)
        return 1
    return 0


async def _serve_worker(
    app: App,
    slot: int,
    link: socket.socket,
    backends: dict[str, list[str]],
    ipc_dir: str,
    http: bool,
) -> None:
    loop = asyncio.get_running_loop()
    parent_gone = False

    def gone() -> None:
        nonlocal parent_gone
        parent_gone = True
        log.warning("worker %d: the --workers parent is gone; stopping", slot)
        app.stop()

    parent = ParentLink(app, link, gone)
    loop.add_signal_handler(signal.SIGTERM, app.stop)
    waiting = {(name, address) for name, addresses in backends.items() for address in addresses}
    started = False
    announced = False

    def maybe_ready() -> None:
        nonlocal announced
        if started and not waiting and not announced:
            announced = True
            parent.send({"op": "ready"})
            log.info("worker %d (pid %d) is running", slot, os.getpid())

    def connected(sender: App, channel: Channel, address: str) -> None:
        waiting.discard((channel.name, address))
        maybe_ready()

    def running(sender: App) -> None:
        nonlocal started
        started = True
        if sender.runtime is not None and http:  # the parent shows this worker's numbers
            sender.runtime.lag.start()
            for pump in sender.runtime.pumps.values():
                pump.keep_timing()
        maybe_ready()
        # The proxies' ipc sockets answer at once; do not wait forever for one that does not.
        loop.call_later(5.0, give_up_waiting)

    def give_up_waiting() -> None:
        waiting.clear()
        maybe_ready()

    def stopping(sender: App) -> None:
        parent.send({"op": "stopping"})

    try:
        with (
            peer_connected.connected_to(connected, sender=app),
            app_started.connected_to(running, sender=app),
            app_stopping.connected_to(stopping, sender=app),
        ):
            await app.serve()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        parent.close()
        if parent_gone:  # nobody else will clean up the parent's ipc files
            shutil.rmtree(ipc_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(worker_main(json.loads(sys.argv[1])))
