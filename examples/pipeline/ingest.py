"""The pipeline's front door: sensors push lines such as ``boiler 97.5``; ingest parses each
into a reading and passes it on to the analyzer.

Its endpoints live in ``system.toml`` (the ``[APPS.ingest]`` tables), not here. Try it with
the other two running (see system.toml)::

    zmqapp send tcp://127.0.0.1:5601 'boiler 97.5' --type PUSH
"""

from zmqapp import App

app = App(__name__)  # the app "ingest", whether imported or run as a script


@app.channel("raw", type="PULL", codec="utf8", send_to="readings")
def parse(line):
    sensor, _, value = line.strip().partition(" ")
    try:
        return {"sensor": sensor, "value": float(value)}  # forwarded to "readings"
    except ValueError:
        app.logger.warning("not a reading, dropped: %r", line)
        return None


app.add_channel("readings", type="PUSH", codec="json")


if __name__ == "__main__":
    app.run()  # reads the config file ZMQAPP_CONFIG names, and ZMQAPP_* variables
