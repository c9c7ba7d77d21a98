"""What each ZeroMQ socket type means to zmqapp, in one table.

Every module that needs to know whether a type receives, replies, can be shared by
``--workers`` or which type a test client talks to it with asks :data:`KINDS` (or the sets
derived from it below), so a fact about a socket type is written down exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq

from .errors import SetupError


@dataclass(frozen=True)
class SocketKind:
    """The facts zmqapp uses about one socket type."""

    #: The type's name: ``"PULL"``.
    name: str
    #: The libzmq constant, as a plain int.
    type: int
    #: Handlers get called: messages come in.
    receives: bool
    #: ``app.send`` works on it.
    sends: bool
    #: Its handlers' return values are replies (REP, ROUTER).
    replies: bool
    #: It may be a ``send_to`` target: it sends without an identity or a request to answer.
    forwardable: bool
    #: ``app.request`` works on it (REQ, DEALER).
    requests: bool
    #: Incoming messages carry a topic in frame 0 (SUB, XSUB).
    topical: bool
    #: Outgoing messages may carry a topic (``app.send(..., topic=...)``).
    publishes: bool
    #: Traffic only flows in: its peers never wait for an answer from it.
    inbound_only: bool
    #: Under ``--workers``: (the parent's public socket, the parent's socket toward the
    #: workers), or None when a bound one cannot be shared by several processes.
    proxy: tuple[int, int] | None
    #: The socket the test client talks to a channel of this type with.
    test_peer: int
    #: The types it can talk to over the wire (ZMTP's compatibility rules).
    peers: frozenset[int]


def _kind(
    name: str,
    *,
    receives: bool = False,
    sends: bool = False,
    replies: bool = False,
    forwardable: bool = False,
    requests: bool = False,
    topical: bool = False,
    publishes: bool = False,
    inbound_only: bool = False,
    proxy: tuple[str, str] | None = None,
    test_peer: str,
    peers: tuple[str, ...],
) -> SocketKind:
    def t(n: str) -> int:
        return int(getattr(zmq, n))

    return SocketKind(
        name=name,
        type=t(name),
        receives=receives,
        sends=sends,
        replies=replies,
        forwardable=forwardable,
        requests=requests,
        topical=topical,
        publishes=publishes,
        inbound_only=inbound_only,
        proxy=None if proxy is None else (t(proxy[0]), t(proxy[1])),
        test_peer=t(test_peer),
        peers=frozenset(t(p) for p in peers),
    )


#: Socket type constant -> its facts.
KINDS: dict[int, SocketKind] = {
    kind.type: kind
    for kind in (
        _kind("PUSH", sends=True, forwardable=True, proxy=("PUSH", "PULL"), test_peer="PULL",
              peers=("PULL",)),
        _kind("PULL", receives=True, inbound_only=True, proxy=("PULL", "PUSH"), test_peer="PUSH",
              peers=("PUSH",)),
        _kind("PUB", sends=True, forwardable=True, publishes=True, proxy=("XPUB", "XSUB"),
              test_peer="SUB", peers=("SUB", "XSUB")),
        # An XPUB peer sees the channel's subscriptions arrive, so a test client misses nothing.
        _kind("SUB", receives=True, topical=True, inbound_only=True, proxy=("XSUB", "XPUB"),
              test_peer="XPUB", peers=("PUB", "XPUB")),
        _kind("XPUB", receives=True, sends=True, forwardable=True, publishes=True,
              proxy=("XPUB", "XSUB"), test_peer="XSUB", peers=("SUB", "XSUB")),
        _kind("XSUB", receives=True, sends=True, topical=True, inbound_only=True,
              proxy=("XSUB", "XPUB"), test_peer="XPUB", peers=("PUB", "XPUB")),
        _kind("REQ", receives=True, sends=True, forwardable=True, requests=True,
              test_peer="ROUTER", peers=("REP", "ROUTER")),
        _kind("REP", receives=True, replies=True, proxy=("ROUTER", "DEALER"), test_peer="DEALER",
              peers=("REQ", "DEALER")),
        _kind("DEALER", receives=True, sends=True, forwardable=True, requests=True,
              proxy=("DEALER", "DEALER"), test_peer="DEALER",
              peers=("REP", "DEALER", "ROUTER")),
        _kind("ROUTER", receives=True, sends=True, replies=True, proxy=("ROUTER", "DEALER"),
              test_peer="DEALER", peers=("REQ", "DEALER", "ROUTER")),
        _kind("PAIR", receives=True, sends=True, forwardable=True, test_peer="PAIR",
              peers=("PAIR",)),
    )
}  # fmt: skip

#: Socket type names (upper case) -> constants.
SOCKET_TYPES: dict[str, int] = {kind.name: kind.type for kind in KINDS.values()}
#: Socket type constants -> names.
TYPE_NAMES: dict[int, str] = {kind.type: kind.name for kind in KINDS.values()}

RECEIVING = frozenset(k.type for k in KINDS.values() if k.receives)
REPLYING = frozenset(k.type for k in KINDS.values() if k.replies)
FORWARDABLE = frozenset(k.type for k in KINDS.values() if k.forwardable)
SENDING = frozenset(k.type for k in KINDS.values() if k.sends)
REQUESTING = frozenset(k.type for k in KINDS.values() if k.requests)
TOPICAL = frozenset(k.type for k in KINDS.values() if k.topical)
PUBLISHING = frozenset(k.type for k in KINDS.values() if k.publishes)
INBOUND_ONLY = frozenset(k.type for k in KINDS.values() if k.inbound_only)


def socket_type(value: int | str) -> int:
    """A socket type from a zmq constant or a name in any case."""
    if isinstance(value, str):
        found = SOCKET_TYPES.get(value.strip().upper())
    elif isinstance(value, int):
        found = int(value) if int(value) in KINDS else None
    else:
        found = None
    if found is None:
        names = ", ".join(SOCKET_TYPES)
        raise SetupError(f"{value!r} is not a socket type zmqapp knows; use one of {names}")
    return found


def can_talk(a: int, b: int) -> bool:
    """True if sockets of types ``a`` and ``b`` can be connected to each other."""
    return b in KINDS[a].peers
