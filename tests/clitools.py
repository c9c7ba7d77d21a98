"""Helpers for tests that run the `zmqapp` command line in subprocesses."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil

from zmqapp import pytest_plugin
from zmqapp.testing import wait_for

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


class Proc:
    """A child process whose stdout and stderr are read line by line as they are written.

    The one line-reader of the tests: ``wait_for_line`` finds lines anywhere in what was
    written so far; ``expect`` reads on from where its last match was, as a person reading
    the output would."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        full_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
            cwd=cwd, **kwargs,
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self._next = {"out": 0, "err": 0}
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

    @property
    def seen(self) -> dict[str, list[str]]:
        """Every line read so far, by stream ("stdout", "stderr")."""
        return {"stdout": self.out, "stderr": self.err}

    def _lines(self, stream: str) -> tuple[str, list[str]]:
        key = "out" if stream in ("out", "stdout") else "err"
        return key, self.out if key == "out" else self.err

    def wait_for_line(
        self, pattern: str, *, stream: str = "out", count: int = 1, timeout: float = 20
    ) -> list[str]:
        """The first ``count`` lines of ``stream`` matching ``pattern`` (a regex)."""
        _, lines = self._lines(stream)

        def found() -> list[str]:
            matches = [line for line in list(lines) if re.search(pattern, line)]
            return matches[:count] if len(matches) >= count else []

        try:
            return wait_for(found, timeout=timeout)  # type: ignore[no-any-return]
        except TimeoutError:
            raise AssertionError(self._missing(pattern, timeout)) from None

    def expect(self, pattern: str, stream: str = "stdout", timeout: float = 15) -> re.Match[str]:
        """The next line of ``stream`` after the last one ``expect`` matched that matches
        ``pattern``, as a match."""
        key, lines = self._lines(stream)

        def found() -> re.Match[str] | None:
            for index in range(self._next[key], len(lines)):
                match = re.search(pattern, lines[index])
                if match:
                    self._next[key] = index + 1
                    return match
            if self.proc.poll() is not None and all(not r.is_alive() for r in self.readers):
                raise AssertionError(f"{stream} ended without {pattern!r}: {self.seen}")
            return None

        try:
            return wait_for(found, timeout=timeout)  # type: ignore[no-any-return]
        except TimeoutError:
            raise AssertionError(self._missing(pattern, timeout)) from None

    def expect_sending(
        self, send: Callable[[], object], pattern: str, stream: str = "stdout", timeout: float = 15
    ) -> re.Match[str]:
        """:meth:`expect`, calling ``send`` again every 50 ms until the line comes: for a
        subscriber, whose subscription reaches the publisher a moment after it connects."""

        def attempt() -> re.Match[str] | None:
            send()
            try:
                return self.expect(pattern, stream, timeout=0.05)
            except AssertionError:
                return None

        try:
            return wait_for(attempt, timeout=timeout)  # type: ignore[no-any-return]
        except TimeoutError:
            raise AssertionError(self._missing(pattern, timeout)) from None

    def _missing(self, pattern: str, timeout: float) -> str:
        tail = "\n".join((self.out + self.err)[-20:])
        return f"no line matching {pattern!r} within {timeout} s:\n{tail}"

    def send_signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        """Wait for the process to exit; return its exit code, all its output read."""
        code = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(10)
        return code

    def kill(self) -> None:
        """Kill it and its children (if still running), and close its pipes."""
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

    close = kill


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
