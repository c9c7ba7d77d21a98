"""An app whose start is slow, for the wedge tests (tests/test_wedge.py).

Channel "in" (PULL, raw, bound at ADDRESS) handles ``name:seq`` bodies, HANDLER_SECONDS each.
Its on_start hook sleeps HOOK_SECONDS, with ``time.sleep`` (HOOK=plain) or ``asyncio.sleep``
(HOOK=async). Config: SHUTDOWN_TIMEOUT and LINGER from ZMQAPP_* variables.

Prints ``hook <monotonic>`` as the hook begins, and at the end ``stopped <json>``: the
channel's stats, the seqs handled per producer in the order handled, and ``hook_end``, the
``time.monotonic()`` at which the hook returned (null if it never did), and ``last_start``,
the ``time.monotonic()`` at which the last handler call began.
"""

import asyncio
import json
import os
import sys
import time
from collections import defaultdict

from zmqapp import App

HOOK = os.environ.get("HOOK", "async")
HOOK_SECONDS = float(os.environ.get("HOOK_SECONDS", "1.0"))
HANDLER_SECONDS = float(os.environ.get("HANDLER_SECONDS", "0.001"))

app = App(__name__)
app.config.update(SHUTDOWN_TIMEOUT=2.0, LINGER=500)
app.config.from_prefixed_env()
handled: defaultdict[str, list[int]] = defaultdict(list)
hook_end: list[float] = []
last_start = [0.0]


def take(body: bytes) -> None:
    last_start[0] = time.monotonic()
    time.sleep(HANDLER_SECONDS)
    name, seq = body.decode().split(":")
    handled[name].append(int(seq))


app.add_channel("in", endpoint="@" + os.environ["ADDRESS"], type="PULL", handler=take)


def plain_start() -> None:
    print("hook", time.monotonic(), flush=True)
    time.sleep(HOOK_SECONDS)
    hook_end.append(time.monotonic())


async def async_start() -> None:
    print("hook", time.monotonic(), flush=True)
    await asyncio.sleep(HOOK_SECONDS)
    hook_end.append(time.monotonic())


app.on_start(plain_start if HOOK == "plain" else async_start)


if __name__ == "__main__":
    app.run()
    document = {
        "stats": app.channels["in"].stats.as_dict(),
        "seqs": handled,
        "hook_end": hook_end[0] if hook_end else None,
        "last_start": last_start[0],
    }
    print("stopped", json.dumps(document), flush=True)
    sys.exit(0)
