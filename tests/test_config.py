"""app.config: Flask's loaders, CHANNELS overrides for any option, and their errors."""

from __future__ import annotations

import json
import sys
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
