"""The ``zmqapp`` command line (also ``python -m zmqapp``).

Click glue only: finding and configuring apps lives in :mod:`zmqapp._discovery`, the shell
peer of ``send``, ``listen`` and ``replay`` in :mod:`zmqapp._peer` (recordings in
:mod:`zmqapp.recording`), the topology of ``graph`` in :mod:`zmqapp._graph`, certificate
files in :mod:`zmqapp._keys`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import zmq

from . import __version__, collect, dashboard, live, logs
from ._discovery import NoAppError, Setting, configure_app, load_app, locate_app, parse_setting
from ._graph import build_topology, to_dot, to_mermaid
from ._keys import CertificateError, write_certificates
from ._peer import (
    CODEC_NAMES,
    LISTEN_TYPES,
    SEND_TYPES,
    ListenOptions,
    SendOptions,
    argument_bytes,
    curve_keys,
    encode_input,
    listen,
    replay,
    send,
    stdin_lines,
)
from .app import App
from .channel import Channel, Endpoint, parse_endpoints
from .config import read_config_file
from .errors import SetupError
from .recording import RecordingError, load_recording
from .signals import app_started, app_stopped
from .workers import run_workers

F = TypeVar("F", bound=Callable[..., Any])
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Output files ``zmqapp graph`` renders through Graphviz rather than writing as text.
IMAGE_FORMATS = ("svg", "png", "pdf")

log = logging.getLogger("zmqapp")


@contextmanager
def setup_errors() -> Iterator[None]:
    """Show a :class:`~zmqapp.SetupError` as a one-line error (exit code 1), not a traceback."""
    try:
        yield
    except SetupError as exc:
        raise click.ClickException(str(exc)) from None


def _parse_settings(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> list[Setting]:
    try:
        return [parse_setting(value) for value in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def app_option(f: F) -> F:
    """The --app option (env ZMQAPP_APP) of the commands that load one app."""
    return click.option(
        "--app",
        "app_spec",
        envvar="ZMQAPP_APP",
        metavar="MODULE[:NAME]",
        help="The app: 'module', 'module:app', 'module:create_app()' or 'path/to/file.py'. "
        "Env: ZMQAPP_APP.",
    )(f)


def config_options(f: F) -> F:
    """--config and --set, applied as `zmqapp run` applies them (see load_app)."""
    f = click.option(
        "--set",
        "settings",
        multiple=True,
        metavar="KEY=VALUE",
        callback=_parse_settings,
        help="Set a config key, applied last; dots nest "
        "(CHANNELS.tasks.endpoint=tcp://10.0.0.5:5557). VALUE is JSON, else a string. "
        "Repeatable.",
    )(f)
    return click.option(
        "--config",
        "config_file",
        envvar="ZMQAPP_CONFIG",
        type=click.Path(exists=True, dir_okay=False),
        help="A .toml, .json or .py config file, applied before ZMQAPP_* env vars and --set; "
        "its APPS.<app name> tables configure one app each. Env: ZMQAPP_CONFIG.",
    )(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="zmqapp")
def main() -> None:
    """Run zmqapp services, and talk to any ZeroMQ peer from the shell.

    \b
    Examples:
      zmqapp run --app myservice:app --set CHANNELS.tasks.endpoint=tcp://10.0.0.5:5557
      zmqapp listen 'tcp://*:5557' --type PULL
      zmqapp send tcp://localhost:5555 Hello --type REQ
    """


# -- run and channels --------------------------------------------------------------------------


@main.command()
@app_option
@config_options
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Log messages from this level up, to stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS, case_sensitive=False),
    help="text, or json: one JSON object per line (app, worker, channel, peer, ...). "
    "Default: the LOG_FORMAT config key, else text.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run this many processes of the app. Endpoints it binds are bound once, here, by "
    "proxy devices, and the workers connect to them; a worker that dies is replaced.",
)
@click.option(
    "--http",
    metavar="ADDR",
    help="Serve /livez, /readyz, /metrics, /status, /tap and the dashboard here "
    "(127.0.0.1:9100, or :9100 for every interface); the HTTP config key.",
)
def run(
    app_spec: str | None,
    config_file: str | None,
    settings: list[Setting],
    log_level: str,
    log_format: str | None,
    workers: int,
    http: str | None,
) -> None:
    """Run an app until SIGINT or SIGTERM, then stop it gracefully.

    Config is applied on top of what the module sets: --config first, then ZMQAPP_* env
    vars (ZMQAPP_CHANNELS__tasks__endpoint=...), then each --set; then the app's own
    APPS.<name> table wins over the top level. app.run() reads the same sources.

    \b
    Examples:
      zmqapp run --app myservice:app --config prod.toml --set SHUTDOWN_TIMEOUT=2
      zmqapp run --app myservice:app --workers 4
    """
    early = _record_early_signals()
    logs.configure(log_level, log_format or "text")
    if http is not None:
        settings = [*settings, (["HTTP"], http)]
    with setup_errors():
        app = load_app(app_spec, config_file, settings)
        try:
            chosen = logs.check_format(log_format or app.config.get("LOG_FORMAT"))
        except ValueError as exc:
            raise SetupError(str(exc)) from None
    logs.configure(log_level, chosen, app=app.name)
    if early:  # stopped before it began: nothing to stop
        log.info("received %s before the app started; exiting", signal.Signals(early[0]).name)
        sys.exit(0)
    if workers > 1:
        assert app_spec is not None  # load_app found it
        with setup_errors():
            code = run_workers(app, workers, app_spec, config_file, settings, log_level, chosen)
        sys.exit(code)
    run_app(app, early)


def _record_early_signals() -> list[int]:
    """Until the app's loop takes over SIGINT and SIGTERM, a signal is noted rather than
    killing the process mid-start; the run then stops as soon as it has started."""
    received: list[int] = []

    def note(signum: int, frame: Any) -> None:
        received.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, note)
    return received


def run_app(app: App, early: list[int] | None = None) -> None:
    """Run ``app`` in this process, logging where its channels are and when it stopped."""

    def started(sender: App) -> None:
        where = "; ".join(
            f"{c.name} {c.type_name} {_running_endpoints(c)}" for c in sender.channels.values()
        )
        log.info("app %r is running: %s", sender.name, where or "no channels")
        if early:  # a signal came while it started
            sender.stop()

    def stopped(sender: App) -> None:
        log.info("app %r stopped", sender.name)

    with (
        app_started.connected_to(started, sender=app),
        app_stopped.connected_to(stopped, sender=app),
        setup_errors(),
    ):
        app.run()


def _running_endpoints(channel: Channel) -> str:
    """A running channel's endpoints, bound ones with the port the OS chose."""
    bound = iter(channel.bound)
    return ", ".join("@" + next(bound, e.address) if e.bind else str(e) for e in channel.endpoints)


