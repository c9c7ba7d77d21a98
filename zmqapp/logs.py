"""Log lines an operator can use: one JSON object per line, with the app, the worker, the
channel and the peer each line is about.

``LOG_FORMAT = "json"`` (or ``zmqapp run --log-format json``) writes every record as::

    {"time": "2026-11-25T14:00:00.123456+00:00", "level": "WARNING", "app": "ingest",
     "worker": 1, "channel": "tasks", "peer": "10.0.0.7", "logger": "zmqapp",
     "message": "channel 'tasks' dropped an undecodable message ...", "exc": null}

``channel`` and ``peer`` come from the record (zmqapp passes them as ``extra``; so can you),
``app`` and ``worker`` from the process (``worker`` is null outside a ``--workers`` pool).
``exc`` holds the formatted traceback, if any.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import IO, Any

#: The formats ``LOG_FORMAT`` and ``--log-format`` take.
FORMATS = ("text", "json")
#: The text format's line, with the worker in it when there is one.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
            handler.setFormatter(JsonFormatter(app, worker))
