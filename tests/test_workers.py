"""`zmqapp run --workers N`: proxies in the parent, supervised workers, graceful stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from zmqapp.testing import wait_for

APPS = Path(__file__).parent / "apps"


class Pool:
    """A `zmqapp run --workers N` process, with its log read as it is written."""

    def __init__(self, script: str, workers: int, *args: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zmqapp", "run", "--app", str(APPS / script),
             "--workers", str(workers), *args],
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def wait_for_line(self, pattern: str, count: int = 1, timeout: float = 20) -> list[str]:
        def found() -> list[str]:
            matches = [line for line in list(self.lines) if re.search(pattern, line)]
            return matches if len(matches) >= count else []

        return wait_for(found, timeout=timeout)  # type: ignore[no-any-return]

    def address(self, channel: str) -> str:
        """The address the parent bound for ``channel`` (a port the OS chose)."""
        [line] = self.wait_for_line(rf"channel '{channel}': \S+ is bound here")
        match = re.search(rf"channel '{channel}': (\S+) is bound here", line)
        assert match is not None
        return match.group(1)

    def worker_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"\(pid (\d+)\) is running", "\n".join(self.lines))]

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        code = self.proc.wait(timeout=60)
        self.reader.join(10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait(10)
        assert self.proc.stderr is not None
        self.reader.join(10)
        self.proc.stderr.close()


@pytest.fixture
def pools() -> Iterator[list[Pool]]:
    started: list[Pool] = []
    yield started
    for pool in started:
        pool.close()


def start(pools: list[Pool], *args: Any, **kwargs: Any) -> Pool:
    pool = Pool(*args, **kwargs)
    pools.append(pool)
    return pool


def test_workers_share_a_pull_channel_and_lose_nothing(pools: list[Pool], peer: Any) -> None:
    sink = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    pool = start(
        pools,
        "workers_app.py",
        3,
        "--set",
        f"CHANNELS.results.endpoint={sink.last_endpoint.decode()}",
    )
    tasks = pool.address("tasks")
    pool.wait_for_line(r"is running", count=3)
    push = peer(zmq.PUSH, connect=tasks)
    for i in range(300):
        push.send(b"%d" % i)
    results = [sink.recv().split(b":") for _ in range(300)]
    assert sorted(int(body) for _, body in results) == list(range(300))  # each exactly once
    handled_by = {int(pid) for pid, _ in results}
    assert handled_by == set(pool.worker_pids())  # and every one of the 3 workers took some
    assert len(handled_by) == 3
    assert pool.stop() == 0


def test_workers_serve_a_bound_rep_channel_through_the_proxy(pools: list[Pool], peer: Any) -> None:
    pool = start(pools, "workers_app.py", 3, "--set", "CHANNELS.results.endpoint=tcp://127.0.0.1:9")
    whoami = pool.address("whoami")
    pool.wait_for_line(r"is running", count=3)
    req = peer(zmq.REQ, connect=whoami)
    answers = set()
    for _ in range(30):
        req.send(b"?")
        answers.add(int(req.recv()))
    assert answers == set(pool.worker_pids())
    assert pool.stop() == 0


def test_a_killed_worker_is_replaced(pools: list[Pool], peer: Any) -> None:
    pool = start(pools, "workers_app.py", 2, "--set", "CHANNELS.results.endpoint=tcp://127.0.0.1:9")
    whoami = pool.address("whoami")
    pool.wait_for_line(r"is running", count=2)
    victim = pool.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    pool.wait_for_line(rf"worker \d \(pid {victim}\) exited with code -9 after .* restarting")
    pool.wait_for_line(r"is running", count=3)  # the replacement
    req = peer(zmq.REQ, connect=whoami)
    answers = set()
    for _ in range(20):
        req.send(b"?")
        answers.add(int(req.recv()))
    assert victim not in answers
    assert answers == set(pool.worker_pids()[1:])
    assert pool.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_parent_stops_everything_gracefully(
    signum: int, pools: list[Pool], peer: Any
) -> None:
    """Tasks queued in the proxy and the workers are all handled before the pool exits."""
    sink = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    results_at = f"CHANNELS.results.endpoint={sink.last_endpoint.decode()}"
    pool = start(pools, "workers_app.py", 3, "--set", results_at, env={"TASK_SECONDS": "0.01"})
    tasks = pool.address("tasks")
    pool.wait_for_line(r"is running", count=3)
    push = peer(zmq.PUSH, connect=tasks)
    for i in range(400):  # about 1.3 s of work for 3 workers
        push.send(b"%d" % i)
    first = sink.recv()  # the work has begun
    if signum == signal.SIGINT:  # as a terminal's Ctrl-C: to the whole process group
        for child in psutil.Process(pool.proc.pid).children(recursive=True):
            os.kill(child.pid, signal.SIGINT)
    workers = pool.worker_pids()
    assert pool.stop(signum) == 0
    results = [first] + [sink.recv() for _ in range(399)]
    assert sorted(int(r.split(b":")[1]) for r in results) == list(range(400))
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pid in workers)  # fmt: skip
    pool.wait_for_line("all workers stopped")


def test_workers_that_cannot_start_make_the_pool_give_up(pools: list[Pool]) -> None:
    pool = start(pools, "workers_broken.py", 2)
    assert pool.proc.wait(timeout=60) == 1  # it gave up by itself
    pool.wait_for_line(r"giving up: fix what makes it fail")
    pool.wait_for_line(r"cannot start: the database is not there")


def test_a_bound_pair_cannot_be_shared(pools: list[Pool]) -> None:
    pool = start(pools, "workers_pair.py", 2)
    assert pool.proc.wait(timeout=30) == 1
    pool.wait_for_line(r"binds a PAIR socket, which cannot be shared by several workers")


def test_a_secured_bound_channel_is_refused_rather_than_served_unsecured(
    pools: list[Pool],
) -> None:
    pool = start(pools, "workers_secure.py", 2)
    assert pool.proc.wait(timeout=30) == 1
    pool.wait_for_line(r"binds with security options \(allow\), which --workers cannot keep")
