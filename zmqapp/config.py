"""App configuration: a dict with Flask's loading methods, and the layered sources of a system.

Only UPPERCASE keys are config keys. ``CHANNELS`` maps a channel name to option overrides, so
every option of every channel can be changed without touching code::

    app.config.from_prefixed_env()          # ZMQAPP_CHANNELS__tasks__endpoint=tcp://10.0.0.5:5557
    app.config.from_file("zmqapp.toml", load=tomllib.load, text=False)

A *system* is several apps configured from one place. :meth:`Config.load_sources` layers the
sources ``app.run()`` and ``zmqapp run`` both read, in this order, each over the last:

1. what the code set (``DEFAULTS``, ``app.config[...] = ...``, ``from_file``, ...);
2. the config file (``--config``, or the file the ``ZMQAPP_CONFIG`` variable names);
3. ``ZMQAPP_*`` environment variables (``__`` nests);
4. ``--set KEY=VALUE`` settings (dots nest).

Tables merge key by key and any other value replaces the one before. Then, in what the layers
add up to, the table ``APPS.<app name>`` wins over the top level for the app of that name;
tables of other apps are left for them. Relative paths in a config file's channel options that
name files (:data:`PATH_OPTIONS`) resolve from that file's directory.
"""

from __future__ import annotations

import copy
import errno
import importlib
import json
import logging
import os
import sys
import types
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from zmq.utils import z85

from .errors import SetupError

log = logging.getLogger("zmqapp.config")

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

#: Environment variables (after the ``ZMQAPP_`` prefix) that are command-line options, not
#: config keys: ``ZMQAPP_APP`` names the app and ``ZMQAPP_CONFIG`` the config file.
OPTION_ENV_NAMES = ("APP", "CONFIG")
#: Channel options that name files. Relative paths in them, in a config file, resolve from
#: that file's directory; a Z85 key (which is not a path) is left as it is. From environment
#: variables and ``--set`` they stay relative to the working directory, as a shell user means.
PATH_OPTIONS = frozenset({"curve_secret_key", "curve_server_key", "authorized_keys"})
#: The config file kinds the layered loader reads, by suffix.
FILE_KINDS = (".toml", ".json", ".py")
#: Keys whose value is a table with a shape zmqapp checks.
_TABLE_KEYS = ("APPS", "CHANNELS")


