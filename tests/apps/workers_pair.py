from zmqapp import App

app = App(__name__)
app.add_channel("pair", endpoint="tcp://127.0.0.1:*", bind=True, type="PAIR", handler=print)
