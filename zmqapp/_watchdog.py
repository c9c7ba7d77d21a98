"""A loop that blocks is named: a thread that notices the event loop has not run for
``LOOP_BLOCKED_WARN`` seconds, and logs where the loop's thread is stuck.

The usual cause is a plain handler doing blocking I/O (``requests.get``, ``time.sleep``, a
database driver): while it runs, nothing else does. The stack comes from the standard
library's ``faulthandler``, the one public way to see another thread's frames.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import tempfile
import threading
import time


class LoopWatchdog:
    """Logs the loop thread's stack once per episode of the loop being held for ``limit``
    seconds or more."""

    def __init__(self, limit: float, logger: logging.Logger) -> None:
        self.limit = limit
        self.logger = logger
        self.beat = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._handle: asyncio.TimerHandle | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._beat()
        self._thread = threading.Thread(target=self._watch, name="zmqapp-watchdog", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        assert self._loop is not None
        self.beat = time.monotonic()
        self._handle = self._loop.call_later(min(0.1, self.limit / 4), self._beat)

    def _watch(self) -> None:
        reported = 0.0
        while not self._done.wait(min(0.1, self.limit / 4)):
            beat = self.beat
            held = time.monotonic() - beat
            if held >= self.limit and reported != beat:
                reported = beat  # once per episode: the next beat starts a new one
                self.logger.warning(
                    "the event loop has been held for %.1f s (LOOP_BLOCKED_WARN is %g s); "
                    "nothing else runs meanwhile. A plain handler doing blocking I/O is the "
                    "usual cause: make it async, or give its channel threaded=True. The "
                    "loop's thread is here:\n%s",
                    held,
                    self.limit,
                    self._stack(),
                )

    def _stack(self) -> str:
        """The loop thread's stack, as faulthandler writes it."""
        with tempfile.TemporaryFile(mode="w+") as dump:
            faulthandler.dump_traceback(dump, all_threads=True)
            dump.seek(0)
            text = dump.read()
        marker = f"Thread 0x{self._loop_thread:016x}"
        blocks = text.split("\n\n")
        for block in blocks:
            if marker in block:
                return block.strip()
        return text.strip()

    def stop(self) -> None:
        self._done.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
