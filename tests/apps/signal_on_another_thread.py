"""SIGTERM delivered to a thread other than the main one (a pool thread): the loop must wake
for it at once, not at its next unrelated wake-up. Prints OK or FAIL."""

import asyncio
import signal
import sys
import threading
import time

from zmqapp import App

app = App("bug4")
app.config.update(SHUTDOWN_TIMEOUT=1.0, LINGER=0, LOOP_BLOCKED_WARN=0)
app.add_channel("in", endpoint="@tcp://127.0.0.1:*", type="PULL", handler=lambda b: None)
t = {}


@app.on_start
async def waiting() -> None:
    await asyncio.sleep(8)  # e.g. waiting for a dependency
    t["hook_end"] = time.monotonic()


def other_thread() -> None:  # any non-main Python thread that receives the signal
    time.sleep(0.3)
    t["sent"] = time.monotonic()
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    time.sleep(20)


threading.Thread(target=other_thread, daemon=True).start()
app.run(load_config=False)
took = time.monotonic() - t["sent"]
print(f"run returned {took:.2f} s after SIGTERM (SHUTDOWN_TIMEOUT 1, LINGER 0)")
if took > 2.0:
    print("FAIL: the signal was not noticed until the loop woke for another reason")
    sys.exit(1)
print("OK")
