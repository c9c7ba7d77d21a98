"""``zmqapp logs``: the log records of every process in one place.

Apps with ``LOG_ENDPOINT`` ship each record as one JSON document over PUSH
(:class:`zmqapp.logs.LogShipper`; every worker of a ``--workers`` pool ships its own). This
end binds a PULL (or connects one, for an address written ``>tcp://...``), and prints each
record with the app, worker and channel it is about, or the documents as they came
(``as_json``). Documents are parsed as JSON and nothing else: a message that is not a JSON
object is counted and skipped, never unpickled.

With a secret key it is a CURVE server: apps then need ``LOG_CURVE_SERVER_KEY`` (its public
key) and, when ``authorized_keys`` names a directory of client certificates,
``LOG_CURVE_SECRET_KEY`` of one of them. The keys are checked by pyzmq's ZAP authenticator,
in a thread, started before the socket binds; the socket enforces its ZAP domain, so a
missing authenticator refuses rather than admits.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import click
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from ._peer import interruptible
from .channel import parse_endpoints
from .errors import SetupError
from .security import curve_server, enforce_zap, read_secret_key

#: The ZAP domain of the collector's socket.
DOMAIN = "zmqapp/logs"
_COLORS = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "red", "DEBUG": "bright_black"}


class CollectError(Exception):
    """The collector could not start; the message says what to do."""


@dataclass
class LogFilter:
    """Which records to print: from ``level`` up, of the ``apps`` named (all if empty)."""

    level: int = logging.NOTSET
    apps: frozenset[str] = field(default_factory=frozenset)

    def admits(self, record: dict[str, Any]) -> bool:
        if self.apps and str(record.get("app")) not in self.apps:
            return False
        number = logging.getLevelName(str(record.get("level", "")).upper())
        return not isinstance(number, int) or number >= self.level


def source_of(record: dict[str, Any]) -> str:
    """``app`` or ``app[worker]``: the process a record came from."""
    app = str(record.get("app") or "?")
    worker = record.get("worker")
    return app if worker is None else f"{app}[{worker}]"


def format_record(record: dict[str, Any], *, color: bool = False) -> str:
    """One record as a line (and its traceback's lines): time, level, app[worker], #channel,
    logger: message, and the peer it is about."""
    when = str(record.get("time") or "")
    try:
        moment = datetime.datetime.fromisoformat(when).astimezone()
        when = moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    except ValueError:
        pass
    level = str(record.get("level") or "?")
    shown_level = f"{level:<8}"
    if color and level in _COLORS:
        shown_level = click.style(shown_level, fg=_COLORS[level], bold=level != "DEBUG")
    source = source_of(record)
    source = click.style(f"{source:<14}", bold=True) if color else f"{source:<14}"
    channel = record.get("channel")
    parts = [when, shown_level, source]
    if channel:
        parts.append(f"#{channel}")
    parts.append(f"{record.get('logger') or '-'}: {record.get('message', '')}")
    if record.get("peer"):
        parts.append(f"(peer {record['peer']})")
    line = " ".join(parts)
    exc = record.get("exc")
    if exc:
        line += "\n" + "\n".join("    " + text for text in str(exc).splitlines())
    return line


def _authenticator(
    context: zmq.Context[Any], authorized_keys: str | None, note: Callable[[str], None]
) -> ThreadAuthenticator:
    """pyzmq's ZAP authenticator for the collector's domain: keys from ``authorized_keys``,
    or any key (encrypted, anonymous) without it. Refusals are named with ``note``."""
    allowed: set[bytes] | None = None
    if authorized_keys is not None:
        if not os.path.isdir(authorized_keys):
            raise CollectError(
                f"--authorized-keys {authorized_keys!r} is not a directory; put the apps' public "
                "certificates (*.key, from zmqapp keygen) in one"
            )
        allowed = set(zmq.auth.load_certificates(authorized_keys))

    class Keys:
        def callback(self, domain: str, key: bytes) -> bool:
            if allowed is None or key in allowed:
                return True
            note(
                f"refused a log sender whose key {z85.encode(key).decode()} is not in "
                f"{authorized_keys}"
            )
            return False

    auth = ThreadAuthenticator(context, log=logging.getLogger("zmqapp.logs.zap"))
    auth.start()
    auth.configure_curve_callback(DOMAIN, credentials_provider=Keys())
    return auth


def collect(
    endpoint: str,
    *,
    only: LogFilter | None = None,
    as_json: bool = False,
    curve_secret_key: str | None = None,
    authorized_keys: str | None = None,
    out: Callable[[str], None] = click.echo,
    note: Callable[[str], None] = lambda text: click.echo(text, err=True),
    color: bool = False,
) -> int:
    """Print the records shipped to ``endpoint`` until Ctrl-C or SIGTERM; the number printed.

    ``endpoint`` binds, unless written ``>address`` (connect). Raises :class:`CollectError`
    when the socket or the keys cannot be set up.
    """
    only = only or LogFilter()
    if authorized_keys is not None and not curve_secret_key:
        raise CollectError(
            "--authorized-keys checks the keys of CURVE clients, so it needs "
            "--curve-secret-key (this end's secret certificate, from zmqapp keygen)"
        )
    try:
        endpoints = parse_endpoints(endpoint, True)
    except SetupError as exc:
        raise CollectError(str(exc)) from None
    for item in endpoints:
        if "://" not in item.address:
            raise CollectError(
                f"endpoint {item.address!r} has no transport; write it like 'tcp://*:5600' "
                "(bind) or '>tcp://collector:5600' (connect)"
            )
    context: zmq.Context[Any] = zmq.Context()
    auth: ThreadAuthenticator | None = None
    sock = context.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    printed = skipped = 0
    try:
        if curve_secret_key:
            try:
                public, secret = read_secret_key(curve_secret_key, "--curve-secret-key")
            except SetupError as exc:
                raise CollectError(str(exc)) from None
            auth = _authenticator(context, authorized_keys, note)
            curve_server(sock, public, secret)
            enforce_zap(sock, DOMAIN)
            if authorized_keys is None:
                note(
                    "warning: without --authorized-keys any CURVE client may ship logs here "
                    "(encrypted, but not authenticated)"
                )
        for item in endpoints:
            try:
                if item.bind:
                    sock.bind(item.address)
                    where = bytes(sock.getsockopt(zmq.LAST_ENDPOINT)).decode()
                    note(f"collecting logs: bound to {where}")
                else:
                    sock.connect(item.address)
                    note(f"collecting logs: connected to {item.address}")
            except zmq.ZMQError as exc:
                verb = "bind" if item.bind else "connect to"
                raise CollectError(
                    f"cannot {verb} {item.address}: {exc}; check the address, or choose a free "
                    "port ('*' for one the OS picks)"
                ) from None
        if curve_secret_key:
            note(f"CURVE server key (LOG_CURVE_SERVER_KEY): {z85.encode(public).decode()}")
        with interruptible():
            while True:
                frames = sock.recv_multipart()
                record = _document(frames[-1])
                if record is None:
                    skipped += 1
                    if skipped in (1, 10, 100) or skipped % 1000 == 0:
                        note(
                            f"skipped {skipped} message(s) that are not JSON log records (is "
                            "something other than a zmqapp LOG_ENDPOINT sending here?)"
                        )
                    continue
                if not only.admits(record):
                    continue
                out(frames[-1].decode("utf-8") if as_json else format_record(record, color=color))
                printed += 1
    finally:
        sock.close(linger=0)
        if auth is not None:
            auth.stop()
        context.term()
    return printed


def _document(data: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def level_number(name: str) -> int:
    """A level name (any case) as its number."""
    return int(logging.getLevelName(name.upper()))


def app_filter(level: str | None, apps: Iterable[str]) -> LogFilter:
    """The filter the command line's ``--level`` and ``--app`` options ask for."""
    return LogFilter(level_number(level) if level else logging.NOTSET, frozenset(apps))
