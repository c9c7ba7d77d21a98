"""Security: CURVE encryption and authentication, ZAP, and IP rules, per channel.

Options (settable from config like any other, so keys never live in code):

``curve_secret_key``
    This side's secret certificate file (``zmqapp keygen``, ``zmq.auth.create_certificates``)
    or a Z85 secret key. A channel with it and no ``curve_server_key`` is a CURVE *server*.
``curve_server_key``
    Client side: the server's public key (Z85) or public certificate file. Without its own
    ``curve_secret_key`` the client uses a fresh key pair each run (encrypted, anonymous).
``authorized_keys``
    Server side: a directory of allowed clients' public certificates, or a callable
    ``(public_key: str) -> bool`` (may be async). Without it, any client that completes the
    CURVE handshake is admitted: encrypted, but not authenticated (zmqapp warns).
``allow`` / ``deny``
    Server side: lists of client IP addresses or networks in CIDR form (with or without
    CURVE). A host name is refused at registration: it would match nothing.

How it is enforced: one ZAP authenticator per app (pyzmq's asyncio authenticator, on the
app's loop) starts before any socket binds. Each protected channel has its own ZAP domain
and ``ZAP_ENFORCE_DOMAIN`` set, so a missing authenticator rejects instead of admitting;
pyzmq's own global switches (``allow_any``, IP lists) are never used, so one channel's rules
cannot open another.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from .errors import SetupError
from .signals import socket_event

if TYPE_CHECKING:
    from .app import App
    from .channel import Channel

log = logging.getLogger("zmqapp.security")

SERVER_ONLY = ("authorized_keys", "allow", "deny")


def domain_of(channel: Channel) -> str:
    """The ZAP domain of a channel."""
    return f"zmqapp/{channel.name}"


def is_server(channel: Channel) -> bool:
    return "curve_secret_key" in channel.security and "curve_server_key" not in channel.security


def is_client(channel: Channel) -> bool:
    return "curve_server_key" in channel.security


def needs_zap(channel: Channel) -> bool:
    """True if the channel's peers are checked by the authenticator."""
    return is_server(channel) or "allow" in channel.security or "deny" in channel.security


def check_options(channel: Channel) -> None:
    """Raise :class:`SetupError` for security options that do not fit together."""
    security = channel.security
    if not security:
        return
    if not zmq.has("curve") and ("curve_secret_key" in security or is_client(channel)):
        raise SetupError(  # pragma: no cover - pyzmq wheels bundle a libzmq with CURVE
            f"channel {channel.name!r} asks for CURVE, but this libzmq was built without it"
        )
    if is_client(channel):
        extra = [key for key in SERVER_ONLY if key in security]
        if extra:
            raise SetupError(
                f"channel {channel.name!r} has curve_server_key, so it is a CURVE client, but "
                f"{extra[0]} is for servers (the side that checks who connects); remove it"
            )
    elif "authorized_keys" in security and "curve_secret_key" not in security:
        raise SetupError(
            f"channel {channel.name!r} has authorized_keys but no curve_secret_key: a CURVE "
            "server needs its own secret certificate (make one with zmqapp keygen)"
        )
    if "allow" in security and "deny" in security:
        raise SetupError(
            f"channel {channel.name!r} has both allow and deny; give one: allow admits only "
            "the addresses listed, deny refuses only those"
        )
    for key in ("allow", "deny"):
        if key in security:
            security[key] = _addresses(channel, key, security[key])
    keys = security.get("authorized_keys")
    if keys is not None and not callable(keys) and not isinstance(keys, (str, os.PathLike)):
        raise SetupError(
            f"channel {channel.name!r}: authorized_keys must be a directory of public "
            f"certificates or a callable (public_key) -> bool, not {type(keys).__name__}"
        )


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _addresses(channel: Channel, key: str, value: Any) -> list[Network]:
    """``allow``/``deny`` as IP networks: each item an address (``10.0.0.5``, ``::1``) or a
    network in CIDR form (``10.0.0.0/8``). Anything else, a host name in particular, would
    match nothing and so fail open: it is a registration error."""
    items = (
        [value] if isinstance(value, (str, ipaddress.IPv4Network, ipaddress.IPv6Network)) else value
    )
    try:
        items = list(items)
    except TypeError:
        items = [items]
    networks: list[Network] = []
    for item in items:
        if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(item)
            continue
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise SetupError(
                f"channel {channel.name!r}: {key} entry {item!r} is not an IP address or "
                "network; ZeroMQ reports clients by address, never by name, so give addresses "
                "such as '10.0.0.5' or networks such as '10.0.0.0/8' (resolve host names "
                "yourself if you must)"
            ) from None
    return networks


