from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import zmq
from clitools import ROOT, ZMQAPP, Proc, clean_env

from zmqapp import App
from zmqapp.testing import AppThread, wait_for

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def no_leaks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test that leaves threads, open descriptors (sockets, contexts) or a loop behind,
    or during which the event loop logged an exception it caught from a callback."""
    process = psutil.Process()
    threads = set(threading.enumerate())
    fds = process.num_fds()
    yield
    records = caplog.get_records("setup") + caplog.get_records("call") + caplog.records
    loop_errors = [r for r in records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not loop_errors, f"the event loop caught an exception: {loop_errors[0].getMessage()}"
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()

    def settled() -> bool:
        gc.collect()
        extra = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        return not extra and process.num_fds() <= fds

    try:
        wait_for(settled, timeout=5)
    except TimeoutError:
        extra = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
        pytest.fail(
            f"test leaked threads {extra} or file descriptors "
            f"({fds} before, {process.num_fds()} after)"
        )


@pytest.fixture
def app() -> App:
    app = App("test_app")
    app.config.update(SHUTDOWN_TIMEOUT=2.0, LINGER=0)
    return app


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    """A context for the test's own peer sockets; every socket is closed at teardown."""
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def peer(ctx: zmq.Context[Any]) -> Iterator[Any]:
    """Make a raw pyzmq socket that never blocks a test for more than 5 seconds."""
    sockets: list[zmq.Socket[Any]] = []

    def make(kind: int, connect: str | None = None, bind: str | None = None) -> zmq.Socket[Any]:
        sock = ctx.socket(kind)
        sockets.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.setsockopt(zmq.SNDTIMEO, 5000)
        if connect:
            sock.connect(connect)
        if bind:
            sock.bind(bind)
        return sock

    yield make
    for sock in sockets:
        sock.close(linger=0)


@pytest.fixture
def running() -> Iterator[Any]:
    """Start an app for real in a thread: ``running(app)``; stopped at teardown."""
    threads: list[AppThread] = []

    def start(app: App) -> AppThread:
        thread = AppThread(app).start()
        threads.append(thread)
        return thread

    yield start
    for thread in threads:
        thread.stop()


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Start a child process: ``spawn([sys.executable, path], env={...})`` returns a
    :class:`Proc`; every one is killed (with its children) at teardown."""
    started: list[Proc] = []

    def start(args: list[str], env: dict[str, str] | None = None, **kwargs: Any) -> Proc:
        proc = Proc(args, env, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


SPIN = "import time\nt = time.time() + 60\nwhile time.time() < t: pass"


@pytest.fixture
def busy_machine() -> Iterator[Any]:
    """``busy_machine()`` keeps every core busy with a spinning process until the test ends
    (or 60 s pass): libzmq's I/O threads then wait for the CPU, as on a loaded host."""
    spinners: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        for _ in range(os.cpu_count() or 2):
            spinners.append(subprocess.Popen([sys.executable, "-c", SPIN], start_new_session=True))
        processes = [psutil.Process(spinner.pid) for spinner in spinners]
        wait_for(lambda: all(p.cpu_times().user > 0.05 for p in processes), timeout=10)

    yield start
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


@pytest.fixture
def run_cli() -> Iterator[Any]:
    """Start ``python -m zmqapp ARGS`` in the background: ``run_cli(*args, env=..., cwd=...)``
    returns a :class:`clitools.Proc`; every one is killed at teardown."""
    started: list[Proc] = []

    def start(*args: Any, env: dict[str, str] | None = None, cwd: Any = ROOT) -> Proc:
        proc = Proc([*ZMQAPP, *map(str, args)], env if env is not None else clean_env(), cwd)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
