"""Three apps that make a small system, for the live tools' tests and the README's picture of
the dashboard: ``ingest`` pushes sensor readings; ``analyzer`` (run as a ``--workers`` pool)
pulls them and forwards the anomalies (``send_to``); ``alerter`` pulls those and publishes
alerts by level, and ``ingest`` subscribes to the critical ones.

Start them in this order, giving each the addresses the others bound (``--set``):
alerter, ingest (``CHANNELS.alerts.endpoint``), analyzer (``CHANNELS.readings.endpoint``,
``CHANNELS.anomalies.endpoint``). ``INGEST_RATE`` sets the readings per second (200).
"""

import itertools
import os
import random
import time

from zmqapp import App

RATE = float(os.environ.get("INGEST_RATE", "200"))
TICK = 0.02

ingest = App("ingest")
alerter = App("alerter")
analyzer = App("analyzer")
for each in (ingest, alerter, analyzer):
    each.config.update(SHUTDOWN_TIMEOUT=2.0, LINGER=0)

# -- ingest ------------------------------------------------------------------------------------

ingest.add_channel("readings", endpoint="@tcp://127.0.0.1:*", type="PUSH", codec="json")
numbers = itertools.count()
owed = 0.0


@ingest.timer(TICK)
def produce() -> None:
    global owed
    owed += RATE * TICK
    while owed >= 1:
        owed -= 1
        sensor = random.choice(("boiler", "pump", "valve", "fan"))
        ingest.send("readings", {"n": next(numbers), "sensor": sensor, "value": random.random()})


@ingest.channel("alerts", type="SUB", subscribe="critical", codec="json")
def critical(body: dict, topic: bytes) -> None:
    pass  # a real ingest would slow down the sensor here


# -- analyzer ----------------------------------------------------------------------------------


@analyzer.channel("readings", type="PULL", codec="json", send_to="anomalies")
def analyze(body: dict) -> dict | None:
    time.sleep(random.uniform(0.0002, 0.002))  # some numerical work
    return body if body["value"] > 0.7 else None


analyzer.add_channel("anomalies", type="PUSH", codec="json")

# -- alerter -----------------------------------------------------------------------------------


@alerter.channel("anomalies", endpoint="@tcp://127.0.0.1:*", type="PULL", codec="json")
def alert(body: dict) -> None:
    if body["value"] > 0.995:
        raise ValueError(f"sensor {body['sensor']} is out of range")
    level = "critical" if body["value"] > 0.95 else "warning"
    alerter.send("alerts", body, topic=level)


alerter.add_channel("alerts", endpoint="@tcp://127.0.0.1:*", type="PUB", codec="json")
