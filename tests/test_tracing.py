"""OpenTelemetry spans across two apps, with the SDK's in-memory exporter.

Each test runs in its own process: a tracer provider can be set once per process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

SETUP = """
import json, threading, zmq
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from zmqapp import App
from zmqapp.testing import AppThread, wait_for

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

def spans():
    out = []
    for s in exporter.get_finished_spans():
        out.append({
            "name": s.name, "kind": s.kind.name, "trace": format(s.context.trace_id, "032x"),
            "span": format(s.context.span_id, "016x"),
            "parent": format(s.parent.span_id, "016x") if s.parent else None,
            "attributes": dict(s.attributes), "status": s.status.status_code.name,
        })
    return out
"""


def run(body: str) -> Any:
    code = SETUP + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(90)
def test_context_crosses_the_wire_from_send_to_process() -> None:
    result = run("""
        back = App("back"); back.config.update(LINGER=0)
        got = []
        back.channel("work", endpoint="@tcp://127.0.0.1:*", type="PULL", trace=True)(got.append)
        plain = App("plain-peer-check"); plain.config.update(LINGER=0)
        with AppThread(back):
            front = App("front"); front.config.update(LINGER=0)
            front.add_channel("work", endpoint=back.channels["work"].bound[0], type="PUSH",
                              trace=True)
            with AppThread(front):
                front.send("work", b"job")
                wait_for(lambda: got)
        print(json.dumps({"got": [g.decode() for g in got], "spans": spans()}))
    """)
    assert result["got"] == ["job"]  # the header frame was taken off before the handler
    spans = {s["name"]: s for s in result["spans"]}
    send, process = spans["send work"], spans["process work"]
    assert send["kind"] == "PRODUCER" and process["kind"] == "CONSUMER"
    assert process["trace"] == send["trace"] and process["parent"] == send["span"]
    for span, operation in ((send, "send"), (process, "process")):
        attributes = span["attributes"]
        assert attributes["messaging.system"] == "zeromq"
        assert attributes["messaging.destination.name"] == "work"
        assert attributes["messaging.operation.name"] == operation
        assert attributes["messaging.operation.type"] == operation
        assert attributes["messaging.message.body.size"] == 3


@pytest.mark.timeout(90)
def test_a_request_is_a_client_span_and_the_server_span_its_child() -> None:
    result = run("""
        import asyncio
        server = App("server"); server.config.update(LINGER=0)
        @server.channel("rpc", endpoint="@tcp://127.0.0.1:*", type="ROUTER", trace=True)
        async def answer(body):
            if body == b"fail":
                raise KeyError("nope")
            return body.upper()
        with AppThread(server):
            client = App("client"); client.config.update(LINGER=0)
            client.add_channel("rpc", endpoint=server.channels["rpc"].bound[0], type="DEALER",
                               trace=True)
            with AppThread(client):
                reply = client.request_sync("rpc", b"hi")
                try:
                    client.request_sync("rpc", b"fail")
                except Exception as exc:
                    failed = type(exc).__name__
        print(json.dumps({"reply": reply.decode(), "failed": failed, "spans": spans()}))
    """)
    assert result["reply"] == "HI" and result["failed"] == "RemoteError"
    spans = result["spans"]
    clients = [s for s in spans if s["name"] == "request rpc"]
    servers = [s for s in spans if s["name"] == "process rpc"]
    assert [s["kind"] for s in clients] == ["CLIENT", "CLIENT"]
    assert len(servers) == 2
    for client, server in zip(clients, servers, strict=True):
        assert server["trace"] == client["trace"] and server["parent"] == client["span"]
    assert servers[1]["status"] == "ERROR"
    assert servers[1]["attributes"]["error.type"] == "KeyError"


@pytest.mark.timeout(90)
def test_plain_peers_never_get_a_frame_they_did_not_ask_for() -> None:
    result = run("""
        ctx = zmq.Context()
        plain_sink = ctx.socket(zmq.PULL); plain_sink.bind("tcp://127.0.0.1:*")
        traced_sink = ctx.socket(zmq.PULL); traced_sink.bind("tcp://127.0.0.1:*")
        app = App("sender"); app.config.update(LINGER=0)
        app.add_channel("plain", endpoint=plain_sink.last_endpoint.decode(), type="PUSH")
        app.add_channel("traced", endpoint=traced_sink.last_endpoint.decode(), type="PUSH",
                        trace=True)
        with AppThread(app):
            app.send("plain", b"body")
            app.send("traced", b"body")
            plain = plain_sink.recv_multipart()
            traced = traced_sink.recv_multipart()
        for s in (plain_sink, traced_sink):
            s.close(linger=0)
        ctx.term()
        print(json.dumps({"plain": len(plain), "traced": [f[:13].decode() for f in traced],
                          "spans": len(spans())}))
    """)
    assert result["plain"] == 1  # tracing is on, but this channel did not ask for context
    assert result["traced"] == ["ZMQAPP-TRACE ", "body"]
    assert result["spans"] == 2  # a PRODUCER span for each send
