"""app.config: Flask's loaders, CHANNELS overrides for any option, and their errors."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import zmq

from zmqapp import App, SetupError
from zmqapp.config import DEFAULTS, Config
from zmqapp.testing import wait_for


def test_defaults_are_config_keys_and_not_shared(app: App) -> None:
    for key in ("LINGER", "SNDHWM", "RCVHWM", "SHUTDOWN_TIMEOUT", "BATCH_SIZE", "MAXMSGSIZE"):
        assert key in app.config
    app.config["CHANNELS"]["x"] = {}
    assert DEFAULTS["CHANNELS"] == {} and App("other").config["CHANNELS"] == {}


def test_from_mapping_and_object(tmp_path: Path) -> None:
    config = Config(tmp_path)
    config.from_mapping({"LINGER": 5, "lower": 1}, SNDHWM=7)
    assert config["LINGER"] == 5 and config["SNDHWM"] == 7 and "lower" not in config

    class Settings:
        BATCH_SIZE = 64
        private = "ignored"

    config.from_object(Settings)
    assert config["BATCH_SIZE"] == 64 and "private" not in config
    (tmp_path / "deploy_settings.py").write_text("class Production:\n    LINGER = 99\n")
    sys.path.insert(0, str(tmp_path))
    try:
        config.from_object("deploy_settings:Production")  # an import string names an object
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("deploy_settings", None)
    assert config["LINGER"] == 99


def test_from_pyfile_and_envvar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "settings.py").write_text("LINGER = 10\nCHANNELS = {'tasks': {'bind': True}}\n")
    config = Config(tmp_path)
    assert config.from_pyfile("settings.py")
    assert config["LINGER"] == 10 and config["CHANNELS"] == {"tasks": {"bind": True}}
    assert config.from_pyfile("missing.py", silent=True) is False
    with pytest.raises(OSError, match="Unable to load configuration file"):
        config.from_pyfile("missing.py")
    monkeypatch.setenv("MY_SETTINGS", str(tmp_path / "settings.py"))
    assert Config(tmp_path).from_envvar("MY_SETTINGS")
    monkeypatch.delenv("MY_SETTINGS")
    with pytest.raises(RuntimeError, match="'MY_SETTINGS' is not set"):
        Config(tmp_path).from_envvar("MY_SETTINGS")


def test_from_file_json_and_toml(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"LINGER": 3}))
    (tmp_path / "c.toml").write_text('SNDHWM = 9\n[CHANNELS.tasks]\nendpoint = "tcp://h:1"\n')
    config = Config(tmp_path)
    config.from_file("c.json")
    config.from_file("c.toml")  # recognised by its name
    assert config["LINGER"] == 3 and config["SNDHWM"] == 9
    assert config["CHANNELS"] == {"tasks": {"endpoint": "tcp://h:1"}}
    if sys.version_info >= (3, 11):
        import tomllib

        other = Config(tmp_path)
        other.from_file("c.toml", load=tomllib.load, text=False)  # Flask's spelling works too
        assert other["SNDHWM"] == 9


def test_from_prefixed_env_nests_and_parses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZMQAPP_LINGER", "250")
    monkeypatch.setenv("ZMQAPP_ERROR_DETAIL", "true")
    monkeypatch.setenv("ZMQAPP_CHANNELS__tasks__endpoint", "tcp://10.0.0.5:5557")
    monkeypatch.setenv("ZMQAPP_CHANNELS__tasks__options", '{"rcvhwm": 5}')
    monkeypatch.setenv("OTHER_LINGER", "1")
    config = Config(tmp_path, DEFAULTS)
    config.from_prefixed_env()
    assert config["LINGER"] == 250 and config["ERROR_DETAIL"] is True
    assert config["CHANNELS"] == {
        "tasks": {"endpoint": "tcp://10.0.0.5:5557", "options": {"rcvhwm": 5}}
    }


def test_channels_config_overrides_any_option(app: App, running: Any, peer: Any) -> None:
    got: list[Any] = []
    app.channel("tasks", endpoint="tcp://localhost:1", type="PULL")(got.append)
    app.config["CHANNELS"] = {
        "tasks": {
            "endpoint": "tcp://127.0.0.1:*",
            "bind": True,
            "codec": "json",
            "options": {"rcvhwm": 3},
        },
    }
    running(app)
    channel = app.channels["tasks"]
    assert channel.bound and channel.codec.name == "json"  # type: ignore[attr-defined]
    peer(zmq.PUSH, connect=channel.bound[0]).send(b'{"from": "config"}')
    wait_for(lambda: got)
    assert got == [{"from": "config"}]


def test_config_naming_an_unknown_channel_or_option_says_which(app: App) -> None:
    app.add_channel("tasks", endpoint="tcp://127.0.0.1:1", type="PULL", handler=print)
    app.config["CHANNELS"] = {"taks": {"endpoint": "tcp://127.0.0.1:2"}}
    with pytest.raises(SetupError, match=r"config CHANNELS names channel 'taks', which app"):
        app.run(install_signal_handlers=False)
    app.config["CHANNELS"] = {"tasks": {"endpont": "tcp://127.0.0.1:2"}}
    with pytest.raises(SetupError, match=r"has no option 'endpont'.*with config CHANNELS\.tasks"):
        app.run(install_signal_handlers=False)
    app.config["CHANNELS"] = {"tasks": {"type": "PUSH"}}  # a handler on a PUSH: explained
    with pytest.raises(SetupError, match="is a PUSH socket, which only sends"):
        app.run(install_signal_handlers=False)
    assert not app.running
    assert app.channels["tasks"].type_name == "PULL"  # the failed override left no trace


# -- a system: one config for several apps ---------------------------------------------------

SYSTEM = """\
SHUTDOWN_TIMEOUT = 3.0
LIMIT = 1

