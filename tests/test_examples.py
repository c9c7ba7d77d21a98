"""Every example runs as it is."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import zmq

from zmqapp.testing import wait_for

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_runs_and_exits_zero() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "got 20 results back" in proc.stdout
    assert "the worker replied b'World'" in proc.stdout
    assert "weather: 10001 23C sunny" in proc.stdout
    assert "exit code 0" in proc.stdout


def test_seed_example(peer: Any, running: Any, capsys: Any) -> None:
    app = load("seed").app
    pull = peer(zmq.PUSH, bind="tcp://127.0.0.1:*")
    ticker = peer(zmq.PUB, bind="tcp://127.0.0.1:*")
    app.config["CHANNELS"] = {
        "pull": {"endpoint": pull.last_endpoint.decode()},
        "ticker": {"endpoint": ticker.last_endpoint.decode()},
    }
    app.config["LINGER"] = 0
    running(app)
    pull.send(b"work")
    seen: list[str] = []

    def printed(text: str) -> bool:
        seen.append(capsys.readouterr().out)
        return any(text in chunk for chunk in seen)

    wait_for(lambda: printed("pulled b'work'"))

    def tick() -> bool:
        ticker.send(b"ACME 12.5")
        ticker.send(b"OTHER 1.0")
        return printed("tick b'ACME 12.5'")

    wait_for(tick, interval=0.01)
    assert not any("OTHER" in chunk for chunk in seen)


def test_five_minutes_example(peer: Any, running: Any, capsys: Any) -> None:
    app = load("five_minutes").app
    tasks = peer(zmq.PUSH, bind="tcp://127.0.0.1:*")
    results = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    app.config["CHANNELS"] = {
        "tasks": {"endpoint": tasks.last_endpoint.decode()},
        "results": {"endpoint": results.last_endpoint.decode()},
        "hello": {"endpoint": "tcp://127.0.0.1:*"},
        "weather": {"endpoint": "inproc://unused-weather"},
    }
    app.config["LINGER"] = 0
    running(app)
    tasks.send(b"shout")
    assert results.recv() == b"SHOUT"
    req = peer(zmq.REQ, connect=app.channels["hello"].bound[0])
    req.send(b"Hello")
    assert req.recv() == b"World"


# -- the examples tested with the test client, as users would write their tests -------------


def test_seed_with_the_test_client(capsys: Any) -> None:
    app = load("seed").app
    with app.test_client() as client:
        client.send("pull", b"work")
        client.send("ticker", b"ACME 12.5")
        client.send("ticker", b"OTHER 1.0")  # not subscribed: ZeroMQ filters it out
    assert capsys.readouterr().out.splitlines() == ["pulled b'work'", "tick b'ACME 12.5'"]


def test_five_minutes_with_the_test_client(capsys: Any) -> None:
    app = load("five_minutes").app
    with app.test_client() as client:
        client.send("tasks", b"shout")
        assert client.sent("results") == [b"SHOUT"]
        assert client.request("hello", b"Hello") == b"World"
        client.send("weather", b"10001 23C")
    assert "weather: 10001 23C" in capsys.readouterr().out


def test_orders_forwards_and_publishes() -> None:
    orders = load("orders")
    with orders.app.test_client() as client:
        client.send("orders", {"id": "A1", "item": "tea", "quantity": 3})
        client.send("orders", {"id": "A2", "item": "cake", "quantity": 5})  # not enough cake
        assert client.sent("fulfilment") == [{"order": "A1", "item": "tea", "quantity": 3}]
        assert client.sent("events") == [
            {"status": "open", "items": ["cake", "tea"]},
            {"order": "A1", "status": "accepted"},
            {"order": "A2", "status": "rejected"},
        ]
        assert [frames[0] for frames in client.sent_frames("events")] == [
            b"service", b"orders", b"orders",
        ]  # fmt: skip
        assert client.request("stock", "tea") == {"item": "tea", "left": 7}


def test_orders_rejects_what_does_not_fit() -> None:
    orders = load("orders")
    with orders.app.test_client(raise_errors=False) as client:
        client.send("orders", {"id": "A3", "item": "tea", "quantity": "lots"})
        assert client.sent("fulfilment") == []
        [error] = client.errors
        assert "does not fit Order" in str(error) and "quantity" in str(error)


def test_the_service_example_serves_its_http_side(spawn: Any, peer: Any) -> None:
    import json
    import signal
    import urllib.request

    env = {"ZMQAPP_HTTP": "127.0.0.1:0", "ZMQAPP_CHANNELS__lookups__endpoint": "@tcp://127.0.0.1:*"}
    proc = spawn([sys.executable, str(EXAMPLES / "service.py")], env=env)
    [line] = proc.wait_for_line(r'"message": "HTTP: http://', stream="err")
    url = json.loads(line)["message"].split()[1]

    def fetch(path: str) -> str:
        with urllib.request.urlopen(url + path, timeout=10) as response:
            return str(response.read().decode())

    wait_for(lambda: fetch("/readyz") == "ready\n")
    address = json.loads(fetch("/status"))["channels"]["lookups"]["bound"][0]
    dealer = peer(zmq.DEALER, connect=address)
    dealer.send_multipart([b"", b'{"item": "tea"}'])
    assert dealer.recv_multipart() == [b"", b'{"item":"tea","left":7}']
    metric = 'zmqapp_messages_received_total{app="lookups",channel="lookups"} 1.0'
    assert metric in fetch("/metrics")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
