"""A real DNS server for tests, on 127.0.0.1, whose answers a test changes while it runs.

It answers A and AAAA questions over UDP and TCP on one port the OS chose, from records the
test sets (``server.set("svc.test", ["127.0.0.2", "::1"])``), with NXDOMAIN for any other
name, and a TTL of one second. It can also fail on purpose: ``server.mode = "servfail"``
answers SERVFAIL, ``"drop"`` answers nothing (the client times out), and ``server.modes``
does the same for one question type. Every question is
recorded with the time it arrived, so a test can check when and how often a client asked.
dnslib parses and builds the messages; the server is one thread with no other work.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Literal

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord

Mode = Literal["answer", "servfail", "drop"]


@dataclasses.dataclass(frozen=True)
class Query:
    """One question the server received."""

    time: float  #: ``time.monotonic()`` when it arrived
    name: str  #: lower case, with the trailing dot
    qtype: str  #: ``"A"``, ``"AAAA"``, ...
    transport: str  #: ``"udp"`` or ``"tcp"``
    answer: str  #: ``"NOERROR"``, ``"NXDOMAIN"``, ``"SERVFAIL"`` or ``"dropped"``


def _key(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


class DnsServer:
    """See the module docstring. Use as a context manager, or call :meth:`close`."""

    def __init__(self, host: str = "127.0.0.1", ttl: int = 1) -> None:
        self.host = host
        self.ttl = ttl
        #: ``"answer"`` (from the records), ``"servfail"`` or ``"drop"``.
        self.mode: Mode = "answer"
        #: Modes for some question types only, e.g. ``{"AAAA": "servfail"}``.
        self.modes: dict[str, Mode] = {}
        self._records: dict[str, list[str]] = {}
        self._queries: list[Query] = []
        self._changed = threading.Condition()
        self._udp, self._tcp = self._bind()
        self.port: int = self._udp.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        for sock in (self._udp, self._tcp, self._wake_r):
            self._selector.register(sock, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)
        self._thread.start()

    @property
    def nameserver(self) -> str:
        """This server as a ``DNS_NAMESERVERS`` entry, ``"127.0.0.1:PORT"``."""
        return f"{self.host}:{self.port}"

    def set(self, name: str, addresses: Iterable[str]) -> None:
        """Make ``name`` resolve to ``addresses`` (IPv4 ones as A, IPv6 ones as AAAA)."""
        checked = [str(ipaddress.ip_address(a)) for a in addresses]
        with self._changed:
            self._records[_key(name)] = checked

    def remove(self, name: str) -> None:
        """Make ``name`` unknown again: NXDOMAIN."""
        with self._changed:
            self._records.pop(_key(name), None)

    def queries(self, name: str | None = None, qtype: str | None = None) -> list[Query]:
        """The questions received so far, oldest first, for ``name`` and ``qtype`` if given."""
        with self._changed:
            return [
                q
                for q in self._queries
                if (name is None or q.name == _key(name)) and (qtype is None or q.qtype == qtype)
            ]

    def wait_queries(
        self, count: int, name: str | None = None, qtype: str | None = "A", timeout: float = 5.0
    ) -> list[Query]:
        """Wait until ``count`` matching questions have arrived, and return them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := self.queries(name, qtype)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"the DNS server got {len(found)} of {count} {qtype} questions "
                        f"for {name} in {timeout} s"
                    )
                self._changed.wait(left)
            return found

    def close(self) -> None:
        """Stop the thread and close every socket."""
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join(5)
        self._selector.close()
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """A UDP and a TCP socket on the same port the OS chose (DNS uses one port for both)."""
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp.bind((self.host, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(8)
            return udp, tcp
        raise RuntimeError("no port was free for both UDP and TCP on " + self.host)

    def _serve(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.fileobj is self._wake_r:
                    return
                if key.fileobj is self._udp:
                    data, peer = self._udp.recvfrom(4096)
                    reply = self._answer(data, "udp")
                    if reply is not None:
                        self._udp.sendto(reply, peer)
                else:
                    self._serve_tcp()

    def _serve_tcp(self) -> None:
        conn, _ = self._tcp.accept()
        with conn:
            conn.settimeout(2.0)
            try:
                header = conn.recv(2, socket.MSG_WAITALL)
                (length,) = struct.unpack("!H", header)
                reply = self._answer(conn.recv(length, socket.MSG_WAITALL), "tcp")
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except (OSError, struct.error):
                pass  # a client that went away; the next one is served as usual

    def _answer(self, data: bytes, transport: str) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None  # not DNS: ignore it, as a real server would
        name, qtype = _key(str(request.q.qname)), QTYPE[request.q.qtype]
        reply = request.reply()
        with self._changed:
            mode = self.modes.get(qtype, self.mode)
            records = self._records.get(name)
            if mode == "drop":
                outcome = "dropped"
            elif mode == "servfail":
                outcome = "SERVFAIL"
                reply.header.rcode = RCODE.SERVFAIL
            elif records is None:
                outcome = "NXDOMAIN"
                reply.header.rcode = RCODE.NXDOMAIN
            else:
                outcome = "NOERROR"
                for address in records:
                    version = ipaddress.ip_address(address).version
                    if qtype == "A" and version == 4:
                        reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=self.ttl))
                    elif qtype == "AAAA" and version == 6:
                        reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(address), ttl=self.ttl))
            self._queries.append(Query(time.monotonic(), name, qtype, transport, outcome))
            self._changed.notify_all()
        return None if outcome == "dropped" else reply.pack()
