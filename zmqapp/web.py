"""The HTTP side: probes, metrics and status, served with ``tornado.web`` on the app's own loop.

Turned on by the ``HTTP`` config key (``"127.0.0.1:9100"``, ``":9100"`` for every interface,
``"127.0.0.1:0"`` for a port the OS picks) or ``zmqapp run --http ADDR``:

``GET /livez``
    200 while the event loop answers; 503 when it ran a timer more than ``LOOP_LAG_LIMIT``
    seconds late.
``GET /readyz``
    200 once every channel is bound or connected and the ``on_start`` hooks have finished;
    503 before that, and from the moment a stop begins (the server answers until the drain
    has ended, so a load balancer stops sending first).
``GET /metrics``
    Prometheus text (needs ``zmqapp[metrics]``; without it, 501 saying so).
``GET /status``
    JSON: the app, its state and every channel's counters, queue, in-flight work and peers.
``GET /tap/{channel}``
    The channel's messages as they pass, as JSON lines (see :mod:`zmqapp.tap`).
``GET /``
    A live dashboard: one page (``zmqapp/static/``) that polls ``/status`` every second and
    draws the channels with their rates, queues, peers, in-flight work, errors and latency.

With ``HTTP_TOKEN`` set, everything but the probes needs ``Authorization: Bearer TOKEN``. A
browser cannot send that header, so ``/?token=TOKEN`` sets a cookie (HttpOnly, SameSite
Strict, derived from the token, not the token itself) that stands for it, and sends the
browser on to ``/`` so that the token leaves the address bar.
The same server runs in a ``--workers`` parent for the whole pool (see
:mod:`zmqapp.workers`): whatever serves it is a :class:`Source`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from typing import Any, Protocol

import tornado.httpserver
import tornado.iostream
import tornado.web

from . import __version__
from ._static import asset, page
from .errors import NotRunning, SetupError
from .metrics import MissingPrometheus, exposition
from .tap import Tap

log = logging.getLogger("zmqapp")


class LoopLag:
    """How late the running loop runs a timer: measured every ``tick`` seconds."""

    def __init__(self, tick: float = 0.25) -> None:
        self.tick = tick
        #: The lateness of the last tick, in seconds.
        self.lag = 0.0
        self.last = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        expected = loop.time() + self.tick
        self._handle = loop.call_at(expected, self._ticked, loop, expected)

    def _ticked(self, loop: asyncio.AbstractEventLoop, expected: float) -> None:
        self.lag = max(0.0, loop.time() - expected)
        self.last = time.monotonic()
        expected = loop.time() + self.tick
        self._handle = loop.call_at(expected, self._ticked, loop, expected)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def current(self) -> float:
        """The lag now: the last tick's, or how overdue the next one is, if more."""
        return max(self.lag, time.monotonic() - self.last - self.tick)

    def live(self, limit: float) -> tuple[bool, str]:
        lag = self.current()
        if lag > limit:
            return False, f"the event loop is {lag:.1f} s late (LOOP_LAG_LIMIT is {limit:g} s)"
        return True, ""


class Source(Protocol):
    """What the HTTP side shows: one app's run, or a ``--workers`` pool."""

    def live(self) -> tuple[bool, str]:
        """(alive, why not)."""
        ...

    def ready(self) -> tuple[bool, str]:
        """(ready, why not)."""
        ...

    async def snapshots(self) -> list[dict[str, Any]]:
        """One status snapshot per process (a ``worker`` key in each, in a pool)."""
        ...

    async def status(self) -> dict[str, Any]:
        """The ``/status`` document."""
        ...

    def open_tap(self, name: str) -> Tap:
        """Start watching channel ``name`` (raises NotRunning for an unknown channel)."""
        ...

    def close_tap(self, name: str, tap: Tap) -> None: ...


def parse_address(value: str) -> tuple[str, int]:
    """``"host:port"``, ``":port"`` (every interface) or ``"[v6]:port"`` as (host, port)."""
    text = str(value).strip()
    if text.startswith(("http://", "https://")):
        text = text.split("://", 1)[1].rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise SetupError(
            f"HTTP {value!r} is not an address to serve on; write it as '127.0.0.1:9100', "
            "':9100' (every interface) or '127.0.0.1:0' (a port the OS picks)"
        )
    host = host.strip("[]") or ""
    return host, int(port)


