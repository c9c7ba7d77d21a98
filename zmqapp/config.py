"""App configuration: a dict with Flask's loading methods.

Only UPPERCASE keys are config keys. ``CHANNELS`` maps a channel name to option overrides, so
every option of every channel can be changed without touching code::

    app.config.from_prefixed_env()          # ZMQAPP_CHANNELS__tasks__endpoint=tcp://10.0.0.5:5557
    app.config.from_file("zmqapp.toml", load=tomllib.load, text=False)
"""

from __future__ import annotations

import copy
import errno
import importlib
import json
import os
import sys
import types
from collections.abc import Callable, Mapping
from typing import IO, Any

#: The defaults every app starts with. Each is documented in the README's Config section.
DEFAULTS: dict[str, Any] = {
    # Milliseconds a closing socket keeps trying to deliver queued messages.
    "LINGER": 1000,
    # High-water marks (messages) for every socket, unless its channel's options say otherwise.
    "SNDHWM": 1000,
    "RCVHWM": 1000,
    # Largest message (bytes) a channel with a bound endpoint accepts; -1 for no limit. ZeroMQ
    # enforces it per frame, zmqapp on the sum of a message's frames.
    "MAXMSGSIZE": 64 * 1024 * 1024,
    # Most frames a message may have; a longer one is dropped as a decode failure.
    "MAXFRAMES": 1024,
    # Seconds a graceful stop waits for queued messages and in-flight handlers.
    "SHUTDOWN_TIMEOUT": 5.0,
    # Messages one channel reads per wakeup before the loop lets other channels run.
    "BATCH_SIZE": 256,
    # Messages a channel queues while its peers are not taking them, before sends fail.
    "SEND_QUEUE": 10000,
    # Seconds app.request waits for a reply unless the channel or the call says otherwise.
    "REQUEST_TIMEOUT": 5.0,
    # Worker threads for threaded=True handlers (None: Python's default).
    "THREADS": None,
    # Put the exception message in error replies (the class name is always there).
    "ERROR_DETAIL": False,
    # Watch every socket with a ZeroMQ monitor and send socket-event signals.
    "MONITOR": False,
    # --workers: seconds a worker's event loop may go without answering before it is replaced.
    "WORKER_TIMEOUT": 10.0,
    # Serve /livez, /readyz, /metrics and /status here ("127.0.0.1:9100", ":9100"); None: off.
    "HTTP": None,
    # A token every HTTP endpoint but the probes asks for (Authorization: Bearer TOKEN).
    "HTTP_TOKEN": None,
    # Seconds of event-loop lag after which /livez answers 503.
    "LOOP_LAG_LIMIT": 5.0,
    # Seconds a channel may go without a peer, while it has messages to send or is bound,
    # before a warning says so.
    "NO_PEER_WARN": 10.0,
    # "text", or "json": one JSON object per log line (app, worker, channel, peer, ...).
    "LOG_FORMAT": "text",
    # Ship every log record as JSON over PUSH to this endpoint ("tcp://collector:5600").
    "LOG_ENDPOINT": None,
    # Seconds the event loop may be held before the log names what holds it (None: never).
    "LOOP_BLOCKED_WARN": 1.0,
    # ZMTP heartbeat interval in seconds for every channel without heartbeat= (None: off).
    "HEARTBEAT": None,
    # tcp+dns:// endpoints: seconds between lookups, and nameservers ("ip", "ip:port")
    # instead of the system's resolver.
    "DNS_REFRESH": 10.0,
    "DNS_NAMESERVERS": None,
    # Channel name -> {option: value} overrides.
    "CHANNELS": {},
}


