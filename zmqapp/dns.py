"""``tcp+dns://NAME:PORT`` endpoints: one socket connected to every address a name has.

libzmq resolves the host of a ``tcp://name:port`` endpoint once, connects to the first
address, and never looks again: a Kubernetes headless service with five pods reaches one of
them, and a pod that moves is lost. A :class:`DnsEndpoint` looks NAME up in DNS (A and AAAA)
when it starts and every ``refresh`` seconds after, and asks its owner to connect the
socket to each address that appears and to disconnect each one that vanishes.

It never touches the socket itself: the runtime passes ``connect`` and ``disconnect``
callbacks (``sock.connect`` and ``sock.disconnect`` will do) and stays the socket's only
owner. Lookups use dnspython's asynchronous resolver, so the loop is never blocked; install
it with ``pip install 'zmqapp[dns]'``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import zmq

from .errors import SetupError

if TYPE_CHECKING:
    import dns.asyncresolver

#: The scheme of the endpoints this module handles.
SCHEME = "tcp+dns://"

#: Socket options a socket with a ``tcp+dns://`` endpoint needs: libzmq connects to IPv6
#: (AAAA) addresses only with ``IPV6`` set, which still lets it connect to IPv4 ones.
SOCKET_OPTIONS: dict[int, int] = {zmq.IPV6: 1}

_INSTALL = "pip install 'zmqapp[dns]'"
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_WILDCARDS = {"*", "0.0.0.0", "::"}

#: The callbacks' type: they get a full ``tcp://IP:PORT`` or ``tcp://[IPv6]:PORT`` string.
AddressCallback = Callable[[str], object]
#: ``on_change(added, removed)``: sorted tuples of ``tcp://`` addresses.
ChangeCallback = Callable[[tuple[str, ...], tuple[str, ...]], object]


def parse_dns_endpoint(address: str, *, bind: bool = False) -> tuple[str, int] | None:
    """Split ``tcp+dns://NAME:PORT`` into ``(NAME, PORT)``; ``None`` for any other endpoint.

    NAME is a DNS name, or an IP address (an IPv6 one in brackets, ``tcp+dns://[::1]:5555``),
    which then stands for itself. A leading ``>`` (connect) is accepted; a leading ``@`` or
    ``bind=True`` is an error, because a name stands for the peers to connect to, not for
    an address of this host. Raises :class:`~zmqapp.SetupError` with a sentence saying how
    to write the endpoint when it is malformed.
    """
    text = address
    if text[:1] in ("@", ">"):
        bind = bind or text[0] == "@"
        text = text[1:]
    if text[: len(SCHEME)].lower() != SCHEME:
        return None
    rest = text[len(SCHEME) :]
    example = "e.g. tcp+dns://workers.default.svc.cluster.local:5555"

    def error(problem: str) -> SetupError:
        return SetupError(f"endpoint {address!r} {problem}")

    if bind:
        raise error(
            "cannot be bound: a tcp+dns:// endpoint names the peers to connect to. Bind a "
            "tcp://*:PORT endpoint on the peers and connect to their DNS name here"
        )
    if ";" in rest:
        raise error(
            "has a source address, which tcp+dns:// does not support; remove the part before ';'"
        )
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise error("has an IPv6 address with no closing ']'; write tcp+dns://[ADDRESS]:PORT")
        host, after = rest[1:close], rest[close + 1 :]
        if not after.startswith(":"):
            raise error(f"has no port; write tcp+dns://[{host}]:PORT")
        port_text = after[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise error(f"has {host!r} in brackets, which is not an IPv6 address") from None
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise error(f"has no port; write it as tcp+dns://NAME:PORT, {example}")
        if ":" in host:
            raise error("has an IPv6 address without brackets; write tcp+dns://[ADDRESS]:PORT")
    if not host:
        raise error(f"has no name; write it as tcp+dns://NAME:PORT, {example}")
    if host in _WILDCARDS:
        raise error(
            f"has the wildcard host {host!r}, which only means something when binding; "
            "give the DNS name of the peers to connect to"
        )
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise error(
            f"has the port {port_text!r}; a tcp+dns:// endpoint connects, so give the peers' "
            "port as a number from 1 to 65535"
        )
    if not _is_ip(host) and not _is_dns_name(host):
        raise error(
            f"has {host!r}, which is not a DNS name: use letters, digits, '-' and '_' in "
            f"dot-separated labels of at most 63 characters, {example}"
        )
    return host, int(port_text)


def parse_nameservers(nameservers: str | Iterable[str]) -> list[tuple[str, int]]:
    """Parse ``DNS_NAMESERVERS``: ``"ip"``, ``"ip:port"``, ``"[ipv6]:port"`` or a bare IPv6.

    A string may hold several, separated by commas or spaces (the form an environment
    variable gives). Returns ``(ip, port)`` pairs, port 53 where none is given. Raises
    :class:`~zmqapp.SetupError` for anything that is not an IP address: a nameserver must
    be reachable before any name can be resolved.
    """
    items = nameservers.replace(",", " ").split() if isinstance(nameservers, str) else nameservers
    parsed = []
    for item in items:
        host, port = item, "53"
        if item.startswith("["):
            host, bracket, after = item[1:].partition("]")
            port = after[1:] if after.startswith(":") else "" if after or not bracket else "53"
        elif item.count(":") == 1:
            host, _, port = item.partition(":")
        if not (_is_ip(host) and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise SetupError(
                f"DNS nameserver {item!r} is not an IP address with an optional port; write "
                "'10.96.0.10', '10.96.0.10:53', '[fd00::10]:53' or '::1'"
            )
        parsed.append((host, int(port)))
    return parsed


def tcp_address(ip: str, port: int) -> str:
    """The ``tcp://`` endpoint libzmq connects to for ``ip`` and ``port``."""
    parsed = ipaddress.ip_address(ip)
    return f"tcp://[{parsed}]:{port}" if parsed.version == 6 else f"tcp://{parsed}:{port}"


class DnsEndpoint:
    """Keep one socket connected to every A and AAAA address of ``name``, port ``port``.

    ``connect(address)`` and ``disconnect(address)`` are called on the loop with full
    ``tcp://IP:PORT`` or ``tcp://[IPv6]:PORT`` strings; the socket needs the options in
    :data:`SOCKET_OPTIONS` for IPv6 addresses. :meth:`start` schedules the first lookup at
    once on the running asyncio loop and another every ``refresh`` seconds; new addresses are
    connected before vanished ones are disconnected, so the socket always has a peer during a
    rolling update. Each change is logged at INFO and passed to ``on_change(added,
    removed)``.

    A lookup that fails (the name does not exist, no A or AAAA record, a timeout, no
    nameserver answering) never disconnects anything: the socket keeps every address it
    has. An empty answer cannot be told apart from a DNS hiccup (a restarting DNS server, a
    headless service between two pods of a rollout), and keeping a stale address costs only
    reconnect attempts, while dropping healthy peers loses their messages; dead peers are
    dropped by ``heartbeat=`` and by libzmq. So an address leaves the socket only when a
    lookup that succeeds no longer lists it. (With libzmq's default ``IMMEDIATE=0``, an
    address that does not answer still takes its share of a PUSH or DEALER socket's messages,
    which wait in its queue, up to ``SNDHWM``, until it answers or is disconnected;
    ``IMMEDIATE=1`` sends to connected peers only.) When the A lookup works and the AAAA one fails
    (or the other way round), the family that answered is brought up to date and the other
    kept. A failure is retried with exponential backoff, from ``refresh / 4`` (at most half a
    second) up to ``refresh``, logged as a WARNING when it starts, again at most every
    :attr:`warn_every` seconds while it lasts, and at INFO when the name resolves again.
    Nothing is raised after :meth:`start`.

    ``nameservers`` (``"ip"``, ``"ip:port"``, ``"[ipv6]:port"``) replaces the system's
    resolver configuration; without it ``/etc/resolv.conf`` is read, search domains
    included, so a short Kubernetes service name works. NAME is looked up in DNS only, never
    in ``/etc/hosts``: the point is to follow records that change. ``timeout`` bounds one
    lookup (default: ``refresh``, within 1 to 5 seconds). Without dnspython, constructing
    raises :class:`~zmqapp.SetupError` saying what to install.

    Everything runs on the loop's thread: call :meth:`start`, :meth:`close` and
    :meth:`wait_closed` from there.
    """

    #: Seconds between repeated WARNINGs while a name keeps failing to resolve.
    warn_every: float = 60.0

    def __init__(
        self,
        name: str,
        port: int,
        *,
        connect: AddressCallback,
        disconnect: AddressCallback,
        refresh: float = 10.0,
        nameservers: str | Sequence[str] | None = None,
        logger: logging.Logger | None = None,
        on_change: ChangeCallback | None = None,
        timeout: float | None = None,
    ) -> None:
        if not _positive(refresh):
            raise SetupError(
                f"DNS refresh interval {refresh!r} is not a positive number of seconds; "
                "set DNS_REFRESH to how often to look the name up again, e.g. 10"
            )
        if timeout is not None and not _positive(timeout):
            raise SetupError(f"DNS timeout {timeout!r} is not a positive number of seconds")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise SetupError(f"port {port!r} is not a TCP port; give a number from 1 to 65535")
        self.name = name
        self.port = port
        self.refresh = float(refresh)
        self.timeout = timeout if timeout is not None else min(max(self.refresh, 1.0), 5.0)
        self.endpoint = f"{SCHEME}[{name}]:{port}" if ":" in name else f"{SCHEME}{name}:{port}"
        self.log = logger or logging.getLogger("zmqapp.dns")
        #: How many lookups in a row have failed (0 while the name resolves).
        self.failures = 0
        #: Why the last lookup failed, or ``None``.
        self.last_error: str | None = None
        self._connect = connect
        self._disconnect = disconnect
        self._on_change = on_change
        self._literal = name if _is_ip(name) else None
        self._resolver = (
            None
            if self._literal
            else _make_resolver(
                None if nameservers is None else parse_nameservers(nameservers), self.timeout
            )
        )
        self._addresses: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failing_since = 0.0
        self._warned_at = 0.0

    @classmethod
    def from_address(cls, address: str, **options: Any) -> DnsEndpoint:
        """Make one from a ``tcp+dns://NAME:PORT`` endpoint string (see
        :func:`parse_dns_endpoint`); ``options`` are the constructor's keyword arguments."""
        parsed = parse_dns_endpoint(address)
        if parsed is None:
            raise SetupError(f"endpoint {address!r} is not a {SCHEME}NAME:PORT endpoint")
        return cls(parsed[0], parsed[1], **options)

    @property
    def addresses(self) -> frozenset[str]:
        """The ``tcp://`` addresses the socket is connected to now."""
        return frozenset(self._addresses)

    def start(self) -> None:
        """Look the name up now, then every ``refresh`` seconds, on the running loop."""
        if self._task is not None or self._closed:
            raise RuntimeError(f"{self.endpoint} was already started; make a new DnsEndpoint")
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"zmqapp {self.endpoint}"
        )

    def close(self) -> None:
        """Stop looking the name up. Connections stay until the socket is closed.

        Idempotent. :meth:`wait_closed` waits until a lookup in flight has been abandoned.
        """
        self._closed = True
        if self._task is not None:
            self._task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the endpoint's task has ended: after :meth:`close`, or by itself for
        an IP address, which needs no lookups."""
        if self._task is not None:
            await asyncio.wait([self._task])

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._task else "new"
        return f"<DnsEndpoint {self.endpoint} {state}, {len(self._addresses)} connected>"

    async def _run(self) -> None:
        if self._literal is not None:
            self._apply({tcp_address(self._literal, self.port)})
            return
        first_retry = min(0.5, self.refresh / 4)
        retry = first_retry
        while True:
            try:
                found, error = await self._lookup()
            except Exception as exc:  # a bug here must not end the endpoint's life
                self.log.exception("%s: lookup failed unexpectedly", self.endpoint)
                found, error = None, f"{type(exc).__name__}: {exc}"
            if found:
                self._apply(found)
            if error is None:
                self._recovered()
                delay, retry = self.refresh, first_retry
            else:
                # Jitter that only shortens keeps the cap and spreads a fleet's retries.
                delay, retry = retry * random.uniform(0.75, 1.0), min(2 * retry, self.refresh)
                self._failed(error, delay)
            await asyncio.sleep(delay)

    async def _lookup(self) -> tuple[set[str] | None, str | None]:
        """Return the addresses to be connected to (``None``: change nothing) and what went
        wrong (``None``: both lookups answered)."""
        results = await asyncio.gather(self._query("A"), self._query("AAAA"))
        found: set[str] = set()
        errors: list[str] = []
        for version, result in zip((4, 6), results, strict=True):
            if isinstance(result, str):
                errors.append(result)
                found |= {a for a in self._addresses if _version(a) == version}
            else:
                found |= result
        error = "; ".join(dict.fromkeys(errors)) or None
        if len(errors) == len(results) or not found:
            return None, error or "no A or AAAA record"
        return found, error

    async def _query(self, rdtype: str) -> set[str] | str:
        """The addresses of one record type, or why they could not be had."""
        import dns.exception
        import dns.resolver

        assert self._resolver is not None
        try:
            answer = await self._resolver.resolve(
                self.name, rdtype, raise_on_no_answer=False, search=True
            )
        except dns.resolver.NXDOMAIN:
            return "the name does not exist (NXDOMAIN)"
        except dns.exception.Timeout:
            return f"no answer within {self.timeout:g} s"
        except (dns.exception.DNSException, OSError) as exc:
            return str(exc) or type(exc).__name__
        return {tcp_address(rdata.address, self.port) for rdata in answer.rrset or ()}

    def _apply(self, found: set[str]) -> None:
        added: list[str] = []
        for address in sorted(found - self._addresses):
            try:
                self._connect(address)
            except Exception:
                self.log.exception(
                    "%s: could not connect to %s; trying again at the next lookup",
                    self.endpoint,
                    address,
                )
                continue
            self._addresses.add(address)
            added.append(address)
        removed = sorted(self._addresses - found)
        for address in removed:
            try:
                self._disconnect(address)
            except Exception:
                self.log.exception("%s: could not disconnect from %s", self.endpoint, address)
            self._addresses.discard(address)
        if not added and not removed:
            return
        self.log.info(
            "%s: %s appeared, %s vanished; connected to %d address%s",
            self.endpoint,
            ", ".join(added) or "none",
            ", ".join(removed) or "none",
            len(self._addresses),
            "" if len(self._addresses) == 1 else "es",
        )
        if self._on_change is not None:
            try:
                self._on_change(tuple(added), tuple(removed))
            except Exception:
                self.log.exception("%s: on_change failed", self.endpoint)

    def _failed(self, error: str, delay: float) -> None:
        now = time.monotonic()
        self.failures += 1
        self.last_error = error
        kept = (
            f"keeping the {len(self._addresses)} connected address"
            f"{'' if len(self._addresses) == 1 else 'es'}"
            if self._addresses
            else "not connected to any address yet"
        )
        if self.failures == 1:
            self._failing_since = self._warned_at = now
            self.log.warning(
                "%s: cannot resolve %s: %s; %s, retrying with backoff",
                self.endpoint,
                self.name,
                error,
                kept,
            )
        elif now - self._warned_at >= self.warn_every:
            self._warned_at = now
            self.log.warning(
                "%s: still cannot resolve %s after %d attempts in %.0f s: %s; %s",
                self.endpoint,
                self.name,
                self.failures,
                now - self._failing_since,
                error,
                kept,
            )
        else:
            self.log.debug(
                "%s: lookup %d in a row failed: %s; next in %.2f s",
                self.endpoint,
                self.failures,
                error,
                delay,
            )

    def _recovered(self) -> None:
        if self.failures:
            self.log.info(
                "%s: %s resolves again after %d failed attempt%s in %.1f s",
                self.endpoint,
                self.name,
                self.failures,
                "" if self.failures == 1 else "s",
                time.monotonic() - self._failing_since,
            )
        self.failures = 0
        self.last_error = None


def _make_resolver(
    nameservers: list[tuple[str, int]] | None, timeout: float
) -> dns.asyncresolver.Resolver:
    try:
        import dns.asyncresolver
        import dns.nameserver
        import dns.resolver
    except ImportError:
        raise SetupError(
            f"tcp+dns:// endpoints need dnspython; install it with {_INSTALL}"
        ) from None
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in nameservers]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except (dns.resolver.NoResolverConfiguration, OSError) as exc:
            raise SetupError(
                f"the system's DNS configuration cannot be used ({exc}); set DNS_NAMESERVERS "
                "to the nameservers to ask, e.g. ['10.96.0.10']"
            ) from None
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)
    resolver.cache = None  # every refresh must ask the server: following changes is the point
    return resolver


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_dns_name(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def _version(address: str) -> int:
    return 6 if address.startswith("tcp://[") else 4
