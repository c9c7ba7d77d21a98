"""Hosts for multi-host tests: Linux network namespaces joined by a bridge.

``Network(3)`` makes three "hosts", each a network namespace with one interface ``eth0``
and an address in 10.123.0.0/24 (host 0 is 10.123.0.1, ...). Each ``eth0`` is one end of a
veth pair whose other end, ``vh0``, ``vh1`` ..., is a port of the bridge ``br0`` in a
namespace of its own, the "switch". Every interface and address lives inside namespaces the
network made: nothing touches the machine's own interfaces, and the names cannot collide
with another run (they carry the pid).

``network.cut(host)`` takes the host's port off the bridge and ``network.restore(host)``
puts it back. A cut is silence, like a partition or a host that lost power: both ends keep
their carrier and their sockets, every frame is simply dropped in the switch, and nothing
answers with a reset. (An RST comes only from a kernel that receives a segment for a
connection it does not know, e.g. a host that rebooted; ``ip link set ... down`` on the
host's own interface would also be silent on the wire, but tells that host its link is gone,
which a real partition does not.) A peer is then only noticed by heartbeats or TCP timeouts.

``host.python(script, *args)`` runs a Python program inside a host (``ip netns exec``) that
talks over pipes: it writes one JSON object per line (events, with ``"t"`` its
``time.monotonic()``, the same clock as the test's) and reads commands, one per line.

:func:`unavailable` says why a machine cannot do this (not Linux, not root, no iproute2,
namespaces forbidden in a container), so tests can skip with that reason. Closing the network
ends the processes it started and deletes every namespace, after a failure too; namespaces
left by a run that was killed are swept by the next one.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

PREFIX = "zqt"
SUBNET = "10.123.0"
_ids = itertools.count()
_unavailable: list[str | None] = []

Event = dict[str, Any]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with its error output when it fails and ``check`` is set."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or ``None`` if they can."""
    if not _unavailable:
        _unavailable.append(_probe())
    return _unavailable[0]


def _probe() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CI runs the suite as root)"
    if shutil.which("ip") is None or shutil.which("bridge") is None:
        return "the 'ip' and 'bridge' commands are missing: install iproute2"
    sweep()
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
        ip("-n", probe, "link", "add", "br0", "type", "bridge")
        ip("-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        ip("-n", probe, "link", "set", "va", "master", "br0")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot make network namespaces, veth pairs and bridges here: {exc}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def sweep() -> None:
    """Delete namespaces that runs which no longer exist left behind (killed mid-test)."""
    listed = ip("netns", "list", check=False).stdout.split("\n")
    for line in listed:
        match = re.match(rf"({PREFIX}-(\d+)-\S+)", line)
        if match and not Path(f"/proc/{match.group(2)}").exists():
            ip("netns", "del", match.group(1), check=False)


class Program:
    """A process in a host: JSON events from its stdout, commands to its stdin."""

    def __init__(self, host: Host, argv: list[str]) -> None:
        self.host = host
        self.name = f"{Path(argv[0]).stem} on {host.name}"
        # Lives as long as the program (closed in close()), so no `with`.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.namespace, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        #: Every event read so far, in order.
        self.events: list[Event] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=self.name, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "output", "line": line.rstrip("\n"), "t": time.monotonic()}
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self.events.append({"event": "exit", "t": time.monotonic()})
            self._changed.notify_all()

    def send(self, command: str) -> None:
        """Write one command line to the program."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def wait(self, match: Callable[[Event], object], timeout: float, what: str) -> Event:
        """Return the first event ``match`` accepts, waiting for it up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or (self.events and self.events[-1]["event"] == "exit"):
                    break
                self._changed.wait(left)
        state = "exited" if self.proc.poll() is not None else "is running"
        raise AssertionError(
            f"{self.name}: {what}: not within {timeout} s; the program {state}. Its last "
            f"events: {self.events[-5:]}; its errors: {self.stderr()[-2000:]}"
        )

    def event(self, name: str, timeout: float = 10.0, **fields: object) -> Event:
        """Wait for an event called ``name`` whose fields have the values given."""
        return self.wait(
            lambda e: e["event"] == name and all(e.get(k) == v for k, v in fields.items()),
            timeout,
            f"event {name} {fields or ''}",
        )

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def close(self, timeout: float = 5.0) -> None:
        """End the process (it should have exited already) and release its pipes."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(timeout)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass  # stdin of a process that died: nothing left to flush to
        self._stderr.close()


class Host:
    """One namespace of a :class:`Network`, with ``address`` on its ``eth0``."""

    def __init__(self, network: Network, index: int) -> None:
        self.network = network
        self.index = index
        self.name = f"host{index}"
        self.namespace = f"{network.id}-h{index}"
        self.address = f"{SUBNET}.{index + 1}"
        #: The switch's end of this host's cable.
        self.port = f"vh{index}"

    def run(self, *argv: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run a command in this host and wait for it, e.g. ``host.run("ss", "-tn")``."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, script: str | Path, *args: str) -> Program:
        """Run ``python script args`` in this host (the test's interpreter and packages)."""
        program = Program(self, [sys.executable, "-u", str(script), *args])
        self.network.programs.append(program)
        return program

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} in {self.namespace}>"


class Network:
    """``hosts`` namespaces on one bridge; a context manager that builds and removes them."""

    def __init__(self, hosts: int) -> None:
        self.id = f"{PREFIX}-{os.getpid()}-{next(_ids)}"
        self.switch = f"{self.id}-sw"
        self.hosts = [Host(self, i) for i in range(hosts)]
        self.programs: list[Program] = []
        self._namespaces: list[str] = []

    def __enter__(self) -> Network:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts:
            self._add_namespace(host.namespace)
            ip("-n", self.switch, "link", "add", host.port, "type", "veth",
               "peer", "name", "eth0", "netns", host.namespace)  # fmt: skip
            ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", host.namespace, "link", "set", "eth0", "up")
            ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        for host in self.hosts:
            self._wait_forwarding(host)

    def _wait_forwarding(self, host: Host, timeout: float = 5.0) -> None:
        """Wait until the bridge forwards on the host's port (at once, STP being off)."""
        deadline = time.monotonic() + timeout
        while True:
            shown = subprocess.run(
                ["bridge", "-n", self.switch, "-j", "link", "show", "dev", host.port],
                capture_output=True,
                text=True,
                timeout=10,
            )
            ports = json.loads(shown.stdout or "[]")
            if ports and ports[0].get("state") == "forwarding":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge port {host.port} is not forwarding: {shown.stdout}")
            time.sleep(0.01)

    def cut(self, host: Host) -> None:
        """Take the host's cable out of the switch: silence both ways, no reset, no carrier
        change on either end."""
        ip("-n", self.switch, "link", "set", host.port, "nomaster")

    def restore(self, host: Host) -> None:
        """Plug the host's cable back in, and wait until the switch forwards on it."""
        ip("-n", self.switch, "link", "set", host.port, "master", "br0")
        self._wait_forwarding(host)

    def close(self) -> None:
        """End every program this network started and delete every namespace it made."""
        for program in self.programs:
            program.close()
        self.programs.clear()
        for name in reversed(self._namespaces):
            ip("netns", "del", name, check=False)
        self._namespaces.clear()