[CHANNELS.control]
codec = "json"

[APPS.ingest]
LIMIT = 2

[APPS.ingest.CHANNELS.tasks]
endpoint = "@tcp://127.0.0.1:7001"

[APPS.analyzer.CHANNELS.tasks]
endpoint = ">tcp://127.0.0.1:7001"

[APPS.analyzer.CHANNELS.stats]
endpoint = "@tcp://127.0.0.1:7002"
"""


def system_app(name: str, *channels: str) -> App:
    app = App("tests.system." + name)  # named after the module's last component
    app.add_channel("control", endpoint="inproc://control", type="PUSH")
    for channel in channels:
        app.add_channel(channel, type="PUSH")
    return app


def test_one_file_configures_each_app_of_a_system(tmp_path: Path) -> None:
    config = tmp_path / "system.toml"
    config.write_text(SYSTEM)
    ingest, analyzer = system_app("ingest", "tasks"), system_app("analyzer", "tasks", "stats")
    assert (ingest.name, analyzer.name) == ("ingest", "analyzer")
    for app in (ingest, analyzer):
        app.config.load_sources(app.name, channels=app.channels, config_file=config, environ={})
        app.apply_config()
        assert app.config["SHUTDOWN_TIMEOUT"] == 3.0  # the top level applies to every app
        assert "APPS" not in app.config
        assert app.channels["control"].codec.name == "json"  # type: ignore[attr-defined]
    assert ingest.config["LIMIT"] == 2 and analyzer.config["LIMIT"] == 1  # APPS.<name> wins
    assert str(ingest.channels["tasks"].endpoints[0]) == "@tcp://127.0.0.1:7001"
    assert str(analyzer.channels["tasks"].endpoints[0]) == ">tcp://127.0.0.1:7001"
    assert str(analyzer.channels["stats"].endpoints[0]) == "@tcp://127.0.0.1:7002"


def test_sources_layer_file_then_env_then_set_and_the_app_table_wins(tmp_path: Path) -> None:
    config = tmp_path / "system.json"
    config.write_text(
        json.dumps(
            {
                "A": "file", "B": "file", "C": "file", "D": "file",
                "APPS": {"ingest": {"D": "file app table"}},
                "CHANNELS": {"tasks": {"options": {"sndhwm": 5}}},
            }
        )
    )  # fmt: skip
    app = system_app("ingest", "tasks")
    app.config.update(A="code", E="code")
    app.config["CHANNELS"] = {"tasks": {"endpoint": "tcp://code:1"}}
    environ = {
        "ZMQAPP_B": "env",
        "ZMQAPP_C": "env",
        "ZMQAPP_APPS__ingest__CHANNELS__tasks__options": '{"rcvhwm": 7}',
        "ZMQAPP_APP": "not a key",
        "ZMQAPP_CONFIG": "not this one: config_file= was given",
        "OTHER_A": "ignored",
    }
    app.config.load_sources(
        "ingest",
        channels=app.channels,
        config_file=config,
        settings=[(["C"], "set"), (["APPS", "ingest", "E"], "set app table")],
        environ=environ,
    )
    assert {k: app.config[k] for k in "ABCDE"} == {
        "A": "file", "B": "env", "C": "set", "D": "file app table", "E": "set app table",
    }  # fmt: skip
    assert "APP" not in app.config and "CONFIG" not in app.config
    # Tables merge key by key across the layers; the app's table merges over the top level.
    assert app.config["CHANNELS"] == {
        "tasks": {"endpoint": "tcp://code:1", "options": {"sndhwm": 5, "rcvhwm": 7}}
    }
    assert app.config.sources_loaded


def test_zmqapp_config_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "system.toml").write_text(SYSTEM)
    app = system_app("analyzer", "tasks", "stats")
    environ = {"ZMQAPP_CONFIG": str(tmp_path / "system.toml")}
    app.config.load_sources(app.name, channels=app.channels, environ=environ)
    assert app.config["CHANNELS"]["stats"] == {"endpoint": "@tcp://127.0.0.1:7002"}


def test_a_channels_entry_for_a_channel_the_app_lacks_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "system.toml"
    config.write_text(SYSTEM)
    ingest = system_app("ingest")  # no tasks channel, which APPS.ingest configures
    with pytest.raises(SetupError, match=r"config APPS\.ingest\.CHANNELS names channel 'tasks'"):
        ingest.config.load_sources("ingest", channels=ingest.channels, config_file=config)
    bare = App("bare")  # no control channel, which top-level CHANNELS configures
    bare.add_channel("tasks", type="PUSH")
    with pytest.raises(
        SetupError,
        match=r"config CHANNELS names channel 'control', which app 'bare' does not declare.*"
        r"put options for a channel only some apps have under APPS\.<app name>\.CHANNELS",
    ):
        bare.config.load_sources("bare", channels=bare.channels, config_file=config, environ={})


@pytest.mark.parametrize(
    "source, message",
    [
        ("[apps.ingest]\nLINGER = 0\n", r"apps is not a config key: .*write APPS"),
        ("[Channels.tasks]\nendpoint = 'x'\n", r"Channels is not a config key: .*write CHANNELS"),
        ("[ingest.CHANNELS.tasks]\nendpoint = 'x'\n", r"ingest is not a config key.*APPS\.ingest"),
        ("linger = 0\n", r"linger is not a config key: .*write LINGER"),
        ("[APPS.ingest.tasks]\nendpoint = 'x'\n",
         r"APPS\.ingest\.tasks is not a config key.*go under APPS\.ingest\.CHANNELS\.tasks"),
        ("[APPS.ingest.APPS.other]\nLINGER = 0\n", r"APPS\.ingest\.APPS is misplaced"),
        ("[CHANNELS.tasks.CHANNELS.x]\nendpoint = 'x'\n",
         r"CHANNELS\.tasks\.CHANNELS is misplaced"),
        ("APPS = 3\n", r"APPS must be a table of app names"),
        ("[APPS]\ningest = 3\n", r"APPS\.ingest must be a table of config keys"),
        ("[APPS.ingest]\nCHANNELS = 'tasks'\n", r"APPS\.ingest\.CHANNELS must be a table"),
        ("[CHANNELS]\ntasks = 'x'\n", r"CHANNELS\.tasks must be a table of options"),
    ],
)  # fmt: skip
def test_misplaced_or_miscased_tables_are_errors_that_name_them(
    tmp_path: Path, source: str, message: str
) -> None:
    config = tmp_path / "system.toml"
    config.write_text(source)
    app = system_app("ingest", "tasks")
    with pytest.raises(SetupError, match=rf"^config file {config}: {message}"):
        app.config.load_sources("ingest", config_file=config, environ={})


def test_environment_variables_are_checked_too(tmp_path: Path) -> None:
    app = system_app("ingest", "tasks")
    with pytest.raises(
        SetupError, match=r"^environment variable ZMQAPP_apps__ingest__LINGER: apps is not a"
    ):
        app.config.load_sources("ingest", environ={"ZMQAPP_apps__ingest__LINGER": "0"})
    with pytest.raises(SetupError, match=r"^--set APPS\.ingest\.linger: APPS\.ingest\.linger is"):
        app.config.load_sources("ingest", environ={}, settings=[(["APPS", "ingest", "linger"], 0)])


def test_a_python_config_file_ignores_its_helpers_but_not_a_miscased_table(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good.py"
    good.write_text("import os\nhelper = 1\nLINGER = 7\n")
    app = system_app("ingest")
    app.config.load_sources("ingest", config_file=good, environ={})
    assert app.config["LINGER"] == 7 and "helper" not in app.config
    bad = tmp_path / "bad.py"
    bad.write_text("apps = {'ingest': {'LINGER': 0}}\n")
    with pytest.raises(SetupError, match=r"apps is not a config key: .*write APPS"):
        system_app("ingest").config.load_sources("ingest", config_file=bad, environ={})


def test_unreadable_or_invalid_config_files_are_setup_errors(tmp_path: Path) -> None:
    app = system_app("ingest")
    with pytest.raises(SetupError, match=r"could not read config file .*missing\.toml"):
        app.config.load_sources("ingest", config_file=tmp_path / "missing.toml", environ={})
    (tmp_path / "broken.toml").write_text("[APPS\n")
    with pytest.raises(SetupError, match=r"config file .*broken\.toml is not valid"):
        app.config.load_sources("ingest", config_file=tmp_path / "broken.toml", environ={})
    (tmp_path / "c.yaml").write_text("")
    with pytest.raises(SetupError, match=r"is not a \.toml, \.json or \.py file"):
        app.config.load_sources("ingest", config_file=tmp_path / "c.yaml", environ={})


def test_relative_key_paths_in_a_config_file_resolve_from_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    z85_key = zmq.curve_keypair()[0].decode()
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "system.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [CHANNELS.tasks]
            curve_secret_key = "certs/server.key_secret"
            authorized_keys = "../shared/clients"
            [APPS.ingest.CHANNELS.out]
            curve_server_key = "{z85_key}"
            endpoint = "ipc://relative.sock"
            [APPS.ingest.CHANNELS.back]
            curve_server_key = "/etc/keys/server.key"
            """
        )
    )
    monkeypatch.chdir(tmp_path.parent)  # anywhere but the config file's directory
    app = system_app("ingest", "tasks", "out", "back")
    app.config.load_sources("ingest", channels=app.channels, config_file=config, environ={})
    channels = app.config["CHANNELS"]
    assert channels["tasks"] == {
        "curve_secret_key": str(tmp_path / "conf" / "certs" / "server.key_secret"),
        "authorized_keys": str(tmp_path / "shared" / "clients"),
    }
    assert channels["out"]["curve_server_key"] == z85_key  # a key, not a path
    assert channels["out"]["endpoint"] == "ipc://relative.sock"  # endpoints are not paths
    assert channels["back"]["curve_server_key"] == "/etc/keys/server.key"
    # Flask's loaders do the same for the files they read.
    other = system_app("other", "tasks")
    other.config.from_file(config)
    assert other.config["CHANNELS"]["tasks"]["authorized_keys"] == str(
        tmp_path / "shared" / "clients"
    )


