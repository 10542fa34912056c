"""Write notebooks/04-class-service.ipynb (then execute it in place)."""

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

cells = [
    md("""# A class service: configuration, a loop and actions

Functions are enough for most stages. When a service needs **configuration**, **state**,
something that runs **on its own every few seconds**, or **extra actions**, write a class.
Here: a fake temperature sensor."""),
    code("""import svckit as sk
from svckit.testing import wait_for"""),
    md("""## The class

- Typed class attributes are its **configuration**, checked when you construct it.
- `setup()` runs when it is served, `teardown()` when it stops. (Called right in a cell,
  `sensor(...)` runs `setup()` before its first call, and `teardown()` at `sk.shutdown()`.)
- `loop()` runs every `interval` seconds in the background runtime; what it returns goes
  downstream (and into `srv.outputs`).
- Methods marked `@sk.handle("name")` are **actions**: `POST /name` over HTTP, action
  `name` over ZeroMQ. The method stays a plain method you can call in a test."""),
    code('''class Sensor(sk.Service):
    """A temperature sensor that drifts a little at every reading."""

    start: float = 20.0
    drift: float = 0.5
    unit: str = "C"
    interval: float = 0.2

    def setup(self) -> None:
        self.temp = self.start
        self.reads = 0

    def loop(self) -> dict:
        self.reads += 1
        self.temp += self.drift
        return {"reading": self.reads, "temp": round(self.temp, 2), "unit": self.unit}

    @sk.handle("reset")
    def reset(self, to: float = 20.0) -> dict:
        self.temp = to
        return {"temp": self.temp}

    @sk.handle("config")
    def show_config(self) -> dict:
        return {"start": self.start, "drift": self.drift, "unit": self.unit, "interval": self.interval}'''),
    md("""Configuration is validated like a message: an unknown key or a value of the wrong type is
a clear `sk.ConfigError` at once, not a surprise later."""),
    code("""sensor = Sensor(drift=0.5)
sensor"""),
    code("""for bad in ({"drift": "fast"}, {"drfit": 1.0}):
    try:
        Sensor(**bad)
    except sk.ConfigError as error:
        print(error)"""),
    md("""## Serve it over HTTP and ZeroMQ at once

Port `0` picks a free port. Both transports share one set of counters. Serving runs a copy
of `sensor` (its readings live in that copy), so `sensor` itself is left as it is, and the
same object could be served twice without the two sharing state or counts."""),
    code("""srv = sk.serve(sensor, name="sensor", http=0, zmq=0)
srv.actions"""),
    md("""The loop started when it was served. Wait for three readings, then look at them:"""),
    code("""wait_for(lambda: len(srv.outputs) >= 3)
srv.outputs.head(3)"""),
    md("""Call its actions with the HTTP client, and the same actions with the ZeroMQ client:"""),
    code("""http = sk.Client(srv.url)
http.config()"""),
    code("""zmq = sk.ZmqClient(srv.zmq_url)
zmq.call("reset", to=-5.0)"""),
    md("""Errors come back the same way over both transports, as the same exception class:"""),
    code("""for client in (http, zmq):
    try:
        client.call("reset", to="cold")
    except sk.BadMessage as error:
        print(type(client).__name__, "->", error.field, ":", error)"""),
    md("""## Replace it: serve again under the same name

Change the configuration and run the same `sk.serve` call again, as re-running its cell
would (here in a new cell, so the notebook keeps both steps): the new instance takes over
on the **same ports**, and the clients keep working without reconnecting."""),
    code("""url, zmq_url = srv.url, srv.zmq_url
srv = sk.serve(Sensor(drift=-1.0, unit="K", start=300.0), name="sensor", http=0, zmq=0)
print("same ports:", srv.url == url and srv.zmq_url == zmq_url)
http.config()"""),
    code('zmq.call("config")'),
    md("""## Stop

`srv.stop()` stops the loop, runs `teardown()` and frees both ports."""),
    code("""zmq.close()
http.close()
srv.stop()
srv"""),
    md("""Next: `05-testing.ipynb` shows how to test services like these."""),
]
cells[-2].metadata["tags"] = ["teardown"]

nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, "notebooks/04-class-service.ipynb")
