"""Write notebooks/02-zmq-pipeline.ipynb (then execute it in place: `make execute-notebooks`)."""

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

cells = [
    md("""# ZeroMQ: request/reply and publish/subscribe

HTTP is the easy way in; **ZeroMQ** is the fast way between programs. svckit serves the
same services over both. This notebook shows the two ZeroMQ patterns you will use most:

1. **request/reply**: a client asks a service and waits for its answer;
2. **publish/subscribe**: a service broadcasts messages under a *topic*, and any number of
   subscribers receive them, without the publisher knowing who listens.

Both ends run right here in this kernel (on Binder, ZeroMQ ports are not reachable from
outside the container, so this is also how you would demo it there)."""),
    code("import svckit as sk"),
    md("""## 1. Request/reply

A small quote service: give it a symbol, it answers with a price. `zmq=0` serves it on a
free ZeroMQ port (a ROUTER socket on svckit's background runtime); the cell returns at once."""),
    code("""PRICES = {"ACME": 12.5, "GLOBEX": 40.0, "INITECH": 7.25}


@sk.service
def quote(symbol: str) -> dict:
    return {"price": PRICES[symbol]}


quotes = sk.serve(quote, name="quotes", zmq=0)
quotes"""),
    md("""`sk.ZmqClient` talks to it with plain synchronous pyzmq. Any ZeroMQ client can: the
request is two frames, `[action, json]`, and the reply is `[status, json]`."""),
    code("""client = sk.ZmqClient(quotes.zmq_url, timeout=5)
client.quotes(symbol="ACME")"""),
    md("Errors come back as the same exception class, naming the field that was wrong:"),
    code("""try:
    client.quotes(ticker="ACME")
except sk.BadMessage as exc:
    print(f"{type(exc).__name__}: {exc}")"""),
    md("""## 2. Publish/subscribe

Add `sk.publish(...)` at the end of the flow: every answer is now also published under
the topic `prices`. A sink passes the message on unchanged, so the client still gets its
reply. Serving again under the same name replaces the service in place, on the same port."""),
    code("""prices_out = sk.publish(port=0, topic="prices")
quotes = sk.serve(quote >> prices_out, name="quotes", zmq=0)
quotes"""),
    md("""On the other side, a second served flow starts with `sk.subscribe(...)` (a **source**)
and ends in `sk.table(...)`, a sink that collects rows you can read as a DataFrame.
We give the price a little analysis on the way."""),
    code("""@sk.service
def label(price: float) -> dict:
    return {"band": "high" if price > 20 else "low"}


board = sk.table("board")
listener = sk.serve(sk.subscribe(prices_out.address, "prices") >> label >> board, name="listener")
listener"""),
    md("""ZeroMQ drops what is published before a subscriber has connected, so wait until the
publisher has seen the subscription. Then ask for three quotes, and wait for three rows."""),
    code("""from svckit.testing import wait_for

wait_for(lambda: prices_out.subscribers == 1, timeout=10)
for symbol in ["ACME", "GLOBEX", "INITECH"]:
    client.quotes(symbol=symbol)
board.wait(3).frame"""),
    md("""## 3. A source that ticks

`sk.every(seconds, fn)` calls `fn()` on the runtime, over and over; what it returns runs
through the rest of the flow. `Served.outputs` keeps the messages that came out of the end."""),
    code("""import itertools

counter = itertools.count(1)


def tick() -> dict:
    return {"n": next(counter)}


@sk.service
def square(n: int) -> int:
    return n * n


ticker = sk.serve(sk.every(0.1, tick) >> square, name="ticker")
wait_for(lambda: len(ticker.outputs) >= 3, timeout=10)
ticker.outputs.head(3)"""),
    md("""Every served thing counts what it did. Requests and published messages are counted
the same way whether they came over HTTP, ZeroMQ or from a source."""),
    code("""status = quotes.status()
{key: status[key] for key in ["state", "received", "replied", "errors", "dropped"]}"""),
    md("""## 4. Clean up

`sk.shutdown()` stops everything served and frees every port."""),
    code("""client.close()
sk.shutdown()"""),
    md("""Next: `03-dashboard.ipynb` watches a running pipeline with a live dashboard and a picture of
the flow."""),
]

nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, "notebooks/02-zmq-pipeline.ipynb")
