"""A REP service for the command-line tests, run with `zmqapp run`.

Its endpoint is not in the code: tests give it with --set, which also shows that an app
with a missing endpoint fails cleanly.
"""

from zmqapp import App

app = App(__name__)
app.config.update(SHUTDOWN_TIMEOUT=2.0, LINGER=0, ERROR_DETAIL=True)


@app.channel("upper", type="REP")
def upper(body: bytes) -> bytes:
    if body == b"fail":
        raise ValueError("asked to fail")
    return body.upper()
