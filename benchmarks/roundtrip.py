"""Round trips: REQ/REP latency, and requests with 64 in flight against a ROUTER (or a peer
framework's server).

Servers and clients each run in their own process. A server reports its endpoint once it is
bound and serves until it is terminated; a client warms up (connections, caches, the peer
frameworks' lazy connects), then times its requests and returns the result.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import zmq
from procs import report

clock = time.perf_counter

PAYLOAD = b"x" * 64
WINDOW = 64  # requests in flight, in every client of the RPC case
WARMUP = 200


# -- REQ/REP latency ---------------------------------------------------------------------------


def raw_echo_server(endpoint: str, kind: int) -> None:
    """The raw blocking echo loop on a socket of ``kind`` (REP or ROUTER), until terminated."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(kind)
    sock.bind(endpoint)
    report("bound")
    recv, send = sock.recv_multipart, sock.send_multipart
    while True:
        send(recv())


def raw_rep_server(endpoint: str) -> None:
    """The raw REP echo loop."""
    raw_echo_server(endpoint, zmq.REP)


def zmqapp_rep_server(endpoint: str) -> None:
    """A zmqapp REP channel whose handler returns the body."""
    from zmqapp import App

    app = App("bench-rep")

    @app.channel("echo", endpoint="@" + endpoint, type="REP")
    def echo(body: bytes) -> bytes:
        return body

    app.on_start(lambda: report("bound"))
    app.run(install_signal_handlers=False)


def req_client(endpoint: str, count: int) -> dict[str, float]:
    """A raw REQ client: ``count`` round trips, one at a time; their p50 and p99 in µs."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.connect(endpoint)
    send, recv = sock.send, sock.recv
    for _ in range(WARMUP):
        send(PAYLOAD)
        recv()
    samples = []
    for _ in range(count):
        start = clock()
        send(PAYLOAD)
        recv()
        samples.append(clock() - start)
    sock.close(linger=0)
    ctx.term()
    samples.sort()
    return {"p50": statistics.median(samples) * 1e6, "p99": samples[len(samples) * 99 // 100] * 1e6}


# -- RPC servers -------------------------------------------------------------------------------


def raw_router_server(endpoint: str) -> None:
    """The raw blocking ROUTER echo loop."""
    raw_echo_server(endpoint, zmq.ROUTER)


def zmqapp_router_server(endpoint: str, concurrency: int = 0) -> None:
    """A zmqapp ROUTER channel that returns the body: a plain handler, or (``concurrency``
    > 0) a coroutine handler with that many in flight."""
    from zmqapp import App

    app = App("bench-router")
    if concurrency:

        async def echo_async(body: bytes) -> bytes:
            return body

        app.channel("rpc", endpoint="@" + endpoint, type="ROUTER", concurrency=concurrency)(
            echo_async
        )
    else:

        def echo(body: bytes) -> bytes:
            return body

        app.channel("rpc", endpoint="@" + endpoint, type="ROUTER")(echo)
    app.on_start(lambda: report("bound"))
    app.run(install_signal_handlers=False)


def echo_text(msg: str) -> str:
    """zeroapi's RPC function (module level: zeroapi pickles it into its worker process)."""
    return msg


def zeroapi_server(endpoint: str) -> None:
    """zeroapi's ``ZeroServer`` with one worker process (its broker, a libzmq proxy, runs in
    this process). It binds a fixed port and cannot say when its worker is up: the client
    retries its first call instead."""
    from zero import ZeroServer

    logging.getLogger().setLevel(logging.WARNING)  # zeroapi configures INFO logging
    workdir = tempfile.mkdtemp(prefix="zmqapp-bench-zero-")
    os.chdir(workdir)  # it puts an .ipc file in the current directory
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # it exits on SIGTERM
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    server = ZeroServer(host=host, port=int(port))
    server.register_rpc(echo_text)
    report("starting")
    server.run(workers=1)


class _Echo:
    def echo(self, body: bytes) -> bytes:
        return body


def zerorpc_server(endpoint: str) -> None:
    """zerorpc's ``Server`` (gevent) with an echo method."""
    import zerorpc

    server = zerorpc.Server(_Echo())
    server.bind(endpoint)
    report("bound")
    server.run()


# -- RPC clients -------------------------------------------------------------------------------


