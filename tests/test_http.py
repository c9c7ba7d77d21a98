"""The HTTP side over real sockets and real HTTP: probes, /status, /metrics (parsed with
prometheus_client's own parser, counts checked against what was sent), the token, a pool's
totals, JSON logs and the warnings that find a misconfiguration."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zmq
from clitools import ZMQAPP
from prometheus_client.parser import text_string_to_metric_families

from zmqapp import App
from zmqapp.testing import wait_for

TCP = "@tcp://127.0.0.1:*"
APPS = Path(__file__).parent / "apps"


def get(url: str, token: str | None = None) -> tuple[int, str, Any]:
    """(status, body, headers: case-insensitive) of a real HTTP GET."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def url_of(app: App) -> str:
    assert app.runtime is not None and app.runtime.http is not None
    return app.runtime.http.url


def served_app(**config: Any) -> App:
    app = App("served")
    app.config.update(LINGER=0, SHUTDOWN_TIMEOUT=2.0, HTTP="127.0.0.1:0", **config)
    return app


def test_probes_status_and_metrics_count_what_was_sent(running: Any, peer: Any) -> None:
    app = served_app()
    got: list[bytes] = []

    @app.channel("tasks", endpoint=TCP, type="PULL", send_to="out")
    def work(body: bytes) -> bytes | None:
        if body == b"bad":
            raise ValueError("bad task")
        got.append(body)
        return body

    sink = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    app.add_channel("out", endpoint=sink.last_endpoint.decode(), type="PUSH")
    app.channel("json", endpoint=TCP, type="PULL", codec="json")(lambda body: None)
    running(app)
    base = url_of(app)
    assert get(base + "/livez")[0] == 200
    assert get(base + "/readyz")[:2] == (200, "ready\n")
    push = peer(zmq.PUSH, connect=app.channels["tasks"].bound[0])
    for i in range(20):
        push.send(b"%d" % i)
    push.send(b"bad")
    peer(zmq.PUSH, connect=app.channels["json"].bound[0]).send(b"{not json")
    for _ in range(20):
        sink.recv()
    wait_for(lambda: app.channels["tasks"].stats.failed == 1)
    wait_for(lambda: app.channels["json"].stats.decode_failed == 1)

    code, body, headers = get(base + "/status")
    assert code == 200 and headers["Content-Type"] == "application/json"
    status = json.loads(body)
    assert status["app"] == "served" and status["state"] == "running" and status["ready"]
    tasks = status["channels"]["tasks"]
    for key in ("type", "endpoints", "bound", "received", "handled", "errors",
                "decode_failed", "sent", "dropped", "queue", "in_flight", "peers"):  # fmt: skip
        assert key in tasks, key
    assert tasks["type"] == "PULL" and tasks["bound"] == app.channels["tasks"].bound
    assert (tasks["received"], tasks["handled"], tasks["errors"]) == (21, 21, 1)
    assert status["channels"]["out"]["sent"] == 20
    wait_for(lambda: json.loads(get(base + "/status")[1])["channels"]["tasks"]["peers"] == 1)
    assert status["workers"] == []

    code, text, headers = get(base + "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    values = samples(text)

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted({"app": "served", **labels}.items())))]

    assert value("zmqapp_messages_received_total", channel="tasks") == 21
    assert value("zmqapp_messages_processed_total", channel="tasks", status="ok") == 20
    assert value("zmqapp_messages_processed_total", channel="tasks", status="error") == 1
    assert value("zmqapp_messages_processed_total", channel="json", status="decode_failed") == 1
    assert value("zmqapp_messages_sent_total", channel="out") == 20
    assert value("zmqapp_send_queue_depth", channel="out") == 0
    assert value("zmqapp_in_flight", channel="tasks") == 0
    assert value("zmqapp_peers", channel="tasks") == 1
    assert value("zmqapp_message_processing_seconds_count", channel="tasks") == 21
    assert value("zmqapp_message_processing_seconds_bucket", channel="tasks", le="+Inf") == 21
    assert value("zmqapp_loop_lag_seconds") >= 0
    assert values[("zmqapp_info", (("app", "served"), ("version", "0.1.0")))] == 1


