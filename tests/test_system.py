"""Systems of apps: one config for many apps, read the same way by `zmqapp run` and
`app.run()`, in real processes over real sockets."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from clitools import ROOT, Proc, clean_env, free_tcp_port, write, zmqapp

ECHO = """\
    from zmqapp import App

    app = App(__name__)
    app.config.update(LINGER=0, SHUTDOWN_TIMEOUT=2.0)


    @app.channel("echo", type="REP")
    def echo(body):
        return body


    if __name__ == "__main__":
        app.run()
    """


def echoes_then_stops(proc: Proc, port: int, peer: Any, body: bytes) -> None:
    """``proc`` answers ``body`` on the port, then exits 0 at SIGTERM."""
    req = peer(zmq.REQ, connect=f"tcp://127.0.0.1:{port}")
    req.send(body)
    assert req.recv() == body
    proc.send_signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.seen


def test_python_app_py_reads_zmqapp_variables(tmp_path: Path, peer: Any, spawn: Any) -> None:
    script = write(tmp_path / "svc.py", ECHO)
    port = free_tcp_port()
    proc = spawn(
        [sys.executable, str(script)],
        clean_env(ZMQAPP_CHANNELS__echo__endpoint=f"@tcp://127.0.0.1:{port}"),
        cwd=tmp_path,
    )
    echoes_then_stops(proc, port, peer, b"served on the port from the environment")


def test_a_script_is_app_its_file_name_in_apps_tables(
    tmp_path: Path, peer: Any, spawn: Any
) -> None:
    script = write(tmp_path / "svc.py", ECHO)
    port = free_tcp_port()
    config = write(
        tmp_path / "conf" / "system.toml",
        f"""\
        [APPS.svc.CHANNELS.echo]
        endpoint = "@tcp://127.0.0.1:{port}"
        [APPS.other.CHANNELS.unrelated]
        endpoint = "@tcp://127.0.0.1:1"
        """,
    )
    proc = spawn([sys.executable, str(script)], clean_env(ZMQAPP_CONFIG=str(config)), cwd=tmp_path)
    echoes_then_stops(proc, port, peer, b"hi")


def test_config_file_with_a_lowercase_table_is_refused(tmp_path: Path) -> None:
    config = write(tmp_path / "system.toml", "[apps.cli_service]\nLINGER = 0\n")
    done = zmqapp(
        "channels", "--app", "tests/apps/cli_service.py", "--config", config,
        "--set", "CHANNELS.upper.endpoint=@tcp://127.0.0.1:1",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    assert f"Error: config file {config}: apps is not a config key" in done.stderr
    assert "write APPS" in done.stderr and "Traceback" not in done.stderr


def test_zmqapp_config_is_the_env_form_of_config(tmp_path: Path) -> None:
    config = write(
        tmp_path / "system.toml",
        """\
        [APPS.cli_service.CHANNELS.upper]
        endpoint = "@tcp://127.0.0.1:7100"
        """,
    )
    done = zmqapp(
        "channels", "--app", "tests/apps/cli_service.py", env=clean_env(ZMQAPP_CONFIG=str(config))
    )
    assert done.returncode == 0, done.stderr
    assert "@tcp://127.0.0.1:7100" in done.stdout


def test_key_paths_in_a_config_file_resolve_from_its_directory(
    tmp_path: Path, peer: Any, run_cli: Any
) -> None:
    conf = tmp_path / "conf"
    (conf / "certs" / "clients").mkdir(parents=True)
    (tmp_path / "client").mkdir()
    server_public, _ = zmq.auth.create_certificates(conf / "certs", "server")
    client_public, client_secret = zmq.auth.create_certificates(tmp_path / "client", "client")
    (conf / "certs" / "clients" / "client.key").write_bytes(Path(client_public).read_bytes())
    app = write(tmp_path / "app" / "secured.py", ECHO)
    config = write(
        conf / "system.toml",
        """\
        [APPS.secured.CHANNELS.echo]
        endpoint = "@tcp://127.0.0.1:*"
        curve_secret_key = "certs/server.key_secret"
        authorized_keys = "certs/clients"
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_cli("run", "--app", app, "--config", config, cwd=elsewhere)
    address = proc.expect(r"is running: echo REP @(tcp://\S+)", "stderr").group(1)
    req = peer(zmq.REQ)
    req.curve_serverkey = zmq.auth.load_certificate(server_public)[0]
    req.curve_publickey, req.curve_secretkey = zmq.auth.load_certificate(client_secret)
    req.connect(address)
    req.send(b"over CURVE")
    assert req.recv() == b"over CURVE"


# -- the pipeline example ------------------------------------------------------------------------

PIPELINE = ROOT / "examples" / "pipeline"


def pipeline_config(tmp_path: Path) -> Path:
    """The example's system.toml with its ports swapped for free ones."""
    text = (PIPELINE / "system.toml").read_text()
    for port in ("5601", "5602", "5603"):
        assert f"127.0.0.1:{port}" in text
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_tcp_port()}")
    return write(tmp_path / "system.toml", text)


def test_the_pipeline_runs_from_one_system_toml(
    tmp_path: Path, run_cli: Any, spawn: Any, peer: Any
) -> None:
    config = pipeline_config(tmp_path)
    ingest = run_cli("run", "--app", PIPELINE / "ingest.py", "--config", config)
    analyzer = run_cli("run", "--app", PIPELINE / "analyzer.py", "--config", config)
    # The third as a script: app.run() reads the file ZMQAPP_CONFIG names.
    alerter = spawn(
        [sys.executable, "-u", str(PIPELINE / "alerter.py")],
        clean_env(ZMQAPP_CONFIG=str(config)),
        cwd=tmp_path,
    )
    raw = ingest.expect(r"is running: raw PULL @(tcp://[^;\s]+)", "stderr").group(1)
    analyzer.expect(r"is running", "stderr")
    push = peer(zmq.PUSH, connect=raw)
    # The alerter's subscription reaches the analyzer a moment after it starts: send until
    # an alert gets through, then check that a calm reading raises none.
    alerter.expect(r"alerter is running", "stderr", timeout=15)
    for _ in range(300):
        push.send(b"boiler 97.5")
        try:
            line = alerter.expect(r"ALERT", timeout=0.05).string
            break
        except AssertionError:
            continue
    else:
        raise AssertionError(f"no alert came through: {alerter.seen}")
    assert line == "ALERT boiler reads 97.5 (limit 80.0)"
    push.send(b"boiler 20")
    push.send(b"fridge 99")
    assert alerter.expect(r"ALERT fridge").string == "ALERT fridge reads 99.0 (limit 80.0)"
    assert not any("boiler reads 20" in line for line in alerter.seen["stdout"])
    for proc in (alerter, ingest, analyzer):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.seen


def test_zmqapp_run_refuses_an_apps_table_naming_a_missing_channel(tmp_path: Path) -> None:
    config = write(
        tmp_path / "system.toml",
        (PIPELINE / "system.toml").read_text() + "\n[APPS.ingest.CHANNELS.stats]\nbind = true\n",
    )
    done = zmqapp("channels", "--app", PIPELINE / "ingest.py", "--config", config)
    assert done.returncode == 1
    assert "config APPS.ingest.CHANNELS names channel 'stats'" in done.stderr