@main.command()
@app_option
@config_options
def channels(app_spec: str | None, config_file: str | None, settings: list[Setting]) -> None:
    """Show an app's channels, with config applied as `zmqapp run` would.

    Endpoints read @address for a bind and >address for a connect.

    \b
    Example:
      zmqapp channels --app examples/five_minutes.py
    """
    with setup_errors():
        app = load_app(app_spec, config_file, settings)
        app.apply_config()
    header = ("NAME", "TYPE", "ENDPOINTS", "CODEC", "HANDLERS", "SEND_TO")
    rows = [
        (
            channel.name,
            channel.type_name,
            ", ".join(map(str, channel.endpoints)) or "-",
            str(getattr(channel.codec, "name", type(channel.codec).__name__)),
            ", ".join(handler.name for handler in channel.handlers) or "-",
            channel.send_to or "-",
        )
        for channel in app.channels.values()
    ]
    if not rows:
        click.echo(f"app {app.name!r} has no channels")
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


# -- send, listen and replay ------------------------------------------------------------------


def _endpoints(endpoint: str, bind: bool | None) -> list[Endpoint]:
    try:
        return parse_endpoints(endpoint, bind)
    except SetupError as exc:
        raise click.BadParameter(str(exc), param_hint="'ENDPOINT'") from None