class Config(dict):  # type: ignore[type-arg]
    """A dict of config keys, with methods that load them from files, objects and the env.

    ``root_path`` is where relative file names are looked up (the app's directory).
    """

    def __init__(
        self, root_path: str | os.PathLike[str], defaults: Mapping[str, Any] | None = None
    ):
        super().__init__(copy.deepcopy(dict(defaults or {})))
        self.root_path = os.fspath(root_path)

    def from_mapping(self, mapping: Mapping[str, Any] | None = None, **kwargs: Any) -> bool:
        """Update from a mapping and keyword arguments, uppercase keys only."""
        mappings: dict[str, Any] = {}
        if mapping is not None:
            mappings.update(mapping)
        mappings.update(kwargs)
        for key, value in mappings.items():
            if key.isupper():
                self[key] = value
        return True

    def from_object(self, obj: object | str) -> None:
        """Update from an object's (or an import string's) uppercase attributes."""
        if isinstance(obj, str):
            obj = import_string(obj)
        for key in dir(obj):
            if key.isupper():
                self[key] = getattr(obj, key)

    def from_pyfile(self, filename: str | os.PathLike[str], silent: bool = False) -> bool:
        """Update from a Python file's uppercase globals."""
        filename = os.path.join(self.root_path, filename)
        module = types.ModuleType("config")
        module.__file__ = filename
        try:
            with open(filename, mode="rb") as config_file:
                exec(compile(config_file.read(), filename, "exec"), module.__dict__)
        except OSError as exc:
            if silent and exc.errno in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR):
                return False
            exc.strerror = f"Unable to load configuration file ({exc.strerror})"
            raise
        self.from_object(module)
        return True

    def from_file(
        self,
        filename: str | os.PathLike[str],
        load: Callable[[IO[Any]], Mapping[str, Any]] | None = None,
        silent: bool = False,
        text: bool = True,
    ) -> bool:
        """Update from a file read with ``load`` (default: JSON, or TOML for ``.toml``).

        ``app.config.from_file("config.toml", load=tomllib.load, text=False)``; ``load`` is
        optional for ``.json`` and ``.toml`` files, which are recognised by name.
        """
        filename = os.path.join(self.root_path, filename)
        if load is None:
            if str(filename).endswith(".toml"):
                load, text = _toml_load(), False
            else:
                load = json.load
        try:
            with open(filename, "r" if text else "rb") as f:
                obj = load(f)
        except OSError as exc:
            if silent and exc.errno in (errno.ENOENT, errno.EISDIR):
                return False
            exc.strerror = f"Unable to load configuration file ({exc.strerror})"
            raise
        return self.from_mapping(obj)

    def from_envvar(self, variable_name: str, silent: bool = False) -> bool:
        """Update from the Python file named by an environment variable."""
        rv = os.environ.get(variable_name)
        if not rv:
            if silent:
                return False
            raise RuntimeError(
                f"The environment variable {variable_name!r} is not set and as such "
                "configuration could not be loaded. Set this variable and make it point "
                "to a configuration file"
            )
        return self.from_pyfile(rv, silent=silent)

    def from_prefixed_env(
        self, prefix: str = "ZMQAPP", *, loads: Callable[[str], Any] = json.loads
    ) -> bool:
        """Update from environment variables that start with ``prefix_``.

        Values are parsed with ``loads`` (JSON), falling back to the string itself.
        ``__`` nests: ``ZMQAPP_CHANNELS__tasks__endpoint`` sets
        ``config["CHANNELS"]["tasks"]["endpoint"]``.
        """
        prefix = f"{prefix}_"
        for key in sorted(os.environ):
            if not key.startswith(prefix):
                continue
            value: Any = os.environ[key]
            try:
                value = loads(value)
            except Exception:
                pass
            self.set_path(key[len(prefix) :].split("__"), value)
        return True

    def set_path(self, parts: list[str], value: Any) -> None:
        """Set a nested key: ``["CHANNELS", "tasks", "endpoint"]`` -> ``self[...][...][...]``."""
        *path, tail = parts
        current: dict[str, Any] = self
        for part in path:
            nested = current.get(part)
            if not isinstance(nested, dict):
                nested = current[part] = {}
            current = nested
        current[tail] = value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {dict.__repr__(self)}>"


def _toml_load() -> Callable[[IO[Any]], Mapping[str, Any]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.load


def import_string(name: str) -> Any:
    """Import ``package.module`` or ``package.module:attr`` / ``package.module.attr``."""
    if ":" in name:
        module_name, attr = name.split(":", 1)
        return getattr(importlib.import_module(module_name), attr)
    try:
        return importlib.import_module(name)
    except ImportError:
        module_name, _, attr = name.rpartition(".")
        if not module_name:
            raise
        return getattr(importlib.import_module(module_name), attr)
