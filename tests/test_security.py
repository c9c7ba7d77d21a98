"""CURVE, ZAP and IP rules over real TCP sockets on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from zmqapp import App, SetupError, security, signals
from zmqapp.testing import wait_for

TCP = "@tcp://127.0.0.1:*"


class Keys:
    """A server certificate, an allowed client, and a client nobody allowed."""

    def __init__(self, root: Path) -> None:
        self.authorized = root / "authorized"
        self.private = root / "private"
        self.authorized.mkdir()
        self.private.mkdir()
        self.server_public, self.server_secret = self.make("server")
        self.client_public, self.client_secret = self.make("client", authorize=True)
        self.rogue_public, self.rogue_secret = self.make("rogue")

    def make(self, name: str, authorize: bool = False) -> tuple[str, str]:
        public, secret = zmq.auth.create_certificates(self.private, name)
        if authorize:
            shutil.copy(public, self.authorized)
        return str(public), str(secret)

    def key_pair(self, name: str) -> tuple[bytes, bytes]:
        public, secret = zmq.auth.load_certificate(self.private / f"{name}.key_secret")
        assert secret is not None
        return public, secret


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


def curve_client(
    peer: Any, kind: int, keys: Keys, name: str | None, server_key: bytes | None = None
) -> Any:
    """A raw pyzmq client: CURVE with certificate ``name`` (or a plaintext one for None)."""
    sock = peer(kind)
    if name is not None:
        public, secret = keys.key_pair(name)
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.curve_serverkey = server_key or zmq.auth.load_certificate(keys.server_public)[0]
    return sock


def secured_app(keys: Keys, **options: Any) -> tuple[App, list[tuple[bytes, str | None]]]:
    app = App("secured")
    app.config.update(LINGER=0)
    got: list[tuple[bytes, str | None]] = []
    settings = {"curve_secret_key": keys.server_secret, "authorized_keys": str(keys.authorized)}
    settings.update(options)

    @app.channel("tasks", endpoint=TCP, type="PULL", **settings)
    def work(body: bytes, user_id: str | None) -> None:
        got.append((body, user_id))

    return app, got


def refused_then_marker(app: App, got: list[Any], rogue: Any, peer: Any, keys: Keys) -> None:
    """Wait until the server refused ``rogue``'s handshake, then prove the channel works by
    an allowed client's marker, so that 'nothing arrived from the rogue' means something."""
    address = app.channels["tasks"].bound[0]
    rogue.connect(address)
    rogue.send(b"from the rogue")
    wait_for(lambda: app.channels["tasks"].stats.handshake_failed >= 1)
    client = curve_client(peer, zmq.PUSH, keys, "client")
    client.connect(address)
    client.send(b"marker")
    wait_for(lambda: any(body == b"marker" for body, _ in got))


def test_an_allowed_client_is_handled_and_known_by_its_key(
    keys: Keys, peer: Any, running: Any
) -> None:
    app, got = secured_app(keys)
    running(app)
    client = curve_client(peer, zmq.PUSH, keys, "client")
    client.connect(app.channels["tasks"].bound[0])
    client.send(b"hello")
    wait_for(lambda: got)
    client_key = zmq.auth.load_certificate(keys.client_public)[0].decode()
    assert got == [(b"hello", client_key)]  # user_id is the client's public key (Z85)


def test_an_unknown_key_is_refused(keys: Keys, peer: Any, running: Any) -> None:
    app, got = secured_app(keys)
    events: list[tuple[str, str, Any]] = []

    def on_event(sender: App, channel: Any, event: str, endpoint: str, value: Any) -> None:
        events.append((event, endpoint, value))

    signals.socket_event.connect(on_event, sender=app)
    try:
        running(app)
        refused_then_marker(app, got, curve_client(peer, zmq.PUSH, keys, "rogue"), peer, keys)
    finally:
        signals.socket_event.disconnect(on_event, sender=app)
    assert [body for body, _ in got] == [b"marker"]
    rogue_key = zmq.auth.load_certificate(keys.rogue_public)[0].decode()
    refusals = [e for e in events if e[0] == "auth_refused"]
    assert refusals and refusals[0][1] == "127.0.0.1" and rogue_key in refusals[0][2]


