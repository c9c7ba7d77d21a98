"""``zmqapp dashboard``: one live page for several apps, for the wall.

A small Tornado server polls each app's ``/status`` (with the token, if the apps have one)
and serves the dashboard page (:mod:`zmqapp._static`) and ``GET /api/system``: every app's
latest status, and the topology that joins them: an edge from each channel that connects to
an address to the channel of another app that binds it, with the connecting channel's
counter that measures its traffic. The page draws the apps, their channels and those edges,
adds each app's ``send_to`` edges, and turns the counters' changes into live rates.

Addresses are placed on the host of the app's URL: ``tcp://*:5557`` bound by the app at
``http://ingest:9100`` is reached by a ``tcp://ingest:5557`` connect, and ``127.0.0.1``
means the machine of the app that says it. An address that no watched app binds is drawn as
an outside peer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tornado.escape
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web

from ._graph import LOCAL_HOSTS as GRAPH_LOCAL_HOSTS
from ._graph import RECEIVERS, WILDCARD_HOSTS, connects_to, flows_from_connector, split_address
from ._static import asset, page
from .live import LiveError, Unreachable, parse_status, unreachable

#: Seconds a poll of every app is reused for other viewers of the page.
FRESH = 0.5
#: Seconds to wait for an app's ``/status``.
POLL_TIMEOUT = 2.0
LOCAL_HOSTS = GRAPH_LOCAL_HOSTS | {"ip6-localhost"}  # zmqapp graph's, and the IPv6 name


@dataclass
class Watched:
    """One app the dashboard polls, with what it last answered."""

    id: str
    url: str
    status: dict[str, Any] | None = None
    error: str | None = None
    #: When ``status`` was fetched (seconds since the epoch).
    fetched: float = 0.0
    #: True when ``error`` will not go away by itself (a refused token, not a zmqapp app).
    fatal: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "status": self.status,
            "error": self.error,
            "fetched": self.fetched,
        }


# -- topology ------------------------------------------------------------------------------------


def host_of(url: str) -> str:
    """The host of an app's URL, with every name for this machine made one."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return "127.0.0.1" if host in LOCAL_HOSTS else host


def _tcp(host: str, port: str) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def reaches(bound: str, bound_host: str, connect: str, connect_host: str) -> bool:
    """True if a connect to ``connect`` from the app on ``connect_host`` reaches a socket
    bound to ``bound`` by the app on ``bound_host``."""
    b_transport, b_host, b_port = split_address(bound)
    c_transport, c_host, c_port = split_address(connect)
    if b_transport != c_transport:
        return False
    if b_transport == "tcp":
        if b_host in WILDCARD_HOSTS or b_host in LOCAL_HOSTS:
            b_host = bound_host
        if c_host in LOCAL_HOSTS:
            c_host = connect_host
        return connects_to(_tcp(b_host, b_port), _tcp(c_host, c_port))
    if b_transport == "ipc":
        return bound_host == connect_host and b_port == c_port
    return connects_to(bound, connect)


def system_edges(apps: Sequence[Watched]) -> list[dict[str, Any]]:
    """The edges between the apps' channels (``send_to`` edges are the page's to add).

    Each edge: ``from`` and ``to`` (``{"app", "channel"}``, or ``{"outside": address}``) in
    the direction messages go, ``address``, ``types`` (from's and to's socket types),
    ``topics`` (a SUB side's subscriptions) and ``via``: the connecting channel whose
    ``counter`` (``sent`` or ``received``) measures the edge, times ``share`` when the channel
    connects to several addresses.
    """
    binds: list[tuple[Watched, str, str, str]] = []  # app, channel, type, address
    connects: list[tuple[Watched, str, dict[str, Any], str, int]] = []
    for app in apps:
        if app.status is None:
            continue
        for name, channel in (app.status.get("channels") or {}).items():
            endpoints = [str(e) for e in channel.get("endpoints") or []]
            outgoing = [e[1:] for e in endpoints if e.startswith(">")]
            for address in outgoing:
                connects.append((app, name, channel, address, len(outgoing)))
            bound = [str(a) for a in channel.get("bound") or []]
            for address in bound or [e[1:] for e in endpoints if e.startswith("@")]:
                binds.append((app, name, str(channel.get("type", "")), address))
    edges: list[dict[str, Any]] = []
    for app, name, channel, address, count in connects:
        kind = str(channel.get("type", ""))
        here = host_of(app.url)
        targets = [
            (other, other_name, other_type)
            for other, other_name, other_type, bound in binds
            if (other is not app or other_name != name)
            and (other is app or split_address(address)[0] != "inproc")
            and reaches(bound, host_of(other.url), address, here)
        ]
        via = {
            "app": app.id,
            "channel": name,
            "counter": "received" if kind in RECEIVERS else "sent",
            "share": 1.0 / (count * max(1, len(targets))),
        }
        subscriptions = list(channel.get("subscribe") or [])
        if not targets:
            outside = {"outside": address}
            ours = {"app": app.id, "channel": name}
            forward = flows_from_connector(kind, None)
            edges.append(
                {
                    "from": ours if forward else outside,
                    "to": outside if forward else ours,
                    "address": address,
                    "types": [kind, ""] if forward else ["", kind],
                    "topics": subscriptions,
                    "via": via,
                }
            )
            continue
        for other, other_name, other_type in targets:
            ours = {"app": app.id, "channel": name}
            theirs = {"app": other.id, "channel": other_name}
            other_channel = (other.status or {}).get("channels", {}).get(other_name, {})
            topics = subscriptions or list(other_channel.get("subscribe") or [])
            forward = flows_from_connector(kind, other_type)
            edges.append(
                {
                    "from": ours if forward else theirs,
                    "to": theirs if forward else ours,
                    "address": address,
                    "types": [kind, other_type] if forward else [other_type, kind],
                    "topics": topics,
                    "via": via,
                }
            )
    return edges