def test_app_names(tmp_path: Path) -> None:
    assert App("services.ingest").name == "ingest"
    assert App("services.ingest").logger.name == "services.ingest"  # the logger keeps it all
    assert App("services.ingest", name="front").name == "front"
    assert App("flat").name == "flat"


def test_app_run_loads_the_sources_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, peer: Any
) -> None:
    pull = peer(zmq.PULL, bind="tcp://127.0.0.1:*")
    (tmp_path / "system.toml").write_text(
        f'[APPS.runner.CHANNELS.out]\nendpoint = "{pull.last_endpoint.decode()}"\n'
    )
    monkeypatch.setenv("ZMQAPP_CONFIG", str(tmp_path / "system.toml"))
    monkeypatch.setenv("ZMQAPP_REQUEST_TIMEOUT", "2.5")
    app = App("tests.runner")
    app.add_channel("out", type="PUSH")

    @app.on_start
    def hello() -> None:
        app.send("out", b"configured by app.run()")
        app.stop()

    app.run(install_signal_handlers=False)
    assert pull.recv() == b"configured by app.run()"
    assert app.config["REQUEST_TIMEOUT"] == 2.5 and app.config.sources_loaded
    app.config["REQUEST_TIMEOUT"] = 5
    app.run(install_signal_handlers=False)  # not loaded again: later changes stay
    assert app.config["REQUEST_TIMEOUT"] == 5
    assert pull.recv() == b"configured by app.run()"
