"""A PULL service with a slow handler, for stop-by-signal tests.

Prints ``bound <address>`` once it listens and ``handled <body>`` for each message, then
``stopped received=<n> handled=<n>`` when it has stopped.
"""

import sys
import time

from zmqapp import App

app = App(__name__)
app.config.update(SHUTDOWN_TIMEOUT=20.0)


@app.channel("tasks", endpoint="@tcp://127.0.0.1:*", type="PULL")
def work(body: bytes) -> None:
    time.sleep(0.002)  # a slow handler, so messages queue up in the socket
    print("handled", body.decode(), flush=True)


@app.on_start
def announce() -> None:
    print("bound", app.channels["tasks"].bound[0], flush=True)


@app.on_stop
def report() -> None:
    stats = app.channels["tasks"].stats
    print(f"stopped received={stats.received} handled={stats.handled}", flush=True)


if __name__ == "__main__":
    app.run()
    sys.exit(0)
