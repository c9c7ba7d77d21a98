"""The pipeline's end: subscribes to the analyzer's alerts and prints each one."""

import sys

from zmqapp import App

app = App(__name__)  # the app "alerter"


@app.channel("alerts", type="SUB", codec="json", subscribe="alert.")
def alert(body):
    print(f"ALERT {body['sensor']} reads {body['value']} (limit {body['limit']})", flush=True)


@app.on_start
def ready():
    where = ", ".join(map(str, app.channels["alerts"].endpoints))
    print(f"alerter is running, subscribed at {where}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    app.run()
