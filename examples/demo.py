"""zmqapp demo: two apps in two processes, talking over real TCP sockets on 127.0.0.1.

* the **worker** is ``examples/five_minutes.py``, unchanged, started as a child process; its
  endpoints come from ``ZMQAPP_CHANNELS__*`` environment variables, not from its code;
* the **driver** (this file) binds the other ends: it pushes tasks and collects results,
  publishes weather, and asks the worker's REP channel for a greeting with ``app.request``.

Then it stops the worker with SIGTERM and checks it stopped gracefully. Exits 0 on success.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

from zmqapp import App

HERE = Path(__file__).parent
TASKS = 20

driver = App("driver")
results: list[bytes] = []
weather_lines: list[str] = []

driver.add_channel("tasks", endpoint="@tcp://127.0.0.1:*", type="PUSH")
driver.add_channel("weather", endpoint="@tcp://127.0.0.1:*", type="PUB")
driver.add_channel("hello", type="REQ")  # endpoint: from config, see __main__


@driver.channel("results", endpoint="@tcp://127.0.0.1:*", type="PULL")
def collect(body: bytes) -> None:
    results.append(body)


def free_port() -> int:
    with zmq.Context() as ctx, ctx.socket(zmq.REP) as probe:
        port = probe.bind_to_random_port("tcp://127.0.0.1")
        probe.unbind(probe.last_endpoint)
        return port


def start_worker(hello_port: int) -> subprocess.Popen[str]:
    bound = {name: driver.channels[name].bound[0] for name in ("tasks", "results", "weather")}
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "ZMQAPP_CHANNELS__tasks__endpoint": bound["tasks"],
        "ZMQAPP_CHANNELS__results__endpoint": bound["results"],
        "ZMQAPP_CHANNELS__weather__endpoint": bound["weather"],
        "ZMQAPP_CHANNELS__hello__endpoint": f"@tcp://127.0.0.1:{hello_port}",
    }
    for key in sorted(k for k in env if k.startswith("ZMQAPP_")):
        print(f"  {key}={env[key]}")
    return subprocess.Popen(
        [sys.executable, str(HERE / "five_minutes.py")],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_worker_output(worker: subprocess.Popen[str]) -> None:
    assert worker.stdout is not None
    for line in worker.stdout:
        weather_lines.append(line.rstrip())


async def scenario() -> None:
    print(
        "driver: bound",
        ", ".join(f"{n}={c.bound[0]}" for n, c in driver.channels.items() if c.bound),
    )
    print("driver: starting the worker (examples/five_minutes.py) with")
    hello_port = int(driver.channels["hello"].endpoints[0].address.rsplit(":", 1)[1])
    worker = start_worker(hello_port)
    threading.Thread(target=read_worker_output, args=(worker,), daemon=True).start()
    try:
        # 1. REQ/REP: the driver's own REQ channel asks the worker's REP channel.
        start = time.perf_counter()
        reply = await driver.request("hello", b"Hello", timeout=10)
        print(
            f"hello:   sent b'Hello', the worker replied {reply!r} "
            f"({(time.perf_counter() - start) * 1000:.1f} ms, including its start-up)"
        )

        # 2. PUSH -> worker -> PUSH: tasks come back upper-cased through send_to.
        for i in range(TASKS):
            driver.send("tasks", b"task-%d" % i)
        while len(results) < TASKS:
            await asyncio.sleep(0.01)
        print(
            f"tasks:   pushed {TASKS} tasks, got {len(results)} results back, "
            f"e.g. {results[0]!r} .. {results[-1]!r}"
        )

        # 3. PUB -> SUB: only the subscribed zip code gets through.
        while not weather_lines:
            driver.send("weather", b"10001 23C sunny")
            driver.send("weather", b"99999 -5C snow")
            await asyncio.sleep(0.05)
        print(
            f"weather: the worker printed {weather_lines[0]!r} "
            "(and nothing for 99999, which it does not subscribe to)"
        )
    finally:
        # 4. A graceful stop by signal.
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, worker.wait, 15)
        print(f"stop:    SIGTERM to the worker; it stopped gracefully with exit code {code}")
        outcome["worker exit code"] = code
        driver.stop()


outcome: dict[str, object] = {}


@driver.on_start
def begin() -> None:
    def done(task: asyncio.Task[None]) -> None:
        outcome["error"] = task.exception()
        driver.stop()

    asyncio.get_running_loop().create_task(scenario()).add_done_callback(done)


if __name__ == "__main__":
    print(__doc__.strip().splitlines()[0])
    # The REQ channel's endpoint comes from config, as it would from a file or the env.
    driver.config["CHANNELS"]["hello"] = {"endpoint": f"tcp://127.0.0.1:{free_port()}"}
    driver.run()
    if outcome.get("error") is not None or outcome.get("worker exit code") != 0:
        print("demo failed:", outcome)
        sys.exit(1)
    print("demo finished: every message arrived, both apps stopped cleanly")
