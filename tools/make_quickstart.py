"""Write notebooks/01-quickstart.ipynb (then execute it in place: `make execute-notebooks`)."""

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

cells = [
    md("""# svckit quickstart

svckit turns Python functions in notebook cells into **services**: you wire them together
with `>>`, try them right here, then serve them over HTTP from a background runtime inside
this kernel, while your cells stay free to use.

This notebook takes about a minute: define two services, compose them, call the flow,
serve it, call it over HTTP, replace it by re-running a cell, and stop it."""),
    code("import svckit as sk"),
    md("""## 1. Services

A service is a function decorated with `@sk.service`. Its parameters are read **by name**
from the incoming message (a `dict`) and checked against the type hints. What it returns
is merged into the message."""),
    code("""@sk.service
def parse(text: str) -> dict:
    return {"words": text.split()}


@sk.service
def count(words: list[str]) -> dict:
    return {"n": len(words)}


parse"""),
    code('parse(text="hello notebook")'),
    md("""## 2. Flows

`a >> b` builds a **flow**: the message goes through `parse`, then `count`. A flow is
itself a service, and calling it runs it right here, synchronously."""),
    code("flow = parse >> count\nflow"),
    code('flow(text="a b c")'),
    md("""Bad input is a clear error that names the field and the service, not a stack of
pydantic internals:"""),
    code("""try:
    flow(txt="oops")
except sk.BadMessage as error:
    print(error)"""),
    md("""## 3. Serve it

`sk.serve` returns at once: the flow now answers `POST /wordcount` over HTTP, and the same
action over ZeroMQ, served by the kernel's background runtime. Port `0` picks a free port
(give a number, such as `http=8000`, to choose one). The cell is free again."""),
    code('srv = sk.serve(flow, name="wordcount", http=0, zmq=0)\nsrv'),
    code("srv.url, srv.zmq_url"),
    md("""**On Binder or JupyterHub**, `127.0.0.1` is the address inside the container, which your
browser cannot reach. The Jupyter server there runs jupyter-server-proxy, and
`srv.proxy_url` is the link through it: `{prefix}proxy/{port}/`, built from the hub's
`JUPYTERHUB_SERVICE_PREFIX` (or from `SVCKIT_PROXY_PREFIX`, which you set for a Jupyter
server with a base URL of its own). The HTML view you get when a cell ends with `srv` shows
that link beside the local URL. Outside a hub, `srv.proxy_url` is `None`; this is what both
look like under a hub prefix:"""),
    code("""import os
from unittest import mock

with mock.patch.dict(os.environ, {"SVCKIT_PROXY_PREFIX": "/user/you/"}):
    print(srv.proxy_url)
    display(srv)"""),
    md("""Any HTTP client can call it; `sk.Client` is the convenient one. Attribute access
calls the action of that name."""),
    code("""client = sk.Client(srv.url)
client.call("wordcount", text="a b")"""),
    code('client.wordcount(text="the quick brown fox")'),
    md("""### Its API page

Every HTTP port serves an interactive page at `/docs` (Swagger UI, shipped with svckit, so it
works offline and on Binder) and the OpenAPI document behind it at `/openapi.json`. Both
describe the whole flow: every field some stage reads that no earlier stage produces, with
its type, and what comes back. Open the link in the HTML view above, or this one (on Binder,
the proxied link: `srv.proxy_url + "docs"`); "Try it out" calls the service from the page."""),
    code("""print(f"{srv.url}/docs")
with mock.patch.dict(os.environ, {"SVCKIT_PROXY_PREFIX": "/user/you/"}):
    print(f"{srv.proxy_url}docs")"""),
    code("""schema = client.openapi()["components"]["schemas"]["WordcountInput"]
{name: field.get("type") for name, field in schema["properties"].items()}, schema["required"]"""),
    md("""`words` is not asked for: `parse` returns it (svckit reads the dict that `parse` returns), so
a client needs to send only `text`."""),
    md("""Over ZeroMQ, `sk.ZmqClient` works the same way (any ZeroMQ client can call it: the
request is the frames `[action, json]`)."""),
    code('sk.ZmqClient(srv.zmq_url).wordcount(text="over zero m q")'),
    md("""Errors travel too: a bad message is answered with HTTP 422 and a JSON body, and the
client raises the same `sk.BadMessage` here."""),
    code("""try:
    client.wordcount(text=42)
except sk.BadMessage as error:
    print(type(error).__name__, "on field", repr(error.field), "of service", repr(error.service))"""),
    md("""## 4. Change it and re-run

Serving again under the same name **replaces** the flow in place: same port, same
handle, and requests in flight finish on the old one. Re-running a cell is how you
iterate."""),
    code("""@sk.service
def longest(words: list[str]) -> str:
    return max(words, key=len) if words else ""


srv = sk.serve(parse >> count >> longest, name="wordcount", http=0, zmq=0)
client.wordcount(text="a flow grows")"""),
    md("""## 5. Watch it

`srv.dashboard()` shows it live: state, counters, errors, traffic, outputs and a picture of
the flow. It keeps updating in the background while you run other cells (more in
`03-dashboard.ipynb`)."""),
    code("srv.dashboard()"),
    md("""The same facts are in Python: `srv.status()` has the counters, and `srv.outputs` is a
pandas DataFrame of the recent messages that came out of the flow."""),
    code("""status = srv.status()
{key: status[key] for key in ("state", "received", "replied", "errors")}"""),
    code('srv.outputs[["text", "n"]]'),
    md("""## 6. Stop

`srv.stop()` frees the port at once; `sk.shutdown()` stops the runtime and everything
it serves (it also runs by itself when the kernel exits)."""),
    code("""srv.stop()
srv"""),
    code("sk.shutdown()"),
    md("""Next: `02-zmq-pipeline.ipynb` streams messages over ZeroMQ."""),
]

for cell in cells:
    if cell.cell_type == "code":
        cell.metadata["tags"] = []
cells[-2].metadata["tags"] = ["teardown"]
cells[-3].metadata["tags"] = ["teardown"]

nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, "notebooks/01-quickstart.ipynb")