class Config(dict):  # type: ignore[type-arg]
    """A dict of config keys, with methods that load them from files, objects and the env.

    ``root_path`` is where relative file names are looked up (the app's directory).
    """

    def __init__(
        self, root_path: str | os.PathLike[str], defaults: Mapping[str, Any] | None = None
    ):
        super().__init__(copy.deepcopy(dict(defaults or {})))
        self.root_path = os.fspath(root_path)
        #: True once :meth:`load_sources` has run: ``app.run()`` then does not run it again.
        self.sources_loaded = False

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
        """Update from a Python file's uppercase globals.

        Relative paths in channel options that name files resolve from the file's directory.
        """
        filename = os.path.join(self.root_path, filename)
        try:
            values = _read_pyfile(filename)
        except OSError as exc:
            if silent and exc.errno in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR):
                return False
            exc.strerror = f"Unable to load configuration file ({exc.strerror})"
            raise
        self.from_mapping(resolve_paths(values, os.path.dirname(os.path.abspath(filename))))
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
        optional for ``.json`` and ``.toml`` files, which are recognised by name. Relative
        paths in channel options that name files resolve from the file's directory.
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
        return self.from_mapping(resolve_paths(obj, os.path.dirname(os.path.abspath(filename))))

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
        ``config["CHANNELS"]["tasks"]["endpoint"]``. ``ZMQAPP_APP`` and ``ZMQAPP_CONFIG``
        name the app and the config file, so they are not read as config keys.
        """
        for parts, value, _ in _prefixed_env(os.environ, prefix, loads):
            self.set_path(parts, value)
        return True

    def set_path(self, parts: list[str], value: Any) -> None:
        """Set a nested key: ``["CHANNELS", "tasks", "endpoint"]`` -> ``self[...][...][...]``."""
        _set_path(self, parts, value)

    def load_sources(
        self,
        app_name: str,
        *,
        channels: Collection[str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        settings: Iterable[tuple[Sequence[str], Any]] = (),
        environ: Mapping[str, str] | None = None,
        prefix: str = "ZMQAPP",
    ) -> None:
        """Layer a system's config sources on this config, for the app called ``app_name``.

        The order (see the module doc): what is already here, then ``config_file`` (by default
        the file ``ZMQAPP_CONFIG`` names, if set), then ``ZMQAPP_*`` variables of ``environ``
        (default ``os.environ``), then ``settings`` (``(["CHANNELS", "tasks", "endpoint"],
        value)`` pairs, as ``--set`` gives them). Then ``APPS.<app_name>`` wins over the top
        level, and the ``APPS`` key is consumed. ``app.run()`` and ``zmqapp run`` call this.

        ``channels`` are the names of the app's channels: a ``CHANNELS`` entry, at the top
        level or in the app's own table, that names another channel is an error. So are
        config keys that are not UPPERCASE, and tables in the wrong place; each error names
        the key and where it came from.
        """
        environ = os.environ if environ is None else environ
        if config_file is None:
            config_file = environ.get(f"{prefix}_CONFIG") or None
        layers: list[dict[str, Any]] = []  # each checked as it is read
        if config_file is not None:
            layers.append(read_config_file(config_file))
        env: dict[str, Any] = {}
        for parts, value, name in _prefixed_env(environ, prefix, json.loads):
            check_layer(_nested(parts, value), f"environment variable {name}")
            _set_path(env, parts, value)
        layers.append(env)
        given: dict[str, Any] = {}
        for key, value in settings:
            check_layer(_nested(key, value), f"--set {'.'.join(key)}")
            _set_path(given, list(key), value)
        layers.append(given)

        for layer in layers:
            merge(self, layer)
        apps = self.pop("APPS", None) or {}
        check_layer({"APPS": apps}, "config")
        own = apps.get(app_name) or {}
        if apps and app_name not in apps:
            log.warning(
                "the config has APPS tables for %s but none for this app, %r; an app's name "
                "is App(name=...), else its module's name (a script's file name)",
                ", ".join(repr(name) for name in apps),
                app_name,
            )
        if channels is not None:
            self._check_channel_names(app_name, channels, own)
        merge(self, own)
        self.sources_loaded = True

    def _check_channel_names(
        self, app_name: str, channels: Collection[str], own: Mapping[str, Any]
    ) -> None:
        known = ", ".join(repr(n) for n in channels) or "none"
        for name in own.get("CHANNELS") or {}:
            if name not in channels:
                raise SetupError(
                    f"config APPS.{app_name}.CHANNELS names channel {name!r}, which app "
                    f"{app_name!r} does not declare (channels: {known}); fix the name, or "
                    "move the entry to the table of the app that has it"
                )
        for name in self.get("CHANNELS") or {}:
            if name not in channels:
                raise SetupError(
                    f"config CHANNELS names channel {name!r}, which app {app_name!r} does not "
                    f"declare (channels: {known}); top-level CHANNELS applies to every app of "
                    f"a system, so put options for a channel only some apps have under "
                    f"APPS.<app name>.CHANNELS.{name}"
                )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {dict.__repr__(self)}>"


# -- the layers --------------------------------------------------------------------------------


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a ``.toml``, ``.json`` or ``.py`` config file holds, checked, with relative paths
    in channel options resolved from the file's directory.

    A TOML or JSON file holds only config: a key that is not UPPERCASE is an error that names
    it. A Python file's other globals (imports, helpers) are ignored, as Flask does, except
    mis-cased ``apps``/``channels``. Raises :class:`SetupError` with a sentence.
    """
    name = os.fspath(path)
    full = os.path.abspath(name)  # relative to the working directory, as a shell user means
    kind = os.path.splitext(full)[1].lower()
    if kind not in FILE_KINDS:
        raise SetupError(
            f"config file {name} is not a .toml, .json or .py file; zmqapp reads config from "
            "those three kinds"
        )
    try:
        if kind == ".py":
            values = _read_pyfile(full)
            strays = [k for k in values if not k.isupper() and k.upper() in _TABLE_KEYS]
            values = {k: v for k, v in values.items() if k.isupper() or k in strays}
        elif kind == ".toml":
            with open(full, "rb") as fb:
                values = dict(_toml_load()(fb))
        else:
            with open(full, encoding="utf-8") as f:
                values = json.load(f)
    except OSError as exc:
        raise SetupError(f"could not read config file {name}: {exc.strerror or exc}") from None
    except (ValueError, SyntaxError) as exc:  # JSON and TOML decode errors are ValueErrors
        raise SetupError(f"config file {name} is not valid: {exc}") from None
    if not isinstance(values, dict):
        raise SetupError(
            f"config file {name} holds a {type(values).__name__}; it must hold a table of "
            "config keys"
        )
    check_layer(values, f"config file {name}")
    return resolve_paths(values, os.path.dirname(full))


