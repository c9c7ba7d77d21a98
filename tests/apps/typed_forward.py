"""A typed handler registered before a class its body type names is defined, as models
split over a module often are: the check must be built once the module has run."""

from __future__ import annotations

from dataclasses import dataclass

from zmqapp import App

app = App(__name__)
app.config.update(LINGER=0)
got: list[Order] = []


@dataclass
class Order:
    item: Item
    quantity: int


@app.channel("orders", endpoint="@tcp://127.0.0.1:*", type="PULL", codec="msgpack")
def take(body: Order) -> None:
    got.append(body)


@dataclass
class Item:  # defined after the handler
    sku: str