def peer_options(types: Sequence[str], *, codec: bool = True) -> Callable[[F], F]:
    """ENDPOINT, --type (one of ``types``), --bind/--connect and --codec: what send, listen
    and replay share."""

    def decorate(f: F) -> F:
        options = [
            click.argument("endpoint"),
            click.option(
                "--type",
                "type_name",
                required=True,
                type=click.Choice(types, case_sensitive=False),
                help="The socket type.",
            ),
            click.option(
                "--bind/--connect",
                default=None,
                help="Bind or connect an ENDPOINT with no @ or > prefix. Default: bind a "
                "wildcard host (tcp://*:N), connect anything else.",
            ),
        ]
        if codec:
            options.append(
                click.option(
                    "--codec",
                    type=click.Choice(CODEC_NAMES, case_sensitive=False),
                    default="raw",
                    show_default=True,
                    help="How bodies are encoded and shown. For json and msgpack, what you "
                    "type is a JSON document.",
                )
            )
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def curve_options(f: F) -> F:
    """--curve-server-key and --curve-secret-key, for the tools that talk to a peer."""
    f = click.option(
        "--curve-secret-key",
        metavar="KEY|FILE",
        help="This side's CURVE secret key (Z85) or secret certificate file. Alone, it makes "
        "this side a CURVE server that admits any client.",
    )(f)
    return click.option(
        "--curve-server-key",
        metavar="KEY|FILE",
        help="Talk CURVE to a server with this public key (Z85) or certificate file; with no "
        "--curve-secret-key, a fresh client key pair is used.",
    )(f)


def sending_options(f: F) -> F:
    """--wait and --timeout, which send and replay share."""
    f = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=5.0,
        show_default=True,
        metavar="SECONDS",
        help="Fail (exit code 1) if no peer takes a message, or no reply comes (REQ, "
        "DEALER), this long.",
    )(f)
    return click.option(
        "--wait",
        type=click.FloatRange(min=0),
        help="PUB: wait up to SECONDS for a first subscriber (default: --timeout), as PUB drops "
        "messages nobody subscribes to. Other types: once a peer is there, pause SECONDS "
        "before sending, so more peers can connect (default 0).",
        metavar="SECONDS",
    )(f)


@main.command("send")
@peer_options(SEND_TYPES)
@click.argument("messages", nargs=-1, metavar="[MESSAGE]...")
@click.option("--topic", help="PUB only: sent as frame 0, before each message.")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    help="Send the one MESSAGE this many times, with a progress bar.",
)
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), help="At most this many msg/s."
)
@sending_options
@curve_options
def send_command(
    endpoint: str,
    type_name: str,
    bind: bool | None,
    codec: str,
    messages: tuple[str, ...],
    topic: str | None,
    count: int | None,
    rate: float | None,
    wait: float | None,
    timeout: float,
    curve_server_key: str | None,
    curve_secret_key: str | None,
) -> None:
    """Send messages to an endpoint; REQ and DEALER print the replies.

    Each MESSAGE argument is one message; with none, each line of stdin is one. ENDPOINT is
    @address to bind, >address to connect, or an address and --bind/--connect. DEALER sends
    an empty delimiter frame first, as REQ does, so REP and ROUTER servers answer it.

    A message is sent only to a peer that has completed the ZeroMQ handshake (on PUB, to a
    subscriber whose subscription matches). If none takes one within --timeout, the command
    says why (nothing listening, a host that does not resolve, a refused CURVE handshake)
    and exits 1; so does a zmqapp error reply. A summary goes to stderr.

    \b
    Examples:
      zmqapp send tcp://localhost:5555 Hello --type REQ
      zmqapp send tcp://localhost:5556 '{"temp": 21}' --type PUB --topic weather --codec json
      seq 100 | zmqapp send tcp://localhost:5557 --type PUSH --rate 10
      zmqapp send tcp://localhost:5557 job --type PUSH --count 10000 --rate 500
      zmqapp send tcp://server:5557 job --type PUSH --curve-server-key certs/server.key
    """
    type_name = type_name.upper()
    if topic is not None and type_name != "PUB":
        raise click.UsageError("--topic is for --type PUB; other types have no topics.")
    curve = curve_keys(curve_server_key, curve_secret_key)
    encoded: Iterable[bytes]
    if messages or count is not None:
        data = [argument_bytes(m) for m in messages] or list(_stdin_messages())
        if count is not None and len(data) != 1:
            raise click.UsageError(
                f"--count repeats one message, but {len(data)} were given; give exactly one."
            )
        encoded = [encode_input(codec, item) for item in data]  # bad input fails before sending
    else:
        encoded = (encode_input(codec, item) for item in _stdin_messages())  # streamed
    options = SendOptions(
        type_name=type_name,
        topic=argument_bytes(topic) if topic is not None else None,
        codec=codec,
        count=count,
        rate=rate,
        wait=wait,
        timeout=timeout,
        curve=curve,
    )
    send(_endpoints(endpoint, bind), encoded, options)


