"""A real headless Chromium, driven over the DevTools protocol, for tests that look at pages.

The browser is a child process (the ``spawn`` fixture's :class:`Proc`); the protocol runs over
a WebSocket with Tornado's client on a loop of this helper's own, so tests stay synchronous.
Found as ``$ZMQAPP_CHROMIUM`` or the first of :data:`NAMES` on PATH (Debian: ``apt-get
install chromium``); tests skip, saying so, when there is none.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

from zmqapp.testing import wait_for

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: Headless, offline and quiet: the machine's network is closed, and root needs --no-sandbox.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
)


def find_chromium() -> str | None:
    """The browser to use, or None."""
    named = os.environ.get("ZMQAPP_CHROMIUM")
    if named:
        return shutil.which(named) or (named if os.path.exists(named) else None)
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless browser with one page (a tab)."""

    def __init__(self, spawn: Any, executable: str, profile: Path, size: tuple[int, int]) -> None:
        width, height = size
        self.proc = spawn(
            [executable, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "about:blank"]
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"
        try:
            wait_for(lambda: port_file.exists() and port_file.read_text().count("\n") >= 1, 20)
        except TimeoutError:
            raise AssertionError(
                "the browser did not start:\n" + "\n".join(self.proc.err[-20:])
            ) from None
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            pages = [t for t in json.load(answer) if t.get("type") == "page"]
        self.loop = asyncio.new_event_loop()
        self.ids = 0
        address = pages[0]["webSocketDebuggerUrl"]

        async def connect() -> WebSocketClientConnection:
            return await websocket_connect(address, max_message_size=64 << 20)

        self.ws = self._run(connect())
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _run(self, coroutine: Any, timeout: float = 20) -> Any:
        async def bounded() -> Any:
            return await asyncio.wait_for(coroutine, timeout)

        return self.loop.run_until_complete(bounded())

    def send(self, method: str, **params: Any) -> Any:
        """Call a DevTools method; its result (events that come first are skipped)."""
        self.ids += 1
        ident = self.ids

        async def answer() -> Any:
            await self.ws.write_message(json.dumps({"id": ident, "method": method,
                                                    "params": params}))  # fmt: skip
            while True:
                text = await self.ws.read_message()
                if text is None:
                    raise AssertionError("the browser closed the DevTools connection")
                message = json.loads(text)
                if message.get("id") == ident:
                    if "error" in message:
                        raise AssertionError(f"{method} failed: {message['error']}")
                    return message.get("result", {})

        return self._run(answer())

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 20) -> Any:
        """Poll ``expression`` until it is truthy (an exception counts as false); its value."""
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        try:
            return wait_for(lambda: self.evaluate(guarded), timeout=timeout, interval=0.1)
        except TimeoutError:
            raise AssertionError(f"{expression} stayed false for {timeout} s") from None

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page (not only the window)."""
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        async def closed() -> None:
            self.ws.close()
            while await self.ws.read_message() is not None:  # until the browser says so
                pass

        try:
            self._run(closed(), timeout=5)
        finally:
            self.loop.close()
            self.proc.kill()
