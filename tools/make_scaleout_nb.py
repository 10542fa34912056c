"""Write notebooks/07-scale-out.ipynb (then execute it in place: `make execute-notebooks`)."""

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

cells = [
    md("""# Scaling out: a stage on a Dask cluster, and a stage in another process

When a prototype outgrows one kernel you should not have to rewrite it. Two moves:

- **`stage.on(client)`** runs a heavy stage's calls on a [Dask](https://distributed.dask.org)
  cluster (a `LocalCluster` on this laptop, a real cluster later) or on any
  `concurrent.futures` executor, while the flow, its endpoints and its dashboard stay here.
- **`sk.remote(addr, action)`** is another process's served action, usable in `>>` like a local
  stage: one flow, its stages in several processes or machines started with `svckit run`.

Dask is an optional extra: `pip install "svckit[dask]"`."""),
    code("""import concurrent.futures
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import distributed

import svckit as sk
from svckit.testing import wait_for

logging.getLogger("distributed").setLevel(logging.ERROR)  # its INFO lines would land in the cells"""),
    md("""## 1. A cluster of two worker processes

`LocalCluster` starts a scheduler here and two worker processes (one thread each: the stage
below is pure Python, so threads would share one GIL). Its own dashboard shows the tasks as they
run; the link is printed next to svckit's dashboard further down."""),
    code("""if "JUPYTERHUB_SERVICE_PREFIX" in os.environ:  # on a hub (Binder): its dashboard through the proxy
    import dask

    dask.config.set({"distributed.dashboard.link": "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"})

cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                   dashboard_address=":0", silence_logs=logging.CRITICAL)
client = distributed.Client(cluster)
print("workers:", len(client.scheduler_info()["workers"]))
print("Dask dashboard:", client.dashboard_link)"""),
    md("""## 2. A CPU-bound stage, then the same stage on the cluster

`estimate_pi` throws `n` seeded random darts: the same seed gives the same answer anywhere.
`.on(client)` returns a new stage (`estimate_pi` itself is left as it is): each message is
validated here, then the plain function and its arguments travel to a worker as one task with a
key of its own, and the reply merges into the message as usual. Functions defined in a notebook
travel **by value** (cloudpickle), with the globals and closures they use: keep those small, and
`client.scatter` large data once instead (svckit logs a warning when a call pickles to more than
1 MB)."""),
    code("""@sk.service
def estimate_pi(seed: int, n: int = 300_000) -> dict:
    import random

    if seed < 0:
        raise ValueError(f"seed must be 0 or more, not {seed}")
    rng = random.Random(seed)
    inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(n))
    return {"pi": round(4 * inside / n, 4), "pid": os.getpid()}


on_cluster = estimate_pi.on(client, limit=4)
on_cluster"""),
    code("""here, there = estimate_pi(seed=7), on_cluster(seed=7)
print("same answer:", here["pi"] == there["pi"], here["pi"])
print("computed in another process:", there["pid"] != os.getpid())"""),
    md("""## 3. Serve it: throughput with one worker and with two

Served, the stage answers over HTTP like any other; `limit=4` bounds the tasks in flight (a
fifth caller waits for a slot, so a fast source cannot drown the scheduler). Twelve callers at
once, first with the cluster scaled down to one worker, then with two. On two cores the second
run should take about half the time (the figures vary from run to run, so they are rounded
away when this notebook is tested)."""),
    code("""flow = on_cluster >> sk.service(lambda pi: abs(pi - 3.14159) < 0.01, name="close_enough")
srv = sk.serve(flow, name="pi", http=0)
api = sk.Client(srv.url)


def throughput(messages=12):
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(messages) as pool:
        replies = list(pool.map(lambda seed: api.pi(seed=seed), range(messages)))
    assert all(r["close_enough"] for r in replies)
    return messages / (time.perf_counter() - started)


cluster.scale(1)
wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, timeout=60)
one = throughput()
cluster.scale(2)
client.wait_for_workers(2, timeout=60)
two = throughput()
print(f"1 worker: {one:.1f} msg/s")
print(f"2 workers: {two:.1f} msg/s, {two / one:.2f}x")"""),
    md("""The stage reports itself in `status()` (and on the dashboard): tasks in flight, messages
waiting for a slot, the most that were ever in flight at once, and how many were done, failed,
resubmitted after a lost worker, or lost for good."""),
    code("""stats = srv.settle().status()["stages"]["estimate_pi"]
{key: stats[key] for key in ("executor", "limit", "in_flight", "waiting", "done", "failed", "retried", "lost")}"""),
    code("""print("never more than the limit in flight:", stats["peak"] <= stats["limit"])
print("Dask dashboard:", client.dashboard_link)
srv.dashboard()"""),
    md("""An exception raised in the task is the stage's error reply, with its type and message; a bad
message never travels (it is refused here, before anything is submitted). A worker that dies
mid-task is Dask's to reschedule; when Dask gives up on a task (`KilledWorker`), svckit submits
it again `retries=` times (1 by default) and then answers `sk.WorkerLost` naming the worker:
a message is never silently lost."""),
    code("""for bad in ({"seed": -1}, {"seed": "seven"}):
    try:
        api.pi(**bad)
    except sk.SvckitError as error:
        print(type(error).__name__, "-", error)"""),
    md("""## 4. A stage in another process: `sk.remote`

Here a second process serves a small flow with `svckit run module:object` (on this machine, but
it could be any machine that can reach it). In this kernel, `sk.remote` makes its action a stage:
the whole current message goes there and the reply merges back. Over ZMQ (`tcp://`) many
messages share one asynchronous socket; `http://` works too."""),
    code("""workdir = Path(tempfile.mkdtemp(prefix="svckit-remote-"))
(workdir / "textstats.py").write_text(textwrap.dedent('''
    import svckit as sk

    @sk.service
    def stats(text: str) -> dict:
        words = text.split()
        return {"words": len(words), "longest": max(words, key=len) if words else ""}
'''))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


zmq_port, http_port = free_port(), free_port()


def start_other():
    proc = subprocess.Popen(
        [sys.executable, "-m", "svckit.cli", "run", "textstats:stats",
         "--zmq", str(zmq_port), "--http", str(http_port)],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while not proc.stdout.readline().startswith("press Ctrl-C"):
        pass
    return proc


other = start_other()
print(f"the other process serves stats at tcp://127.0.0.1:{zmq_port} and http://127.0.0.1:{http_port}")"""),
    code("""@sk.service
def tidy(raw: str) -> dict:
    return {"text": " ".join(raw.split()).lower()}


@sk.service
def verdict(words: int, longest: str) -> dict:
    return {"verdict": f"{words} words, the longest is {longest!r}"}


two_process = tidy >> sk.remote(f"tcp://127.0.0.1:{zmq_port}", "stats") >> verdict
two_process"""),
    code("""two_process(raw="  Scaling OUT   without rewriting  ")"""),
    code("""over_http = tidy >> sk.remote(f"http://127.0.0.1:{http_port}", "stats") >> verdict
over_http(raw="one two three")["verdict"]"""),
    md("""Remote errors arrive under their own names (a `BadMessage` over there is a `BadMessage`
here). When the other process goes away the stage answers `sk.ServiceUnavailable` at once, and
when it is back on the same port the next message goes through again."""),
    code("""try:
    sk.remote(f"tcp://127.0.0.1:{zmq_port}", "stats")(txt="misspelt field")
except sk.BadMessage as error:
    print("BadMessage:", error)

other.kill()
other.wait()
try:
    two_process(raw="anyone there?")
except sk.ServiceUnavailable as error:
    print("ServiceUnavailable:", error)

other = start_other()


def healed():
    try:
        return two_process(raw="back again")["verdict"]
    except sk.ServiceUnavailable:
        return None


print(wait_for(healed, timeout=30))"""),
    md("""## 5. Stop

Stop what this notebook serves, the other process and the cluster."""),
    code("""srv.stop()
other.terminate()
other.wait(10)
other.stdout.close()
shutil.rmtree(workdir)
sk.shutdown()
client.close()
cluster.close()"""),
    md("""The same flow headless: `svckit run notebooks/07-scale-out.ipynb`. On a real cluster, give
`distributed.Client` the scheduler's address instead of a `LocalCluster`; the stages do not change."""),
]

for cell in cells:
    if cell.cell_type == "code":
        cell.metadata["tags"] = []
cells[-2].metadata["tags"] = ["teardown"]

nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, "notebooks/07-scale-out.ipynb")
