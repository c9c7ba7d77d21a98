"""The pipeline's middle: reads readings from ingest and publishes an alert, under the topic
``alert.high``, for each one above ``ALERT_LIMIT`` (set per system in ``system.toml``)."""

from zmqapp import App

app = App(__name__)  # the app "analyzer"
app.config["ALERT_LIMIT"] = 100.0  # a default; system.toml's [APPS.analyzer] says 80


@app.channel("readings", type="PULL", codec="json")
def check(reading):
    limit = float(app.config["ALERT_LIMIT"])
    if reading["value"] > limit:
        app.send("alerts", {**reading, "limit": limit}, topic="alert.high")


app.add_channel("alerts", type="PUB", codec="json")


if __name__ == "__main__":
    app.run()
