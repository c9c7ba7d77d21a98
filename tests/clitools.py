"""Helpers for tests that run the `zmqapp` command line in subprocesses."""

from __future__ import annotations

import os
import queue
import re
import select
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import IO, Any

from zmqapp import pytest_plugin

ROOT = Path(__file__).resolve().parent.parent
ZMQAPP = [sys.executable, "-m", "zmqapp"]
#: The console script setup.cfg declares, installed next to this interpreter.
SCRIPT = Path(sys.executable).parent / "zmqapp"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the test runner's own ZMQAPP_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQAPP_")}
    env.update(extra)
    return env


def zmqapp(
    *args: Any,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m zmqapp ARGS` to completion."""
    return subprocess.run(
        [*ZMQAPP, *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        cwd=cwd,
        timeout=timeout,
    )


class Background:
    """A zmqapp process running beside the test; its output is read line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._queues: dict[str, queue.Queue[str | None]] = {}
        self._threads = []
        for name in ("stdout", "stderr"):
            self._queues[name] = queue.Queue()
            thread = threading.Thread(target=self._read, args=(name,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, name: str) -> None:
        stream = getattr(self.proc, name)
        for line in stream:
            self._queues[name].put(line.rstrip("\n"))
        self._queues[name].put(None)

    def expect(self, pattern: str, stream: str = "stdout", timeout: float = 15) -> re.Match[str]:
        """Wait for a line matching ``pattern`` (a regex) and return the match."""
        deadline = time.monotonic() + timeout
        lines = self._queues[stream]
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} on {stream}: {self.seen}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                lines.put(None)  # later readers see the end too
                raise AssertionError(f"{stream} ended without {pattern!r}: {self.seen}")
            self.seen[stream].append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def wait(self, timeout: float = 15) -> int:
        """Wait for the process to exit; return its exit code, all its output read."""
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        for name, lines in self._queues.items():
            while (line := lines.get_nowait()) is not None:
                self.seen[name].append(line)
            lines.put(None)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(15)
        for thread in self._threads:
            thread.join(15)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def read_line(stream: IO[str], timeout: float = 15) -> str:
    """One line from a child's pipe, waiting at most ``timeout`` for it to start."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"nothing to read within {timeout} s"
    return stream.readline()


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def free_tcp_port() -> int:
    """A port nothing listens on now, for an address one process binds and another connects
    to, where the connecting side must know the port in advance (see the plugin's helper for
    why it is not one the OS hands out)."""
    return pytest_plugin.free_tcp_port()
