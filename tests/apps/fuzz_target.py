"""A channel of every receiving socket type, for the property-based test (tests/test_fuzz.py).

Each handler acknowledges a valid "sentinel" body on the ``acks`` channel as
``<channel>:<sentinel>``; anything else is handled (or fails to decode) and forgotten. Prints
the bound endpoints as one JSON line once it runs. The test's own sockets are named by
ZMQAPP_* variables: the publisher for XSUB, the routers for DEALER and REQ, the ack sink.
"""

import dataclasses
import json
import os
import re

from zmqapp import App

app = App(__name__)
app.config.update(ERROR_DETAIL=True, LINGER=0)
BIND = "@tcp://127.0.0.1:*"


def ack(channel: str, body: object) -> None:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    for sentinel in re.findall(r"sentinel-\d+", text):
        app.send("acks", f"{channel}:{sentinel}")


@dataclasses.dataclass
class Job:
    sentinel: str
    size: int = 0


@app.channel("pull_raw", endpoint=BIND, type="PULL")
def pull_raw(body):
    ack("pull_raw", body)


@app.channel("pull_typed", endpoint=BIND, type="PULL", codec="json")
def pull_typed(job: Job):
    ack("pull_typed", job.sentinel)


@app.channel("sub_utf8", endpoint=BIND, type="SUB", codec="utf8")
def sub_utf8(body, topic):
    ack("sub_utf8", body)


@app.channel("xsub_msgpack", endpoint=os.environ["FUZZ_XPUB"], type="XSUB", codec="msgpack",
             subscribe="")  # fmt: skip
def xsub_msgpack(body, topic):
    ack("xsub_msgpack", body)


# Verbose: XPUB passes on repeated subscriptions too, so a resent sentinel gets through.
@app.channel("xpub_raw", endpoint=BIND, type="XPUB", options={"xpub_verbose": 1})
def xpub_raw(body):
    ack("xpub_raw", body)


@app.channel("rep_json", endpoint=BIND, type="REP", codec="json")
def rep_json(body):
    ack("rep_json", body)
    return {"echo": body}


@app.channel("router_json", endpoint=BIND, type="ROUTER", codec="json")
def router_json(body, identity):
    ack("router_json", body)
    return {"echo": body}


@app.channel("dealer_raw", endpoint=os.environ["FUZZ_ROUTER"], type="DEALER")
def dealer_raw(body, frames):
    ack("dealer_raw", body)


@app.channel("req_json", endpoint=os.environ["FUZZ_REQ_ROUTER"], type="REQ", codec="json")
def req_json(body):
    ack("req_json", body)


@app.channel("pair_utf8", endpoint=BIND, type="PAIR", codec="utf8")
def pair_utf8(body):
    ack("pair_utf8", body)


app.add_channel("acks", endpoint=os.environ["FUZZ_ACKS"], type="PUSH", codec="utf8")


@app.timer(0.02)
def ask() -> None:
    """Keep a request outstanding on the REQ channel, so the test's ROUTER can answer it."""
    app.send("req_json", "ping")


@app.on_start
def announce() -> None:
    app.send("dealer_raw", b"hello")  # so the test's ROUTER learns the DEALER's identity
    bound = {name: c.bound[0] for name, c in app.channels.items() if c.bound}
    print(json.dumps(bound), flush=True)


if __name__ == "__main__":
    app.run()
