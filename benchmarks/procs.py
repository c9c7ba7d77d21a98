"""Processes, endpoints and memory readings shared by the benchmarks.

Every side of a benchmark (producer, consumer, server, client) runs in its own process started
with ``spawn``, so no variant inherits another's imports, garbage or event loop, and each
process's peak memory is its own.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import resource
import signal
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

CTX = mp.get_context("spawn")

# Set in a child by _child_main: where report() puts values, and what wait_released() waits on.
_reports: Any = None
_released: Any = None


class ChildFailed(Exception):
    """A benchmark process raised, died or did not answer in time."""


class Child:
    """A function running in a spawned process.

    The function may call :func:`report` to hand values to the parent before it returns (a
    producer saying it is loaded, a server saying it is bound); its return value is the last
    report. :meth:`get` reads them in order. With ``own_group`` the child leads a process
    group of its own, so :meth:`stop` also ends the processes it started (zeroapi's workers).
    """

    def __init__(
        self, target: Callable[..., Any], *args: Any, own_group: bool = False, **kwargs: Any
    ) -> None:
        self.name = getattr(target, "__name__", repr(target))
        self.own_group = own_group
        self._reports = CTX.Queue()
        self._released = CTX.Event()
        self.process = CTX.Process(
            target=_child_main,
            args=(target, args, kwargs, self._reports, self._released, own_group),
        )
        self.process.start()

    def get(self, timeout: float) -> Any:
        """The child's next report; raises :class:`ChildFailed` on an error or a timeout."""
        try:
            kind, value = self._reports.get(timeout=timeout)
        except queue.Empty:
            state = "died" if not self.process.is_alive() else f"gave nothing in {timeout:g} s"
            raise ChildFailed(f"{self.name} {state}") from None
        if kind == "error":
            summary, trace = value
            print(trace, file=sys.stderr)
            raise ChildFailed(summary)
        return value

    def release(self) -> None:
        """Let a child blocked in :func:`wait_released` go on."""
        self._released.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Release the child, wait up to ``timeout`` for it to end, then end it (and its group)."""
        self.release()
        self.process.join(timeout)
        if self.process.is_alive() or self.own_group:
            self._signal(signal.SIGTERM)
            self.process.join(5)
            if self.process.is_alive():
                self._signal(signal.SIGKILL)
                self.process.join(5)
        self._reports.close()
        self._reports.join_thread()

    def terminate(self) -> None:
        """End the child (and its group) now: for servers that serve until they are killed."""
        self._signal(signal.SIGTERM)
        self.stop(timeout=5)

    def _signal(self, signum: int) -> None:
        pid = self.process.pid
        if pid is None:
            return
        try:
            if self.own_group:
                os.killpg(pid, signum)
            elif self.process.is_alive():
                os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _child_main(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    reports: Any,
    released: Any,
    own_group: bool,
) -> None:
    global _reports, _released
    if own_group:
        os.setpgid(0, 0)
    _reports, _released = reports, released
    try:
        result = target(*args, **kwargs)
    except BaseException as exc:
        summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        reports.put(("error", (f"{target.__name__}: {summary}", traceback.format_exc())))
        raise SystemExit(1) from None
    reports.put(("ok", result))


def report(value: Any) -> None:
    """In a child: hand ``value`` to the parent (see :meth:`Child.get`)."""
    _reports.put(("ok", value))


def wait_released(timeout: float = 600.0) -> None:
    """In a child: block until the parent calls :meth:`Child.release` (or stop)."""
    _released.wait(timeout)


# -- endpoints ---------------------------------------------------------------------------------


def free_tcp_endpoint() -> str:
    """``tcp://127.0.0.1:PORT`` with a port that is free now and below the ephemeral range.

    Producers connect before their consumer binds, retrying until it does. A port from the
    ephemeral range could then be taken by one of those attempts as its own source port (a
    TCP self-connect) or by any other process's outgoing connection; a port below it cannot.
    """
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            low = int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return f"tcp://127.0.0.1:{port}"
    raise RuntimeError("found no free TCP port below the ephemeral range")


def free_ipc_endpoint() -> str:
    """An ``ipc://`` endpoint in a fresh temporary directory."""
    return f"ipc://{tempfile.mkdtemp(prefix='zmqapp-bench-')}/sock"


def remove_ipc(endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        for remove in (os.unlink, os.rmdir):
            try:
                remove(path)
            except OSError:
                pass
            path = os.path.dirname(path)


# -- memory ------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss() -> int:
    """This process's peak resident memory in bytes.

    Not ``ru_maxrss``: Linux folds the parent's peak into a child's at exec, so a process
    started by a large one (pytest, say) would report the parent's memory. ``VmHWM`` in
    /proc belongs to this process's own memory map, which is new after exec."""
    hwm = _status_kb("VmHWM:")
    if hwm is not None:
        return hwm * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # elsewhere: a fallback


def current_rss() -> int:
    rss = _status_kb("VmRSS:")
    return rss * 1024 if rss is not None else peak_rss()


class PeakGrowth:
    """How far this process's peak RSS rises above its RSS at :meth:`start`.

    ``start`` resets the kernel's high-water mark to the current RSS (``5`` into
    /proc/self/clear_refs), so what the process used before (imports, setup) does not count.
    Where that is not allowed, the growth is measured from the earlier peak instead, which
    can only understate it, and :attr:`reset` says so."""

    def __init__(self) -> None:
        self.base = 0
        self.reset = False

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.base = current_rss() if self.reset else peak_rss()

    def growth_mb(self) -> float:
        return (peak_rss() - self.base) / 2**20
