"""Logging problems that a flood could repeat thousands of times a second.

Bad input from the network and a handler that fails on every message must not flood the
log: :class:`ProblemLog` writes at most ``burst`` lines per channel and kind of problem per
``period`` seconds, and then one summary of how many it left out, written by a timer as soon
as the window closes (not when the next problem happens to come).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

#: What a summary line calls each kind of problem.
KIND_TEXT = {
    "decode_failed": "undecodable messages",
    "handler_failed": "handler failures",
    "too_large": "oversized messages",
    "handshake": "connections closed before their handshake",
}


@dataclass
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0
    timer: asyncio.TimerHandle | None = None


class ProblemLog:
    """Rate-limited problem reports, per (channel, kind)."""

    def __init__(
        self,
        logger: logging.Logger,
        loop: asyncio.AbstractEventLoop | None = None,
        burst: int = 10,
        period: float = 1.0,
    ) -> None:
        self.logger = logger
        self.loop = loop
        self.burst = burst
        self.period = period
        self._windows: dict[tuple[str, str], _Window] = {}

    def report(
        self,
        channel: str,
        kind: str,
        message: str,
        *args: Any,
        level: int = logging.WARNING,
        exc_info: BaseException | None = None,
        peer: str | None = None,
    ) -> None:
        """Log one problem of ``kind`` on ``channel`` unless this window's burst is spent."""
        now = time.monotonic()
        key = (channel, kind)
        window = self._windows.get(key)
        if window is None or now - window.start >= self.period:
            if window is not None:
                self._summarise(key, window)
            window = self._windows[key] = _Window(now)
        if window.logged < self.burst:
            window.logged += 1
            self.logger.log(
                level,
                message,
                *args,
                exc_info=exc_info,
                extra={"channel": channel, "peer": peer},
            )
            return
        window.suppressed += 1
        if window.timer is None and self.loop is not None and not self.loop.is_closed():
            delay = max(0.0, window.start + self.period - now)
            window.timer = self.loop.call_later(delay, self._close_window, key, window)

    def _close_window(self, key: tuple[str, str], window: _Window) -> None:
        window.timer = None
        if self._windows.get(key) is window:
            del self._windows[key]
        self._summarise(key, window)

    def _summarise(self, key: tuple[str, str], window: _Window) -> None:
        if window.timer is not None:
            window.timer.cancel()
            window.timer = None
        if window.suppressed:
            channel, kind = key
            self.logger.warning(
                "channel %r: %d more %s were not logged (at most %d per %g s)",
                channel,
                window.suppressed,
                KIND_TEXT.get(kind, kind),
                self.burst,
                self.period,
                extra={"channel": channel, "peer": None},
            )
            window.suppressed = 0

    def flush(self) -> None:
        """Write every pending summary now (the app is stopping)."""
        for key, window in list(self._windows.items()):
            self._summarise(key, window)
        self._windows.clear()
