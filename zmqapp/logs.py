"""Log lines an operator can use: one JSON object per line, with the app, the worker, the
channel and the peer each line is about.

``LOG_FORMAT = "json"`` (or ``zmqapp run --log-format json``) writes every record as::

    {"time": "2026-11-25T14:00:00.123456+00:00", "level": "WARNING", "app": "ingest",
     "worker": 1, "channel": "tasks", "peer": "10.0.0.7", "logger": "zmqapp",
     "message": "channel 'tasks' dropped an undecodable message ...", "exc": null}

``channel`` and ``peer`` come from the record (zmqapp passes them as ``extra``; so can you),
``app`` and ``worker`` from the process (``worker`` is null outside a ``--workers`` pool).
``exc`` holds the formatted traceback, if any.

``LOG_ENDPOINT = "tcp://collector:5600"`` also ships every record, as such a document, over a
PUSH socket from a bounded queue that never blocks the app (:class:`LogShipper`);
``LOG_CURVE_SERVER_KEY`` and ``LOG_CURVE_SECRET_KEY`` make it a CURVE client.
"""

from __future__ import annotations

import datetime
import json
import logging
import queue
import sys
import threading
from typing import IO, Any

import zmq

#: The formats ``LOG_FORMAT`` and ``--log-format`` take.
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring)."""

    def __init__(self, app: str | None = None, worker: int | None = None) -> None:
        super().__init__()
        self.app = app
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        exc = None
        if record.exc_info:
            exc = self.formatException(record.exc_info)
        elif record.exc_text:
            exc = record.exc_text
        document = {
            "time": datetime.datetime.fromtimestamp(
                record.created, datetime.timezone.utc
            ).isoformat(),
            "level": record.levelname,
            "app": getattr(record, "app", None) or self.app,
            "worker": getattr(record, "worker", self.worker),
            "channel": getattr(record, "channel", None),
            "peer": getattr(record, "peer", None),
            "logger": record.name,
            "message": record.getMessage(),
            "exc": exc,
        }
        return json.dumps(document, default=str, ensure_ascii=False)


def check_format(value: Any) -> str:
    """``value`` as a log format name, or a ValueError saying what is allowed."""
    name = str(value or "text").lower()
    if name not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {value!r}")
    return name


def configure(
    level: str | int = "INFO",
    log_format: str = "text",
    *,
    app: str | None = None,
    worker: int | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Send the root logger's records to ``stream`` (stderr) in ``log_format``: what
    ``zmqapp run`` and each ``--workers`` worker do."""
    global WORKER
    WORKER = worker
    handler = logging.StreamHandler(stream or sys.stderr)
    if check_format(log_format) == "json":
        handler.setFormatter(JsonFormatter(app, worker))
    else:
        prefix = f" [worker {worker}]" if worker is not None else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{prefix}: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


def use_json(app: str, worker: int | None = None) -> None:
    """Make the root logger's handlers write JSON (adding one to stderr if it has none): what
    ``LOG_FORMAT = "json"`` does for an app started with ``app.run()``."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
        if root.level > logging.INFO:
            root.setLevel(logging.INFO)
    for handler in root.handlers:
        if not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter(app, worker if worker is not None else WORKER))


#: The ``--workers`` slot of this process, for the ``worker`` field (None outside a pool).
WORKER: int | None = None


class LogShipper(logging.Handler):
    """Ships every record as a JSON document over a PUSH socket to ``LOG_ENDPOINT``.

    Records wait in a bounded queue that a thread of its own empties, so logging never
    blocks the app: when the queue is full (the collector is gone, or slow), records are
    dropped and counted in :attr:`dropped`. Nothing is pickled: the documents are the JSON of
    :class:`JsonFormatter`. Collect them with ``zmqapp logs ENDPOINT``.
    """

    def __init__(
        self,
        endpoint: str,
        app: str | None,
        *,
        worker: int | None = None,
        queue_size: int = 10000,
        curve_server_key: Any = None,
        curve_secret_key: Any = None,
    ) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.setFormatter(JsonFormatter(app, worker))
        self.queue: queue.Queue[bytes | None] = queue.Queue(queue_size)
        #: Records dropped because the queue was full.
        self.dropped = 0
        self.sent = 0
        self.context: zmq.Context[Any] = zmq.Context()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.setsockopt(zmq.SNDTIMEO, 1000)
        if curve_server_key:
            from .security import curve_client

            curve_client(self.socket, "LOG_ENDPOINT", curve_server_key, curve_secret_key or None)
        self.socket.connect(endpoint)
        self.thread = threading.Thread(target=self._ship, name="zmqapp-logs", daemon=True)
        self.thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            document = self.format(record).encode()
        except Exception:  # pragma: no cover - a formatter bug must not break logging
            self.handleError(record)
            return
        try:
            self.queue.put_nowait(document)
        except queue.Full:
            self.dropped += 1

    def _ship(self) -> None:
        sock = self.socket
        while True:
            document = self.queue.get()
            if document is None:
                break
            try:
                sock.send(document)
                self.sent += 1
            except zmq.ZMQError:  # nobody took it within a second: drop, and go on
                self.dropped += 1
        sock.close()

    def close(self) -> None:
        """Ship what is queued (for about a second at most), then close."""
        try:
            self.queue.put(None, timeout=1.0)
        except queue.Full:  # pragma: no cover - a collector that is long gone
            pass
        self.thread.join(2.0)
        self.context.destroy(linger=0)
        super().close()


def ship_to(config: Any, app: str | None) -> LogShipper | None:
    """Start shipping the root logger's records to config ``LOG_ENDPOINT``, if it is set."""
    endpoint = config.get("LOG_ENDPOINT")
    if not endpoint:
        return None
    shipper = LogShipper(
        str(endpoint),
        app,
        worker=WORKER,
        curve_server_key=config.get("LOG_CURVE_SERVER_KEY"),
        curve_secret_key=config.get("LOG_CURVE_SECRET_KEY"),
    )
    root = logging.getLogger()
    root.addHandler(shipper)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return shipper


def stop_shipping(shipper: LogShipper | None) -> None:
    if shipper is not None:
        logging.getLogger().removeHandler(shipper)
        shipper.close()