def _shares(count: int) -> list[int]:
    """``count`` requests split across WINDOW workers."""
    return [count // WINDOW + (1 if i < count % WINDOW else 0) for i in range(WINDOW)]


def raw_dealer_client(endpoint: str, count: int) -> dict[str, float]:
    """A raw blocking DEALER that keeps WINDOW requests in flight."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    send, recv = sock.send_multipart, sock.recv_multipart
    request = [b"", PAYLOAD]
    for _ in range(WARMUP):
        send(request)
        recv()
    start = clock()
    for _ in range(WINDOW):
        send(request)
    for _ in range(count - WINDOW):
        recv()
        send(request)
    for _ in range(WINDOW):
        recv()
    elapsed = clock() - start
    sock.close(linger=0)
    ctx.term()
    return {"rate": count / elapsed}


def raw_correlating_client(endpoint: str, count: int) -> dict[str, float]:
    """:func:`raw_dealer_client` that can tell which reply answers which request, as
    ``app.request`` does: each request carries an 8-byte id frame before the empty delimiter
    (a REP or ROUTER server sends it back), and each reply is matched to its request."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    send, recv = sock.send_multipart, sock.recv_multipart
    pending: dict[bytes, int] = {}
    sequence = iter(range(count + WARMUP))

    def ask() -> None:
        number = next(sequence)
        request_id = number.to_bytes(8, "big")
        pending[request_id] = number
        send([request_id, b"", PAYLOAD])

    def answer() -> None:
        reply = recv()
        if pending.pop(reply[0], None) is None or reply[1] or reply[2] != PAYLOAD:
            raise RuntimeError(f"a reply matches no request: {reply!r}")

    for _ in range(WARMUP):
        ask()
        answer()
    start = clock()
    for _ in range(WINDOW):
        ask()
    for _ in range(count - WINDOW):
        answer()
        ask()
    for _ in range(WINDOW):
        answer()
    elapsed = clock() - start
    sock.close(linger=0)
    ctx.term()
    return {"rate": count / elapsed}


def zmqapp_client(endpoint: str, count: int) -> dict[str, float]:
    """``await app.request(...)`` on a DEALER channel from WINDOW coroutines."""
    from zmqapp import App

    app = App("bench-client")
    app.add_channel("rpc", endpoint=">" + endpoint, type="DEALER", timeout=30)
    result: dict[str, float] = {}

    async def worker(n: int) -> None:
        for _ in range(n):
            await app.request("rpc", PAYLOAD)

    async def drive() -> None:
        try:
            await worker(WARMUP)
            start = clock()
            await asyncio.gather(*(worker(n) for n in _shares(count)))
            result["rate"] = count / (clock() - start)
        finally:
            app.stop()

    tasks: list[asyncio.Task[None]] = []
    app.on_start(lambda: tasks.append(asyncio.get_running_loop().create_task(drive())))
    app.run(install_signal_handlers=False)
    tasks[0].result()  # raise what drive raised
    return result


def zeroapi_client(endpoint: str, count: int) -> dict[str, float]:
    """zeroapi's ``AsyncZeroClient.call`` from WINDOW coroutines."""
    from zero import AsyncZeroClient

    logging.getLogger().setLevel(logging.WARNING)
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    text = PAYLOAD.decode()

    async def main() -> dict[str, float]:
        client = AsyncZeroClient(host, int(port), default_timeout=30_000)
        deadline = clock() + 30
        while True:  # the server cannot say when its worker is up: call until it answers
            try:
                await client.call("echo_text", text, timeout=500)
                break
            except Exception:
                if clock() > deadline:
                    raise
                client.close()
                client = AsyncZeroClient(host, int(port), default_timeout=30_000)

        async def worker(n: int) -> None:
            for _ in range(n):
                await client.call("echo_text", text)

        await worker(WARMUP)
        start = clock()
        await asyncio.gather(*(worker(n) for n in _shares(count)))
        elapsed = clock() - start
        client.close()
        return {"rate": count / elapsed}

    return asyncio.run(main())


def zerorpc_client(endpoint: str, count: int) -> dict[str, float]:
    """zerorpc's ``Client`` from WINDOW greenlets."""
    import gevent.pool
    import zerorpc

    client = zerorpc.Client(timeout=30, heartbeat=None)
    client.connect(endpoint)

    def worker(n: int) -> None:
        for _ in range(n):
            client.echo(PAYLOAD)

    worker(WARMUP)
    pool = gevent.pool.Pool(WINDOW)
    start = clock()
    for n in _shares(count):
        pool.spawn(worker, n)
    pool.join(raise_error=True)
    elapsed = clock() - start
    client.close()
    return {"rate": count / elapsed}