def test_a_plaintext_client_is_refused(keys: Keys, peer: Any, running: Any) -> None:
    app, got = secured_app(keys)
    running(app)
    refused_then_marker(app, got, curve_client(peer, zmq.PUSH, keys, None), peer, keys)
    assert [body for body, _ in got] == [b"marker"]


def test_a_client_with_the_wrong_server_key_is_refused(keys: Keys, peer: Any, running: Any) -> None:
    app, got = secured_app(keys)
    running(app)
    wrong = zmq.auth.load_certificate(keys.rogue_public)[0]
    rogue = curve_client(peer, zmq.PUSH, keys, "client", server_key=wrong)  # allowed key!
    refused_then_marker(app, got, rogue, peer, keys)
    assert [body for body, _ in got] == [b"marker"]


def test_ip_rules(keys: Keys, peer: Any, running: Any) -> None:
    app = App("ip-rules")
    app.config.update(LINGER=0)
    got: dict[str, list[bytes]] = {"denied": [], "not_allowed": [], "allowed": []}
    rules = {
        "denied": {"deny": ["127.0.0.1"]},
        "not_allowed": {"allow": ["10.9.9.9"]},
        "allowed": {"allow": ["127.0.0.1"]},
    }
    for name, rule in rules.items():
        app.channel(name, endpoint=TCP, type="PULL", **rule)(got[name].append)
    running(app)
    for name in got:
        push = peer(zmq.PUSH, connect=app.channels[name].bound[0])  # plaintext: IP rules only
        push.send(name.encode())
    wait_for(lambda: got["allowed"])
    wait_for(lambda: app.channels["denied"].stats.handshake_failed >= 1)
    wait_for(lambda: app.channels["not_allowed"].stats.handshake_failed >= 1)
    assert got == {"denied": [], "not_allowed": [], "allowed": [b"allowed"]}


def test_ip_rules_take_networks(peer: Any, running: Any) -> None:
    app = App("networks")
    app.config.update(LINGER=0)
    got: dict[str, list[bytes]] = {"loopback_denied": [], "other_allowed": [], "ok": []}
    rules = {
        "loopback_denied": {"deny": ["127.0.0.0/8"]},
        "other_allowed": {"allow": ["10.0.0.0/8", "::1/128"]},
        "ok": {"allow": ["127.0.0.0/24"]},
    }
    for name, rule in rules.items():
        app.channel(name, endpoint=TCP, type="PULL", **rule)(got[name].append)
    running(app)
    for name in got:
        peer(zmq.PUSH, connect=app.channels[name].bound[0]).send(name.encode())
    wait_for(lambda: got["ok"])
    wait_for(lambda: app.channels["loopback_denied"].stats.handshake_failed >= 1)
    wait_for(lambda: app.channels["other_allowed"].stats.handshake_failed >= 1)
    assert got == {"loopback_denied": [], "other_allowed": [], "ok": [b"ok"]}


@pytest.mark.parametrize("entry", ["localhost", "example.com", "127.0.0.1/33", ""])
def test_ip_rules_refuse_what_is_not_an_address(app: App, entry: str) -> None:
    """A host name would match no client address and so fail open: refused at once."""
    with pytest.raises(SetupError, match="is not an IP address or network"):
        app.add_channel("c", endpoint=TCP, type="PULL", deny=[entry], handler=print)
    assert "c" not in app.channels


