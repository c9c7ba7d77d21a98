"""A raw DEALER client of wedge_router.py for the wedge tests (tests/test_wedge.py).

Keeps up to WINDOW requests in flight (``[b"", {"client": NAME, "seq": n, "size": SIZE}]``)
until COUNT have been answered (COUNT=0: forever), and matches each reply to its request by
``seq``. Configured by environment variables:

ADDRESS, NAME, COUNT, WINDOW, SIZE (reply padding asked for), HOLD_AT (after that many
answers, print ``half`` and send no more until a ``go`` line on stdin), SLOW (seconds to
sleep after each reply), RCVHWM and RCVBUF (socket options, 0: ZeroMQ's default).

A line ``expect N`` on stdin makes it finish after N answers instead of COUNT. Prints
``first`` after the first answer, ``answered <n>`` every 100 answers, and at the end
``done <json>``: sent, answered, duplicates, errors (ZMQAPP-ERROR replies), unexpected
(replies to requests it never sent, or for another client).
"""

import json
import os
import sys
import time

import zmq

ADDRESS = os.environ["ADDRESS"]
NAME = os.environ["NAME"]
COUNT = int(os.environ.get("COUNT", "0"))
WINDOW = int(os.environ.get("WINDOW", "32"))
SIZE = int(os.environ.get("SIZE", "0"))
HOLD_AT = int(os.environ.get("HOLD_AT", "0"))
SLOW = float(os.environ.get("SLOW", "0"))
RCVHWM = int(os.environ.get("RCVHWM", "0"))
RCVBUF = int(os.environ.get("RCVBUF", "0"))
DEADLINE = float(os.environ.get("DEADLINE", "60"))


def main() -> None:
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if RCVHWM:
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
    if RCVBUF:
        sock.setsockopt(zmq.RCVBUF, RCVBUF)
    sock.connect(ADDRESS)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(sys.stdin, zmq.POLLIN)
    target = COUNT or None
    holding = HOLD_AT > 0
    said_half = False
    sent = duplicates = errors = unexpected = 0
    got: set[int] = set()
    give_up = time.monotonic() + DEADLINE
    while time.monotonic() < give_up:
        if target is not None and len(got) >= target:
            break
        limit = COUNT or sys.maxsize
        if holding:
            limit = min(limit, HOLD_AT)
        while sent < limit and sent - len(got) - errors < WINDOW:
            request = {"client": NAME, "seq": sent, "size": SIZE}
            sock.send_multipart([b"", json.dumps(request).encode()])
            sent += 1
        if holding and len(got) >= HOLD_AT and not said_half:
            said_half = True
            print("half", flush=True)
        events = dict(poller.poll(100))
        if sys.stdin.fileno() in events or sys.stdin in events:
            line = sys.stdin.readline()
            if not line:
                poller.unregister(sys.stdin)
            elif line.strip() == "go":
                holding = False
            elif line.startswith("expect "):
                target = int(line.split()[1])
        if sock not in events:
            continue
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            body = frames[-1]
            if body.startswith(b"ZMQAPP-ERROR "):
                errors += 1
                continue
            reply = json.loads(body)
            seq = reply["seq"]
            if reply["client"] != NAME or not 0 <= seq < sent:
                unexpected += 1
            elif seq in got:
                duplicates += 1
            else:
                got.add(seq)
                if len(got) == 1:
                    print("first", flush=True)
                if len(got) % 100 == 0:
                    print(f"answered {len(got)}", flush=True)
            if SLOW:
                time.sleep(SLOW)
    report = {"sent": sent, "answered": len(got), "duplicates": duplicates, "errors": errors,
              "unexpected": unexpected}  # fmt: skip
    print("done", json.dumps(report), flush=True)
    sock.close(linger=0)
    context.term()


if __name__ == "__main__":
    main()