def _stdin_messages() -> Iterator[bytes]:
    stdin = sys.stdin
    if stdin is None or getattr(stdin, "buffer", None) is None:
        raise click.UsageError(
            "No MESSAGE was given and stdin is closed, so there is nothing to send; give "
            "messages as arguments, or pipe them in (seq 3 | zmqapp send ...)."
        )
    if stdin.isatty():
        click.echo("reading messages from stdin, one per line (Ctrl-D to end)", err=True)
    return stdin_lines(stdin.buffer)


@main.command("listen")
@peer_options(LISTEN_TYPES)
@click.option(
    "--topic",
    "topics",
    multiple=True,
    help="SUB only: subscribe to messages starting with this; repeatable. Default: all.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per message.")
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many messages.")
@click.option(
    "--reply",
    metavar="TEXT",
    help="REP and ROUTER: answer every request with TEXT (encoded with --codec). "
    "Default: echo the request back.",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Also write every message, with its time, to FILE (JSON lines; see the README), "
    "for zmqapp replay.",
)
@curve_options
def listen_command(
    endpoint: str,
    type_name: str,
    bind: bool | None,
    codec: str,
    topics: tuple[str, ...],
    as_json: bool,
    count: int | None,
    reply: str | None,
    record: str | None,
    curve_server_key: str | None,
    curve_secret_key: str | None,
) -> None:
    """Print the messages that arrive at an endpoint; REP and ROUTER answer them.

    One line per message: <identity> (ROUTER), [topic] (SUB, frame 0 of a message of two
    or more frames), then the body frames separated by ' | '. Bytes are shown as text when
    they are printable UTF-8, else as a Python bytes literal; --codec decodes them first.

    With --json, each line is {"frames": [...], "topic": ..., "identity": ...}, topic and
    identity null when absent. Bytes that are UTF-8 are JSON strings; others are
    {"encoding": "base64", "data": "..."}. A number JSON cannot hold (1e999999, NaN) is a
    string: its text as sent. Ctrl-C or SIGTERM stops (exit code 0).

    A PULL, REP, ROUTER or DEALER that connects to someone else's bound socket takes a
    share of that socket's traffic away from its real consumers; listen warns, and
    `zmqapp tap` watches a zmqapp app's channel without taking anything.

    \b
    Examples:
      zmqapp listen 'tcp://*:5557' --type PULL
      zmqapp listen tcp://localhost:5556 --type SUB --topic weather --json
      zmqapp listen tcp://localhost:5556 --type SUB --record weather.jsonl
      zmqapp listen 'tcp://*:5555' --type REP --reply World
    """
    type_name = type_name.upper()
    if topics and type_name != "SUB":
        raise click.UsageError("--topic is for --type SUB; other types have no topics.")
    if reply is not None and type_name not in ("REP", "ROUTER"):
        raise click.UsageError("--reply is for --type REP and ROUTER, which answer requests.")
    options = ListenOptions(
        type_name=type_name,
        topics=[argument_bytes(t) for t in topics],
        codec=codec,
        as_json=as_json,
        count=count,
        reply=None if reply is None else encode_input(codec, argument_bytes(reply)),
        curve=curve_keys(curve_server_key, curve_secret_key),
        record=record,
    )
    listen(_endpoints(endpoint, bind), options)


