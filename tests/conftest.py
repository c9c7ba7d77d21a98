from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import zmq

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


class Proc:
    """A child process whose stdout and stderr are read line by line as they are written."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, **kwargs: Any):
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
            **kwargs,
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_line(
        self, pattern: str, *, stream: str = "out", count: int = 1, timeout: float = 20
    ) -> list[str]:
        """The first ``count`` lines of ``stream`` ("out" or "err") matching ``pattern``."""
        lines = self.out if stream == "out" else self.err

        def found() -> list[str]:
            matches = [line for line in list(lines) if re.search(pattern, line)]
            return matches[:count] if len(matches) >= count else []

        try:
            return wait_for(found, timeout=timeout)  # type: ignore[no-any-return]
        except TimeoutError:
            tail = "\n".join((self.out + self.err)[-20:])
            raise AssertionError(
                f"no line matching {pattern!r} within {timeout} s:\n{tail}"
            ) from None

    def send_signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                children = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            for child in children:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            self.proc.kill()
        self.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


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