def test_a_key_added_to_the_directory_is_accepted_after_a_reload(
    keys: Keys, peer: Any, running: Any
) -> None:
    app, got = secured_app(keys)
    running(app)
    address = app.channels["tasks"].bound[0]
    newcomer = curve_client(peer, zmq.PUSH, keys, "rogue")
    newcomer.connect(address)
    newcomer.send(b"too early")
    wait_for(lambda: app.channels["tasks"].stats.handshake_failed >= 1)
    shutil.copy(keys.rogue_public, keys.authorized)  # the operator authorizes it...
    app.reload_keys()  # ...and reloads (SIGHUP does this too)
    again = curve_client(peer, zmq.PUSH, keys, "rogue")
    again.connect(address)
    again.send(b"welcome")
    wait_for(lambda: got)
    assert [body for body, _ in got] == [b"welcome"]


def test_a_zmqapp_client_channel(keys: Keys, running: Any, tmp_path: Path) -> None:
    server, got = secured_app(keys)
    running(server)
    client = App("client")
    client.config.update(LINGER=0)
    client.add_channel("out", type="PUSH")
    client.config["CHANNELS"] = {  # keys from config, as they would come from a file or env
        "out": {
            "endpoint": server.channels["tasks"].bound[0],
            "curve_secret_key": str(keys.private / "client.key_secret"),
            "curve_server_key": keys.server_public,
        }
    }
    running(client)
    client.send("out", b"from a zmqapp client")
    wait_for(lambda: got)
    assert got[0][0] == b"from a zmqapp client"


