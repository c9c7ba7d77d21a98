"""Prints the config `zmqapp run` gave it, as one JSON line, then stops itself."""

import json

from zmqapp import App

app = App(__name__)
app.config.update(A="module", B="module", C="module", D="module", LINGER=0)
app.add_channel("out", type="PUSH")  # the endpoint comes from the command line


@app.on_start
def report() -> None:
    seen = {key: app.config.get(key) for key in ("A", "B", "C", "D", "NESTED", "APP")}
    seen["endpoint"] = str(app.channels["out"].endpoints[0])
    print("config", json.dumps(seen), flush=True)
    app.stop()
