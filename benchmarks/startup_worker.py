"""Start-up: ``sk.serve`` → first successful response, and re-serve (replace) → first reply of the new handler.

Runs in a fresh process (``import svckit`` already done, the runtime not yet started, as in
a kernel whose first serving cell runs). The caller's thread polls with ``http.client``
like a notebook cell would; each poll is a fresh connection. Prints one JSON line.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from typing import Any

import svckit as sk

BODY = json.dumps({"text": "a b c"}).encode()


def first_reply(port: int, action: str, want: str, deadline: float = 10.0) -> float:
    """Poll until a POST answers 200 with key ``want``; return the time it arrived (perf_counter)."""
    end = time.perf_counter() + deadline
    while time.perf_counter() < end:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("POST", f"/{action}", BODY, {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status == 200 and want in json.loads(data):
                return time.perf_counter()
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.001)
    raise TimeoutError(f"no reply with {want!r} from port {port}")


def old(text: str) -> dict[str, Any]:
    return {"old": len(text)}


def new(text: str) -> dict[str, Any]:
    return {"new": len(text)}


def main(repeats: int) -> dict[str, Any]:
    cold: float
    warm: list[float] = []
    replace: list[float] = []
    try:
        for i in range(repeats + 1):
            name = f"svc{i}"
            t0 = time.perf_counter()
            srv = sk.serve(sk.service(old) >> sk.service(lambda n=0: None), name=name, http=0)
            assert srv.http_port is not None
            port = srv.http_port
            t1 = first_reply(port, name, "old")
            if i == 0:
                cold = t1 - t0
            else:
                warm.append(t1 - t0)
            t2 = time.perf_counter()
            sk.serve(sk.service(new), name=name, http=port)
            t3 = first_reply(port, name, "new")
            replace.append(t3 - t2)
            srv.stop()
    finally:
        sk.shutdown()
    return {"cold_ms": cold * 1000, "warm_ms": [w * 1000 for w in warm], "replace_ms": [r * 1000 for r in replace]}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)))
