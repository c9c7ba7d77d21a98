"""A service for stop-under-load tests, configured by environment variables.

KIND: PULL (default), SUB, ROUTER or REP, bound on 127.0.0.1 with a port the OS picks.
HANDLER_SECONDS: how long each message takes (default 0.001); ASYNC=1 makes the handler a
coroutine (with CONCURRENCY, default 1). SHUTDOWN_TIMEOUT comes from ZMQAPP_SHUTDOWN_TIMEOUT.

Prints ``bound <address>`` once running, ``stopping handled=<n>`` when a stop begins, and
``stopped handled=<n> unique=<n> duplicates=<n>`` at the end.
"""

import asyncio
import os
import sys
import time

from zmqapp import App, signals

KIND = os.environ.get("KIND", "PULL")
SECONDS = float(os.environ.get("HANDLER_SECONDS", "0.001"))
ASYNC = os.environ.get("ASYNC") == "1"
CONCURRENCY = int(os.environ.get("CONCURRENCY", "1"))

app = App(__name__)
app.config.update(SHUTDOWN_TIMEOUT=30.0)
app.config.from_prefixed_env()
handled: list[bytes] = []

if ASYNC:

    async def work(body: bytes) -> bytes:
        await asyncio.sleep(SECONDS)
        handled.append(body)
        return body

else:

    def work(body: bytes) -> bytes:
        time.sleep(SECONDS)
        handled.append(body)
        return body


app.add_channel(
    "in", endpoint="@tcp://127.0.0.1:*", type=KIND, handler=work, concurrency=CONCURRENCY
)


@app.on_start
def announce() -> None:
    print("bound", app.channels["in"].bound[0], flush=True)
    if app.runtime is not None and app.runtime.http is not None:
        print("http", app.runtime.http.url, flush=True)


@signals.app_stopping.connect_via(app)
def stopping(sender: App) -> None:
    print(f"stopping handled={len(handled)}", flush=True)


if __name__ == "__main__":
    app.run()
    unique = len(set(handled))
    print(
        f"stopped handled={len(handled)} unique={unique} duplicates={len(handled) - unique}",
        flush=True,
    )
    sys.exit(0)
