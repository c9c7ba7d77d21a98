"""A threaded handler that blocks forever: the app must still stop and the process exit."""

import threading

import zmq

from zmqapp import App

app = App(__name__)
app.config.update(SHUTDOWN_TIMEOUT=0.2, LINGER=0)
started = threading.Event()


@app.channel("pull", endpoint="@inproc://stuck", type="PULL", threaded=True)
def stuck(body: bytes) -> None:
    started.set()
    threading.Event().wait()  # never returns


@app.on_start
def feed() -> None:
    push = app.context.socket(zmq.PUSH)
    push.connect("inproc://stuck")
    push.send(b"x")
    push.close(linger=-1)

    def stop_once_stuck() -> None:
        started.wait(10)
        app.stop()

    threading.Thread(target=stop_once_stuck, daemon=True).start()


if __name__ == "__main__":
    app.run()
    print("exited")
