"""Write notebooks/03-dashboard.ipynb (then execute it in place)."""

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

cells = [
    md("""# Watching services: the dashboard and flow pictures

A served flow runs in the background; this notebook shows how to see what it is doing
while you keep working: a **picture** of the flow, and a live **dashboard** with its state,
counters, errors, traffic and outputs."""),
    code("""import itertools

import svckit as sk
from svckit.testing import wait_for"""),
    md("""## A small order pipeline

`sk.every(0.2, new_order)` is a **source**: every 0.2 s it calls `new_order()` and sends what
it returns down the flow. `total` prices the order; `check` rejects empty orders by raising,
which the runtime counts and shows instead of crashing."""),
    code("""numbers = itertools.count()


def new_order() -> dict:
    n = next(numbers)
    return {"order": n, "qty": n % 7, "price": 2.5}


@sk.service
def total(qty: int, price: float) -> dict:
    return {"total": qty * price}


@sk.service
def check(qty: int) -> None:
    if qty == 0:
        raise ValueError("an order of zero items")


flow = sk.every(0.2, new_order) >> total >> check"""),
    md("""A flow draws itself: its text form is one short line, and in the notebook it is a picture
(sources green, stages blue). Once it runs, each stage shows how many messages it handled."""),
    code("flow"),
    md("""## Try it on known orders first

Before letting it run on its own, serve the two stages over HTTP and send them eight orders
you know. Orders 0 and 7 have zero items, so `check` rejects them: the client raises
`sk.RemoteError`, which names the `ValueError` raised in the service."""),
    code("""batch = total >> check
trial = sk.serve(batch, name="trial", http=0)
client = sk.Client(trial.url)
for n in range(8):
    try:
        print(n, client.trial(order=n, qty=n % 7, price=2.5)["total"])
    except sk.RemoteError as error:
        print(n, error)"""),
    md("""`trial.settle()` waits until every request is answered and the counters stand still, so
these numbers are the same on every run. `status()` has the counters of the served thing:"""),
    code("""status = trial.settle().status()
{key: status[key] for key in ("state", "received", "replied", "errors")}"""),
    md("""Serving runs a copy of the flow, so each served thing counts on its own and `batch` itself
is left as it was. `trial.picture()` shows how many messages each of its stages handled, and
how many it failed:"""),
    code("trial.picture()"),
    code("""client.close()
trial.stop()"""),
    md("""## Serve it and watch

Serving a flow that starts with a source starts the source: messages flow at once, and the
cell returns immediately. `srv.dashboard()` shows it live: a state badge, loop iterations,
messages in and out, the rate, errors with the last one, the traffic log, the newest outputs
and the picture with its own live counts (it starts from zero: `orders` is not `trial`). It
refreshes at most four times a second, from a background thread, so it keeps moving while
other cells run. The stop / start / restart
buttons do what `srv.stop()`, `srv.start()` and `srv.restart()` do."""),
    code("""srv = sk.serve(flow, name="orders")
srv.dashboard()"""),
    md("""The first order has zero items, so an error row appears in the dashboard right away.
In Python, the same facts are in `srv.metrics` and `srv.status()`. The counts keep moving,
so print what does not: wait for the first error, then show the state and that error."""),
    code("""wait_for(lambda: srv.metrics.errors >= 1)
status = srv.status()
print(status["state"], "|", status["last_error"]["service"], "raised", status["last_error"]["type"])
print(status["last_error"]["message"])"""),
    md("""`srv.outputs` is a pandas DataFrame of the messages that came out of the end of the flow,
oldest first (here: the first three good orders)."""),
    code("""wait_for(lambda: len(srv.outputs) >= 3)
srv.outputs[["order", "qty", "total"]].head(3)"""),
    md("""A dashboard of everything the runtime serves is `sk.dashboard()`. The pipeline keeps
running until you press **stop** in the dashboard or call `srv.stop()`; `sk.shutdown()` stops
everything, and so does restarting the kernel.

Next: `04-class-service.ipynb` builds a service with configuration, a loop and actions."""),
]

nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, "notebooks/03-dashboard.ipynb")
