"""Finding the app a command line names, and configuring it as ``zmqapp run`` does.

``--app`` takes what Flask's ``--app`` takes: ``module``, ``module:name``,
``module:create_app('dev')``, or a file path, ``path/to/service.py[:name]``. Without a name,
the module's ``app`` attribute is used, else its only :class:`~zmqapp.App` instance, else a
``create_app()`` or ``make_app()`` factory called with no arguments.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import click

from .app import App

#: The names of the factories a module is searched for, in order.
FACTORY_NAMES = ("create_app", "make_app")

#: A parsed ``--set KEY=VALUE``: the dotted key split into parts, and the value.
Setting = tuple[list[str], Any]


class NoAppError(click.UsageError):
    """``--app`` names nothing zmqapp can load an app from."""


def load_app(
    app_spec: str | None, config_file: str | None = None, settings: Sequence[Setting] = ()
) -> App:
    """Find the app ``app_spec`` names and configure it for the command line.

    Config is layered on what the module set as ``app.run()`` layers it: ``config_file``
    (else the file ``ZMQAPP_CONFIG`` names), then environment variables starting with
    ``ZMQAPP_`` (except ``ZMQAPP_APP`` and ``ZMQAPP_CONFIG``), then each ``--set`` setting;
    then the app's ``APPS.<name>`` table wins over the top level.
    """
    if not app_spec:
        raise NoAppError(
            "No app given: pass --app MODULE[:NAME] or set ZMQAPP_APP, "
            "e.g. --app myservice:app or --app path/to/myservice.py."
        )
    app = locate_app(app_spec)
    configure_app(app, config_file, settings)
    return app


def locate_app(app_spec: str) -> App:
    """Import the module ``app_spec`` names and return the App in it (see the module doc)."""
    cwd = os.getcwd()
    if sys.path[:1] != [cwd]:
        sys.path.insert(0, cwd)  # a console script does not put the directory on the path
    module_spec, _, target = app_spec.partition(":")
    if not module_spec:
        raise NoAppError(f"--app {app_spec!r} names no module; write it as MODULE[:NAME].")
    module = import_app_module(module_spec)
    if target.strip():
        return _app_from_target(module, module_spec, target.strip())
    return _find_app(module, module_spec)


def import_app_module(module_spec: str) -> ModuleType:
    """Import a module by dotted name, or by file path (``dir/service.py``)."""
    if module_spec.endswith(".py") or "/" in module_spec or os.sep in module_spec:
        module_name = _prepare_path(module_spec)
    else:
        module_name = module_spec
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise NoAppError(
                f"Could not import {module_name!r}: there is no such module. Run zmqapp from "
                "the directory that contains it, or give its file path "
                "(--app path/to/service.py)."
            ) from None
        raise NoAppError(_import_failed(module_name)) from None
    except ImportError:
        raise NoAppError(_import_failed(module_name)) from None


def _import_failed(module_name: str) -> str:
    """The message for an ImportError raised inside the module: its traceback, without the
    frames of the import machinery and of zmqapp itself."""
    exc = sys.exc_info()[1]
    assert exc is not None
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename != __file__
        and not frame.filename.startswith("<frozen ")
        and os.path.basename(os.path.dirname(frame.filename)) != "importlib"
    ]
    text = "".join(traceback.format_list(frames) + traceback.format_exception_only(exc))
    return (
        f"While importing {module_name!r}, an ImportError was raised:\n\n"
        f"Traceback (most recent call last):\n{text}"
    )


def _prepare_path(path: str) -> str:
    """Put the directory a module file can be imported from on ``sys.path``; return its
    dotted name (walking up through packages, so relative imports keep working)."""
    real = os.path.realpath(path)
    if not real.endswith(".py") and os.path.isfile(real + ".py"):
        real += ".py"
    if os.path.isdir(real) and os.path.isfile(os.path.join(real, "__init__.py")):
        real = os.path.join(real, "__init__.py")
    if not os.path.isfile(real):
        raise NoAppError(f"Could not import {path!r}: there is no such file.")
    directory, filename = os.path.split(os.path.splitext(real)[0])
    parts = [] if filename == "__init__" else [filename]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        parts.append(package)
    if not parts:
        raise NoAppError(f"Could not import {path!r}: it names no module.")
    if sys.path[:1] != [directory]:
        sys.path.insert(0, directory)
    return ".".join(reversed(parts))


def _app_instances(module: ModuleType) -> dict[str, App]:
    """The module's App instances by attribute name, each instance once."""
    found: dict[str, App] = {}
    for name, value in vars(module).items():
        if isinstance(value, App) and all(value is not other for other in found.values()):
            found[name] = value
    return found