def check_layer(layer: Mapping[str, Any], where: str) -> None:
    """Raise :class:`SetupError` for keys that are not UPPERCASE and misplaced tables.

    Top-level keys and the keys of each ``APPS.<name>`` table are config keys (UPPERCASE);
    ``APPS`` maps app names to such tables and does not nest; ``CHANNELS`` maps channel
    names to tables of options.
    """
    for key, value in layer.items():
        _check_key(key, value, where, "")
    apps = layer.get("APPS")
    if apps is not None:
        if not isinstance(apps, dict):
            raise SetupError(
                f"{where}: APPS must be a table of app names to their config, e.g. "
                "[APPS.ingest] in TOML"
            )
        for app_name, table in apps.items():
            if not isinstance(table, dict):
                raise SetupError(
                    f"{where}: APPS.{app_name} must be a table of config keys for app "
                    f"{app_name!r}, e.g. [APPS.{app_name}] with SHUTDOWN_TIMEOUT = 2"
                )
            for key, value in table.items():
                _check_key(key, value, where, f"APPS.{app_name}.")
                if key == "APPS":
                    raise SetupError(
                        f"{where}: APPS.{app_name}.APPS is misplaced: APPS tables do not nest; "
                        f"configure app {app_name!r} with the keys of APPS.{app_name} itself"
                    )
            _check_channels(table.get("CHANNELS"), where, f"APPS.{app_name}.CHANNELS")
    _check_channels(layer.get("CHANNELS"), where, "CHANNELS")


def _check_key(key: Any, value: Any, where: str, prefix: str) -> None:
    if isinstance(key, str) and key.isupper():
        return
    text = f"{where}: {prefix}{key} is not a config key: config keys are UPPERCASE"
    upper = str(key).upper()
    if upper in _TABLE_KEYS or upper in DEFAULTS:
        raise SetupError(f"{text}; write {prefix}{upper}")
    if isinstance(value, dict) and not prefix:
        raise SetupError(
            f"{text}. To configure the app named {key!r}, write APPS.{key} (in TOML "
            f"[APPS.{key}]); options of a channel named {key!r} go under CHANNELS.{key}"
        )
    if isinstance(value, dict):
        raise SetupError(
            f"{text}; options of a channel named {key!r} go under {prefix}CHANNELS.{key}"
        )
    raise SetupError(f"{text}; write {prefix}{upper} if that is the key you mean")


def _check_channels(channels: Any, where: str, path: str) -> None:
    if channels is None:
        return
    if not isinstance(channels, dict):
        raise SetupError(
            f"{where}: {path} must be a table of channel names to their options, e.g. "
            f'[{path}.tasks] with endpoint = "tcp://127.0.0.1:5557"'
        )
    for name, options in channels.items():
        if not isinstance(options, dict):
            raise SetupError(
                f"{where}: {path}.{name} must be a table of options for channel {name!r}, "
                f'e.g. [{path}.{name}] with endpoint = "tcp://127.0.0.1:5557"'
            )
        for key in options:
            if str(key).upper() in _TABLE_KEYS:
                raise SetupError(
                    f"{where}: {path}.{name}.{key} is misplaced: a channel's table holds its "
                    f"options (endpoint, type, ...), not {str(key).upper()}"
                )


def resolve_paths(values: Mapping[str, Any], base: str) -> dict[str, Any]:
    """``values`` with relative paths in :data:`PATH_OPTIONS` made absolute from ``base``.

    Looks in ``CHANNELS`` and each ``APPS.<name>.CHANNELS``; returns a new mapping and leaves
    ``values`` as it was.
    """
    result = dict(values)
    if isinstance(result.get("CHANNELS"), dict):
        result["CHANNELS"] = _resolve_channels(result["CHANNELS"], base)
    apps = result.get("APPS")
    if isinstance(apps, dict):
        result["APPS"] = {
            name: (
                {**table, "CHANNELS": _resolve_channels(table["CHANNELS"], base)}
                if isinstance(table, dict) and isinstance(table.get("CHANNELS"), dict)
                else table
            )
            for name, table in apps.items()
        }
    return result


