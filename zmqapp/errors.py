"""The exceptions zmqapp raises, all subclasses of :class:`ZmqAppError`."""

from __future__ import annotations

from typing import Any


class ZmqAppError(Exception):
    """Base class of every error zmqapp raises on purpose."""


class SetupError(ZmqAppError, ValueError):
    """The app's channels, handlers or config do not fit together.

    Raised at registration, or at start when config overrides are applied.
    """


class NotRunning(ZmqAppError, RuntimeError):
    """The operation needs a running app (sockets exist only while it runs)."""


class SendQueueFull(ZmqAppError):
    """A channel's send queue is full because its peers are not taking messages.

    Raised by :meth:`App.send` instead of growing memory without bound. Await
    :meth:`App.send_async` to wait for room instead.
    """


class Unroutable(ZmqAppError):
    """A ROUTER channel has no peer with the identity a message was sent to."""


class DecodeError(ZmqAppError, ValueError):
    """A message from the network could not be turned into a body.

    zmqapp never lets this escape into the loop: the message is logged, counted, the
    ``decode-failed`` signal fires, and a REP/ROUTER peer gets an error reply.
    """


class Timeout(ZmqAppError, TimeoutError):
    """:meth:`App.request` got no reply in time. The channel stays usable."""


class RemoteError(ZmqAppError):
    """A zmqapp server answered a request with an error reply.

    ``kind`` says what went wrong on the server (``"handler_failed"``,
    ``"decode_failed"``, ...), ``error`` is the exception class name there, and
    ``detail`` its message.
    """

    def __init__(self, kind: str, error: str, detail: str, info: dict[str, Any] | None = None):
        super().__init__(f"{error}: {detail}" if detail else error)
        self.kind = kind
        self.error = error
        self.detail = detail
        self.info = info or {}