# -- polling -------------------------------------------------------------------------------------


async def fetch_status_async(
    client: tornado.httpclient.AsyncHTTPClient,
    url: str,
    token: str | None,
    timeout: float = POLL_TIMEOUT,
) -> Any:
    """:func:`zmqapp.live.fetch_status` on a Tornado loop."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = tornado.httpclient.HTTPRequest(
        url + "/status", headers=headers, connect_timeout=timeout, request_timeout=timeout
    )
    try:
        response = await client.fetch(request, raise_error=False)
    except Exception as exc:  # a Tornado client that could not even start the request
        raise unreachable(url, exc) from None
    if response.code == 599:
        raise unreachable(url, response.error or OSError("no answer"))
    return parse_status(url, response.code, response.body or b"", token)


class Dashboard:
    """The apps a dashboard watches, polled at most every :data:`FRESH` seconds whatever the
    number of viewers."""

    def __init__(self, urls: Sequence[str], token: str | None = None) -> None:
        self.apps = [Watched(f"a{index}", url) for index, url in enumerate(urls)]
        self.token = token
        self.client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        self._polled: asyncio.Future[dict[str, Any]] | None = None
        self._polled_at = 0.0

    async def system(self) -> dict[str, Any]:
        """Every app's latest status and the edges between them (``GET /api/system``)."""
        now = time.monotonic()
        if self._polled is None or (self._polled.done() and now - self._polled_at >= FRESH):
            self._polled_at = now
            self._polled = asyncio.ensure_future(self._poll())
        return await asyncio.shield(self._polled)

    async def _poll(self) -> dict[str, Any]:
        async def one(app: Watched) -> None:
            try:
                status = await fetch_status_async(self.client, app.url, self.token)
            except LiveError as exc:
                app.error = str(exc)  # the last status stays, drawn as stale
                app.fatal = not isinstance(exc, Unreachable)
                return
            app.status, app.error, app.fetched, app.fatal = status, None, time.time(), False

        await asyncio.gather(*(one(app) for app in self.apps))
        return {
            "apps": [app.as_json() for app in self.apps],
            "edges": system_edges(self.apps),
            "time": time.time(),
        }

    def close(self) -> None:
        self.client.close()


class _Base(tornado.web.RequestHandler):
    def initialize(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def log_exception(self, *args: Any) -> None:  # pragma: no cover - a zmqapp bug
        logging.getLogger("zmqapp").exception("dashboard: %s failed", self.request.uri)


class _Page(_Base):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(page("api/system", "zmqapp dashboard"))


class _Asset(_Base):
    def get(self, name: str) -> None:
        found = asset(name)
        if found is None:
            self.set_status(404)
            self.finish(f"no such file: {name}\n")
            return
        body, content_type = found
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-cache")
        self.finish(body)


class _System(_Base):
    async def get(self) -> None:
        document = await self.dashboard.system()
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(tornado.escape.json_encode(document))


def application(dashboard: Dashboard) -> tornado.web.Application:
    """The dashboard's routes: ``/``, ``/static/NAME`` and ``/api/system``."""
    kwargs = {"dashboard": dashboard}
    return tornado.web.Application(
        [
            (r"/", _Page, kwargs),
            (r"/static/([^/]+)", _Asset, kwargs),
            (r"/api/system", _System, kwargs),
        ]
    )


def serve_dashboard(
    urls: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    announce: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> None:
    """Serve the dashboard of the apps at ``urls`` until Ctrl-C or SIGTERM.

    Each app is polled once first: one that refuses (a missing or wrong token) or is not a
    zmqapp app is an error (:class:`~zmqapp.live.LiveError`); one that does not answer is
    named with ``warn`` and drawn as not answering until it does.
    """
    asyncio.run(_serve(urls, host, port, token, announce, warn))


async def _serve(
    urls: Sequence[str],
    host: str,
    port: int,
    token: str | None,
    announce: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    dashboard = Dashboard(urls, token)
    server: tornado.httpserver.HTTPServer | None = None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        await dashboard.system()
        for app in dashboard.apps:
            if app.error and app.fatal:
                raise LiveError(app.error)
            if app.error:
                warn(f"warning: {app.error}; it is shown as not answering until it does")
        try:
            sockets = tornado.netutil.bind_sockets(port, host or None, family=socket.AF_UNSPEC)
        except OSError as exc:
            raise LiveError(
                f"the dashboard cannot listen on {host or '*'}:{port} "
                f"({exc.strerror or exc}); choose another --port (0 for one the OS picks)"
            ) from None
        server = tornado.httpserver.HTTPServer(application(dashboard))
        server.add_sockets(sockets)
        bound_host, bound_port = sockets[0].getsockname()[:2]
        shown = "127.0.0.1" if bound_host in WILDCARD_HOSTS else bound_host
        shown = f"[{shown}]" if ":" in shown else shown
        announce(f"dashboard of {len(urls)} app(s): http://{shown}:{bound_port}/ (Ctrl-C to stop)")
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if server is not None:
            server.stop()
            await server.close_all_connections()
        dashboard.close()
