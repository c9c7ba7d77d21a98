"""An app whose workers always fail to start."""

from zmqapp import App

app = App(__name__)
app.add_channel("tasks", endpoint="tcp://127.0.0.1:*", bind=True, type="PULL", handler=print)


@app.on_start
def fail() -> None:
    raise RuntimeError("cannot start: the database is not there")