@main.command("replay")
@click.argument("recording", type=click.Path(exists=True, dir_okay=False))
@peer_options(SEND_TYPES, codec=False)
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Replay this many times faster than recorded (0.5: half speed); 0 sends as fast "
    "as possible.",
)
@click.option("--loop", is_flag=True, help="Start again at the end, until Ctrl-C or SIGTERM.")
@sending_options
@curve_options
def replay_command(
    recording: str,
    endpoint: str,
    type_name: str,
    bind: bool | None,
    speed: float,
    loop: bool,
    wait: float | None,
    timeout: float,
    curve_server_key: str | None,
    curve_secret_key: str | None,
) -> None:
    """Send the messages of a recording again, at the pace they were recorded.

    RECORDING is a file zmqapp listen --record wrote. Each message goes out with its frames
    as recorded (on PUB, frame 0 is the topic), to ENDPOINT by the same rules as zmqapp send,
    and with the same honesty: if no peer takes them within --timeout, it exits 1.

    \b
    Examples:
      zmqapp replay weather.jsonl 'tcp://*:5556' --type PUB
      zmqapp replay jobs.jsonl tcp://localhost:5557 --type PUSH --speed 10
    """
    type_name = type_name.upper()
    try:
        _, messages = load_recording(recording)
    except RecordingError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"Could not read {recording}: {exc}.") from None
    if not messages:
        raise click.ClickException(f"{recording} holds no messages, so there is nothing to replay.")
    options = SendOptions(
        type_name=type_name,
        wait=wait,
        timeout=timeout,
        curve=curve_keys(curve_server_key, curve_secret_key),
        verb="replayed",
    )
    replay(_endpoints(endpoint, bind), messages, options, speed=speed, loop=loop)


# -- graph -------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--app",
    "app_specs",
    multiple=True,
    envvar="ZMQAPP_APP",
    metavar="MODULE[:NAME]",
    help="An app to include, as for `zmqapp run`; repeat for each app.",
)
@config_options
@click.option(
    "--format",
    "output_format",
    type=click.Choice(("mermaid", "dot")),
    help="Mermaid flowchart (the default) or Graphviz DOT.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to this file instead of stdout; .svg, .png or .pdf renders DOT with Graphviz.",
)
def graph(
    app_specs: tuple[str, ...],
    config_file: str | None,
    settings: list[Setting],
    output_format: str | None,
    output: str | None,
) -> None:
    """Draw how messages flow between channels, across apps.

    Each channel is a node (SUB nodes list their subscriptions). An edge joins a channel that
    connects to the channel that binds the address, in the direction messages flow: PUSH to
    PULL, PUB to SUB, and from the side that asks to the side that answers (arrowheads at
    both ends: replies come back). Dotted edges inside an app are send_to. Each app is
    configured as `zmqapp run` would configure it (--config, ZMQAPP_* variables, --set;
    its own APPS.<name> table), so the picture is the system as it will run.

    Warnings (also written as comments) name connects nobody binds, addresses bound twice,
    socket types that cannot talk to each other, SUB channels no PUB here is wired to, and
    APPS tables for apps not in the picture. Which topics a PUB sends is decided at run
    time, so a SUB whose subscription never matches cannot be caught.

    \b
    Examples:
      zmqapp graph --app worker.py --app driver.py
      zmqapp graph --app ingest.py --app analyzer.py --app alerter.py --config system.toml
      zmqapp graph --app worker.py --format dot --output topology.svg
    """
    if not app_specs:
        raise NoAppError("No app given: pass --app MODULE[:NAME] once for each app to draw.")
    image = _image_format(output)
    if image and output_format == "mermaid":
        raise click.UsageError(
            f"Graphviz renders {output}, and it reads DOT, not Mermaid; drop --format mermaid, "
            "or write the Mermaid text to a .mmd file."
        )
    with setup_errors():
        apps = [(spec, locate_app(spec)) for spec in app_specs]
        for _, app in apps:
            configure_app(app, config_file, settings)
        topology = build_topology(apps)
        if config_file is not None:
            named = read_config_file(config_file).get("APPS") or {}
            drawn = {app.name for _, app in apps}
            for name in sorted(set(named) - drawn):
                topology.warnings.append(
                    f"{config_file} has a table APPS.{name}, but no app here is named {name!r} "
                    f"(apps: {', '.join(sorted(drawn))}); a typo, or an app left out?"
                )
    for warning in topology.warnings:
        click.echo(f"warning: {warning}", err=True)
    text = to_dot(topology) if image or output_format == "dot" else to_mermaid(topology)
    if output is None:
        click.echo(text, nl=False)
    elif image:
        _render_dot(text, image, output)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)


