"""A raw PUSH producer for the wedge tests (tests/test_wedge.py), configured by environment
variables:

ADDRESS, NAME; COUNT valid messages numbered from 0 (0: until killed); FORMAT "json"
(``{"producer": NAME, "seq": n, "pad": "x" * PAD}``) or "raw" (``NAME:n``); SNDHWM;
GARBAGE: that many malformed messages (random bytes, wrong codec, wrong types, too deep,
too many frames, too large in all) mixed in among the valid ones, at places a seeded random
generator (SEED) picks; BOMBS: that many frames over the consumer's MAXMSGSIZE (BOMB_SIZE),
sent from a second socket, among BOMB_VALID valid messages of producer ``NAME-bomb``.

Prints ``sent <n>`` every PROGRESS valid messages and, once its sockets have handed
everything to the network (linger), ``done <json>`` with what it sent.
"""

import json
import os
import random
from collections import Counter
from typing import Any

import msgpack
import zmq

ADDRESS = os.environ["ADDRESS"]
NAME = os.environ["NAME"]
COUNT = int(os.environ.get("COUNT", "0"))
FORMAT = os.environ.get("FORMAT", "json")
PAD = int(os.environ.get("PAD", "0"))
SNDHWM = int(os.environ.get("SNDHWM", "0"))
GARBAGE = int(os.environ.get("GARBAGE", "0"))
BOMBS = int(os.environ.get("BOMBS", "0"))
BOMB_VALID = int(os.environ.get("BOMB_VALID", "0"))
BOMB_SIZE = int(os.environ.get("BOMB_SIZE", "70000"))
PROGRESS = int(os.environ.get("PROGRESS", "200"))
rng = random.Random(int(os.environ.get("SEED", "1")))


def valid(name: str, seq: int) -> list[bytes]:
    if FORMAT == "raw":
        return [f"{name}:{seq}".encode()]
    return [json.dumps({"producer": name, "seq": seq, "pad": "x" * PAD}).encode()]


def garbage(seq: int) -> tuple[str, list[bytes]]:
    """One malformed message of a kind picked at random: none fits the consumer's type."""
    kinds: dict[str, Any] = {
        "random": lambda: [rng.randbytes(rng.randint(1, 48))],
        "empty": lambda: [b""],
        "msgpack": lambda: [msgpack.packb({"producer": NAME, "seq": seq})],
        "string_seq": lambda: [json.dumps({"producer": NAME, "seq": str(seq)}).encode()],
        "bool_seq": lambda: [json.dumps({"producer": NAME, "seq": True}).encode()],
        "float_seq": lambda: [json.dumps({"producer": NAME, "seq": seq + 0.5}).encode()],
        "nan_seq": lambda: [b'{"producer": "%s", "seq": NaN}' % NAME.encode()],
        "missing": lambda: [json.dumps({"producer": NAME}).encode()],
        "array": lambda: [json.dumps([NAME, seq]).encode()],
        "null": lambda: [b"null"],
        "not_utf8": lambda: [b'\xff\xfe{"producer": "\xc3\x28"}'],
        "deep": lambda: [b"[" * 30000 + b"]" * 30000],
        "two_frames": lambda: valid(NAME, seq) * 2,
        "many_frames": lambda: [b"{}"] * 20,
        "too_large": lambda: [b"x" * 40000, b"y" * 40000],
    }
    kind = rng.choice(sorted(kinds))
    return kind, kinds[kind]()


def socket(context: zmq.Context[Any]) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = context.socket(zmq.PUSH)
    if SNDHWM:
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
    sock.connect(ADDRESS)
    return sock


def main() -> None:
    context: zmq.Context[Any] = zmq.Context()
    sock = socket(context)
    total = COUNT + GARBAGE
    bad = set(rng.sample(range(total), GARBAGE)) if COUNT else set()
    kinds: Counter[str] = Counter()
    sent = step = 0
    while not COUNT or step < total:
        if step in bad:
            kind, frames = garbage(step)
            kinds[kind] += 1
        else:
            frames = valid(NAME, sent)
            sent += 1
            if sent % PROGRESS == 0:
                print(f"sent {sent}", flush=True)
        sock.send_multipart(frames)
        step += 1
    bombs = bomb_valid = 0
    if BOMBS:
        # A frame over MAXMSGSIZE makes the consumer's libzmq drop the connection; the socket
        # reconnects, and valid messages go on in between.
        bomber = socket(context)
        every = max(1, BOMB_VALID // (BOMBS + 1))
        for i in range(BOMB_VALID):
            bomber.send_multipart(valid(f"{NAME}-bomb", i))
            bomb_valid += 1
            if bombs < BOMBS and (i + 1) % every == 0:
                bomber.send(b"z" * BOMB_SIZE)
                bombs += 1
        bomber.close(linger=5000)
    sock.close(linger=20000)
    context.term()
    report = {"sent": sent, "garbage": sum(kinds.values()), "kinds": kinds, "bombs": bombs,
              "bomb_valid": bomb_valid}  # fmt: skip
    print("done", json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
