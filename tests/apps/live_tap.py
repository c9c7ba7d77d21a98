"""An app for the live tools' tests: ``tasks`` (PULL, JSON) forwards each body's number to
``results`` (PUSH), unless ``FORWARD=0``; both bind on ports the OS picks."""

import os

from zmqapp import App

app = App("tapped")
app.config.update(SHUTDOWN_TIMEOUT=2.0, LINGER=0)
FORWARD = os.environ.get("FORWARD", "1") == "1"


@app.channel("tasks", endpoint="@tcp://127.0.0.1:*", type="PULL", codec="json", send_to="results")
def work(body: dict) -> dict | None:
    return {"done": body["n"]} if FORWARD else None


app.add_channel("results", endpoint="@tcp://127.0.0.1:*", type="PUSH", codec="json")
