"""A service an operator can see into: probes, Prometheus metrics, status, JSON logs.

Run it, then look::

    python examples/service.py
    curl -s localhost:9100/readyz
    curl -s localhost:9100/status | python -m json.tool
    curl -s localhost:9100/metrics | grep zmqapp_messages

Everything is config, so the same file runs anywhere: ``ZMQAPP_HTTP=':9100'`` serves on every
interface (in a container), ``ZMQAPP_HTTP_TOKEN=...`` guards all but the probes, and
``ZMQAPP_CHANNELS__lookups__endpoint=...`` moves the socket.
"""

import asyncio
import logging

from zmqapp import App

app = App("lookups")
app.config.update(
    HTTP="127.0.0.1:9100",  # /livez /readyz /metrics /status
    LOG_FORMAT="json",  # one JSON object per log line
    SHUTDOWN_TIMEOUT=10.0,  # below the orchestrator's grace period
)
app.config.from_prefixed_env()

STOCK = {"tea": 7, "cake": 2}


@app.channel("lookups", endpoint="tcp://*:5570", type="ROUTER", codec="json", concurrency=32)
async def lookup(body):
    await asyncio.sleep(0.001)  # a database call, say
    item = body["item"]
    if item not in STOCK:
        raise KeyError(item)  # logged (rate-limited), counted, answered with an error reply
    return {"item": item, "left": STOCK[item]}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    app.run()