def test_requests_drops_and_handshakes_are_counted_by_label(running: Any, peer: Any) -> None:
    server = App("server")
    server.config.update(LINGER=0)

    @server.channel("rpc", endpoint=TCP, type="ROUTER")
    def answer(body: bytes) -> bytes:
        if body == b"fail":
            raise ValueError("no")
        return body

    running(server)
    silent = peer(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    app = served_app()
    app.add_channel("rpc", endpoint=server.channels["rpc"].bound[0], type="DEALER")
    app.add_channel("quiet", endpoint=silent.last_endpoint.decode(), type="DEALER")
    app.add_channel("router", endpoint=TCP, type="ROUTER", handler=lambda b: None)
    app.channel("pair", endpoint=TCP, type="PULL")(lambda b: None)
    running(app)
    assert app.request_sync("rpc", b"hi") == b"hi"
    with pytest.raises(Exception, match="ValueError"):
        app.request_sync("rpc", b"fail")
    with pytest.raises(Exception, match="no reply"):
        app.request_sync("quiet", b"?", timeout=0.1)
    with pytest.raises(Exception, match="no peer with identity"):
        app.send("router", b"x", identity=b"nobody")
    wrong = peer(zmq.PUSH, connect=app.channels["pair"].bound[0])  # right types
    wrong.send(b"fine")
    values = samples(get(url_of(app) + "/metrics")[1])

    def value(name: str, **labels: str) -> float:
        return values.get((name, tuple(sorted({"app": "served", **labels}.items()))), -1)

    assert value("zmqapp_requests_total", channel="rpc", outcome="ok") == 1
    assert value("zmqapp_requests_total", channel="rpc", outcome="remote_error") == 1
    assert value("zmqapp_requests_total", channel="quiet", outcome="timeout") == 1
    assert value("zmqapp_messages_dropped_total", channel="router", reason="unroutable") == 1


def test_a_handshake_refusal_is_counted_by_reason(running: Any, peer: Any) -> None:
    app = served_app()
    app.channel("guarded", endpoint=TCP, type="PULL", deny=["127.0.0.0/8"])(lambda b: None)
    running(app)
    peer(zmq.PUSH, connect=app.channels["guarded"].bound[0]).send(b"x")
    wait_for(lambda: app.channels["guarded"].stats.handshake_failed >= 1)
    values = samples(get(url_of(app) + "/metrics")[1])
    key = ("zmqapp_handshake_failures_total",
           (("app", "served"), ("channel", "guarded"), ("reason", "auth_refused")))  # fmt: skip
    assert values[key] >= 1


def test_the_token_guards_everything_but_the_probes(running: Any) -> None:
    app = served_app(HTTP_TOKEN="s3cret")
    app.channel("c", endpoint=TCP, type="PULL")(lambda b: None)
    running(app)
    base = url_of(app)
    assert get(base + "/livez")[0] == 200
    assert get(base + "/readyz")[0] == 200
    for path in ("/status", "/metrics"):
        code, body, headers = get(base + path)
        assert code == 401 and "Bearer" in body and headers["WWW-Authenticate"].startswith("Bearer")
        assert get(base + path, token="wrong")[0] == 401
        assert get(base + path, token="s3cret")[0] == 200


def test_metrics_without_prometheus_client_say_what_to_install(spawn: Any) -> None:
    code = """
import sys
sys.modules["prometheus_client"] = None
from zmqapp import App
app = App("bare")
app.config.update(HTTP="127.0.0.1:0")
app.channel("c", endpoint="@tcp://127.0.0.1:*", type="PULL")(print)
app.on_start(lambda: print("url", app.runtime.http.url, flush=True))
app.run()
"""
    proc = spawn([sys.executable, "-c", code])
    url = proc.wait_for_line("^url ")[0].split()[1]
    status, body, _ = get(url + "/metrics")
    assert status == 501 and "pip install 'zmqapp[metrics]'" in body
    assert get(url + "/status")[0] == 200  # the rest works without it


def test_livez_fails_when_the_loop_is_held(running: Any, peer: Any) -> None:
    app = served_app(LOOP_LAG_LIMIT=0.3)
    holding = threading.Event()

    @app.channel("c", endpoint=TCP, type="PULL")
    def block(body: bytes) -> None:
        holding.set()
        time.sleep(1.0)  # a plain handler doing blocking work on the loop

    running(app)
    base = url_of(app)
    assert get(base + "/livez")[0] == 200
    peer(zmq.PUSH, connect=app.channels["c"].bound[0]).send(b"x")
    holding.wait(5)
    code, body, _ = get(base + "/livez")  # answered once the loop is free again
    assert code == 503 and "LOOP_LAG_LIMIT" in body
    wait_for(lambda: get(base + "/livez")[0] == 200, timeout=5)


@pytest.mark.timeout(60)
def test_readiness_goes_false_at_sigterm_while_the_drain_runs(spawn: Any, peer: Any) -> None:
    env = {"HANDLER_SECONDS": "0.005", "ZMQAPP_HTTP": "127.0.0.1:0", "ZMQAPP_LINGER": "0"}
    app = spawn([sys.executable, str(APPS / "stop_load.py")], env=env)
    address = app.wait_for_line(r"^bound ")[0].split()[1]
    base = app.wait_for_line(r"^http ")[0].split()[1]
    assert get(base + "/readyz")[0] == 200
    push = peer(zmq.PUSH, connect=address)
    for i in range(600):  # 3 s of work
        push.send(b"%d" % i)
    app.send_signal(signal.SIGTERM)
    app.wait_for_line("^stopping ")
    code, body, _ = get(base + "/readyz")
    assert (code, body) == (503, "stopping\n")  # while the drain is still running
    assert get(base + "/livez")[0] == 200
    assert app.wait(30) == 0
    report = app.wait_for_line("^stopped ")[0]
    assert "handled=600" in report


def test_json_logs(spawn: Any, peer: Any) -> None:
    code = """
from zmqapp import App
app = App("jsonlog")
app.config.update(LOG_FORMAT="json")
@app.channel("tasks", endpoint="@tcp://127.0.0.1:*", type="PULL", codec="json")
def work(body):
    raise RuntimeError("boom")
app.on_start(lambda: print("bound", app.channels["tasks"].bound[0], flush=True))
app.run()
"""
    proc = spawn([sys.executable, "-c", code])
    address = proc.wait_for_line("^bound ")[0].split()[1]
    push = peer(zmq.PUSH, connect=address)
    push.send(b"{broken")
    push.send(b"{}")
    proc.wait_for_line("undecodable", stream="err")
    proc.wait_for_line("boom", stream="err")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    records = [json.loads(line) for line in proc.err if line.startswith("{")]
    assert records and all(
        set(r) >= {"time", "level", "app", "worker", "channel", "peer", "message", "exc"}
        for r in records
    )
    decode = next(r for r in records if "undecodable" in r["message"])
    assert decode["app"] == "jsonlog" and decode["channel"] == "tasks"
    assert decode["peer"] == "127.0.0.1" and decode["level"] == "WARNING"
    failure = next(r for r in records if "failed on" in r["message"])
    assert failure["channel"] == "tasks" and "RuntimeError: boom" in failure["exc"]
    assert all(r["worker"] is None for r in records)


def test_handler_failure_tracebacks_are_rate_limited(
    app: App, running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    @app.channel("c", endpoint=TCP, type="PULL")
    def broken(body: bytes) -> None:
        raise KeyError(body)

    running(app)
    push = peer(zmq.PUSH, connect=app.channels["c"].bound[0])
    for i in range(200):
        push.send(b"%d" % i)
    wait_for(lambda: app.channels["c"].stats.failed == 200)
    wait_for(
        lambda: any("190 more handler failures" in r.getMessage() for r in caplog.records),
        timeout=3,
    )
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 10


def test_no_peer_warnings(caplog: pytest.LogCaptureFixture, running: Any, tmp_path: Any) -> None:
    caplog.set_level(logging.WARNING)
    app = served_app(NO_PEER_WARN=0.3)
    app.add_channel("lonely_out", endpoint=f"ipc://{tmp_path}/nobody", type="PUSH")
    app.add_channel("lonely_in", endpoint=TCP, type="PULL", handler=lambda b: None)

    @app.timer(0.05)
    def produce() -> None:
        app.send("lonely_out", b"anyone?")

    running(app)

    def said(text: str) -> bool:
        return any(text in r.getMessage() for r in caplog.records)

    wait_for(lambda: said("channel 'lonely_out' has had no peer taking messages"), timeout=5)
    wait_for(lambda: said("channel 'lonely_in' is bound at"), timeout=5)


def test_a_pool_counts_the_peers_of_every_endpoint_a_channel_binds(spawn: Any, peer: Any) -> None:
    """A channel bound on two addresses has a proxy, and a monitor, for each: its peers are
    both monitors' (the second once replaced the first)."""
    proc = spawn(
        [sys.executable, "-m", "zmqapp", "run", "--app", str(APPS / "workers_app.py"),
         "--workers", "2", "--set", "CHANNELS.results.endpoint=\"tcp://127.0.0.1:1\"",
         "--set", 'CHANNELS.tasks.endpoint=["tcp://127.0.0.1:*", "tcp://127.0.0.2:*"]',
         "--set", "HTTP=\"127.0.0.1:0\""],
    )  # fmt: skip
    [line] = proc.wait_for_line(r"HTTP: http://", stream="err")
    base = re.search(r"(http://\S+)", line).group(1)  # type: ignore[union-attr]
    lines = proc.wait_for_line(r"channel 'tasks': \S+ is bound here", stream="err", count=2)
    bound = [re.search(r"(tcp://\S+) is bound here", x).group(1) for x in lines]  # type: ignore[union-attr]
    assert len(set(bound)) == 2
    wait_for(lambda: get(base + "/readyz")[0] == 200, timeout=20)
    for address in bound:
        peer(zmq.PUSH, connect=address)

    def peers() -> Any:
        return json.loads(get(base + "/status")[1])["channels"]["tasks"]["peers"]

    wait_for(lambda: peers() == 2, timeout=10)


def test_a_pool_serves_every_workers_numbers(spawn: Any, peer: Any) -> None:
    sink = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    proc = spawn(
        [*ZMQAPP, "run", "--app", str(APPS / "workers_app.py"),
         "--workers", "2", "--set", f"CHANNELS.results.endpoint={sink.last_endpoint.decode()}",
         "--set", "HTTP=\"127.0.0.1:0\""],
    )  # fmt: skip
    [line] = proc.wait_for_line(r"HTTP: http://", stream="err")
    base = re.search(r"(http://\S+)", line).group(1)  # type: ignore[union-attr]
    [bound] = proc.wait_for_line(r"channel 'tasks': \S+ is bound here", stream="err")
    tasks = re.search(r"(tcp://\S+) is bound here", bound).group(1)  # type: ignore[union-attr]
    wait_for(lambda: get(base + "/readyz")[0] == 200, timeout=20)
    push = peer(zmq.PUSH, connect=tasks)
    for i in range(100):
        push.send(b"%d" % i)
    for _ in range(100):
        sink.recv()
    status = json.loads(get(base + "/status")[1])
    assert status["channels"]["tasks"]["received"] == 100
    assert status["channels"]["tasks"]["bound"] == [tasks]
    assert status["channels"]["tasks"]["peers"] == 1  # our PUSH, at the parent's proxy
    assert [w["worker"] for w in status["workers"]] == [0, 1]
    assert all(w["ready"] and w["answering"] for w in status["workers"])
    assert all(0 <= w["loop_lag"] < 5 for w in status["workers"])  # measured, not ever-growing
    values = samples(get(base + "/metrics")[1])
    per_worker = {
        dict(labels)["worker"]: value
        for (name, labels), value in values.items()
        if name == "zmqapp_messages_received_total" and dict(labels)["channel"] == "tasks"
    }
    assert set(per_worker) == {"0", "1"} and sum(per_worker.values()) == 100
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: get(base + "/readyz")[0] == 503 or proc.proc.poll() is not None)
    assert proc.wait(30) == 0


def test_serving_http_on_a_taken_port_fails_the_start(running: Any) -> None:
    first = served_app()
    first.channel("c", endpoint=TCP, type="PULL")(lambda b: None)
    running(first)
    port = url_of(first).rsplit(":", 1)[1]
    second = App("second")
    second.config.update(HTTP=f"127.0.0.1:{port}")
    second.channel("c", endpoint=TCP, type="PULL")(lambda b: None)
    with pytest.raises(Exception, match=r"HTTP could not listen on 127\.0\.0\.1"):
        asyncio.run(second.serve())


def test_mismatched_socket_types_are_named(
    running: Any, peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """libzmq reports a PUSH meeting a PUSH only as a connection that closes at once: a
    connection that closes before its handshake is counted and said, with what pairs."""
    caplog.set_level(logging.WARNING)
    app = served_app()
    app.add_channel("out", endpoint=TCP, type="PUSH")
    running(app)
    peer(zmq.PUSH, connect=app.channels["out"].bound[0])  # a PUSH cannot talk to a PUSH
    wait_for(lambda: any("closed before the ZeroMQ handshake" in r.getMessage()
                         for r in caplog.records))  # fmt: skip
    [line] = [r.getMessage() for r in caplog.records if "before the ZeroMQ" in r.getMessage()][:1]
    assert "does the peer's socket type pair with PUSH (it talks to PULL)" in line
    values = samples(get(url_of(app) + "/metrics")[1])
    labels = (("app", "served"), ("channel", "out"), ("reason", "closed_before_handshake"))
    assert values[("zmqapp_handshake_failures_total", labels)] >= 1
