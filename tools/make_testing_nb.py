"""Write notebooks/05-testing.ipynb (then execute it in place)."""

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

TEST_FILE = """import pytest

import svckit as sk
from svckit.testing import collect


@sk.service
def parse(text: str) -> dict:
    return {"words": text.split()}


@sk.service
def count(words: list[str]) -> dict:
    return {"n": len(words)}


def test_a_stage_is_still_its_function():
    assert parse.fn("a b") == {"words": ["a", "b"]}


def test_the_flow_over_http(sk_serve):
    srv = sk_serve(parse >> count, name="wordcount")   # served on a free port, stopped afterwards
    assert sk.Client(srv.url).wordcount(text="a b c")["n"] == 3


def test_bad_input_names_the_field(sk_serve):
    srv = sk_serve(parse, name="parse")
    with pytest.raises(sk.BadMessage) as error:
        sk.Client(srv.url).parse(txt="oops")
    assert error.value.field == "text"


def test_a_pipeline_end_to_end(sk_serve):
    sink = collect()
    words = iter(["one", "two three"])
    srv = sk_serve(sk.every(0.01, lambda: {"text": next(words, "")}) >> parse >> count >> sink, name="p")
    assert [m["n"] for m in sink.wait(2)[:2]] == [1, 2]
"""

cells = [
    md("""# Testing your own services

Services written in a notebook deserve tests like any other code. svckit helps at three
levels: a stage is still a plain function; a flow runs synchronously in a cell; and a
pytest plugin (installed with svckit) serves things on free ports and cleans up after each
test. Finally, **nbval** turns a whole notebook into a regression test."""),
    code("""import os
import subprocess
import sys
import tempfile
from pathlib import Path

import svckit as sk
from svckit.testing import collect"""),
    code("""@sk.service
def parse(text: str) -> dict:
    return {"words": text.split()}


@sk.service
def count(words: list[str]) -> dict:
    return {"n": len(words)}"""),
    md("""## 1. A stage is still its function

`@sk.service` does not hide your function: `parse.fn` is the plain function, so the usual
asserts work. Calling the service itself runs it on a message and returns the message."""),
    code("""assert parse.fn("a b") == {"words": ["a", "b"]}
assert (parse >> count)(text="a b c")["n"] == 3
print("ok")"""),
    md("""## 2. Collect what a pipeline emits

`collect()` is the easy test end of any flow (like Streamz's `sink_to_list`): put it last,
and `sink.wait(n)` waits until n messages arrived, with a deadline instead of a `sleep`."""),
    code("""sink = collect()
texts = iter(["one", "two words", "three more words"])
pipeline = sk.every(0.05, lambda: {"text": next(texts, "")}) >> parse >> count >> sink
srv = sk.serve(pipeline, name="counting")
[message["n"] for message in sink.wait(3)[:3]]"""),
    code("srv.stop()"),
    md("""## 3. pytest fixtures

With svckit installed, pytest knows two fixtures:

- `sk_serve(x, name=..., **kw)`: serves like `sk.serve` (on a free HTTP port by default) and
  stops everything it served when the test ends;
- `sk_runtime`: a fresh runtime for the test, shut down afterwards with every port released.

Here is a small test file, run by pytest in a separate process:"""),
    code("""here = Path.cwd()                      # the notebooks folder
os.chdir(tempfile.mkdtemp())           # write the test file somewhere scratch"""),
    code("%%writefile test_wordcount.py\n" + TEST_FILE),
    code("""run = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "--color=no", "-p", "no:cacheprovider", "test_wordcount.py"],
    capture_output=True, text=True, timeout=120,
)
print(run.stdout.strip().splitlines()[-1])"""),
    md("""## 4. A notebook as a regression test

`pytest --nbval` runs a notebook in a fresh kernel and compares every output with the one
saved in the file. For that to work, outputs must not change from run to run:

- svckit's objects have short, stable text forms (`<Served wordcount: running>`), and a
  dashboard's text form holds no live numbers;
- never print a count from a running pipeline right away: `wait_for(condition)` or
  `sink.wait(n)` first;
- a sanitize file may normalise ports and durations (this folder's `sanitize.cfg`).

This is how `make test` checks every notebook here (strictly, not `--nbval-lax`). The saved
outputs were made outside a hub, so the check runs without the hub's proxy prefix (on
Binder, `srv.proxy_url` would add a link to the outputs):"""),
    code("""os.chdir(here)
outside_hub = {k: v for k, v in os.environ.items() if k not in ("JUPYTERHUB_SERVICE_PREFIX", "SVCKIT_PROXY_PREFIX")}
run = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "--color=no", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
     "--nbval-sanitize-with", "sanitize.cfg", "01-quickstart.ipynb"],
    capture_output=True, text=True, timeout=300, env=outside_hub,
)
if run.returncode == 0:
    print("01-quickstart.ipynb: every cell's output matches the saved one")
else:
    print(run.stdout[-3000:])"""),
    code("sk.shutdown()"),
]
cells[-1].metadata["tags"] = ["teardown"]

nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, "notebooks/05-testing.ipynb")
