"""The topology of one or more apps, for ``zmqapp graph``.

One node per (app, channel). Edges follow the messages:

* between apps, one edge per connect that reaches a bind, drawn in the direction messages
  flow whichever side binds: PUSH to PULL, PUB/XPUB to SUB/XSUB. Request-reply pairs (REQ or
  DEALER to REP or ROUTER) go from the side that asks to the side that answers, with an
  arrowhead at both ends since replies come back; DEALER-DEALER, ROUTER-ROUTER and PAIR
  links are two-way, drawn from the side that connects;
* inside an app, a dotted ``send_to`` edge from a channel to the one its handlers' return
  values are sent to;
* to an "outside" node for an address a channel connects to that none of the apps binds.

SUB and XSUB nodes list their subscriptions. Warnings name the pairs of socket types that
cannot talk, addresses bound twice, connects nobody here binds, and SUB channels that no PUB
or XPUB in the picture is wired to. What the check cannot know: which topics a PUB sends,
since zmqapp picks them per message at run time (``app.send(..., topic=...)``), so a SUB
wired to a PUB whose messages never match its subscription is not caught. Rendered as
Mermaid or Graphviz DOT text.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from .app import App
from .errors import SetupError

#: Socket type pairs that can talk to each other (either side may be the one that binds).
COMPATIBLE = frozenset(
    frozenset(pair)
    for pair in (
        ("PUSH", "PULL"), ("PUB", "SUB"), ("PUB", "XSUB"), ("XPUB", "SUB"), ("XPUB", "XSUB"),
        ("REQ", "REP"), ("REQ", "ROUTER"), ("DEALER", "REP"), ("DEALER", "ROUTER"),
        ("DEALER", "DEALER"), ("ROUTER", "ROUTER"), ("PAIR", "PAIR"),
    )
)  # fmt: skip
#: Types whose messages flow one way: from these...
SENDERS = frozenset({"PUSH", "PUB", "XPUB"})
#: ...to these.
RECEIVERS = frozenset({"PULL", "SUB", "XSUB"})
#: The side that asks, in a request-reply pair; the other side answers.
ASKERS = frozenset({"REQ", "DEALER"})
ANSWERERS = frozenset({"REP", "ROUTER"})
#: Hosts that mean "every interface" in a bind.
WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", ""})
#: Hosts that all mean this machine.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Ports only known once bound (the OS picks them).
OS_PORTS = frozenset({"*", "0", "!"})


@dataclass
class Node:
    """One channel of one app."""

    id: str
    app: str
    channel: str
    type_name: str
    #: The addresses the channel binds, or a note such as "no endpoint".
    notes: list[str] = field(default_factory=list)
    #: SUB/XSUB: what the channel subscribes to.
    subscribe: list[bytes] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.app}:{self.channel}"


@dataclass
class Outside:
    """An address some channel connects to that none of the apps binds."""

    id: str
    address: str


@dataclass
class Edge:
    """Messages going from ``source`` to ``target`` (both ways when ``two_way``).

    ``kind`` is ``"link"`` (a connect that reaches a bind), ``"send_to"`` (inside an app),
    ``"outside"`` (a connect nobody here binds) or ``"mismatch"`` (types that cannot talk,
    drawn from the side that connects).
    """

    source: Node | Outside
    target: Node | Outside
    address: str
    kind: str = "link"
    two_way: bool = False

    @property
    def label(self) -> str:
        if self.kind == "send_to":
            return "send_to"
        if isinstance(self.source, Outside) or isinstance(self.target, Outside):
            return ""
        arrow = "⇄" if self.two_way else "→"
        if self.kind == "mismatch":
            arrow = "✗"
        return f"{self.address}\n{self.source.type_name} {arrow} {self.target.type_name}"


@dataclass
class Topology:
    #: (app label, its channel nodes), in the order the apps were given.
    apps: list[tuple[str, list[Node]]] = field(default_factory=list)
    outside: list[Outside] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def split_address(address: str) -> tuple[str, str, str]:
    """``(transport, host, port)`` for tcp (``tcp+dns`` counts as tcp: its host is a name),
    ``(transport, "", rest)`` for anything else."""
    transport, _, rest = address.partition("://")
    transport = transport.lower()
    if transport == "tcp+dns":
        transport = "tcp"
    if transport != "tcp":
        return transport, "", rest
    rest = rest.rsplit(";", 1)[-1]  # tcp://source;destination
    host, _, port = rest.rpartition(":")
    return transport, host.strip("[]").lower(), port


def _same_host(bind_host: str, other: str) -> bool:
    return (
        bind_host in WILDCARD_HOSTS
        or bind_host == other
        or (bind_host in LOCAL_HOSTS and other in LOCAL_HOSTS)
    )


def connects_to(bind_address: str, connect_address: str) -> bool:
    """True if connecting to ``connect_address`` reaches a socket bound to ``bind_address``."""
    b_transport, b_host, b_port = split_address(bind_address)
    c_transport, c_host, c_port = split_address(connect_address)
    if b_transport != c_transport:
        return False
    if b_transport != "tcp":
        return b_port == c_port
    return b_port == c_port and b_port not in OS_PORTS and _same_host(b_host, c_host)


def _clash(first: str, second: str) -> bool:
    """True if two binds cannot both succeed on one machine."""
    f_transport, f_host, f_port = split_address(first)
    s_transport, s_host, s_port = split_address(second)
    if f_transport != s_transport or f_port != s_port or f_port in OS_PORTS:
        return False
    if f_transport != "tcp":
        return f_transport != "inproc"  # inproc names are per context
    return _same_host(f_host, s_host) or _same_host(s_host, f_host)


def build_topology(apps: Sequence[tuple[str, App]]) -> Topology:
    """Apply each app's config and work out who binds and who connects where.

    ``apps`` pairs each app with how the user named it (used as its label when two apps share
    a name). A channel with no endpoint is drawn alone, with a warning; other config errors
    raise :class:`~zmqapp.SetupError`.
    """
    topology = Topology()
    counter = itertools.count(1)
    names = [app.name for _, app in apps]
    binds: list[tuple[Node, str]] = []
    connects: list[tuple[Node, str]] = []
    for spec, app in apps:
        label = app.name if names.count(app.name) == 1 else spec
        try:
            app.apply_config()
        except SetupError as exc:
            if all(channel.endpoints for channel in app.channels.values()):
                raise
            topology.warnings.append(f"{label}: {exc}")
        nodes: dict[str, Node] = {}
        for channel in app.channels.values():
            node = Node(f"n{next(counter)}", label, channel.name, channel.type_name)
            if channel.type_name in ("SUB", "XSUB"):
                node.subscribe = list(channel.subscribe)
            if not channel.endpoints:
                node.notes.append("no endpoint")
            for endpoint in channel.endpoints:
                if endpoint.bind:
                    node.notes.append(str(endpoint))
                    binds.append((node, endpoint.address))
                else:
                    connects.append((node, endpoint.address))
            nodes[channel.name] = node
        for channel in app.channels.values():
            if channel.send_to in nodes:
                target = nodes[channel.send_to]
                topology.edges.append(Edge(nodes[channel.name], target, "", kind="send_to"))
        topology.apps.append((label, list(nodes.values())))

    outside: dict[str, Outside] = {}
    unbound: dict[str, list[Node]] = {}
    for node, address in connects:
        targets = [target for target, bound in binds if connects_to(bound, address)]
        for target in targets:
            topology.edges.append(_link(node, target, address))
            _check_pair(topology, node, target, address)
        if not targets:
            if address not in outside:
                outside[address] = Outside(f"x{len(outside) + 1}", address)
            topology.edges.append(_to_outside(node, outside[address], address))
            unbound.setdefault(address, []).append(node)
    topology.outside = list(outside.values())
    for address, nodes_there in unbound.items():
        who = ", ".join(map(str, nodes_there))
        topology.warnings.append(
            f"nobody binds {address} (connected by {who}) — fine if an outside peer binds it"
        )
    for (first, first_address), (second, second_address) in itertools.combinations(binds, 2):
        if first is not second and _clash(first_address, second_address):
            topology.warnings.append(
                f"{first} binds {first_address} and {second} binds {second_address}: only one "
                "socket can bind an address, so one of them will fail to start"
            )
    _check_subscribers(topology)
    return topology


def flows_from_connector(connector: str, binder: str | None) -> bool:
    """True if messages go from the connecting socket to the bound one (``binder`` None: a
    peer outside): senders send, receivers receive, the side that asks asks the other."""
    if connector in SENDERS or binder in RECEIVERS:
        return True
    if connector in RECEIVERS or binder in SENDERS:
        return False
    return not (connector in ANSWERERS and binder in ASKERS)


def _link(connecting: Node, binding: Node, address: str) -> Edge:
    """The edge between a channel that connects and one that binds, in the direction
    messages flow."""
    pair = {connecting.type_name, binding.type_name}
    if frozenset(pair) not in COMPATIBLE:
        return Edge(connecting, binding, address, kind="mismatch")
    two_way = not pair & (SENDERS | RECEIVERS)
    if flows_from_connector(connecting.type_name, binding.type_name):
        return Edge(connecting, binding, address, two_way=two_way)
    return Edge(binding, connecting, address, two_way=two_way)  # the binder sends (or asks)


def _to_outside(node: Node, out: Outside, address: str) -> Edge:
    if node.type_name in RECEIVERS:
        return Edge(out, node, address, kind="outside")
    return Edge(node, out, address, kind="outside", two_way=node.type_name not in SENDERS)


def _check_subscribers(topology: Topology) -> None:
    """Warn about a SUB or XSUB that no PUB or XPUB in the picture sends to."""
    fed: set[str] = set()
    for edge in topology.edges:
        if not isinstance(edge.target, Node) or edge.kind not in ("link", "outside"):
            continue
        if isinstance(edge.source, Outside) or edge.source.type_name in ("PUB", "XPUB"):
            fed.add(edge.target.id)
    for _, nodes in topology.apps:
        for node in nodes:
            if node.type_name in ("SUB", "XSUB") and node.id not in fed and node.subscribe:
                topology.warnings.append(
                    f"{node} ({node.type_name}, subscribed to {_topics(node.subscribe)}) is "
                    "wired to no PUB or XPUB in these apps, so nothing here publishes to it — "
                    "fine if an outside publisher does"
                )


def _topics(topics: Sequence[bytes]) -> str:
    shown = [repr(t.decode("utf-8", "backslashreplace")) if t else "everything" for t in topics]
    return ", ".join(shown)


def _check_pair(topology: Topology, source: Node, target: Node, address: str) -> None:
    if frozenset((source.type_name, target.type_name)) not in COMPATIBLE:
        partners = sorted(
            other
            for pair in COMPATIBLE
            if source.type_name in pair
            for other in (pair - {source.type_name} or pair)
        )
        topology.warnings.append(
            f"{source} ({source.type_name}) connects to {target} ({target.type_name}) at "
            f"{address}, but {source.type_name} and {target.type_name} sockets cannot talk to "
            f"each other; a {source.type_name} socket pairs with {' or '.join(partners)}"
        )
    if split_address(address)[0] == "inproc" and source.app != target.app:
        topology.warnings.append(
            f"{source} connects to {target} over {address}, but inproc only works inside one "
            "ZeroMQ context, and separate apps have separate ones unless they share it; use "
            "ipc or tcp between apps"
        )


# -- rendering ---------------------------------------------------------------------------------


def _node_text(node: Node) -> str:
    lines = [node.channel, node.type_name, *node.notes]
    if node.subscribe:
        lines.append(f"subscribes: {_topics(node.subscribe)}")
    return "\n".join(lines)


def _mermaid_text(text: str) -> str:
    for char, code in (("#", "#35;"), ('"', "#34;"), ("<", "#60;"), (">", "#62;")):
        text = text.replace(char, code)
    return text.replace("\n", "<br/>")


def to_mermaid(topology: Topology) -> str:
    """The topology as a Mermaid flowchart, warnings as ``%%`` comments."""
    lines = ["flowchart LR"]
    lines += [f"    %% warning: {_one_line(w)}" for w in topology.warnings]
    for index, (label, nodes) in enumerate(topology.apps, 1):
        lines.append(f'    subgraph app{index} ["{_mermaid_text(label)}"]')
        lines += [f'        {n.id}["{_mermaid_text(_node_text(n))}"]' for n in nodes]
        lines.append("    end")
    for out in topology.outside:
        text = _mermaid_text(f"{out.address}\nnot bound by these apps")
        lines.append(f'    {out.id}(["{text}"])')
    for edge in topology.edges:
        start = "<" if edge.two_way else ""
        if edge.kind == "outside":
            lines.append(f"    {edge.source.id} {start}-.-> {edge.target.id}")
        elif edge.kind == "send_to":
            lines.append(f"    {edge.source.id} -.->|send_to| {edge.target.id}")
        else:
            arrow = "-.-x" if edge.kind == "mismatch" else f"{start}-->"
            label = _mermaid_text(edge.label)
            lines.append(f'    {edge.source.id} {arrow}|"{label}"| {edge.target.id}')
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(topology: Topology) -> str:
    """The topology as Graphviz DOT, warnings as ``//`` comments."""
    lines = ["digraph zmqapp {", "    rankdir=LR;", '    node [shape=box, fontname="Helvetica"];']
    lines += ['    edge [fontname="Helvetica", fontsize=10];']
    lines += [f"    // warning: {_one_line(w)}" for w in topology.warnings]
    for index, (label, nodes) in enumerate(topology.apps, 1):
        lines.append(f"    subgraph cluster_app{index} {{")
        lines.append(f'        label="{_dot_text(label)}";')
        lines += [f'        {n.id} [label="{_dot_text(_node_text(n))}"];' for n in nodes]
        lines.append("    }")
    for out in topology.outside:
        text = _dot_text(f"{out.address}\nnot bound by these apps")
        lines.append(f'    {out.id} [label="{text}", style=dashed];')
    for edge in topology.edges:
        attributes = []
        if edge.kind != "outside":
            attributes.append(f'label="{_dot_text(edge.label)}"')
        if edge.kind in ("outside", "send_to"):
            attributes.append("style=dashed" if edge.kind == "outside" else "style=dotted")
        if edge.kind == "mismatch":
            attributes += ["style=dashed", "color=red"]
        if edge.two_way:
            attributes.append("dir=both")
        lines.append(f"    {edge.source.id} -> {edge.target.id} [{', '.join(attributes)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())