def _image_format(output: str | None) -> str | None:
    suffix = os.path.splitext(output or "")[1].lower().lstrip(".")
    return suffix if suffix in IMAGE_FORMATS else None


def _render_dot(text: str, image: str, output: str) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise click.ClickException(
            f"Graphviz is not installed (there is no 'dot' program on PATH), so {output} cannot "
            "be rendered. Install it (apt install graphviz, brew install graphviz), or write "
            "the text instead: zmqapp graph ... --format dot --output topology.dot"
        )
    done = subprocess.run(
        [dot, f"-T{image}", "-o", output], input=text.encode(), capture_output=True, timeout=60
    )
    if done.returncode != 0:
        raise click.ClickException(
            f"Graphviz could not render {output}: {done.stderr.decode(errors='replace').strip()}"
        )


# -- keygen ------------------------------------------------------------------------------------


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", default="server", show_default=True, help="The certificates' base name.")
@click.option("--force", is_flag=True, help="Replace certificates that already exist.")
def keygen(directory: str, name: str, force: bool) -> None:
    """Create a CURVE certificate pair: NAME.key (public) and NAME.key_secret.

    Give the secret file to the channel that owns it (curve_secret_key) and the public one to
    its peers (curve_server_key, or a client's authorized_keys directory). The public file is
    mode 0644 and the secret one 0600, whatever the umask; a file is never written through a
    symbolic link (with --force, a link in the way is replaced, not its target).

    \b
    Example:
      zmqapp keygen certs --name server
    """
    if not zmq.has("curve"):
        raise click.ClickException(
            "This libzmq was built without CURVE support, so it cannot make keys; install a "
            "pyzmq wheel, which bundles a libzmq that has it."
        )
    try:
        public_file, secret_file, public_key = write_certificates(directory, name, force=force)
    except CertificateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"public certificate: {public_file}")
    click.echo(f"secret certificate: {secret_file} (keep it private)")
    click.echo(f"public key: {public_key.decode('ascii')}")


# -- live tools: tap, top, dashboard, logs -------------------------------------------------------
# One block, kept apart so that it merges by hand: the work is done in zmqapp.live (tap, top),
# zmqapp.dashboard and zmqapp.collect (logs); this is click glue only.


def token_option(f: F) -> F:
    """--token (env ZMQAPP_HTTP_TOKEN): the apps' HTTP_TOKEN, for the tools that read them."""
    return click.option(
        "--token",
        envvar="ZMQAPP_HTTP_TOKEN",
        metavar="TOKEN",
        help="The apps' HTTP_TOKEN, sent as Authorization: Bearer TOKEN. Env: ZMQAPP_HTTP_TOKEN.",
    )(f)


@contextmanager
def live_errors() -> Iterator[None]:
    """Show what a live tool could not do as a one-line error (exit code 1)."""
    try:
        yield
    except (live.LiveError, collect.CollectError) as exc:
        raise click.ClickException(str(exc)) from None


def _app_urls(values: Sequence[str]) -> list[str]:
    try:
        return [live.app_url(value) for value in values]
    except live.LiveError as exc:
        raise click.BadParameter(str(exc), param_hint="'URL'") from None


@main.command("tap")
@click.argument("url")
@click.argument("channel")
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many messages.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per message.")
@token_option
@click.option(
    "--record",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Also write what the channel receives (a send-only channel: what it sends) to FILE, "
    "with its timing, for zmqapp replay.",
)
def tap_command(
    url: str,
    channel: str,
    count: int | None,
    as_json: bool,
    token: str | None,
    record: str | None,
) -> None:
    """Print what CHANNEL of a running app receives and sends, as it happens.

    URL is the app's HTTP address (its HTTP config, e.g. http://127.0.0.1:9100); the app
    streams the messages from GET /tap/CHANNEL without taking them from its handlers. Each
    line: time, direction (in or out), channel, [topic], body. With --json, each line is
    {"channel", "direction", "time", "topic", "body", "frames"}. A tap that cannot keep up
    loses messages, never slows the app: how many is said on stderr.

    \b
    With --record FILE, what the channel receives (for a channel that only sends: what it
    sends) is also written to FILE with its timing, for zmqapp replay.

    \b
    Examples:
      zmqapp tap http://127.0.0.1:9100 tasks
      zmqapp tap http://ingest:9100 readings --count 20 --json --token "$TOKEN"
      zmqapp tap http://127.0.0.1:9100 tasks --count 100 --record tasks.jsonl
    """
    [base] = _app_urls([url])
    with live_errors():
        live.tap(base, channel, token=token, count=count, as_json=as_json, record=record)


