"""Two apps served in one loop with signal handlers, stopped in the order they started: after
both, SIGINT must reach Python's default handler again (KeyboardInterrupt), not a finished
run. Prints OK or FAIL."""

import asyncio
import os
import signal
import sys

from zmqapp import App


def make(name):
    app = App(name)
    app.config.update(SHUTDOWN_TIMEOUT=0.5, LINGER=0, LOOP_BLOCKED_WARN=0)
    app.add_channel("in", endpoint="@tcp://127.0.0.1:*", type="PULL", handler=lambda b: None)
    return app


async def main():
    a, b = make("a"), make("b")
    ta = asyncio.create_task(a.serve(install_signal_handlers=True))
    await asyncio.sleep(0.3)
    tb = asyncio.create_task(b.serve(install_signal_handlers=True))
    await asyncio.sleep(0.3)
    a.stop()
    await ta
    b.stop()
    await tb
    print("SIGINT handler after both runs:", signal.getsignal(signal.SIGINT))
    try:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.5)
    except KeyboardInterrupt:
        return True
    return False


signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    ok = asyncio.new_event_loop().run_until_complete(main())
except KeyboardInterrupt:
    ok = True
if not ok:
    print("FAIL: SIGINT after both apps stopped was swallowed by a stale zmqapp handler")
    sys.exit(1)
print("OK")
