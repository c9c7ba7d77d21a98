"""The smallest zmqapp service: a PULL channel and a SUB channel, each handled by a plain
function. Run it, then feed it from another shell::

    python examples/seed.py
    python -c "import zmq; s = zmq.Context().socket(zmq.PUSH); s.bind('tcp://*:9090'); \
               s.send(b'hi')"
"""

import zmq

from zmqapp import App

app = App(__name__)


@app.channel("pull", endpoint="tcp://localhost:9090", type=zmq.PULL)
def on_pull(body):
    print("pulled", body)


@app.channel("ticker", endpoint="tcp://localhost:9091", type=zmq.SUB, subscribe="ACME ")
def on_tick(body):
    print("tick", body)


if __name__ == "__main__":
    app.config.from_prefixed_env()  # e.g. ZMQAPP_CHANNELS__pull__endpoint=tcp://10.0.0.5:9090
    app.run()
