"""A ROUTER service for the wedge tests (tests/test_wedge.py).

Channel "api" (ROUTER, JSON, coroutine handler, CONCURRENCY in flight, SNDHWM 100 per peer)
answers a request ``{"client": name, "seq": n, "size": bytes}`` with
``{"client": name, "seq": n, "pad": "x" * size}``. Channel "report" (REP, JSON) answers any
request with what "api" handled, per client: ``{"handled": {client: n}, "duplicates": n}``.

Prints ``bound <api> <report> <http>`` once running, and at the end
``stopped <json>`` with the same counts and the "api" channel's stats.
"""

import asyncio
import json
import os
import sys
from collections import Counter
from typing import Any

from zmqapp import App

app = App(__name__)
app.config.update(HTTP="127.0.0.1:0", SHUTDOWN_TIMEOUT=5.0, LINGER=500)
app.config.from_prefixed_env()
CONCURRENCY = int(os.environ.get("CONCURRENCY", "8"))
handled: Counter[str] = Counter()
seen: set[tuple[str, int]] = set()
duplicates = 0


@app.channel(
    "api", endpoint="@tcp://127.0.0.1:*", type="ROUTER", codec="json", concurrency=CONCURRENCY,
    options={"sndhwm": 100},
)  # fmt: skip
async def serve(body: dict[str, Any]) -> dict[str, Any]:
    global duplicates
    await asyncio.sleep(0)  # a real suspension: replies leave from a task, out of order
    key = (body["client"], body["seq"])
    if key in seen:
        duplicates += 1
    seen.add(key)
    handled[body["client"]] += 1
    return {"client": body["client"], "seq": body["seq"], "pad": "x" * int(body.get("size", 0))}


@app.channel("report", endpoint="@tcp://127.0.0.1:*", type="REP", codec="json")
def report(body: Any) -> dict[str, Any]:
    return {"handled": dict(handled), "duplicates": duplicates}


@app.on_start
def announce() -> None:
    assert app.runtime is not None and app.runtime.http is not None
    api, rep = app.channels["api"].bound[0], app.channels["report"].bound[0]
    print("bound", api, rep, app.runtime.http.url, flush=True)


if __name__ == "__main__":
    app.run()
    document = {
        "handled": dict(handled),
        "duplicates": duplicates,
        "stats": app.channels["api"].stats.as_dict(),
    }
    print("stopped", json.dumps(document), flush=True)
    sys.exit(0)