def _find_app(module: ModuleType, module_spec: str) -> App:
    candidate = getattr(module, "app", None)
    if isinstance(candidate, App):
        return candidate
    apps = _app_instances(module)
    if len(apps) == 1:
        return next(iter(apps.values()))
    if len(apps) > 1:
        names = ", ".join(apps)
        first = next(iter(apps))
        raise NoAppError(
            f"Found several apps in module {module_spec!r} ({names}); pick one with "
            f"--app {module_spec}:NAME, e.g. --app {module_spec}:{first}."
        )
    for factory_name in FACTORY_NAMES:
        factory = getattr(module, factory_name, None)
        if callable(factory):
            return _call_factory(factory, factory_name, module_spec, [], {})
    raise NoAppError(
        f"Could not find a zmqapp App in module {module_spec!r}. Name it 'app' "
        "(app = App(__name__)), define a create_app() or make_app() factory, or pass "
        f"--app {module_spec}:NAME."
    )


def _app_from_target(module: ModuleType, module_spec: str, target: str) -> App:
    name, args, kwargs, is_call = _parse_target(target)
    try:
        value = getattr(module, name)
    except AttributeError:
        apps = ", ".join(_app_instances(module)) or "none"
        raise NoAppError(
            f"Module {module_spec!r} has no attribute {name!r} (the App instances in it: {apps})."
        ) from None
    if is_call or inspect.isfunction(value):
        return _call_factory(value, name, module_spec, args, kwargs)
    if not isinstance(value, App):
        raise NoAppError(
            f"{module_spec}:{name} is a {type(value).__name__}, not a zmqapp App; name an "
            "App instance or a factory that returns one."
        )
    return value


def _parse_target(target: str) -> tuple[str, list[Any], dict[str, Any], bool]:
    """``name`` or ``factory(literal, key=literal)``, parsed without evaluating code."""
    try:
        expr = ast.parse(target, mode="eval").body
    except SyntaxError:
        raise NoAppError(
            f"Could not parse {target!r} as an attribute name or a call, e.g. 'app' or "
            "'create_app(\"dev\")'."
        ) from None
    if isinstance(expr, ast.Name):
        return expr.id, [], {}, False
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        try:
            args = [ast.literal_eval(arg) for arg in expr.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in expr.keywords if kw.arg}
        except ValueError:
            raise NoAppError(
                f"The arguments in {target!r} must be Python literals (strings, numbers, "
                "True/False/None, lists, dicts)."
            ) from None
        return expr.func.id, args, kwargs, True
    raise NoAppError(
        f"{target!r} is neither an attribute name nor a call; write e.g. 'app' or 'create_app()'."
    )


def _call_factory(
    factory: Any, name: str, module_spec: str, args: list[Any], kwargs: dict[str, Any]
) -> App:
    if not callable(factory):
        raise NoAppError(f"{module_spec}:{name} is a {type(factory).__name__}, not a factory.")
    try:
        inspect.signature(factory).bind(*args, **kwargs)
    except TypeError as exc:
        raise NoAppError(
            f"Could not call {name}() from {module_spec!r} with the arguments given ({exc}); "
            f"pass them in --app, e.g. --app '{module_spec}:{name}(\"dev\")'."
        ) from None
    except ValueError:  # no signature to check (some builtins): just call it
        pass
    app = factory(*args, **kwargs)
    if not isinstance(app, App):
        raise NoAppError(
            f"{name}() in {module_spec!r} returned {type(app).__name__}, not a zmqapp App; "
            "a factory must return the App it built."
        )
    return app


# -- config ------------------------------------------------------------------------------------


def parse_setting(text: str) -> Setting:
    """Parse ``KEY=VALUE`` (KEY dotted for nesting; VALUE JSON, else the string itself)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ValueError(
            f"{text!r} is not KEY=VALUE; write e.g. SHUTDOWN_TIMEOUT=2 or "
            "CHANNELS.tasks.endpoint=tcp://127.0.0.1:5557"
        )
    if not parts[0].isupper():
        raise ValueError(
            f"config keys are UPPERCASE: write {'.'.join([parts[0].upper(), *parts[1:]])!r} "
            f"instead of {key.strip()!r}"
        )
    value: Any
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return parts, value


def configure_app(app: App, config_file: str | None, settings: Iterable[Setting]) -> None:
    """Layer the config file, ``ZMQAPP_*`` environment variables and ``settings`` on the app's
    config, as ``app.run()`` does (see :meth:`zmqapp.Config.load_sources`)."""
    app.config.load_sources(
        app.name, channels=app.channels, config_file=config_file, settings=settings
    )
