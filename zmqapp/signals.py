"""The app-wide signals. Each is sent with the app as sender.

Connect with ``@message_received.connect_via(app)`` (or ``.connect(fn)`` for every app).
A signal nobody listens to costs one attribute check per message.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Before sockets are opened. Receivers get no arguments besides the sender.
app_starting = _signals.signal("app-starting")
#: Sockets are bound/connected, ``on_start`` hooks ran, reading has begun.
app_started = _signals.signal("app-started")
#: A stop was asked for; reading stops next.
app_stopping = _signals.signal("app-stopping")
#: Everything is closed.
app_stopped = _signals.signal("app-stopped")
#: A message was read and decoded; ``message`` is the :class:`~zmqapp.Message`.
message_received = _signals.signal("message-received")
#: Every handler of ``message`` has run (successfully or not).
message_handled = _signals.signal("message-handled")
#: A handler raised: ``message``, ``handler`` (the function) and ``exception``.
handler_failed = _signals.signal("handler-failed")
#: A message could not be decoded: ``channel``, ``frames`` and ``exception``.
decode_failed = _signals.signal("decode-failed")
#: Frames were handed to ZeroMQ: ``channel`` and ``frames``.
message_sent = _signals.signal("message-sent")
#: A socket monitor event: ``channel``, ``event`` (name), ``endpoint``, ``value``.
socket_event = _signals.signal("socket-event")
#: A peer connected to a monitored channel: ``channel`` and ``address`` (the peer's
#: ``tcp://ip:port`` where ZeroMQ tells it, else the endpoint).
peer_connected = _signals.signal("peer-connected")
#: A peer's connection closed (it left, died, or stopped answering heartbeats): ``channel``
#: and ``address``.
peer_disconnected = _signals.signal("peer-disconnected")