def test_the_refusal_test_would_fail_without_authentication(
    keys: Keys, peer: Any, running: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Switch zmqapp's authentication off and the rogue of test_an_unknown_key_is_refused
    gets through: libzmq's trap, a CURVE server without a ZAP handler admits any client that
    knows its public key. So that test can fail, and it is zmqapp that makes it pass."""
    monkeypatch.setattr(security, "needs_zap", lambda channel: False)
    app, got = secured_app(keys)
    running(app)
    rogue = curve_client(peer, zmq.PUSH, keys, "rogue")
    rogue.connect(app.channels["tasks"].bound[0])
    rogue.send(b"from the rogue")
    wait_for(lambda: got)
    assert got[0][0] == b"from the rogue"


def test_a_missing_authenticator_rejects_instead_of_admitting(
    keys: Keys, peer: Any, running: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ZAP_ENFORCE_DOMAIN: with the authenticator gone, even an allowed client is refused."""
    monkeypatch.setattr(security, "authenticator_for", lambda app, context, channels: None)
    app, got = secured_app(keys, monitor=True)
    running(app)
    client = curve_client(peer, zmq.PUSH, keys, "client")
    client.connect(app.channels["tasks"].bound[0])
    client.send(b"allowed, but nobody checks")
    wait_for(lambda: app.channels["tasks"].stats.handshake_failed >= 1)
    assert got == []
    assert app.channels["tasks"].socket is not None
    assert app.channels["tasks"].socket.getsockopt(zmq.ZAP_ENFORCE_DOMAIN) == 1


def test_without_security_options_nothing_changes(app: App, running: Any, peer: Any) -> None:
    got: list[Any] = []
    app.channel("plain", endpoint=TCP, type="PULL")(lambda body, user_id: got.append(user_id))
    running(app)
    sock = app.channels["plain"].socket
    assert sock is not None
    assert sock.getsockopt(zmq.MECHANISM) == zmq.NULL and sock.getsockopt(zmq.ZAP_DOMAIN) == b""
    assert app.runtime is not None and app.runtime.authenticator is None
    peer(zmq.PUSH, connect=app.channels["plain"].bound[0]).send(b"x")
    wait_for(lambda: got)
    assert got == [None]


def test_security_options_are_checked_at_registration(keys: Keys, app: App) -> None:
    with pytest.raises(SetupError, match="is a CURVE client, but authorized_keys is for servers"):
        app.add_channel("a", endpoint="tcp://h:1", type="PUSH", curve_server_key=keys.server_public,
                        authorized_keys=str(keys.authorized))  # fmt: skip
    with pytest.raises(SetupError, match="authorized_keys but no curve_secret_key"):
        app.add_channel("b", endpoint=TCP, type="PULL", authorized_keys=str(keys.authorized))
    with pytest.raises(SetupError, match="has both allow and deny"):
        app.add_channel("c", endpoint=TCP, type="PULL", allow=["127.0.0.1"], deny=["10.0.0.1"])


def test_bad_key_files_fail_at_start_with_the_path(keys: Keys, app: App) -> None:
    app.add_channel("tasks", endpoint=TCP, type="PULL", curve_secret_key=keys.server_public)
    with pytest.raises(SetupError, match=r"is a public certificate; give the secret one"):
        app.run(install_signal_handlers=False)
    app.channels.clear()
    app.add_channel("tasks", endpoint=TCP, type="PULL", curve_secret_key="/nonexistent/k.key")
    with pytest.raises(SetupError, match=r"cannot read the curve_secret_key certificate"):
        app.run(install_signal_handlers=False)
    assert not app.running


def test_the_test_client_needs_no_keys(keys: Keys) -> None:
    app, got = secured_app(keys)
    with app.test_client() as client:  # inproc has no network to secure: keys are set aside
        client.send("tasks", b"x")
    assert got == [(b"x", None)]


def test_a_failing_key_check_refuses_one_client_and_locks_out_nobody(
    keys: Keys, peer: Any, running: Any
) -> None:
    allowed = zmq.auth.load_certificate(keys.client_public)[0].decode()
    database = {allowed: True}
    app, got = secured_app(keys, authorized_keys=lambda key: database[key])  # KeyError for rogues
    running(app)
    refused_then_marker(app, got, curve_client(peer, zmq.PUSH, keys, "rogue"), peer, keys)
    assert [body for body, _ in got] == [b"marker"]  # the authenticator survived the KeyError


def test_a_40_character_string_that_is_no_key_is_explained(app: App) -> None:
    app.add_channel("tasks", endpoint=TCP, type="PULL", curve_secret_key="\x01" * 40)
    with pytest.raises(SetupError, match=r"curve_secret_key .* is neither a file nor a Z85 key"):
        app.run(install_signal_handlers=False)


def test_a_refused_connection_is_counted_once(peer: Any, running: Any) -> None:
    """One connection refused by an IP rule, on a monitored channel: one count
    (``auth_refused``), not also the monitor's ZAP failure and a "closed before handshake"."""
    app = App("refused-once")
    app.config.update(LINGER=0, MONITOR=True)
    events: list[str] = []
    app.channel("guarded", endpoint=TCP, type="PULL", deny=["127.0.0.0/8"])(lambda body: None)

    def on_event(sender: App, channel: Any, event: str, endpoint: str, value: Any) -> None:
        events.append(event)

    signals.socket_event.connect(on_event, sender=app)
    try:
        running(app)
        push = peer(zmq.PUSH)
        push.setsockopt(zmq.RECONNECT_IVL, -1)  # exactly one attempt
        push.connect(app.channels["guarded"].bound[0])
        push.send(b"x")
        wait_for(lambda: "disconnected" in events)
    finally:
        signals.socket_event.disconnect(on_event, sender=app)
    assert "handshake_failed_auth" in events  # still signalled
    assert app.channels["guarded"].stats.handshakes == {"auth_refused": 1}


def test_a_refused_curve_client_channel_counts_its_refusal(keys: Keys, running: Any) -> None:
    """A zmqapp CURVE client whose server refuses its key: the server counts auth_refused,
    the client (with no authenticator of its own) counts handshake_failed_auth."""
    server, got = secured_app(keys, monitor=True)
    running(server)
    client = App("rogue-client")
    client.config.update(LINGER=0, MONITOR=True)
    client.add_channel(
        "out",
        endpoint=server.channels["tasks"].bound[0],
        type="PUSH",
        curve_secret_key=keys.rogue_secret,
        curve_server_key=keys.server_public,
    )
    running(client)
    wait_for(lambda: client.channels["out"].stats.handshakes.get("handshake_failed_auth", 0) >= 1)
    wait_for(lambda: server.channels["tasks"].stats.handshakes.get("auth_refused", 0) >= 1)
    assert got == []
