from zmqapp import App

app = App(__name__)
app.add_channel("tasks", endpoint="tcp://127.0.0.1:*", bind=True, type="PULL", handler=print,
                allow=["127.0.0.1"])  # fmt: skip
