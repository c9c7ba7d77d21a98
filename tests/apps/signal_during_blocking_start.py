"""SIGTERM while a plain on_start hook blocks the loop, with a coroutine hook after it that
never ends: the start is cancelled SHUTDOWN_TIMEOUT after the signal (not after the plain
hook returned), so the stop stays within SHUTDOWN_TIMEOUT + LINGER + 1 s. Prints OK or FAIL."""

import asyncio
import logging
import os
import signal
import sys
import threading
import time

from zmqapp import App

logging.basicConfig(level=logging.WARNING, format="  log: %(message)s")
T = 2.0
app = App("bug3")
app.config.update(SHUTDOWN_TIMEOUT=T, LINGER=0)
app.add_channel("in", endpoint="@tcp://127.0.0.1:*", type="PULL", handler=lambda b: None)
sent_at = []


@app.on_start
def plain() -> None:
    time.sleep(1.9)  # a plain hook, shorter than SHUTDOWN_TIMEOUT


@app.on_start
async def slow() -> None:
    await asyncio.sleep(3600)


def killer() -> None:
    time.sleep(0.1)
    sent_at.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGTERM)


threading.Thread(target=killer, daemon=True).start()
app.run(load_config=False)
took = time.monotonic() - sent_at[0]
bound = T + 0 + 1.0
print(f"stop took {took:.2f} s after SIGTERM; bound SHUTDOWN_TIMEOUT+LINGER+1 = {bound:.2f} s")
if took > bound:
    print("FAIL: the stop overran its bound")
    sys.exit(1)
print("OK")
