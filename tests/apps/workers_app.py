"""An app for `zmqapp run --workers` tests: a PULL worker pool and a REP service.

Every handled task is forwarded, tagged with the worker's pid, to the "results" channel,
which connects to a sink the test binds (--set CHANNELS.results.endpoint=...).
"""

import os
import threading
import time

from zmqapp import App

app = App(__name__)
app.config.update(SHUTDOWN_TIMEOUT=20.0)


@app.channel("tasks", endpoint="tcp://127.0.0.1:*", bind=True, type="PULL", send_to="results")
def work(body: bytes) -> bytes:
    time.sleep(float(os.environ.get("TASK_SECONDS", "0")))
    return b"%d:%s" % (os.getpid(), body)


app.add_channel("results", type="PUSH")  # endpoint: from the command line


@app.channel("whoami", endpoint="tcp://127.0.0.1:*", bind=True, type="REP")
def whoami(body: bytes) -> bytes:
    return b"%d" % os.getpid()


@app.on_start
def keep_the_process() -> None:
    """With KEEP_SECONDS: a non-daemon thread that outlives the app, so the worker's process
    does not exit when its app has stopped."""
    seconds = float(os.environ.get("KEEP_SECONDS", "0"))
    if seconds:
        threading.Thread(target=time.sleep, args=(seconds,)).start()
