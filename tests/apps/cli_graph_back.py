"""The other half of the `zmqapp graph` test topology: it connects to cli_graph_front.py."""

from zmqapp import App

back = App("back")


@back.channel("work", endpoint="tcp://localhost:7001", type="PULL")
def work(body: bytes) -> None: ...


@back.channel("news", endpoint="ipc:///tmp/zmqapp-graph-test-events", type="SUB")
def news(body: bytes) -> None: ...


@back.channel("wrong", endpoint="tcp://localhost:7003", type="SUB")  # SUB cannot talk to PUSH
def wrong(body: bytes) -> None: ...


@back.channel("elsewhere", endpoint="tcp://localhost:7999", type="PULL")  # nobody here binds
def elsewhere(body: bytes) -> None: ...
