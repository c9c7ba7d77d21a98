"""A PULL consumer for the wedge tests (tests/test_wedge.py).

Channel "in" (PULL, JSON, a typed body ``{"producer": str, "seq": int}``, MAXMSGSIZE 64 KiB,
MAXFRAMES 16) keeps every ``seq`` it handles, per producer. Channel "report" (REP, JSON)
answers any request with ``{"handled": {producer: n}, "duplicates": n}`` and the "in"
channel's stats. Prints ``bound <in> <report>`` once running, and at the end
``stopped <json>``: the seqs handled per producer, in the order handled, and the stats.
"""

import dataclasses
import json
import sys
from collections import defaultdict
from typing import Any

from zmqapp import App

app = App(__name__)
app.config.update(MAXMSGSIZE=65536, MAXFRAMES=16, SHUTDOWN_TIMEOUT=5.0, LINGER=500)
app.config.from_prefixed_env()
handled: defaultdict[str, list[int]] = defaultdict(list)


@dataclasses.dataclass
class Reading:
    producer: str
    seq: int


@app.channel("in", endpoint="@tcp://127.0.0.1:*", type="PULL", codec="json")
def take(reading: Reading) -> None:
    handled[reading.producer].append(reading.seq)


def counts() -> dict[str, Any]:
    return {
        "handled": {name: len(seqs) for name, seqs in handled.items()},
        "duplicates": sum(len(seqs) - len(set(seqs)) for seqs in handled.values()),
        "stats": app.channels["in"].stats.as_dict(),
    }


@app.channel("report", endpoint="@tcp://127.0.0.1:*", type="REP", codec="json")
def report(body: Any) -> dict[str, Any]:
    return counts()


@app.on_start
def announce() -> None:
    print("bound", app.channels["in"].bound[0], app.channels["report"].bound[0], flush=True)


if __name__ == "__main__":
    app.run()
    print("stopped", json.dumps({**counts(), "seqs": handled}), flush=True)
    sys.exit(0)
