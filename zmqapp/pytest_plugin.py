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
    sockets, and returns the running :class:`~zmqapp.testing.AppThread`; stopped when the test
    ends. With ``free_ports=True`` (the default) every TCP endpoint the app binds is moved to
    ``tcp://127.0.0.1:*`` and every ipc endpoint into a temporary directory, so tests never
    collide on a port; ``app.channels[name].bound`` then holds the real addresses.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterator
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


@pytest.fixture
def zmqapp_run() -> Iterator[Callable[..., AppThread]]:
    running: list[tuple[AppThread, App, Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="zmqapp-")

    def run(app: App, *, free_ports: bool = True) -> AppThread:
        saved = copy.deepcopy(app.config.get("CHANNELS"))
        if free_ports:
            app.config["CHANNELS"] = free_port_overrides(app, Path(tmp.name))
        try:
            thread = AppThread(app).start()
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


def free_port_overrides(app: App, ipc_dir: Path) -> dict[str, Any]:
    """CHANNELS config that moves every bound TCP endpoint to a port the OS picks on
    127.0.0.1, and every bound ipc endpoint into ``ipc_dir``; connects are left alone."""
    app.apply_config()
    overrides = copy.deepcopy(app.config.get("CHANNELS") or {})
    for name, channel in app.channels.items():
        endpoints = []
        for endpoint in channel.endpoints:
            address = endpoint.address
            if endpoint.bind and address.startswith("tcp://"):
                address = "tcp://127.0.0.1:*"
            elif endpoint.bind and address.startswith("ipc://"):
                address = f"ipc://{ipc_dir / Path(address[len('ipc://') :]).name}"
            endpoints.append(("@" if endpoint.bind else ">") + address)
        overrides.setdefault(name, {})["endpoint"] = endpoints
    return overrides