@main.command("top")
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between refreshes; rates are measured over it.",
)
@click.option("--once", is_flag=True, help="Print one screen (from two polls) and exit.")
@token_option
def top_command(urls: tuple[str, ...], interval: float, once: bool, token: str | None) -> None:
    """Live numbers of running apps in the terminal, refreshed in place.

    For each app (URL: its HTTP address) and each channel: messages in, out and failed per
    second, send queue, handlers in flight, peers, handler latency (p50, p99) and endpoints;
    for a --workers pool, a row per worker too. Exit code 1 if an app did not answer.

    \b
    Examples:
      zmqapp top http://127.0.0.1:9100 http://127.0.0.1:9101
      zmqapp top http://ingest:9100 --once
    """
    bases = _app_urls(urls)
    with live_errors():
        code = live.top(bases, token=token, interval=interval, once=once)
    sys.exit(code)


@main.command("dashboard")
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9200,
    show_default=True,
    help="The port to serve the page on (0: one the OS picks).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to serve on; 0.0.0.0 for the screen on the wall (the page shows "
    "numbers, never message bodies).",
)
@token_option
def dashboard_command(urls: tuple[str, ...], port: int, host: str, token: str | None) -> None:
    """Serve one live page for several apps: the topology and its message rates.

    Each URL is an app's HTTP address. The page shows which channel binds where, who
    connects to it, send_to inside each app and subscriptions, each edge with its live
    message rate, every channel's numbers, and a row per app and per worker. It updates
    every second.

    \b
    Example:
      zmqapp dashboard http://ingest:9100 http://analyzer:9100 http://alerter:9100 --port 9200
    """
    bases = _app_urls(urls)
    with live_errors():
        dashboard.serve_dashboard(
            bases,
            host=host,
            port=port,
            token=token,
            announce=lambda text: click.echo(text, err=True),
            warn=lambda text: click.echo(text, err=True),
        )


@main.command("logs")
@click.argument("endpoint")
@click.option(
    "--level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Print records from this level up.",
)
@click.option("--app", "apps", multiple=True, metavar="NAME", help="Only this app; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON documents as they came.")
@click.option(
    "--curve-secret-key",
    metavar="FILE",
    help="Be a CURVE server with this secret certificate (zmqapp keygen) or Z85 key; apps "
    "then need LOG_CURVE_SERVER_KEY.",
)
@click.option(
    "--authorized-keys",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="With --curve-secret-key: accept only the apps whose public certificates are in DIR "
    "(their LOG_CURVE_SECRET_KEY).",
)
def logs_command(
    endpoint: str,
    level: str | None,
    apps: tuple[str, ...],
    as_json: bool,
    curve_secret_key: str | None,
    authorized_keys: str | None,
) -> None:
    """Print the log records apps ship to ENDPOINT (their LOG_ENDPOINT config).

    ENDPOINT is bound ('tcp://*:5600'), unless written '>tcp://host:5600' (connect). Each
    line: time, level, app[worker], #channel, logger: message, (peer). Every worker of a
    --workers pool ships its own records. Records are JSON, never unpickled. Ctrl-C or
    SIGTERM stops.

    \b
    Examples:
      zmqapp logs 'tcp://*:5600' --level WARNING
      zmqapp logs 'tcp://*:5600' --app ingest --json
      zmqapp logs 'tcp://*:5600' --curve-secret-key certs/logs.key_secret --authorized-keys apps/
    """
    with live_errors():
        collect.collect(
            endpoint,
            only=collect.app_filter(level, apps),
            as_json=as_json,
            curve_secret_key=curve_secret_key,
            authorized_keys=authorized_keys,
            color=sys.stdout.isatty(),
        )
