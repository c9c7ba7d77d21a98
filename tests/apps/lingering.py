"""An app whose only peer never shows up, with messages queued: it must still exit."""

from zmqapp import App

app = App(__name__)
app.config.update(LINGER=200)
app.add_channel("out", endpoint="tcp://127.0.0.1:9", type="PUSH")


@app.on_start
def fill_and_stop() -> None:
    for _ in range(100):
        app.send("out", b"undeliverable")
    app.stop()


if __name__ == "__main__":
    app.run()
    print("exited")
