"""`zmqapp run --workers N`: proxies in the parent, supervised workers, graceful stops."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
from clitools import Proc

from zmqapp.testing import wait_for

APPS = Path(__file__).parent / "apps"
NO_RESULTS = "CHANNELS.results.endpoint=tcp://127.0.0.1:9"  # nobody there: results wait


class Pool(Proc):
    """A `zmqapp run --workers N` process (its log is its stderr)."""

    def __init__(self, script: str, workers: int, *args: str, env: dict[str, str] | None = None):
        super().__init__(
            [sys.executable, "-m", "zmqapp", "run", "--app", str(APPS / script),
             "--workers", str(workers), *args],
            {**os.environ, **(env or {})},
        )  # fmt: skip

    def wait_for_line(  # type: ignore[override]
        self, pattern: str, count: int = 1, timeout: float = 20
    ) -> list[str]:
        return super().wait_for_line(pattern, stream="err", count=count, timeout=timeout)

    def address(self, channel: str) -> str:
        """The address the parent bound for ``channel`` (a port the OS chose)."""
        [line] = self.wait_for_line(rf"channel '{channel}': \S+ is bound here")
        match = re.search(rf"channel '{channel}': (\S+) is bound here", line)
        assert match is not None
        return match.group(1)

    def worker_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"\(pid (\d+)\) is running", "\n".join(self.err))]

    def running_workers(self, count: int) -> list[int]:
        """The pids of the first ``count`` workers to say they are running, once they have."""
        self.wait_for_line(r"\(pid \d+\) is running", count=count)
        return self.worker_pids()[:count]

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.send_signal(signum)
        return self.wait(60)


@pytest.fixture
def pools() -> Iterator[list[Pool]]:
    started: list[Pool] = []
    yield started
    for pool in started:
        pool.kill()


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
    pool = start(pools, "workers_app.py", 3, "--set", NO_RESULTS)
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
    pool = start(pools, "workers_app.py", 2, "--set", NO_RESULTS)
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


def _loaded_pool(pools: list[Pool], peer: Any) -> tuple[Pool, Any, str]:
    """Two workers with small high-water marks, their results going to a sink: the pool, the
    sink, and the address of its tasks channel, once both workers run."""
    sink = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    sink.setsockopt(zmq.RCVHWM, 0)
    results = f"CHANNELS.results.endpoint={sink.last_endpoint.decode()}"
    env = {"TASK_SECONDS": "0.0005", "ZMQAPP_RCVHWM": "100", "ZMQAPP_SNDHWM": "100"}
    pool = start(pools, "workers_app.py", 2, "--set", results, env=env)
    tasks = pool.address("tasks")
    pool.running_workers(2)
    return pool, sink, tasks


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(90)
@pytest.mark.parametrize("busy", [False, True])
def test_a_pool_loses_nothing_sent_before_sigterm(
    pools: list[Pool], peer: Any, busy: bool, busy_machine: Any
) -> None:
    """5,000 messages sent (and on their way) before SIGTERM: every one is handled once.

    Small high-water marks keep most of them in the kernel's socket buffers at the stop,
    where an unbind, or a hand-over that gives up, would throw them away. Busy: every core
    spins from the start, so libzmq's I/O threads wait for the CPU (a hand-over that
    trusted 10 ms of quiet lost hundreds of messages then)."""
    if busy:
        busy_machine()
    pool, sink, tasks = _loaded_pool(pools, peer)
    context: zmq.Context[Any] = zmq.Context()
    try:
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 0)
        push.connect(tasks)
        for i in range(5000):
            push.send(b"%d" % i)
        push.close(linger=20000)
    finally:
        context.term()  # every message has left this process
    got = [sink.recv()]  # work has begun
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(60) == 0
    while True:
        try:
            got.append(sink.recv(zmq.NOBLOCK))
        except zmq.Again:
            if len(got) >= 5000 or not sink.poll(2000):
                break
    bodies = [int(r.split(b":")[1]) for r in got]
    assert len(bodies) == len(set(bodies)), "a message was handled twice"
    assert sorted(bodies) == list(range(5000)), f"{5000 - len(set(bodies))} messages lost"


def test_workers_exit_when_the_parent_is_killed(pools: list[Pool]) -> None:
    pool = start(pools, "workers_app.py", 2, "--set", NO_RESULTS)
    pids = pool.running_workers(2)
    ipc_dirs = set()
    for pid in pids:
        spec = json.loads(psutil.Process(pid).cmdline()[-1])
        ipc_dirs.add(spec["ipc_dir"])
    [ipc_dir] = ipc_dirs
    assert os.path.isdir(ipc_dir)
    os.kill(pool.pid, signal.SIGKILL)
    pool.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=20)
    wait_for(lambda: not os.path.exists(ipc_dir), timeout=10)


def test_sigterm_while_the_pool_starts_is_a_clean_stop(pools: list[Pool]) -> None:
    pool = start(pools, "workers_app.py", 2, "--set", NO_RESULTS)
    # As early as the parent can be told apart from a bare interpreter: its proxies exist.
    pool.wait_for_line(r"is bound here")
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(30) == 0, "\n".join(pool.err[-20:])
    children = [p for p in psutil.process_iter(["cmdline"]) if "zmqapp.workers" in " ".join(
        p.info["cmdline"] or [])]  # fmt: skip
    assert not [p for p in children if _alive(p.pid) and p.ppid() == pool.pid]


def test_a_hung_worker_is_killed_at_the_stop_deadline(pools: list[Pool], peer: Any) -> None:
    env = {"TASK_SECONDS": "3600", "ZMQAPP_SHUTDOWN_TIMEOUT": "1", "ZMQAPP_LINGER": "0"}
    pool = start(pools, "workers_app.py", 2, "--set", NO_RESULTS, env=env)
    tasks = pool.address("tasks")
    pids = pool.running_workers(2)
    peer(zmq.PUSH, connect=tasks).send(b"forever")  # one worker takes it and never returns
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(30) == 1  # not a clean stop: something was lost
    [line] = pool.wait_for_line(r"did not stop within SHUTDOWN_TIMEOUT \(1.0 s\); killing it")
    assert any(f"(pid {pid})" in line for pid in pids)
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=10)


def test_a_worker_whose_process_outlives_its_app_does_not_freeze_the_pool(
    pools: list[Pool], peer: Any
) -> None:
    """A worker's app stops but a non-daemon thread keeps its process alive: the parent goes
    on answering (its own loop is not blocked waiting) and kills it at the stop deadline."""
    env = {"KEEP_SECONDS": "3600", "ZMQAPP_SHUTDOWN_TIMEOUT": "1", "ZMQAPP_LINGER": "0"}
    pool = start(pools, "workers_app.py", 2, "--set", NO_RESULTS, env=env)
    pids = pool.running_workers(2)
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(30) == 1  # not a clean stop: processes had to be killed
    pool.wait_for_line(r"stopped its app but its process did not exit", count=2)
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=10)


def test_a_worker_that_stops_answering_is_replaced(pools: list[Pool]) -> None:
    env = {"ZMQAPP_WORKER_TIMEOUT": "2"}
    pool = start(pools, "workers_app.py", 2, "--set", NO_RESULTS, env=env)
    pids = pool.running_workers(2)
    os.kill(pids[0], signal.SIGSTOP)
    pool.wait_for_line(
        rf"worker \d \(pid {pids[0]}\) has not answered for .* process state: stopped",
        timeout=20,
    )
    replacement = pool.running_workers(3)[2]
    assert replacement not in pids
    wait_for(lambda: not _alive(pids[0]), timeout=10)
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(30) == 0


@pytest.mark.timeout(90)
def test_a_pool_stopping_under_a_streaming_producer_keeps_what_came_before(
    pools: list[Pool], peer: Any
) -> None:
    """The producer outpaces the workers, so a backlog sits in the proxy and the kernel when
    SIGTERM comes, and it keeps sending for a while after: every message sent before the
    signal is handled exactly once; what comes after may be refused, but never twice."""
    pool, sink, tasks = _loaded_pool(pools, peer)
    sent = [0]
    streaming = threading.Event()
    streaming.set()

    def produce() -> None:
        context: zmq.Context[Any] = zmq.Context()
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 0)
        push.connect(tasks)
        started = time.monotonic()
        while streaming.is_set() and sent[0] < 100_000:
            push.send(b"%d" % sent[0])
            sent[0] += 1
            if sent[0] % 100 == 0:  # about 10,000 messages/s: twice what the pool handles
                time.sleep(max(0.0, started + sent[0] / 10_000 - time.monotonic()))
        push.close(linger=0)
        context.term()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: sent[0] >= 8_000, timeout=30)
        before = sent[0]
        pool.send_signal(signal.SIGTERM)
        wait_for(lambda: sent[0] >= before + 3_000, timeout=30)
    finally:
        streaming.clear()
        producer.join(10)
    assert pool.wait(60) == 0
    got = []
    while sink.poll(1000):
        got.append(int(sink.recv().split(b":")[1]))
    assert len(got) == len(set(got)), "a message was handled twice"
    missing = set(range(before)) - set(got)
    assert not missing, f"{len(missing)} of {before} messages sent before SIGTERM were lost"