class Handler(tornado.web.RequestHandler):
    """Base of every endpoint: the source, the token check, plain-text errors."""

    #: Probes answer without the token: orchestrators call them.
    guarded = True

    def initialize(self, source: Source, token: str | None) -> None:
        self.source = source
        self.token = token

    def prepare(self) -> None:
        if self.guarded and self.token and not self.authorized(self.token):
            self.set_header("WWW-Authenticate", 'Bearer realm="zmqapp"')
            self.unauthorized()

    def authorized(self, token: str) -> bool:
        """The request carries ``Authorization: Bearer TOKEN``, or the dashboard's cookie."""
        given = self.request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        name, value = session_cookie(token)
        cookie = self.get_cookie(name)
        return cookie is not None and hmac.compare_digest(cookie.encode(), value.encode())

    def unauthorized(self) -> None:
        self.plain(401, "this endpoint needs Authorization: Bearer <HTTP_TOKEN>\n")

    def plain(self, status: int, text: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(text)

    def write_json(self, document: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(document, separators=(",", ":"), allow_nan=False))

    def log_exception(self, *args: Any) -> None:  # pragma: no cover - a zmqapp bug
        log.exception("HTTP %s %s failed", self.request.method, self.request.uri)


class Livez(Handler):
    guarded = False

    def get(self) -> None:
        alive, why = self.source.live()
        self.plain(200 if alive else 503, "ok\n" if alive else f"{why}\n")


class Readyz(Handler):
    guarded = False

    def get(self) -> None:
        ready, why = self.source.ready()
        self.plain(200 if ready else 503, "ready\n" if ready else f"{why}\n")


class Metrics(Handler):
    async def get(self) -> None:
        try:
            accept = self.request.headers.get("Accept", "")
            body, content_type = exposition(await self.source.snapshots(), __version__, accept)
        except MissingPrometheus as exc:
            self.plain(501, str(exc))
            return
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


class Status(Handler):
    async def get(self) -> None:
        self.write_json(await self.source.status())


class TapStream(Handler):
    """``GET /tap/{channel}``: the channel's messages as JSON lines (see :mod:`zmqapp.tap`)."""

    tap: Tap | None = None

    async def get(self, name: str) -> None:
        count = self.get_query_argument("count", None)
        left = int(count) if count is not None and count.isdigit() else None
        try:
            tap = self.tap = self.source.open_tap(name)
        except NotRunning as exc:
            self.plain(404, f"{exc}\n")
            return
        except SetupError as exc:  # a pool: taps are per process
            self.plain(501, f"{exc}\n")
            return
        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-store")
        try:
            await self.flush()
            while not tap.closed and (left is None or left > 0):
                await tap.wait(timeout=5.0)
                lines = tap.lines(left)
                if left is not None:
                    left -= sum(1 for line in lines if '"direction"' in line)
                # An empty line now and then finds out when the reader has gone.
                self.write("".join(f"{line}\n" for line in lines) or "\n")
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            self.source.close_tap(name, tap)
        try:
            self.finish()
        except (RuntimeError, tornado.iostream.StreamClosedError):
            pass  # the reader left first

    def on_connection_close(self) -> None:
        if self.tap is not None:
            self.tap.close()


def session_cookie(token: str) -> tuple[str, str]:
    """The name and value of the cookie that stands for ``token`` in a browser. Both are
    derived from the token, so apps with different tokens on one host keep theirs apart."""
    name = "zmqapp_" + hashlib.sha256(token.encode()).hexdigest()[:12]
    value = hmac.new(token.encode(), b"zmqapp dashboard", hashlib.sha256).hexdigest()
    return name, value


class Page(Handler):
    """``GET /``: the live dashboard of this app (or pool), polling ``/status``."""

    def prepare(self) -> None:
        given = self.get_query_argument("token", None)
        if (
            given is not None
            and self.token
            and hmac.compare_digest(given.encode(), self.token.encode())
        ):
            name, value = session_cookie(self.token)
            self.set_cookie(name, value, path="/", httponly=True, samesite="Strict")
            self.redirect("./")  # the token leaves the address bar and the history
            return
        super().prepare()

    def unauthorized(self) -> None:
        self.plain(
            401,
            "this dashboard needs the app's HTTP_TOKEN: open it once as /?token=HTTP_TOKEN "
            "(a cookie then stands for the token)\n",
        )

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(page("status", "zmqapp"))


class Asset(Handler):
    """``GET /static/NAME``: the dashboard's script and style sheet."""

    def get(self, name: str) -> None:
        found = asset(name)
        if found is None:
            self.plain(404, f"no such file: {name}\n")
            return
        body, content_type = found
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-cache")
        self.finish(body)


class HttpServer:
    """The app's (or pool's) HTTP server, on the running loop."""

    def __init__(self, source: Source, address: str, *, token: str | None = None) -> None:
        self.host, self.port = parse_address(address)
        self.token = token or None
        kwargs = {"source": source, "token": self.token}
        handlers: list[Any] = [
            (r"/livez", Livez, kwargs),
            (r"/readyz", Readyz, kwargs),
            (r"/metrics", Metrics, kwargs),
            (r"/status", Status, kwargs),
            (r"/tap/([^/]+)", TapStream, kwargs),
            (r"/", Page, kwargs),
            (r"/static/([^/]+)", Asset, kwargs),
        ]
        self.application = tornado.web.Application(handlers, compress_response=False)
        self.server: tornado.httpserver.HTTPServer | None = None
        #: ``http://host:port`` once started (the port the OS picked, for port 0).
        self.url = ""

    def start(self) -> None:
        """Listen (before any socket of the app binds, so a port clash fails the start)."""
        try:
            if self.host:
                family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
                listener = socket.create_server((self.host, self.port), family=family)
            elif socket.has_dualstack_ipv6():
                listener = socket.create_server(
                    ("", self.port), family=socket.AF_INET6, dualstack_ipv6=True
                )
            else:  # pragma: no cover - hosts without IPv6
                listener = socket.create_server(("", self.port))
        except OSError as exc:
            raise SetupError(
                f"HTTP could not listen on {self.host or '*'}:{self.port}: {exc.strerror or exc}; "
                "choose another port (or 0 for one the OS picks)"
            ) from None
        listener.setblocking(False)
        self.server = tornado.httpserver.HTTPServer(self.application, xheaders=False)
        self.server.add_sockets([listener])
        port = listener.getsockname()[1]
        if not self.host:
            host = "127.0.0.1"  # every interface: this one answers too
        elif listener.family == socket.AF_INET6:
            host = f"[{self.host}]"
        else:
            host = self.host
        self.url = f"http://{host}:{port}"
        log.info("HTTP: %s (/livez /readyz /metrics /status /tap, and a dashboard at /)", self.url)

    async def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()
            self.server = None
