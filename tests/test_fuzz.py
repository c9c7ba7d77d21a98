"""Property-based: random frame lists thrown at a channel of every receiving socket type,
through real sockets, at an app in its own process. After each batch, a valid message on
every channel must still be handled correctly, and the process must be alive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqapp.message import ERROR_PREFIX

APP = Path(__file__).parent / "apps" / "fuzz_target.py"

# Frames worth throwing: random bytes, and near misses of what the channels expect.
frame = st.one_of(
    st.binary(max_size=48),
    st.just(b""),
    st.sampled_from([
        b"{", b"[1,", b"null", b'{"sentinel": 5}', b'{"sentinel": "x", "size": "big"}',
        b"\xff\xfe", b"\xc1", msgpack.packb({"a": 1}), b"\x01", b"\x00", ERROR_PREFIX + b"{",
        b"\x00\x01\x02\x03\x04", "é".encode(), b"x" * 4000,
    ]),
    st.text(max_size=20).map(lambda t: json.dumps(t).encode()),
)  # fmt: skip
frames = st.lists(frame, min_size=1, max_size=5)
TARGETS = ["pull_raw", "pull_typed", "sub_utf8", "xsub_msgpack", "xpub_raw", "rep_json",
           "router_json", "dealer_raw", "req_json", "pair_utf8"]  # fmt: skip
batch = st.lists(st.tuples(st.sampled_from(TARGETS), frames), min_size=1, max_size=12)


def sentinel_frames(target: str, n: int) -> list[bytes]:
    """A valid message for ``target`` carrying sentinel ``n``."""
    text = f"sentinel-{n}"
    return {
        "pull_raw": [text.encode()],
        "pull_typed": [json.dumps({"sentinel": text, "size": 1}).encode()],
        "sub_utf8": [b"topic", text.encode()],
        "xsub_msgpack": [b"topic", msgpack.packb(text)],
        "xpub_raw": [b"\x01" + text.encode()],  # a subscription, as XPUB receives them
        "rep_json": [json.dumps(text).encode()],
        "router_json": [json.dumps(text).encode()],
        "dealer_raw": [text.encode()],
        "req_json": [json.dumps(text).encode()],
        "pair_utf8": [text.encode()],
    }[target]


class Peers:
    """The test's side of every channel, and the process under test."""

    def __init__(self, ctx: zmq.Context[Any], stderr: Path) -> None:
        self.ctx = ctx
        self.stderr_path = stderr
        self.stderr = stderr.open("w")
        self.sockets: list[zmq.Socket[Any]] = []
        self.xpub = self.socket(zmq.XPUB, bind="tcp://127.0.0.1:*")
        self.router = self.socket(zmq.ROUTER, bind="tcp://127.0.0.1:*")
        self.req_router = self.socket(zmq.ROUTER, bind="tcp://127.0.0.1:*")
        self.acks = self.socket(zmq.PULL, bind="tcp://127.0.0.1:*")
        env = {
            **os.environ,
            "FUZZ_XPUB": self.xpub.last_endpoint.decode(),
            "FUZZ_ROUTER": self.router.last_endpoint.decode(),
            "FUZZ_REQ_ROUTER": self.req_router.last_endpoint.decode(),
            "FUZZ_ACKS": self.acks.last_endpoint.decode(),
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(APP)], stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        bound = json.loads(self.proc.stdout.readline())
        self.push_raw = self.socket(zmq.PUSH, connect=bound["pull_raw"])
        self.push_typed = self.socket(zmq.PUSH, connect=bound["pull_typed"])
        self.pub = self.socket(zmq.PUB, connect=bound["sub_utf8"])
        self.xsub = self.socket(zmq.XSUB, connect=bound["xpub_raw"])
        self.req = self.socket(zmq.REQ, connect=bound["rep_json"])
        self.dealer = self.socket(zmq.DEALER, connect=bound["router_json"])
        self.pair = self.socket(zmq.PAIR, connect=bound["pair_utf8"])
        self.dealer_identity = self.router.recv_multipart()[0]  # the DEALER's hello
        self.xpub.recv()  # the XSUB channel's subscription has arrived
        self.n = 0

    def socket(self, kind: int, bind: str | None = None, connect: str | None = None) -> Any:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.setsockopt(zmq.SNDTIMEO, 5000)
        if bind:
            sock.bind(bind)
        if connect:
            sock.connect(connect)
        self.sockets.append(sock)
        return sock

    def throw(self, target: str, message: list[bytes]) -> None:
        """Send ``message`` to ``target`` the way its peers would."""
        if target == "pull_raw":
            self.push_raw.send_multipart(message)
        elif target == "pull_typed":
            self.push_typed.send_multipart(message)
        elif target == "sub_utf8":
            self.pub.send_multipart(message)
        elif target == "xsub_msgpack":
            self.xpub.send_multipart(message)
        elif target == "xpub_raw":
            self.xsub.send_multipart(message)
        elif target == "rep_json":
            self.req.send_multipart(message)
            self.req.recv_multipart()  # a REQ always gets an answer (raises zmq.Again if not)
        elif target == "router_json":
            self.dealer.send_multipart([b"", *message])
        elif target == "dealer_raw":
            self.router.send_multipart([self.dealer_identity, *message])
        elif target == "req_json":
            self.answer_request(message)
        elif target == "pair_utf8":
            self.pair.send_multipart(message)

    def answer_request(self, body: list[bytes]) -> None:
        """Answer the REQ channel's latest request with ``body``.

        The channel asks again every few milliseconds, and REQ_CORRELATE makes it ignore
        answers to anything but its latest request, so answer the newest one queued.
        """
        request = self.req_router.recv_multipart()
        while self.req_router.poll(0):
            request = self.req_router.recv_multipart()
        split = request.index(b"") + 1
        self.req_router.send_multipart([*request[:split], *body])

    def check_alive_and_well(self) -> None:
        """A sentinel on every channel is acknowledged, and the process still runs."""
        self.n += 1
        self.acks.setsockopt(zmq.RCVTIMEO, 100)
        expected = {f"{target}:sentinel-{self.n}" for target in TARGETS}
        deadline = time.monotonic() + 10
        got: set[str] = set()
        while not expected <= got:
            assert self.proc.poll() is None, "the app process died"
            assert time.monotonic() < deadline, f"no ack from {sorted(expected - got)}"
            for target in TARGETS:  # resend: PUB/SUB and the REQ channel's timing vary
                if f"{target}:sentinel-{self.n}" not in got:
                    self.throw(target, sentinel_frames(target, self.n))
            try:
                while True:
                    got.add(self.acks.recv().decode())
            except zmq.Again:
                pass
        self.drain_replies()

    def drain_replies(self) -> None:
        """Forget ROUTER replies and stray REQ requests, so later batches start clean."""
        for sock in (self.dealer,):
            while sock.poll(0):
                sock.recv_multipart()

    def close(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.stderr.close()
        for sock in self.sockets:
            sock.close(linger=0)
        return code

    def tracebacks(self) -> list[str]:
        """Tracebacks the app printed: none of its handlers raise, so any is a zmqapp bug."""
        text = self.stderr_path.read_text()
        return [chunk[:2000] for chunk in text.split("Traceback")[1:]]


@pytest.mark.timeout(300)
def test_random_frames_never_hurt_the_app(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    peers = Peers(ctx, tmp_path / "stderr.txt")
    try:
        peers.check_alive_and_well()

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None,
        )
        @given(batch)
        def survives(messages: list[tuple[str, list[bytes]]]) -> None:
            for target, message in messages:
                peers.throw(target, message)
            peers.check_alive_and_well()

        survives()
    finally:
        code = peers.close()
    assert code == 0  # and it still stops gracefully
    assert peers.tracebacks() == []
    assert "dropped an undecodable message" in peers.stderr_path.read_text()
