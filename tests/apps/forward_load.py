"""A relay for the send_to back-pressure test: PULL "in" forwards every body to PUSH "out".

Both are bound on 127.0.0.1 with ports the OS picks and small high-water marks, and the send
queue is SEND_QUEUE (default 10). Prints ``bound <in> <out>`` once running, and at the end
``stopped received=<n> sent=<n> dropped=<n> peak_queue=<n>``: the most messages "out" ever
held in its send queue, sampled every millisecond.
"""

import sys

from zmqapp import App

app = App(__name__)
app.config.update(SEND_QUEUE=10, SHUTDOWN_TIMEOUT=10.0, LINGER=5000)
app.config.from_prefixed_env()
hwm = {"SNDHWM": 10, "RCVHWM": 10}
app.add_channel("out", endpoint="@tcp://127.0.0.1:*", type="PUSH", options=hwm)
app.add_channel(
    "in", endpoint="@tcp://127.0.0.1:*", type="PULL", send_to="out", options=hwm,
    handler=lambda body: body,
)  # fmt: skip
peak = 0


@app.on_start
def announce() -> None:
    print("bound", app.channels["in"].bound[0], app.channels["out"].bound[0], flush=True)


@app.timer(0.001)
def sample() -> None:
    global peak
    assert app.runtime is not None
    peak = max(peak, len(app.runtime.pump("out").outbox))


if __name__ == "__main__":
    app.run()
    stats_in, stats_out = app.channels["in"].stats, app.channels["out"].stats
    print(
        f"stopped received={stats_in.received} sent={stats_out.sent} "
        f"dropped={stats_in.dropped + stats_out.dropped} peak_queue={peak}",
        flush=True,
    )
    sys.exit(0)
