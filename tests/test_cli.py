"""The `zmqapp` command line, run for real in subprocesses, over real sockets."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner
from clitools import ROOT, SCRIPT, ZMQAPP, clean_env, free_tcp_port, read_line, write, zmqapp

from zmqapp import App
from zmqapp.cli import main
from zmqapp.recording import Recorder
from zmqapp.testing import wait_for

COMMANDS = ("run", "channels", "send", "listen", "replay", "graph", "keygen")


# -- the group ---------------------------------------------------------------------------------


def test_console_script_lists_every_command_with_an_example() -> None:
    assert SCRIPT.is_file(), f"the zmqapp console script is not installed at {SCRIPT}"
    done = subprocess.run(
        [str(SCRIPT), "--help"], capture_output=True, text=True, env=clean_env(), timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: zmqapp ")
    for command in COMMANDS:
        assert re.search(rf"^  {command} +\S", done.stdout, re.M), done.stdout
        sub = subprocess.run(
            [str(SCRIPT), command, "--help"],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=30,
        )
        assert sub.returncode == 0, sub.stderr
        assert f"zmqapp {command} " in sub.stdout.split("Example", 1)[1], sub.stdout


def test_python_m_zmqapp_prints_the_version() -> None:
    done = zmqapp("--version")
    assert done.returncode == 0, done.stderr
    assert "zmqapp" in done.stdout and "0.1.0" in done.stdout


# -- run ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_serves_until_a_signal_then_exits_zero(run_cli: Any, peer: Any, signum: int) -> None:
    proc = run_cli(
        "run",
        "--app",
        "tests/apps/cli_service.py",
        "--set",
        "CHANNELS.upper.endpoint=@tcp://127.0.0.1:*",
    )
    address = proc.expect(r"is running: upper REP @(tcp://\S+)", "stderr").group(1)
    req = peer(zmq.REQ, connect=address)
    req.send(b"hello")
    assert req.recv() == b"HELLO"
    proc.proc.send_signal(signum)
    assert proc.wait() == 0, proc.seen
    assert any("app 'cli_service' stopped" in line for line in proc.seen["stderr"]), proc.seen
    assert not any("Traceback" in line for line in proc.seen["stderr"]), proc.seen


@pytest.mark.parametrize(
    "filename, source",
    [
        ("settings.toml", 'A = "file"\nB = "file"\nC = "file"\n'),
        ("settings.json", '{"A": "file", "B": "file", "C": "file"}'),
        ("settings.py", 'A = "file"\nB = "file"\nC = "file"\nlowercase = "ignored"\n'),
    ],
    ids=["toml", "json", "py"],
)
def test_run_applies_file_then_env_then_set(tmp_path: Path, filename: str, source: str) -> None:
    config = write(tmp_path / filename, source)
    env = clean_env(
        ZMQAPP_APP="tests/apps/cli_config.py",  # --app from the environment
        ZMQAPP_B="env",
        ZMQAPP_C="env",
    )
    done = zmqapp(
        "run",
        "--config",
        config,
        "--set",
        "C=set",
        "--set",
        "NESTED.x.y=[1, 2]",
        "--set",
        f"CHANNELS.out.endpoint=>ipc://{tmp_path}/nobody.sock",
        "--log-level",
        "warning",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("config "))
    assert json.loads(line.split(" ", 1)[1]) == {
        "A": "file",
        "B": "env",
        "C": "set",
        "D": "module",
        "NESTED": {"x": {"y": [1, 2]}},  # --set values are JSON when they parse
        "APP": None,  # ZMQAPP_APP names the app; it is no config key
        "endpoint": f">ipc://{tmp_path}/nobody.sock",  # dotted --set reached the channel
    }
    assert "is running" not in done.stderr  # --log-level warning hides INFO


def test_run_shows_a_setup_error_without_a_traceback(peer: Any) -> None:
    taken = peer(zmq.PULL, bind="tcp://127.0.0.1:*").last_endpoint.decode()
    done = zmqapp(
        "run", "--app", "tests/apps/cli_service.py", "--set", f"CHANNELS.upper.endpoint=@{taken}"
    )
    assert done.returncode == 1, done.stderr
    assert f"Error: channel 'upper' could not bind {taken}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "setting, message",
    [
        ("LINGER", "is not KEY=VALUE"),
        ("linger=0", "config keys are UPPERCASE: write 'LINGER'"),
        ("CHANNELS..endpoint=x", "is not KEY=VALUE"),
    ],
)
def test_run_rejects_a_malformed_set(setting: str, message: str) -> None:
    done = zmqapp("run", "--app", "tests/apps/cli_service.py", "--set", setting)
    assert done.returncode == 2
    assert "Invalid value for '--set'" in done.stderr and message in done.stderr


# -- app discovery (through `channels`, which loads an app without running it) -------------------

MODULES = {
    "svc.py": """
        from zmqapp import App
        app = App("svc")
        app.add_channel("from_app", endpoint="tcp://127.0.0.1:1", type="PUSH")
        other = App("other")
    """,
    "single.py": """
        from zmqapp import App
        service = App("single")
        service.add_channel("from_single", endpoint="tcp://127.0.0.1:1", type="PUSH")
    """,
    "factory.py": """
        from zmqapp import App
        def create_app(flavour="plain"):
            app = App("factory")
            app.add_channel("made_" + flavour, endpoint="tcp://127.0.0.1:1", type="PUSH")
            return app
    """,
    "two.py": """
        from zmqapp import App
        first = App("first")
        first.add_channel("from_first", endpoint="tcp://127.0.0.1:1", type="PUSH")
        second = App("second")
        second.add_channel("from_second", endpoint="tcp://127.0.0.1:1", type="PUSH")
    """,
    "pkg/__init__.py": "",
    "pkg/endpoints.py": "TASKS = 'tcp://127.0.0.1:2'\n",
    "pkg/service.py": """
        from zmqapp import App
        from .endpoints import TASKS
        app = App("pkg")
        app.add_channel("from_package", endpoint=TASKS, type="PUSH")
    """,
    "broken.py": """
        import zmqapp_no_such_dependency
    """,
    "badfactory.py": """
        def make_app():
            return "not an app"
    """,
    "empty.py": "X = 1\n",
}


@pytest.fixture
def modules(tmp_path: Path) -> Path:
    for name, source in MODULES.items():
        write(tmp_path / name, source)
    return tmp_path


@pytest.mark.parametrize(
    "spec, channel",
    [
        ("svc", "from_app"),  # the attribute named app, though the module has two
        ("svc:other", None),  # an attribute by name (an app with no channels)
        ("single", "from_single"),  # the only App instance
        ("factory", "made_plain"),  # a create_app() factory
        ("factory:create_app('custom')", "made_custom"),  # a factory call with arguments
        ("two:second", "from_second"),
        ("svc.py", "from_app"),  # a file path
        ("pkg/service.py", "from_package"),  # a file in a package, relative import and all
        ("pkg.service", "from_package"),
    ],
)
def test_app_discovery_finds_the_app(modules: Path, spec: str, channel: str | None) -> None:
    done = zmqapp("channels", "--app", spec, cwd=modules)  # the cwd must be importable
    assert done.returncode == 0, done.stderr
    if channel is None:
        assert done.stdout == "app 'other' has no channels\n"
    else:
        assert re.search(rf"^{channel} +PUSH", done.stdout, re.M), done.stdout


def test_app_discovery_reads_zmqapp_app(modules: Path) -> None:
    done = zmqapp("channels", env=clean_env(ZMQAPP_APP="two:first"), cwd=modules)
    assert done.returncode == 0, done.stderr
    assert "from_first" in done.stdout


@pytest.mark.parametrize(
    "spec, messages, traceback",
    [
        ("nosuchmodule", ["Could not import 'nosuchmodule': there is no such module"], False),
        ("nosuchdir/svc.py", ["Could not import 'nosuchdir/svc.py': there is no such file"], False),
        (
            "broken",
            [
                "While importing 'broken', an ImportError was raised",
                "No module named 'zmqapp_no_such_dependency'",
            ],
            True,  # the error inside the module is shown, not hidden
        ),
        ("svc:nope", ["Module 'svc' has no attribute 'nope' (the App instances in it: app, "
                      "other)"], False),
        ("two", ["Found several apps in module 'two' (first, second)", "--app two:first"], False),
        ("badfactory", ["make_app() in 'badfactory' returned str, not a zmqapp App"], False),
        ("factory:create_app(1, 2)", ["Could not call create_app() from 'factory'"], False),
        ("factory:create_app(open('x'))", ["must be Python literals"], False),
        ("empty", ["Could not find a zmqapp App in module 'empty'"], False),
        ("", ["No app given: pass --app MODULE[:NAME] or set ZMQAPP_APP"], False),
    ],
)  # fmt: skip
def test_app_discovery_explains_what_went_wrong(
    modules: Path, spec: str, messages: list[str], traceback: bool
) -> None:
    done = zmqapp("channels", *(["--app", spec] if spec else []), cwd=modules)
    assert done.returncode == 2, done.stderr
    for message in messages:
        assert message in done.stderr
    assert ("Traceback" in done.stderr) is traceback, done.stderr


# -- channels ----------------------------------------------------------------------------------


def test_channels_prints_an_aligned_table_with_config_applied() -> None:
    done = zmqapp(
        "channels",
        "--app",
        "examples/five_minutes.py",
        "--set",
        "CHANNELS.tasks.endpoint=@tcp://127.0.0.1:7000,>ipc:///tmp/x",
        env=clean_env(ZMQAPP_CHANNELS__hello__codec="json"),
    )
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    names = header.split()
    assert names == ["NAME", "TYPE", "ENDPOINTS", "CODEC", "HANDLERS", "SEND_TO"]
    starts = [header.index(name) for name in names]

    def cells(line: str) -> list[str]:
        ends = [*starts[1:], None]
        return [line[a:b].strip() for a, b in zip(starts, ends, strict=True)]

    rows = {row[0]: row for row in map(cells, lines)}
    assert rows == {
        "tasks": [
            "tasks", "PULL", "@tcp://127.0.0.1:7000, >ipc:///tmp/x", "raw",
            "five_minutes.work", "results",
        ],
        "results": ["results", "PUSH", ">tcp://localhost:5558", "raw", "-", "-"],
        "hello": ["hello", "REP", "@tcp://*:5555", "json", "five_minutes.hello", "-"],
        "weather": [
            "weather", "SUB", ">tcp://localhost:5556", "raw", "five_minutes.weather", "-",
        ],
    }  # fmt: skip


def test_channels_shows_a_config_problem_cleanly() -> None:
    done = zmqapp("channels", "--app", "tests/apps/cli_service.py")
    assert done.returncode == 1
    assert "Error: channel 'upper' has no endpoint" in done.stderr
    assert "Traceback" not in done.stderr


# -- send --------------------------------------------------------------------------------------


def test_send_pushes_each_argument_as_a_message(peer: Any) -> None:
    pull = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    address = pull.last_endpoint.decode()
    done = zmqapp("send", address, "one", "two words", "--type", "push")
    assert done.returncode == 0, done.stderr
    assert [pull.recv(), pull.recv()] == [b"one", b"two words"]


def test_send_reads_one_message_per_stdin_line(peer: Any) -> None:
    pull = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    done = zmqapp(
        "send", ">" + pull.last_endpoint.decode(), "--type", "PUSH", input="first\r\nsecond\n"
    )
    assert done.returncode == 0, done.stderr
    assert [pull.recv(), pull.recv()] == [b"first", b"second"]


def test_send_json_reencodes_and_rejects_invalid_json(peer: Any) -> None:
    pull = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    address = pull.last_endpoint.decode()
    done = zmqapp("send", address, '{ "n" : [1, 2] }', "--type", "PUSH", "--codec", "json")
    assert done.returncode == 0, done.stderr
    assert pull.recv() == b'{"n":[1,2]}'
    bad = zmqapp("send", address, "{not json", "--type", "PUSH", "--codec", "json")
    assert bad.returncode == 2
    assert "'{not json' is not valid JSON" in bad.stderr


def test_send_pub_waits_for_the_subscriber_and_sends_the_topic(run_cli: Any, peer: Any) -> None:
    sub = peer(zmq.SUB, bind="tcp://127.0.0.1:*")
    sub.setsockopt(zmq.SUBSCRIBE, b"news")
    address = sub.last_endpoint.decode()
    proc = run_cli("send", address, "hello", "--type", "PUB", "--topic", "news", "--wait", "20")
    # Polling lets the SUB socket take the connection and send its subscription; the command
    # waits for that subscription before publishing, so nothing is lost to the slow joiner.
    assert sub.poll(20_000), proc.seen
    assert sub.recv_multipart() == [b"news", b"hello"]
    assert proc.wait() == 0, proc.seen
    assert not any("warning" in line for line in proc.seen["stderr"]), proc.seen


def test_send_pub_fails_when_nobody_subscribes() -> None:
    done = zmqapp("send", "@tcp://127.0.0.1:*", "void", "--type", "PUB", "--wait", "0.1")
    assert done.returncode == 1, done.stderr
    assert re.search(
        r"Error: No subscriber arrived within 0\.1 s, and a PUB socket drops what nobody "
        r"subscribes to, so nothing was sent: no peer connected to tcp://127\.0\.0\.1:\d+\.",
        done.stderr,
    ), done.stderr


def test_send_req_prints_replies_from_a_zmqapp_rep_server(app: App, running: Any) -> None:
    app.config["ERROR_DETAIL"] = True

    @app.channel("upper", endpoint="@tcp://127.0.0.1:*", type="REP")
    def upper(body: bytes) -> bytes:
        if body == b"fail":
            raise ValueError("asked to fail")
        return body.upper()

    running(app)
    address = app.channels["upper"].bound[0]
    done = zmqapp("send", address, "hello", "caf\u00e9", "--type", "REQ")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "HELLO\nCAF\u00e9\n"

    failed = zmqapp("send", address, "fail", "--type", "REQ")
    assert failed.returncode == 1
    assert (
        "The server answered with an error (handler_failed): ValueError: asked to fail"
        in failed.stderr
    )


def test_send_dealer_talks_to_a_zmqapp_router_server(app: App, running: Any) -> None:
    @app.channel("router", endpoint="@tcp://127.0.0.1:*", type="ROUTER", codec="json")
    def answer(body: Any, identity: bytes) -> Any:
        return {"got": body}

    running(app)
    done = zmqapp(
        "send", app.channels["router"].bound[0], '{"n": 1}', "--type", "DEALER", "--codec", "json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"got": {"n": 1}}


def test_send_dealer_adds_the_envelope_a_rep_peer_needs(run_cli: Any, peer: Any) -> None:
    rep = peer(zmq.REP, bind="tcp://127.0.0.1:*")
    proc = run_cli("send", rep.last_endpoint.decode(), "hi", "--type", "DEALER")
    assert rep.poll(20_000), proc.seen  # a REP drops a request that has no delimiter frame
    assert rep.recv_multipart() == [b"hi"]
    rep.send(b"\xff\xfe")
    assert proc.wait() == 0, proc.seen
    assert proc.seen["stdout"] == ["b'\\xff\\xfe'"]  # raw bytes that are not text


def test_send_req_fails_after_the_timeout_without_a_reply(peer: Any) -> None:
    silent = peer(zmq.REP, bind="tcp://127.0.0.1:*")  # never answers
    address = silent.last_endpoint.decode()
    started = time.monotonic()
    done = zmqapp("send", address, "anyone?", "--type", "REQ", "--timeout", "0.5")
    assert done.returncode == 1
    assert f"No reply within 0.5 s from {address}" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 20  # no linger wait on a request that failed
    assert silent.recv() == b"anyone?"  # it did reach the server


def test_send_fails_when_no_peer_takes_the_message() -> None:
    done = zmqapp("send", "@tcp://127.0.0.1:*", "lost", "--type", "PUSH", "--timeout", "0.3")
    assert done.returncode == 1
    assert re.search(r"PUSH socket bound to tcp://127\.0\.0\.1:\d+", done.stderr)
    assert "No peer took the message within 0.3 s" in done.stderr


def test_send_count_sends_at_the_rate_and_reports_it(peer: Any) -> None:
    pull = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    done = zmqapp(
        "send", pull.last_endpoint.decode(), "tick", "--type", "PUSH", "--count", "20",
        "--rate", "200",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [pull.recv() for _ in range(20)] == [b"tick"] * 20
    match = re.search(r"sent 20 messages in ([\d.]+) s \((\d+) msg/s\)", done.stderr)
    assert match, done.stderr
    assert float(match.group(1)) >= 19 / 200  # the 20th message waits 19 intervals
    assert int(match.group(2)) <= 211
    assert pull.poll(0) == 0  # exactly 20


def test_send_count_takes_exactly_one_message() -> None:
    done = zmqapp("send", "tcp://127.0.0.1:1", "a", "b", "--type", "PUSH", "--count", "3")
    assert done.returncode == 2
    assert "--count repeats one message, but 2 were given" in done.stderr


# -- listen ------------------------------------------------------------------------------------


def test_listen_prints_messages_as_they_arrive(run_cli: Any, peer: Any) -> None:
    proc = run_cli("listen", "@tcp://127.0.0.1:*", "--type", "PULL", "--count", "3")
    address = proc.expect(r"PULL socket bound to (tcp://\S+)", "stderr").group(1)
    push = peer(zmq.PUSH, connect=address)
    push.send(b"hello")
    assert proc.expect(".").string == "hello"  # printed as it arrived, before the rest
    push.send_multipart([b"a", b"b"])
    push.send(b"\xff\x00")
    assert proc.wait() == 0, proc.seen  # --count 3
    assert proc.seen["stdout"] == ["hello", "a | b", "b'\\xff\\x00'"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_listen_sub_json_output_and_clean_stop(run_cli: Any, peer: Any, signum: int) -> None:
    pub = peer(zmq.PUB, bind="tcp://127.0.0.1:*")
    address = pub.last_endpoint.decode()
    proc = run_cli("listen", address, "--type", "SUB", "--topic", "t1", "--json")
    proc.expect(rf"SUB socket connected to {re.escape(address)}", "stderr")
    lines: list[str] = []

    def published() -> bool:  # the subscription takes a moment to reach the publisher
        pub.send_multipart([b"other", b"filtered out"])
        pub.send_multipart([b"t1", b"\xff\x01"])
        try:
            lines.append(proc.expect(".", timeout=0.05).string)
        except AssertionError:
            return False
        return True

    deadline = time.monotonic() + 15
    while not published():
        assert time.monotonic() < deadline, proc.seen
    assert json.loads(lines[0]) == {
        "frames": [{"encoding": "base64", "data": "/wE="}],  # not UTF-8
        "topic": "t1",
        "identity": None,
    }
    proc.proc.send_signal(signum)
    assert proc.wait() == 0, proc.seen
    assert all("filtered out" not in line for line in proc.seen["stdout"])
    assert "Traceback" not in "\n".join(proc.seen["stderr"])


@pytest.mark.parametrize(
    "reply, expected", [((), b"ping"), (("--reply", "pong"), b"pong")], ids=["echo", "reply"]
)
def test_listen_rep_answers_every_request(
    run_cli: Any, peer: Any, reply: tuple[str, ...], expected: bytes
) -> None:
    proc = run_cli("listen", "tcp://127.0.0.1:*", "--bind", "--type", "REP", "--count", "1", *reply)
    address = proc.expect(r"REP socket bound to (tcp://\S+)", "stderr").group(1)
    req = peer(zmq.REQ, connect=address)
    req.send(b"ping")
    assert req.recv() == expected
    assert proc.wait() == 0, proc.seen
    assert proc.seen["stdout"] == ["ping"]


def test_send_dealer_and_listen_router_talk_to_each_other(run_cli: Any) -> None:
    proc = run_cli(
        "listen", "@tcp://127.0.0.1:*", "--type", "ROUTER", "--codec", "json", "--json",
        "--reply", '{"ok": true}', "--count", "1",
    )  # fmt: skip
    address = proc.expect(r"ROUTER socket bound to (tcp://\S+)", "stderr").group(1)
    done = zmqapp("send", address, '{"n": 1}', "--type", "DEALER", "--codec", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True}
    assert proc.wait() == 0, proc.seen
    message = json.loads(proc.seen["stdout"][0])
    assert message["frames"] == [{"n": 1}] and message["topic"] is None
    assert message["identity"]  # the DEALER's identity, as text or base64


def test_send_and_listen_pair_over_ipc(run_cli: Any, tmp_path: Path) -> None:
    address = f"ipc://{tmp_path}/pair.sock"
    proc = run_cli("listen", "@" + address, "--type", "PAIR", "--count", "2")
    proc.expect(rf"PAIR socket bound to {re.escape(address)}", "stderr")
    done = zmqapp("send", ">" + address, "--type", "PAIR", input="over\nipc\n")
    assert done.returncode == 0, done.stderr
    assert proc.wait() == 0, proc.seen
    assert proc.seen["stdout"] == ["over", "ipc"]


def test_listen_stops_quietly_when_its_reader_goes_away(peer: Any) -> None:
    # As in `zmqapp listen ... | head -1`: stdout closes while messages keep coming.
    with subprocess.Popen(
        [*ZMQAPP, "listen", "@tcp://127.0.0.1:*", "--type", "PULL"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=ROOT,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        bound = read_line(proc.stderr)
        address = re.search(r"bound to (tcp://\S+)", bound)
        assert address, bound
        push = peer(zmq.PUSH, connect=address.group(1))
        push.send(b"first")
        assert read_line(proc.stdout) == "first\n"
        proc.stdout.close()
        for _ in range(3):  # the next write finds the pipe closed
            push.send(b"more")
        assert proc.wait(15) == 0
        assert "Traceback" not in proc.stderr.read()


def test_listen_rejects_options_for_other_types() -> None:
    done = zmqapp("listen", "tcp://127.0.0.1:1", "--type", "PULL", "--reply", "x")
    assert done.returncode == 2
    assert "--reply is for --type REP and ROUTER" in done.stderr
    done = zmqapp("listen", "tcp://127.0.0.1:1", "--type", "PULL", "--topic", "x")
    assert done.returncode == 2
    assert "--topic is for --type SUB" in done.stderr


# -- graph -------------------------------------------------------------------------------------


def test_graph_of_the_examples() -> None:
    done = zmqapp("graph", "--app", "examples/five_minutes.py", "--app", "examples/demo.py:driver")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("flowchart LR\n")
    assert 'subgraph app1 ["five_minutes"]' in out and 'subgraph app2 ["driver"]' in out
    assert '["hello<br/>REP<br/>@tcp://*:5555"]' in out
    assert '["tasks<br/>PUSH<br/>@tcp://127.0.0.1:*"]' in out
    # The examples do not meet: the worker connects to fixed ports, the driver binds OS ports
    # (the demo hands the worker its addresses through the environment at run time).
    assert "-->" not in out
    for channel, port in (("tasks", 5557), ("results", 5558), ("weather", 5556)):
        warning = (
            f"nobody binds tcp://localhost:{port} (connected by five_minutes:{channel}) "
            "— fine if an outside peer binds it"
        )
        assert f"warning: {warning}" in done.stderr
        assert f"%% warning: {warning}" in out
    assert "driver: channel 'hello' has no endpoint" in done.stderr
    assert '["hello<br/>REQ<br/>no endpoint"]' in out


def test_graph_matches_connects_to_binds_in_dot(tmp_path: Path) -> None:
    clash = write(
        tmp_path / "clash.py",
        """
        from zmqapp import App
        app = App("clash")
        app.add_channel("also_jobs", endpoint="tcp://0.0.0.0:7001", type="PUSH")
        """,
    )
    done = zmqapp(
        "graph", "--app", "tests/apps/cli_graph_front.py", "--app",
        "tests/apps/cli_graph_back.py:back", "--app", clash, "--format", "dot",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("digraph zmqapp {") and out.rstrip().endswith("}")
    ids = dict(re.findall(r'(n\d+) \[label="(\w+)\\n', out))
    node = {name: node_id for node_id, name in ids.items()}
    edges = re.findall(r'(\w+) -> (\w+) \[label="([^"]*)"(.*)\];', out)
    # In the direction messages flow, whichever side binds.
    assert sorted(edges) == sorted(
        [
            (node["jobs"], node["work"], "tcp://localhost:7001\\nPUSH → PULL", ""),
            (node["also_jobs"], node["work"], "tcp://localhost:7001\\nPUSH → PULL", ""),
            (node["events"], node["news"], "ipc:///tmp/zmqapp-graph-test-events\\nPUB → SUB", ""),
            (node["wrong"], node["answers"], "tcp://localhost:7003\\nSUB ✗ PUSH",
             ", style=dashed, color=red"),
        ]
    )  # fmt: skip
    assert "x1 -> " + node["elsewhere"] + " [style=dashed];" in out  # a PULL: from outside
    assert 'x1 [label="tcp://localhost:7999\\nnot bound by these apps", style=dashed];' in out
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: back:wrong (SUB) connects to front:answers (PUSH) at tcp://localhost:7003, "
        "but SUB and PUSH sockets cannot talk to each other; a SUB socket pairs with PUB or XPUB",
        "warning: nobody binds tcp://localhost:7999 (connected by back:elsewhere) — fine if an "
        "outside peer binds it",
        "warning: front:jobs binds tcp://*:7001 and clash:also_jobs binds tcp://0.0.0.0:7001: "
        "only one socket can bind an address, so one of them will fail to start",
        "warning: back:wrong (SUB, subscribed to everything) is wired to no PUB or XPUB in these "
        "apps, so nothing here publishes to it — fine if an outside publisher does",
    ]
    for warning in warnings:
        assert f"// {warning}" in out


PIPELINE = [
    arg
    for name in ("ingest", "analyzer", "alerter")
    for arg in ("--app", f"examples/pipeline/{name}.py")
]


def test_graph_of_the_pipeline_as_its_config_runs_it() -> None:
    done = zmqapp("graph", *PIPELINE, "--config", "examples/pipeline/system.toml")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # the system is whole: no warnings
    lines = done.stdout.splitlines()
    assert '        n1["raw<br/>PULL<br/>@tcp://127.0.0.1:5601"]' in lines
    assert "        n5[\"alerts<br/>SUB<br/>subscribes: 'alert.'\"]" in lines
    assert "    n1 -.->|send_to| n2" in lines  # ingest: raw's return values go to readings
    assert '    n2 -->|"tcp://127.0.0.1:5602<br/>PUSH → PULL"| n3' in lines
    assert '    n4 -->|"tcp://127.0.0.1:5603<br/>PUB → SUB"| n5' in lines
    # Without the config the apps have no endpoints, and the graph says so.
    bare = zmqapp("graph", *PIPELINE)
    assert "warning: ingest: channel 'raw' has no endpoint" in bare.stderr
    assert "-->" not in bare.stdout


def test_graph_warns_about_a_lonely_subscriber_and_a_stray_apps_table(tmp_path: Path) -> None:
    config = write(
        tmp_path / "system.toml",
        (ROOT / "examples" / "pipeline" / "system.toml").read_text()
        + "\n[APPS.alerterr]\nLINGER = 0\n",
    )
    moved = "APPS.alerter.CHANNELS.alerts.endpoint=@tcp://127.0.0.1:5609"
    done = zmqapp("graph", *PIPELINE, "--config", config, "--set", moved, "--format", "dot")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: alerter:alerts (SUB, subscribed to 'alert.') is wired to no PUB or XPUB in "
        "these apps, so nothing here publishes to it — fine if an outside publisher does",
        f"warning: {config} has a table APPS.alerterr, but no app here is named 'alerterr' "
        "(apps: alerter, analyzer, ingest); a typo, or an app left out?",
    ]


def test_graph_draws_requests_toward_the_side_that_answers(tmp_path: Path) -> None:
    apps = write(
        tmp_path / "rpc.py",
        """
        from zmqapp import App
        server = App("server")
        server.add_channel("api", endpoint="@tcp://127.0.0.1:7300", type="ROUTER",
                           handler=lambda body: body)
        server.add_channel("jobs", endpoint=">tcp://127.0.0.1:7301", type="REP",
                           handler=lambda body: body)
        client = App("client")
        client.add_channel("ask", endpoint=">tcp://127.0.0.1:7300", type="REQ")
        client.add_channel("work", endpoint="@tcp://127.0.0.1:7301", type="DEALER")
        """,
    )
    done = zmqapp("graph", "--app", f"{apps}:server", "--app", f"{apps}:client", "--format", "dot")
    assert done.returncode == 0, done.stderr
    assert 'n3 -> n1 [label="tcp://127.0.0.1:7300\\nREQ ⇄ ROUTER", dir=both];' in done.stdout
    assert 'n4 -> n2 [label="tcp://127.0.0.1:7301\\nDEALER ⇄ REP", dir=both];' in done.stdout


def test_graph_writes_text_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "topology.mmd"
    done = zmqapp("graph", "--app", "examples/five_minutes.py", "--output", target)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert target.read_text().startswith("flowchart LR\n")


def test_graph_image_without_graphviz_says_how_to_get_text(tmp_path: Path) -> None:
    env = clean_env(PATH=str(tmp_path))  # no `dot` there
    done = subprocess.run(
        [*ZMQAPP, "graph", "--app", "examples/five_minutes.py", "-o", str(tmp_path / "t.svg")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 1
    assert "Graphviz is not installed" in done.stderr
    assert "--format dot --output topology.dot" in done.stderr
    assert not (tmp_path / "t.svg").exists()


def test_graph_image_is_rendered_by_dot(tmp_path: Path) -> None:
    # A stand-in for Graphviz's `dot` that records how it was called and what it was fed.
    bin_dir = tmp_path / "bin"
    fake = write(
        bin_dir / "dot",
        f"""\
        #!{sys.executable}
        import sys
        output = sys.argv[sys.argv.index("-o") + 1]
        with open(output, "w") as f:
            f.write(" ".join(sys.argv[1:]) + "\\n" + sys.stdin.read())
        """,
    )
    fake.chmod(0o755)
    target = tmp_path / "topology.svg"
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    done = zmqapp("graph", "--app", "examples/five_minutes.py", "-o", target, env=env)
    assert done.returncode == 0, done.stderr
    called, fed = target.read_text().split("\n", 1)
    assert called == f"-Tsvg -o {target}"
    assert fed.startswith("digraph zmqapp {")  # DOT, whatever the default text format


# -- keygen ------------------------------------------------------------------------------------


def test_keygen_writes_a_loadable_certificate_pair(tmp_path: Path) -> None:
    keys = tmp_path / "certs" / "new"  # created as needed
    done = subprocess.run(
        [str(SCRIPT), "keygen", str(keys), "--name", "alice"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    public_file, secret_file = keys / "alice.key", keys / "alice.key_secret"
    public, none = zmq.auth.load_certificate(public_file)
    assert none is None
    also_public, secret = zmq.auth.load_certificate(secret_file)
    assert also_public == public and secret is not None and len(secret) == 40
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert f"public certificate: {public_file}" in done.stdout
    assert f"secret certificate: {secret_file}" in done.stdout
    assert f"public key: {public.decode()}" in done.stdout


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert zmqapp("keygen", tmp_path).returncode == 0  # --name defaults to server
    public_file = tmp_path / "server.key"
    before = zmq.auth.load_certificate(public_file)[0]
    again = zmqapp("keygen", tmp_path)
    assert again.returncode == 1
    assert f"{public_file} already exists; pass --force" in again.stderr
    assert zmq.auth.load_certificate(public_file)[0] == before
    forced = zmqapp("keygen", tmp_path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert zmq.auth.load_certificate(public_file)[0] != before


def keygen_under_umask(umask: str, *args: Any) -> subprocess.CompletedProcess[str]:
    """`zmqapp keygen ARGS` run from a shell that set ``umask``."""
    command = " ".join(map(shlex.quote, [*ZMQAPP, "keygen", *map(str, args)]))
    return subprocess.run(
        ["sh", "-c", f"umask {umask}; exec {command}"],
        capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=30,
    )  # fmt: skip


def test_keygen_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    done = keygen_under_umask("000", tmp_path / "certs", "--name", "open")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "certs" / "open.key").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "certs" / "open.key_secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs").stat().st_mode) == 0o755
    done = keygen_under_umask("077", tmp_path / "certs", "--name", "closed")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "certs" / "closed.key").stat().st_mode) == 0o644
    assert [p.name for p in (tmp_path / "certs").iterdir() if p.name.startswith(".")] == []


def test_keygen_force_replaces_a_link_and_leaves_its_target_alone(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "precious"
    target.parent.mkdir()
    target.write_text("not a key\n")
    target.chmod(0o644)
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "server.key_secret").symlink_to(target)
    (certs / "server.key").symlink_to(tmp_path / "elsewhere" / "missing")  # dangling
    refused = zmqapp("keygen", certs)
    assert refused.returncode == 1
    assert f"{certs / 'server.key'} already exists; pass --force" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = zmqapp("keygen", certs, "--force")
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "not a key\n"  # the link's target is untouched
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not (tmp_path / "elsewhere" / "missing").exists()
    for path in (certs / "server.key_secret", certs / "server.key"):
        assert not path.is_symlink() and path.is_file()
    public, secret = zmq.auth.load_certificate(certs / "server.key_secret")
    assert secret is not None and zmq.auth.load_certificate(certs / "server.key")[0] == public
    assert stat.S_IMODE((certs / "server.key_secret").stat().st_mode) == 0o600


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses /proc, which no one can write"
)
def test_keygen_explains_a_directory_it_cannot_write(tmp_path: Path) -> None:
    done = zmqapp("keygen", "/proc/zmqapp-keys")  # unwritable even for root
    assert done.returncode == 1
    assert "Error: Could not create the directory /proc/zmqapp-keys" in done.stderr
    assert "Traceback" not in done.stderr
    (tmp_path / "file").write_text("")
    done = zmqapp("keygen", tmp_path / "file" / "certs")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"Could not create the directory {tmp_path / 'file' / 'certs'}" in done.stderr


# -- send and listen tell the truth --------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, timeout", [("PUSH", "1"), ("PAIR", "0.3"), ("DEALER", "0.3"), ("REQ", "0.3")]
)
def test_send_to_an_address_nobody_binds_fails_and_names_it(kind: str, timeout: str) -> None:
    address = f"tcp://127.0.0.1:{free_tcp_port()}"
    done = zmqapp("send", address, "hi", "--type", kind, "--timeout", timeout)
    assert done.returncode == 1, done.stderr
    assert (
        f"Error: No peer took the message within {timeout} s: nothing accepts connections at "
        f"{address} (refused or unreachable). Start the receiving side first" in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_send_from_stdin_to_nobody_fails_too() -> None:
    address = f"tcp://127.0.0.1:{free_tcp_port()}"
    done = zmqapp("send", address, "--type", "PUSH", "--timeout", "0.5", input="a\nb\n")
    assert done.returncode == 1
    assert f"nothing accepts connections at {address}" in done.stderr


def test_send_to_a_host_that_does_not_resolve_says_so() -> None:
    done = zmqapp("send", "tcp://no-such-host.invalid:5555", "hi", "--type", "PUSH")
    assert done.returncode == 1
    assert "Could not resolve the host 'no-such-host.invalid'" in done.stderr
    assert "Traceback" not in done.stderr


def test_send_paces_every_send_to_the_rate_and_always_sums_up(peer: Any) -> None:
    pull = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    address = pull.last_endpoint.decode()
    done = zmqapp("send", address, "a", "b", "c", "d", "e", "--type", "PUSH", "--rate", "25")
    assert done.returncode == 0, done.stderr
    assert [pull.recv() for _ in range(5)] == [b"a", b"b", b"c", b"d", b"e"]
    match = re.search(r"sent 5 messages in ([\d.]+) s", done.stderr)
    assert match, done.stderr
    assert float(match.group(1)) >= 4 / 25  # the 5th waits 4 intervals
    piped = zmqapp("send", address, "--type", "PUSH", input="x\ny\n")
    assert piped.returncode == 0, piped.stderr
    assert re.search(r"^sent 2 messages in [\d.]+ s \(\d+ msg/s\)$", piped.stderr, re.M)
    assert [pull.recv(), pull.recv()] == [b"x", b"y"]


def test_send_with_stdin_closed_is_a_usage_error() -> None:
    command = " ".join(map(shlex.quote, [*ZMQAPP, "send", "tcp://127.0.0.1:1", "--type", "PUSH"]))
    done = subprocess.run(
        ["sh", "-c", f"exec {command} <&-"],
        capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "No MESSAGE was given and stdin is closed" in done.stderr
    assert "Traceback" not in done.stderr


def test_send_pub_counts_messages_no_subscription_matches(run_cli: Any, peer: Any) -> None:
    sub = peer(zmq.SUB, bind="tcp://127.0.0.1:*")
    sub.setsockopt(zmq.SUBSCRIBE, b"news")
    proc = run_cli("send", sub.last_endpoint.decode(), "--type", "PUB", "--topic", "sport", "score")
    wait_for(lambda: sub.poll(10) or proc.proc.poll() is not None, timeout=20)  # lets it subscribe
    assert proc.wait() == 1, proc.seen
    [error] = [line for line in proc.seen["stderr"] if line.startswith("Error")]
    assert "1 of 1 messages matched no subscription" in error
    assert "subscribers want 'news'" in error


def test_send_and_listen_speak_curve(run_cli: Any, tmp_path: Path) -> None:
    server_public, server_secret = keypair(tmp_path, "server")
    proc = run_cli(
        "listen", "@tcp://127.0.0.1:*", "--type", "PULL", "--count", "1",
        "--curve-secret-key", server_secret,
    )  # fmt: skip
    address = proc.expect(r"PULL socket bound to (tcp://\S+)", "stderr").group(1)
    _, wrong = keypair(tmp_path, "wrong")
    refused = zmqapp("send", address, "x", "--type", "PUSH", "--timeout", "0.5",
                     "--curve-server-key", wrong)  # fmt: skip
    assert refused.returncode == 1
    assert re.search(
        rf"a peer at {re.escape(address)} answered, but (dropped the connection during the "
        r"handshake .*wrong --curve-server-key|the CURVE keys do not fit)",
        refused.stderr,
    ), refused.stderr
    plain = zmqapp("send", address, "x", "--type", "PUSH", "--timeout", "0.5")
    assert plain.returncode == 1
    assert re.search(  # which side notices first varies
        r"one side uses CURVE and the other does not|does the peer expect CURVE", plain.stderr
    ), plain.stderr
    done = zmqapp("send", address, "over CURVE", "--type", "PUSH", "--curve-server-key",
                  server_public)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert proc.wait() == 0, proc.seen
    assert proc.seen["stdout"] == ["over CURVE"]


def test_listen_curve_client_reads_a_curve_server(run_cli: Any, tmp_path: Path, peer: Any) -> None:
    server_public, server_secret = keypair(tmp_path, "server")
    pub = peer(zmq.PUB)
    pub.curve_server = True
    pub.curve_publickey, pub.curve_secretkey = zmq.auth.load_certificate(server_secret)
    pub.bind("tcp://127.0.0.1:*")
    proc = run_cli(
        "listen", pub.last_endpoint.decode(), "--type", "SUB", "--count", "1",
        "--curve-server-key", server_public,
    )  # fmt: skip
    proc.expect_sending(lambda: pub.send(b"encrypted news"), "encrypted news")
    assert proc.wait() == 0, proc.seen


def test_curve_options_explain_a_bad_key(tmp_path: Path) -> None:
    done = zmqapp("send", "tcp://127.0.0.1:1", "x", "--type", "PUSH",
                  "--curve-server-key", tmp_path / "missing.key")  # fmt: skip
    assert done.returncode == 2
    assert "cannot read the --curve-server-key certificate" in done.stderr
    public, _ = keypair(tmp_path, "pub")
    done = zmqapp("listen", "@tcp://127.0.0.1:*", "--type", "PULL", "--curve-secret-key", public)
    assert done.returncode == 2
    assert "is a public certificate; give the secret one" in done.stderr


@pytest.mark.parametrize("kind", ["PULL", "REP", "ROUTER", "DEALER"])
def test_listen_warns_when_it_takes_a_share_of_someone_elses_traffic(
    run_cli: Any, peer: Any, kind: str
) -> None:
    sender = {"PULL": zmq.PUSH, "REP": zmq.DEALER, "ROUTER": zmq.DEALER, "DEALER": zmq.DEALER}
    bound = peer(sender[kind], bind="tcp://127.0.0.1:*")
    address = bound.last_endpoint.decode()
    proc = run_cli("listen", address, "--type", kind, "--count", "1")
    warning = proc.expect(r"^warning: ", "stderr").string
    assert f"this {kind} socket connects to {address}, where another socket binds" in warning
    assert "takes part of the traffic away from the real consumers" in warning
    assert "zmqapp tap URL CHANNEL" in warning
    bound.send_multipart([b"", b"taken"] if kind in ("REP", "ROUTER") else [b"taken"])
    assert proc.wait() == 0, proc.seen
    assert proc.seen["stdout"][-1].endswith("taken")


def test_listen_binding_a_pull_or_connecting_a_sub_does_not_warn(run_cli: Any) -> None:
    proc = run_cli("listen", "@tcp://127.0.0.1:*", "--type", "PULL", "--count", "1")
    address = proc.expect(r"bound to (tcp://\S+)", "stderr").group(1)
    done = zmqapp("send", address, "x", "--type", "PUSH")
    assert done.returncode == 0, done.stderr
    assert proc.wait() == 0
    assert not any("warning" in line for line in proc.seen["stderr"]), proc.seen


def test_listen_json_output_is_always_valid_json(run_cli: Any, peer: Any) -> None:
    msgpack = pytest.importorskip("msgpack")
    push = peer(zmq.PUSH, bind="tcp://127.0.0.1:*")
    address = push.last_endpoint.decode()
    as_json = run_cli("listen", address, "--type", "PULL", "--codec", "json", "--json",
                    "--count", "2")  # fmt: skip
    push.send(b"1e999999")
    push.send(b'{"big": -1e999, "nan": NaN, "ok": 1.5}')
    assert as_json.wait() == 0, as_json.seen

    def strict(text: str) -> Any:
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))

    assert [strict(line)["frames"] for line in as_json.seen["stdout"]] == [
        ["1e999999"],
        [{"big": "-1e999", "nan": "NaN", "ok": 1.5}],
    ]
    packed = run_cli("listen", address, "--type", "PULL", "--codec", "msgpack", "--json",
                   "--count", "1")  # fmt: skip
    push.send(msgpack.packb({1: "one", 2: float("inf")}))
    assert packed.wait() == 0, packed.seen
    assert [strict(line)["frames"] for line in packed.seen["stdout"]] == [
        [{"1": "one", "2": "Infinity"}]
    ]
    assert not any("is not valid msgpack" in line for line in packed.seen["stderr"]), packed.seen


# -- record and replay ---------------------------------------------------------------------------


def test_record_then_replay_reproduces_the_messages_in_order(
    run_cli: Any, peer: Any, tmp_path: Path
) -> None:
    recording = tmp_path / "session.jsonl"
    recorder = run_cli("listen", "@tcp://127.0.0.1:*", "--type", "SUB", "--count", "3",
                     "--record", recording)  # fmt: skip
    address = recorder.expect(r"SUB socket bound to (tcp://\S+)", "stderr").group(1)
    pub = peer(zmq.PUB, connect=address)
    messages = [[b"t", b"first"], [b"t", b"\xff\x00 binary"], [b"t", b"3", b"frames"]]
    recorder.expect_sending(lambda: pub.send_multipart(messages[0]), ".")
    for frames in messages[1:]:
        pub.send_multipart(frames)
    assert recorder.wait() == 0, recorder.seen
    assert f"recorded 3 messages to {recording}" in recorder.seen["stderr"]
    header, *lines = recording.read_text().splitlines()
    assert json.loads(header)["format"] == "zmqapp-recording"
    assert json.loads(header)["source"] == {"endpoint": address, "type": "SUB"}
    assert len(lines) == 3

    player = run_cli("listen", "@tcp://127.0.0.1:*", "--type", "PULL", "--count", "3", "--json")
    target = player.expect(r"PULL socket bound to (tcp://\S+)", "stderr").group(1)
    done = zmqapp("replay", recording, target, "--type", "PUSH")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^replayed 3 messages in [\d.]+ s", done.stderr, re.M), done.stderr
    assert player.wait() == 0, player.seen
    frames = [json.loads(line)["frames"] for line in player.seen["stdout"]]
    assert frames == [
        ["t", "first"],
        ["t", {"encoding": "base64", "data": "/wAgYmluYXJ5"}],
        ["t", "3", "frames"],
    ]


def test_replay_keeps_the_recorded_pace_unless_told(peer: Any, tmp_path: Path) -> None:
    recording = tmp_path / "paced.jsonl"
    with Recorder.open(recording, {"type": "PUSH"}) as rec:
        for t, body in ((10.0, b"a"), (10.2, b"b"), (10.4, b"c")):
            rec.write([body], t=t)
    pull = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    address = pull.last_endpoint.decode()

    def seconds(*speed: str) -> float:
        done = zmqapp("replay", recording, address, "--type", "PUSH", *speed)
        assert done.returncode == 0, done.stderr
        assert [pull.recv() for _ in range(3)] == [b"a", b"b", b"c"]
        match = re.search(r"replayed 3 messages in ([\d.]+) s", done.stderr)
        assert match, done.stderr
        return float(match.group(1))

    assert seconds() >= 0.4  # the first goes at once, then the recorded gaps
    assert seconds("--speed", "4") >= 0.1
    assert seconds("--speed", "0") < 0.4


def test_replay_to_nobody_fails_like_send(tmp_path: Path) -> None:
    recording = tmp_path / "one.jsonl"
    with Recorder.open(recording) as rec:
        rec.write([b"lost"])
    address = f"tcp://127.0.0.1:{free_tcp_port()}"
    done = zmqapp("replay", recording, address, "--type", "PUSH", "--timeout", "0.5")
    assert done.returncode == 1
    assert f"No peer took the message within 0.5 s: nothing accepts connections at {address}" in (
        done.stderr
    )


def test_replay_explains_a_file_that_is_no_recording(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    result = CliRunner().invoke(main, ["replay", str(other), "tcp://127.0.0.1:1", "--type", "PUSH"])
    assert result.exit_code == 1
    assert "is not a zmqapp recording" in result.output
    empty = tmp_path / "empty.jsonl"
    Recorder.open(empty).close()
    result = CliRunner().invoke(main, ["replay", str(empty), "tcp://127.0.0.1:1", "--type", "PUSH"])
    assert result.exit_code == 1 and "holds no messages" in result.output


def test_send_options_are_checked_before_any_socket_opens() -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["send", "tcp://127.0.0.1:1", "x", "--type", "PUSH", "--topic", "t"]
    )
    assert result.exit_code == 2 and "--topic is for --type PUB" in result.output
    result = runner.invoke(main, ["replay", "missing.jsonl", "tcp://127.0.0.1:1", "--type", "PUSH"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(main, ["send", "tcp://127.0.0.1:1", "x", "--type", "PUSH",
                                  "--rate", "0"])  # fmt: skip
    assert result.exit_code == 2


def keypair(directory: Path, name: str) -> tuple[Path, Path]:
    public, secret = zmq.auth.create_certificates(directory, name)
    return Path(public), Path(secret)


def test_replay_loop_goes_round_until_stopped(run_cli: Any, tmp_path: Path) -> None:
    recording = tmp_path / "two.jsonl"
    with Recorder.open(recording) as rec:
        rec.write([b"a"], t=0.0)
        rec.write([b"b"], t=0.02)
    listener = run_cli("listen", "@tcp://127.0.0.1:*", "--type", "PULL", "--count", "5")
    address = listener.expect(r"PULL socket bound to (tcp://\S+)", "stderr").group(1)
    player = run_cli("replay", recording, address, "--type", "PUSH", "--loop")
    assert listener.wait() == 0, listener.seen
    assert listener.seen["stdout"] == ["a", "b", "a", "b", "a"]
    player.proc.send_signal(signal.SIGTERM)
    assert player.wait() == 0, player.seen  # stopping a loop is its normal end
    assert any(line.startswith("stopped: replayed ") for line in player.seen["stderr"])
