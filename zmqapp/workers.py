"""``zmqapp run --workers N``: N processes of one app, behind proxies bound once in the parent.

Each endpoint the app *binds* is bound by the parent instead, in a libzmq proxy device
(``zmq.proxy_steerable`` in a thread), and the workers connect to the proxy's other side over
ipc. Endpoints the app *connects* to are connected by every worker. So a worker pool looks to
its peers exactly like one process of the app, on the same addresses.

==========================  ================  ===============  ==============================
channel type                parent's side     workers' side    effect
==========================  ================  ===============  ==============================
PULL                        PULL -> PUSH      PULL connects    messages shared among workers
PUSH                        PUSH <- PULL      PUSH connects    workers' messages merged
REP, ROUTER                 ROUTER <-> DEALER REP/ROUTER conn. requests shared, replies routed
PUB, XPUB                   XPUB <-> XSUB     PUB/XPUB conn.   workers publish on one address
SUB, XSUB                   XSUB <-> XPUB     SUB/XSUB conn.   every worker gets every message
DEALER                      DEALER <-> DEALER DEALER connects  messages shared both ways
==========================  ================  ===============  ==============================

A bound PAIR or REQ cannot be shared (PAIR is one-to-one, REQ waits for one reply) and is
refused. The parent supervises: a worker that dies is logged and replaced (with a growing
delay if it keeps dying at once). SIGTERM or SIGINT to the parent stops everything gracefully,
in an order that loses nothing received: the proxies of one-way channels (PULL, SUB, ...)
unbind their public endpoint and hand what they had queued to the workers; then the workers
stop as ``app.run()`` does (handling what is queued, finishing in-flight work); the proxies
close last, so replies to requests in flight still reach their clients.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from .app import App
from .channel import Channel, Endpoint
from .errors import SetupError
from .signals import app_started
from .socket_types import INBOUND_ONLY
from .sockets import set_option, socket_options

log = logging.getLogger("zmqapp.workers")

#: Channel type -> (parent's public socket type, parent's socket type toward the workers).
PROXIES: dict[int, tuple[int, int]] = {
    zmq.PULL: (zmq.PULL, zmq.PUSH),
    zmq.PUSH: (zmq.PUSH, zmq.PULL),
    zmq.REP: (zmq.ROUTER, zmq.DEALER),
    zmq.ROUTER: (zmq.ROUTER, zmq.DEALER),
    zmq.PUB: (zmq.XPUB, zmq.XSUB),
    zmq.XPUB: (zmq.XPUB, zmq.XSUB),
    zmq.SUB: (zmq.XSUB, zmq.XPUB),
    zmq.XSUB: (zmq.XSUB, zmq.XPUB),
    zmq.DEALER: (zmq.DEALER, zmq.DEALER),
}

#: How long a worker must live to count as started, the longest restart delay, and how many
#: quick deaths in a row make the supervisor give up (the app cannot start: a bug, a config).
QUICK_DEATH = 1.0
MAX_RESTART_DELAY = 5.0
GIVE_UP_AFTER = 5
#: Seconds a stopping proxy waits for a worker to take its queued messages.
HAND_OVER_TIMEOUT = 5.0


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
        public_type, private_type = PROXIES[self.channel.socket_type]
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
            self.ready.set()
            return
        self.ready.set()
        try:
            # Phase 1: serve until told to stop.
            zmq.proxy_steerable(public, private, None, control)
            # Phase 2: stopping. Stop taking new messages from outside where that loses
            # nothing already received (inbound-only sockets keep what is queued after an
            # unbind), hand the queue to the workers, then keep forwarding (replies!) until
            # the workers are gone.
            if self.channel.socket_type in INBOUND_ONLY:
                self._hand_over(public, private)
            self.drained.set()
            zmq.proxy_steerable(public, private, None, control)
        except zmq.ContextTerminated:  # pragma: no cover - only if closing went wrong
            pass
        finally:
            self.drained.set()
            for sock in sockets:
                sock.close()

    def _hand_over(self, public: zmq.Socket[Any], private: zmq.Socket[Any]) -> None:
        """Unbind the public side and pass its queue on, giving up after HAND_OVER_TIMEOUT
        without a worker taking a message (when none is left), and saying what was lost."""
        try:
            public.unbind(self.bound)
        except zmq.ZMQError:
            pass
        private.setsockopt(zmq.SNDTIMEO, int(HAND_OVER_TIMEOUT * 1000))
        while True:
            try:
                frames = public.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                private.send_multipart(frames)
            except zmq.Again:
                lost = 1
                while public.poll(0):
                    public.recv_multipart()
                    lost += 1
                log.error(
                    "channel %r: no worker took a message for %s s while stopping; %d queued "
                    "messages were dropped",
                    self.channel.name,
                    HAND_OVER_TIMEOUT,
                    lost,
                )
                return

    def command(self, word: bytes) -> None:
        assert self.control is not None
        self.control.send(word)

    def stop_taking(self) -> None:
        """End phase 1: stop taking new messages from outside; ``drained`` is set after."""
        if self.thread is not None and self.thread.is_alive() and not self.drained.is_set():
            self.command(b"TERMINATE")

    def close(self) -> None:
        """End whichever phase the proxy is in, and close it."""
        if self.thread is not None and self.thread.is_alive():
            self.stop_taking()
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
        if channel.socket_type not in PROXIES:
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
) -> int:
    """Run ``count`` worker processes of ``app`` under supervision; return the exit code."""
    ipc_dir = tempfile.mkdtemp(prefix="zmqapp-")
    context: zmq.Context[Any] = zmq.Context()
    proxies: list[Proxy] = []
    try:
        proxies, endpoints = plan(app, ipc_dir)
        for proxy in proxies:
            proxy.start(context)
            log.info(
                "channel %r: %s is bound here and shared by %d workers (%s proxy)",
                proxy.channel.name,
                proxy.bound,
                count,
                "/".join(zmq.SocketType(t).name for t in PROXIES[proxy.channel.socket_type]),
            )
        worker_args = (app_spec, config_file, list(settings), endpoints, log_level)
        return Supervisor(count, worker_args).run(proxies)
    finally:
        for proxy in proxies:
            proxy.close()
        context.term()
        shutil.rmtree(ipc_dir, ignore_errors=True)


class Supervisor:
    """Starts, watches and restarts worker processes; stops them on SIGTERM/SIGINT."""

    def __init__(self, count: int, worker_args: tuple[Any, ...]) -> None:
        self.count = count
        self.worker_args = worker_args
        self.mp = mp.get_context("spawn")
        self.workers: dict[int, tuple[mp.process.BaseProcess, float]] = {}  # slot -> (proc, start)
        self.quick_deaths: dict[int, int] = {}
        self.restart_at: dict[int, float] = {}
        self.stopping = False
        self.gave_up = False
        self._wake_r, self._wake_w = self.mp.Pipe(duplex=False)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            log.info("received %s: stopping the workers gracefully", signal.Signals(signum).name)
        self.stopping = True
        try:
            self._wake_w.send_bytes(b"!")
        except OSError:  # pragma: no cover - only during interpreter teardown
            pass

    def start(self, slot: int) -> None:
        proc = self.mp.Process(
            target=worker_main, args=(slot, *self.worker_args), name=f"zmqapp-worker-{slot}"
        )
        proc.start()
        self.workers[slot] = (proc, time.monotonic())
        log.info("worker %d started (pid %s)", slot, proc.pid)

    def run(self, proxies: list[Proxy]) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in range(self.count):
                self.start(slot)
            while not self.stopping:
                self._watch()
            return self._stop(proxies)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _watch(self) -> None:
        """Wait for a worker to die, a signal, or a pending restart; replace dead workers."""
        timeout = None
        if self.restart_at:
            timeout = max(0.0, min(self.restart_at.values()) - time.monotonic())
        sentinels = {proc.sentinel: slot for slot, (proc, _) in self.workers.items()}
        ready = mp.connection.wait([*sentinels, self._wake_r], timeout)
        if self._wake_r in ready:
            self._wake_r.recv_bytes()
        if self.stopping:
            return
        for sentinel in ready:
            if not isinstance(sentinel, int) or sentinel not in sentinels:
                continue
            slot = sentinels[sentinel]
            proc, started = self.workers.pop(slot)
            proc.join()
            lived = time.monotonic() - started
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
                    proc.exitcode,
                )
                self.gave_up = self.stopping = True
                return
            delay = min(MAX_RESTART_DELAY, 0.1 * 2**quick) if quick else 0.0
            log.warning(
                "worker %d (pid %s) exited with code %s after %.1f s; restarting it%s",
                slot,
                proc.pid,
                proc.exitcode,
                lived,
                f" in {delay:.1f} s" if delay else "",
            )
            self.restart_at[slot] = time.monotonic() + delay
        now = time.monotonic()
        for slot, when in list(self.restart_at.items()):
            if when <= now:
                del self.restart_at[slot]
                self.start(slot)

    def _stop(self, proxies: list[Proxy]) -> int:
        # 1. Inbound proxies stop taking new messages and hand their queue to the workers.
        for proxy in proxies:
            proxy.stop_taking()
        for proxy in proxies:
            proxy.drained.wait(10)
        # 2. The workers stop as app.run() does: queued messages handled, in-flight finished.
        for proc, _ in self.workers.values():
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)  # type: ignore[arg-type]
        code = 1 if self.gave_up else 0
        for slot, (proc, _) in sorted(self.workers.items()):
            proc.join()
            if proc.exitcode != 0:
                log.warning("worker %d exited with code %s while stopping", slot, proc.exitcode)
                code = 1
        log.info("all workers stopped")
        return code


def worker_main(
    slot: int,
    app_spec: str,
    config_file: str | None,
    settings: list[tuple[list[str], Any]],
    endpoints: dict[str, list[str]],
    log_level: str,
) -> None:
    """A worker process: load the app as the parent did, connect where the parent binds, run.

    SIGINT is ignored (a terminal's Ctrl-C reaches every process in the group, but the parent
    decides the order of a stop); SIGTERM, which the parent sends, stops the app gracefully.
    """
    from ._discovery import load_app

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s [worker {slot}]: %(message)s",
    )
    app = load_app(app_spec, config_file, settings)
    for name, addresses in endpoints.items():
        app.config.set_path(["CHANNELS", name, "endpoint"], addresses)
    asyncio.run(_serve_until_sigterm(app, slot))


async def _serve_until_sigterm(app: App, slot: int) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, app.stop)

    def running(sender: App) -> None:
        log.info("worker %d (pid %d) is running", slot, os.getpid())

    app_started.connect(running, sender=app, weak=False)
    await app.serve()
