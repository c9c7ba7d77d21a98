"""An order service: typed JSON orders in, fulfilment jobs out, events published.

Shows typed bodies, send_to forwarding, publishing with topics, and a REP query channel. Its
tests (tests/test_examples.py) use the test client and open no port.
"""

from dataclasses import dataclass

from zmqapp import App

app = App(__name__)
stock = {"tea": 10, "cake": 2}


@dataclass
class Order:
    id: str
    item: str
    quantity: int = 1


@app.channel("orders", endpoint="tcp://*:5601", type="PULL", codec="json", send_to="fulfilment")
def take(order: Order):
    """Reserve stock and return a fulfilment job (forwarded by send_to), or None."""
    if stock.get(order.item, 0) < order.quantity:
        app.send("events", {"order": order.id, "status": "rejected"}, topic="orders")
        return None
    stock[order.item] -= order.quantity
    app.send("events", {"order": order.id, "status": "accepted"}, topic="orders")
    return {"order": order.id, "item": order.item, "quantity": order.quantity}


app.add_channel("fulfilment", endpoint="tcp://localhost:5602", type="PUSH", codec="json")
app.add_channel("events", endpoint="tcp://*:5603", type="PUB", codec="json")


@app.channel("stock", endpoint="tcp://*:5604", type="REP", codec="json")
def level(item):
    """How many of ``item`` are left."""
    return {"item": item, "left": stock.get(item, 0)}


@app.on_start
def hello():
    app.send("events", {"status": "open", "items": sorted(stock)}, topic="service")


if __name__ == "__main__":
    app.config.from_prefixed_env()
    app.run()