def _matches(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def _z85_key(where: str, option: str, spec: Any) -> bytes | None:
    """``spec`` as a Z85 key if it is one (40 characters, not a file), else None."""
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not (isinstance(spec, str) and len(spec) == 40) or os.path.exists(spec):
        return None
    folder = os.path.dirname(spec)
    if spec.endswith((".key", ".key_secret")) or (folder and os.path.isdir(folder)):
        return None  # a path to a file that is not there: said as such by the loader
    try:
        if len(z85.decode(spec)) != 32:
            raise ValueError("not a 32-byte key")
    except (ValueError, KeyError, TypeError):
        raise SetupError(
            f"{where}{option} {spec!r} is neither a file nor a Z85 key (40 characters); check "
            "the path, or give the key zmqapp keygen printed"
        ) from None
    return spec.encode("ascii")


def read_secret_key(spec: Any, option: str, *, where: str = "") -> tuple[bytes, bytes]:
    """(public, secret) from a secret certificate file or a Z85 secret key.

    ``option`` (``"--curve-secret-key"``), after ``where``, names what was given in error
    messages; a problem is a :class:`SetupError` that says what to give instead.
    """
    if _z85_key(where, option, spec) is not None:
        secret = spec.encode("ascii") if isinstance(spec, str) else bytes(spec)
        try:
            return zmq.curve_public(secret), secret
        except (zmq.ZMQError, ValueError) as exc:
            raise SetupError(f"{where}{option} is not a valid Z85 key: {exc}") from None
    public, maybe_secret = _load_certificate(where, option, spec)
    if maybe_secret is None:
        raise SetupError(
            f"{where}{option} {os.fspath(spec)!r} is a public certificate; give the secret one "
            "(the .key_secret file zmqapp keygen writes)"
        )
    return public, maybe_secret


def read_public_key(spec: Any, option: str, *, where: str = "") -> bytes:
    """A public key from a Z85 key or a certificate file (public or secret); see
    :func:`read_secret_key`."""
    key = _z85_key(where, option, spec)
    if key is not None:
        return key
    return _load_certificate(where, option, spec)[0]


def _load_certificate(where: str, option: str, spec: Any) -> tuple[bytes, bytes | None]:
    path = os.fspath(spec)
    try:
        return zmq.auth.load_certificate(path)
    except OSError as exc:
        raise SetupError(
            f"{where}cannot read the {option} certificate {path!r} ({exc.strerror or exc}); "
            "make one with zmqapp keygen"
        ) from None
    except ValueError as exc:
        raise SetupError(
            f"{where}{option} {path!r} is neither a Z85 key nor a certificate file: {exc}"
        ) from None


def apply(sock: zmq.Socket[Any], channel: Channel) -> None:
    """Set a channel's security options on its socket (before any bind or connect)."""
    security = channel.security
    owner = f"channel {channel.name!r}"
    if is_client(channel):
        curve_client(sock, owner, security["curve_server_key"], security.get("curve_secret_key"))
    elif is_server(channel):
        key = security["curve_secret_key"]
        curve_server(sock, *read_secret_key(key, "curve_secret_key", where=f"{owner}: "))
    if needs_zap(channel):
        enforce_zap(sock, domain_of(channel))


def curve_server(sock: zmq.Socket[Any], public: bytes, secret: bytes) -> None:
    """Make ``sock`` a CURVE server with the key pair ``public``, ``secret``."""
    sock.curve_server = True
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def enforce_zap(sock: zmq.Socket[Any], domain: str) -> None:
    """Have ``sock``'s handshakes checked by the authenticator of ZAP ``domain``; without
    one, they are refused: never fall back to admitting everyone."""
    sock.zap_domain = domain.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


class _KeyDirectory:
    """Allowed client keys: the public certificates in a directory, read again on reload."""

    def __init__(self, channel: Channel, path: str | os.PathLike[str]) -> None:
        self.channel = channel
        self.path = os.fspath(path)
        self.keys: set[bytes] = set()
        self.reload()

    def reload(self) -> None:
        if not os.path.isdir(self.path):
            raise SetupError(
                f"channel {self.channel.name!r}: authorized_keys {self.path!r} is not a "
                "directory; put the allowed clients' public certificates (*.key) in one"
            )
        self.keys = set(zmq.auth.load_certificates(self.path))

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


class _KeyCheck:
    """Allowed client keys decided by a user's callable ``(public_key: str) -> bool``."""

    def __init__(self, check: Callable[[str], Any]) -> None:
        self.check = check

    def callback(self, domain: str, key: bytes) -> Any:
        return self.check(key.decode("ascii"))


class _AnyKey:
    """A CURVE server without authorized_keys: any client key (encrypted, anonymous)."""

    def callback(self, domain: str, key: bytes) -> bool:
        return True


class Authenticator(AsyncioAuthenticator):
    """The app's ZAP handler: per-channel keys and IP rules, refusals logged and signalled."""

    def __init__(self, app: App, context: zmq.Context[Any]) -> None:
        super().__init__(context, log=logging.getLogger("zmqapp.zap"))
        self.app = app
        self.channels: dict[str, Channel] = {}
        self.ip_rules: dict[str, tuple[list[Network], list[Network]]] = {}
        self._address = ""

    def start(self) -> None:
        try:
            super().start()
        except zmq.ZMQError as exc:
            raise SetupError(
                "cannot start the ZAP authenticator: another one already runs in this ZeroMQ "
                f"context ({exc}); give each secured app its own context"
            ) from None

    def add(self, channel: Channel) -> None:
        domain = domain_of(channel)
        self.channels[domain] = channel
        security = channel.security
        self.ip_rules[domain] = (list(security.get("allow", ())), list(security.get("deny", ())))
        if not is_server(channel):
            return
        keys = security.get("authorized_keys")
        provider: Any
        if keys is None:
            provider = _AnyKey()
            log.warning(
                "channel %r is a CURVE server without authorized_keys: its traffic is "
                "encrypted, but any client may connect; set authorized_keys to choose who",
                channel.name,
            )
        elif callable(keys):
            provider = _KeyCheck(keys)
        else:
            provider = _KeyDirectory(channel, keys)
        self.configure_curve_callback(domain, provider)

    def reload(self) -> None:
        """Read every authorized_keys directory again."""
        for provider in self.credentials_providers.values():
            if isinstance(provider, _KeyDirectory):
                provider.reload()

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # pyzmq's authenticator task dies with the first exception, after which no handshake
        # gets an answer: a failing key check must refuse one client, not lock out everyone.
        try:
            await self._check(msg)
        except Exception:
            log.exception("the authenticator failed on a request; refusing that client")
            if len(msg) >= 2:
                self._send_zap_reply(msg[1], b"500", b"authenticator error")

    async def _check(self, msg: list[bytes]) -> None:
        if len(msg) >= 6:
            domain = msg[2].decode(self.encoding, "replace")
            self._address = address = msg[3].decode(self.encoding, "replace")
            allow, deny = self.ip_rules.get(domain, ([], []))
            if (allow and not _matches(address, allow)) or _matches(address, deny):
                reason = "address not allowed" if allow else "address denied"
                self.refused(domain, address, reason)
                self._send_zap_reply(msg[1], b"400", reason.encode())
                return
        await super().handle_zap_message(msg)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        if not allowed:
            key = z85.encode(client_key).decode("ascii")
            self.refused(domain, self._address, f"{reason.decode(errors='replace')}: {key}")
        return allowed, reason

    def refused(self, domain: str, address: str, reason: str) -> None:
        channel = self.channels.get(domain)
        name = channel.name if channel is not None else domain
        log.warning("channel %r refused a client from %s: %s", name, address, reason)
        if channel is not None:
            channel.stats.handshake("auth_refused")
            if socket_event.receivers:
                socket_event.send(
                    self.app, channel=channel, event="auth_refused", endpoint=address, value=reason
                )


def authenticator_for(
    app: App, context: zmq.Context[Any], channels: Iterable[Channel]
) -> Authenticator | None:
    """Start the app's authenticator if any channel needs one, before any socket binds."""
    protected = [channel for channel in channels if needs_zap(channel)]
    if not protected:
        return None
    auth = Authenticator(app, context)
    for channel in protected:
        auth.add(channel)  # reads key directories: errors surface before the start
    auth.start()
    return auth


def curve_client(sock: zmq.Socket[Any], owner: str, server_key: Any, secret_key: Any) -> None:
    """Make ``sock`` a CURVE client of the server whose public key is ``server_key``, with
    the secret certificate ``secret_key`` (None: a fresh anonymous key pair)."""
    if secret_key is not None:
        public, secret = read_secret_key(secret_key, "curve_secret_key", where=f"{owner}: ")
    else:
        public, secret = zmq.curve_keypair()
    sock.curve_serverkey = read_public_key(server_key, "curve_server_key", where=f"{owner}: ")
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def user_id_of(frame: zmq.Frame) -> str | None:
    """The authenticated ``User-Id`` of a message's first frame: on a CURVE server, the Z85
    public key of the client that sent it."""
    try:
        return str(frame.get("User-Id"))
    except zmq.ZMQError:
        return None