def _resolve_channels(channels: dict[str, Any], base: str) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name, options in channels.items():
        if isinstance(options, dict):
            options = {
                key: _resolve_path(value, base) if str(key).lower() in PATH_OPTIONS else value
                for key, value in options.items()
            }
        resolved[name] = options
    return resolved


def _resolve_path(value: Any, base: str) -> Any:
    if not isinstance(value, (str, os.PathLike)):
        return value  # a callable authorized_keys, a key as bytes
    text = os.path.expanduser(os.fspath(value))
    if os.path.isabs(text):
        return text
    path = os.path.normpath(os.path.join(base, text))
    if _is_z85_key(text) and not os.path.exists(path):
        return value
    return path


def _is_z85_key(text: str) -> bool:
    if len(text) != 40:
        return False
    try:
        return len(z85.decode(text.encode("ascii"))) == 32
    except (ValueError, KeyError, TypeError, UnicodeEncodeError):
        return False


def merge(target: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Merge ``layer`` into ``target``: tables key by key, anything else replaces (copied)."""
    for key, value in layer.items():
        current = target.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            merge(current, value)
        else:
            target[key] = copy.deepcopy(value)


def _prefixed_env(
    environ: Mapping[str, str], prefix: str, loads: Callable[[str], Any]
) -> Iterable[tuple[list[str], Any, str]]:
    """(key parts, parsed value, variable name) for each ``prefix_*`` variable, sorted."""
    start = f"{prefix}_"
    for name in sorted(environ):
        if not name.startswith(start) or name[len(start) :] in OPTION_ENV_NAMES:
            continue
        value: Any = environ[name]
        try:
            value = loads(value)
        except Exception:
            pass
        parts = name[len(start) :].split("__")
        if not all(parts):
            raise SetupError(
                f"environment variable {name} has an empty key part; __ separates nested keys, "
                f"as in {prefix}_CHANNELS__tasks__endpoint"
            )
        yield parts, value, name


def _nested(parts: Sequence[str], value: Any) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    _set_path(nested, list(parts), value)
    return nested


def _set_path(target: dict[str, Any], parts: list[str], value: Any) -> None:
    *path, tail = parts
    current = target
    for part in path:
        nested = current.get(part)
        if not isinstance(nested, dict):
            nested = current[part] = {}
        current = nested
    current[tail] = value


def _read_pyfile(filename: str) -> dict[str, Any]:
    """The globals a Python config file defines, modules and dunders left out."""
    module = types.ModuleType("config")
    module.__file__ = filename
    with open(filename, mode="rb") as config_file:
        exec(compile(config_file.read(), filename, "exec"), module.__dict__)
    return {
        key: value
        for key, value in vars(module).items()
        if not key.startswith("__") and not isinstance(value, types.ModuleType)
    }


def _toml_load() -> Callable[[IO[Any]], Mapping[str, Any]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.load


# -- names -------------------------------------------------------------------------------------


def default_app_name(import_name: str) -> str:
    """The name an ``App(import_name)`` gets unless ``name=`` is given.

    The last dotted component of the module's name (``services.ingest`` -> ``ingest``); for
    a script run as ``python ingest.py`` (``__main__``), the file's stem; for
    ``python -m services.ingest``, ``ingest``. ``APPS.<name>`` config tables use this name.
    """
    if import_name in ("__main__", "__mp_main__"):
        main = sys.modules.get(import_name)
        spec = getattr(main, "__spec__", None)
        if spec is not None and getattr(spec, "name", None):
            import_name = str(spec.name)  # python -m package.module
        else:
            filename = getattr(main, "__file__", None)
            if not filename:
                return import_name  # an interactive session
            path = Path(str(filename))
            return path.parent.name if path.stem == "__main__" else path.stem
    parts = [part for part in import_name.split(".") if part not in ("__main__", "__mp_main__")]
    return parts[-1] if parts else import_name


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
