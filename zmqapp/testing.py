"""Helpers for testing zmqapp apps.

:class:`AppThread` runs an app for real, with real sockets, in a background thread, for
integration tests::

    with AppThread(app) as running:
        peer.connect(app.channels["tasks"].bound[0])
        ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .signals import app_started

if TYPE_CHECKING:
    from .app import App


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.002) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that.

    Raises :class:`TimeoutError` after ``timeout`` seconds: a deadline, never a bare sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout} s: {condition!r}")
        time.sleep(interval)


class AppThread:
    """Run ``app`` in a background thread; a context manager that starts and stops it.

    Entering waits until the app has started (its sockets are bound, so
    ``app.channels[name].bound`` holds the real addresses); leaving stops it and waits for the
    thread, re-raising anything the app raised.
    """

    def __init__(self, app: App, timeout: float = 10.0) -> None:
        self.app = app
        self.timeout = timeout
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"zmqapp-{app.name}", daemon=True)

    def _run(self) -> None:
        try:
            self.app.run(install_signal_handlers=False)
        except BaseException as exc:
            self.error = exc
        finally:
            self._started.set()
            self._stopped.set()

    def start(self) -> AppThread:
        def started(sender: Any) -> None:
            self._started.set()

        app_started.connect(started, sender=self.app, weak=False)
        try:
            self._thread.start()
            if not self._started.wait(self.timeout):
                raise TimeoutError(f"app {self.app.name!r} did not start within {self.timeout} s")
        finally:
            app_started.disconnect(started, sender=self.app)
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        self.app.stop()
        self._thread.join(self.timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"app {self.app.name!r} did not stop within {self.timeout} s")
        if self.error is not None:
            raise self.error

    def __enter__(self) -> AppThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        """True once the app's run() has returned."""
        return self._stopped.is_set()
