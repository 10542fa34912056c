"""The ZMQ load generator (a separate process; wrk cannot speak ZMQ). Prints one JSON line.

- ``req ADDR SECONDS``: one REQ socket, one request at a time; round trips/s.
- ``dealer ADDR SECONDS``: 16 DEALER sockets with one request each always in flight
  (empty delimiter frame first, as REQ sends it); round trips/s.
- ``pipe IN OUT COUNT``: binds PUSH at IN and PULL at OUT, sends COUNT messages and receives
  them after the pipeline under test; messages/s from the first send to the last receive.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import zmq

BODY = json.dumps({"text": "hello world", "n": 42}).encode()


def check(status: bytes, body: bytes) -> None:
    if status != b"ok":
        raise RuntimeError(f"error reply: {body[:200]!r}")


def req(addr: str, seconds: float) -> dict[str, Any]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.connect(addr)
    try:
        for _ in range(200):  # warm-up
            sock.send_multipart([b"echo", BODY])
            check(*sock.recv_multipart())
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(100):
                sock.send_multipart([b"echo", BODY])
                check(*sock.recv_multipart())
            n += 100
            now = time.perf_counter()
            if now >= end:
                break
        return {"rps": n / (now - t0), "n": n}
    finally:
        ctx.destroy(linger=0)


def dealer(addr: str, seconds: float, width: int = 16) -> dict[str, Any]:
    ctx = zmq.Context()
    socks = [ctx.socket(zmq.DEALER) for _ in range(width)]
    poller = zmq.Poller()
    for s in socks:
        s.connect(addr)
        poller.register(s, zmq.POLLIN)
    try:
        for s in socks:
            s.send_multipart([b"", b"echo", BODY])
        n = 0
        warm = 500
        t0 = time.perf_counter()
        end = float("inf")
        while True:
            for s, _ in poller.poll(5000):
                _empty, status, body = s.recv_multipart()
                check(status, body)
                n += 1
                if n == warm:
                    t0 = time.perf_counter()
                    end = t0 + seconds
                s.send_multipart([b"", b"echo", BODY])
            if not poller:
                raise RuntimeError("no reply within 5 s")
            now = time.perf_counter()
            if now >= end:
                break
        return {"rps": (n - warm) / (now - t0), "n": n - warm}
    finally:
        ctx.destroy(linger=0)


def pipe(addr_in: str, addr_out: str, count: int) -> dict[str, Any]:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    pull = ctx.socket(zmq.PULL)
    push.set_hwm(0)
    pull.set_hwm(0)
    push.bind(addr_in)
    pull.bind(addr_out)
    try:
        # A few probes first, so both connections are up before the clock starts.
        deadline = time.monotonic() + 20
        got_probe = False
        while not got_probe and time.monotonic() < deadline:
            push.send(json.dumps({"x": -1}).encode())
            if pull.poll(100):
                got_probe = True
        if not got_probe:
            raise RuntimeError("the pipeline under test passed nothing on")
        time.sleep(0.2)
        while pull.poll(50):
            pull.recv()
        bodies = [json.dumps({"x": i, "text": "payload"}).encode() for i in range(count)]

        def produce() -> None:
            for b in bodies:
                push.send(b)

        t0 = time.perf_counter()
        sender = threading.Thread(target=produce)
        sender.start()
        received = 0
        last = json.loads(b"{}")
        while received < count:
            if not pull.poll(10000):
                break
            last = pull.recv()
            received += 1
        t1 = time.perf_counter()
        sender.join()
        ok = received == count and json.loads(last).get("z") is not None
        return {"msgs_per_s": received / (t1 - t0), "sent": count, "received": received, "ok": ok}
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "req":
        out = req(sys.argv[2], float(sys.argv[3]))
    elif mode == "dealer":
        out = dealer(sys.argv[2], float(sys.argv[3]))
    else:
        out = pipe(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    print(json.dumps(out))
