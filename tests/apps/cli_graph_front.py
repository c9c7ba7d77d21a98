"""One half of a two-app topology for `zmqapp graph` (never run: only its channels are read).

front binds jobs (PUSH on every interface), events (PUB over ipc) and answers (PUSH on
127.0.0.1); cli_graph_back.py connects to them, once with a socket type that cannot talk.
"""

from zmqapp import App

front = App("front")
front.add_channel("jobs", endpoint="tcp://*:7001", type="PUSH")
front.add_channel("events", endpoint="@ipc:///tmp/zmqapp-graph-test-events", type="PUB")
front.add_channel("answers", endpoint="@tcp://127.0.0.1:7003", type="PUSH")
