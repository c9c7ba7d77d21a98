"""zmqapp's pytest plugin, registered by entry point: installing zmqapp is enough.

Fixtures:

``zmqapp_client``
    A started :class:`~zmqapp.testing.TestClient` for the app your ``zmqapp_app`` fixture
    returns (define that fixture in your conftest.py).
``zmqapp_client_for``
    A function: ``zmqapp_client_for(app, **options)`` starts and returns a test client for
    any app; every one is stopped when the test ends.
``zmqapp_run``
    A function: ``zmqapp_run(app)`` runs an app for real, in a background thread, with real
    sockets, and returns the running :class:`RunningApp`; stopped when the test ends.

    So that a test never reaches a live system by accident, every TCP endpoint is moved to
    127.0.0.1, **bound and connected alike**: a bind to ``tcp://127.0.0.1:*`` (the OS picks
    the port; ``app.channels[name].bound`` holds it), a connect to a free port where nothing
    listens (``running.connected[name]`` lists them: bind your test's peer there; the port is
    outside the OS's ephemeral range, so no outgoing connection takes it first). Every ipc
    endpoint moves into a temporary directory. ``endpoints={"tasks": "@tcp://..."}`` sets a
    channel's endpoints yourself, and those win; ``free_ports=False`` moves nothing. The app
    runs with the config it has: the file ``ZMQAPP_CONFIG`` names and ``ZMQAPP_*`` variables
    are not read (as :meth:`~zmqapp.App.run` would), so the runner's environment cannot aim
    a test at production either. inproc endpoints stay as they are.
"""

from __future__ import annotations

import copy
import os
import random
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .app import App
from .testing import AppThread, TestClient


@pytest.fixture
def zmqapp_client_for() -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def start(app: App, **options: Any) -> TestClient:
        client = app.test_client(**options)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def zmqapp_client(
    request: pytest.FixtureRequest, zmqapp_client_for: Callable[..., TestClient]
) -> TestClient:
    try:
        app = request.getfixturevalue("zmqapp_app")
    except pytest.FixtureLookupError:
        raise pytest.UsageError(
            "the zmqapp_client fixture needs a zmqapp_app fixture that returns your App; "
            "define one in conftest.py, e.g. @pytest.fixture def zmqapp_app(): return app"
        ) from None
    if not isinstance(app, App):
        raise pytest.UsageError(f"the zmqapp_app fixture returned {app!r}, not a zmqapp App")
    return zmqapp_client_for(app)


class RunningApp(AppThread):
    """An app ``zmqapp_run`` started, and where its endpoints were moved to."""

    def __init__(self, app: App, redirect: Redirect) -> None:
        super().__init__(app)
        #: Channel name -> its endpoints as it runs (``@`` binds, ``>`` connects).
        self.endpoints: dict[str, list[str]] = redirect.endpoints
        #: Channel name -> the addresses it connects to, on 127.0.0.1 where nothing listens
        #: until the test binds a peer there. Channels that only bind are not in it.
        self.connected: dict[str, list[str]] = redirect.connected


@pytest.fixture
def zmqapp_run() -> Iterator[Callable[..., RunningApp]]:
    running: list[tuple[RunningApp, App, Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="zmqapp-")

    def run(
        app: App,
        *,
        free_ports: bool = True,
        endpoints: Mapping[str, str | Iterable[str]] | None = None,
    ) -> RunningApp:
        saved = copy.deepcopy(app.config.get("CHANNELS"))
        redirect = Redirect(app, Path(tmp.name), endpoints or {}, free_ports)
        app.config["CHANNELS"] = redirect.overrides
        try:
            thread = RunningApp(app, redirect)
            thread.start()
        except BaseException:
            app.config["CHANNELS"] = saved if saved is not None else {}
            raise
        running.append((thread, app, saved))
        return thread

    yield run
    try:
        for thread, app, saved in reversed(running):
            thread.stop()
            app.config["CHANNELS"] = saved if saved is not None else {}
    finally:
        tmp.cleanup()


class Redirect:
    """The ``CHANNELS`` config that keeps an app under test on this machine.

    Every TCP endpoint moves to 127.0.0.1: binds to a port the OS picks, connects to a port
    that was free a moment ago (found by binding a throwaway socket). Every ipc endpoint moves
    into ``ipc_dir``, one path for each original path, so a channel that connects where
    another binds still meets it. ``explicit`` endpoints win, channel by channel.
    """

    def __init__(
        self,
        app: App,
        ipc_dir: Path,
        explicit: Mapping[str, str | Iterable[str]],
        free_ports: bool = True,
    ) -> None:
        app.apply_config()
        self.overrides: dict[str, Any] = copy.deepcopy(app.config.get("CHANNELS") or {})
        self.endpoints: dict[str, list[str]] = {}
        self.connected: dict[str, list[str]] = {}
        self._ipc: dict[str, str] = {}
        self._ipc_dir = ipc_dir
        for name, channel in app.channels.items():
            if name in explicit:
                given = explicit[name]
                addresses = [given] if isinstance(given, str) else list(given)
                self.overrides.setdefault(name, {})["endpoint"] = addresses
                self.endpoints[name] = addresses
                continue
            moved = []
            for endpoint in channel.endpoints:
                address = self._move(endpoint.address, endpoint.bind) if free_ports else None
                if address is None:
                    address = endpoint.address
                elif not endpoint.bind:
                    self.connected.setdefault(name, []).append(address)
                moved.append(("@" if endpoint.bind else ">") + address)
            self.overrides.setdefault(name, {})["endpoint"] = moved
            self.endpoints[name] = moved
        unknown = sorted(set(explicit) - set(app.channels))
        if unknown:
            raise ValueError(
                f"zmqapp_run(endpoints=...) names channel {unknown[0]!r}, which app "
                f"{app.name!r} does not declare"
            )

    def _move(self, address: str, bind: bool) -> str | None:
        transport = address.partition("://")[0].lower()
        if transport.startswith("tcp"):  # tcp, and name-resolving variants of it
            return "tcp://127.0.0.1:*" if bind else f"tcp://127.0.0.1:{free_tcp_port()}"
        if transport == "ipc":
            if address not in self._ipc:
                name = os.path.basename(address[len("ipc://") :]) or "socket"
                self._ipc[address] = f"ipc://{self._ipc_dir / f'{len(self._ipc)}-{name}'}"
            return self._ipc[address]
        return None  # inproc stays in the process; other transports are left as they are


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses now, for an address one side connects to
    before the other binds it.

    The port is picked below the OS's range of ephemeral ports (those it hands to outgoing
    connections): a port from that range can be taken, before the test binds it, by an
    outgoing connection, even by the connecting socket itself, since a TCP connect to
    127.0.0.1:P from local port P connects the socket to itself.
    """
    low = _ephemeral_ports()[0]
    for _ in range(200):
        port = random.randrange(10000, max(low, 10001))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # pragma: no cover
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ephemeral_ports() -> tuple[int, int]:
    """The OS's range of ports for outgoing connections (Linux's, else the IANA range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(part) for part in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 49152, 65535


def free_port_overrides(app: App, ipc_dir: Path) -> dict[str, Any]:
    """The ``CHANNELS`` config :class:`Redirect` makes for ``app`` (kept for callers of the
    first version of this plugin)."""
    return Redirect(app, ipc_dir, {}).overrides
