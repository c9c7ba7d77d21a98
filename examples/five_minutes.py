"""The "first five minutes" app: a worker, a REP service and a subscriber in one module.

Endpoints here are the defaults for a laptop; change any of them without touching the code,
e.g. ``ZMQAPP_CHANNELS__tasks__endpoint=tcp://10.0.0.5:5557 python examples/five_minutes.py``.
"""

import zmq

from zmqapp import App

app = App(__name__)


@app.channel("tasks", endpoint="tcp://localhost:5557", type=zmq.PULL, send_to="results")
def work(body):
    return body.upper()  # forwarded to the "results" channel


app.add_channel("results", endpoint="tcp://localhost:5558", type=zmq.PUSH)


@app.channel("hello", endpoint="tcp://*:5555", type="REP")
def hello(body):
    return b"World"  # REP/ROUTER: the return value is the reply


@app.channel("weather", endpoint="tcp://localhost:5556", type=zmq.SUB, subscribe="10001 ")
def weather(body, topic):  # extra parameters are filled in by name
    print("weather:", body.decode(), flush=True)


if __name__ == "__main__":
    app.run()  # reads ZMQAPP_* variables; SIGINT/SIGTERM stop it gracefully
