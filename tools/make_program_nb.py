"""Write notebooks/06-external-program.ipynb (then execute it in place: `make execute-notebooks`)."""

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

cells = [
    md("""# Wrapping an external program

Often the work is done by a program you did not write: a simulation, a converter, a solver.
`sk.program` makes a service of it. Each message gets a **fresh work directory** with its input
files written in, the command runs there with the message's values as its arguments (never
through a shell), its output lines become **progress** on the dashboard, and the files it writes
come back in the reply, with its exit code and the tail of its stderr. A run that takes too long is
stopped with its **whole process group** (SIGTERM, a grace period, then SIGKILL), and work
directories are recycled unless you ask to keep them.

The program here ships with the repository, `programs/simulate.py`: it reads a text file, takes a
number of steps printing `step 3/5 (60%)` lines, and writes a one-line result."""),
    code("""import sys
import threading
from pathlib import Path

import svckit as sk
from svckit.testing import wait_for

print(Path("programs/simulate.py").read_text().split('\"\"\"')[1].strip())"""),
    md("""## 1. Make a service of it

`cmd` is the command as a list; `{steps}`, `{label}` and `{code}` are filled from the message, each
value as one argument. `params=` declares those fields and their types (validated like a function
service's parameters); `inputs=` names fields whose values are written as files (`{notes}` is that
file's name); `outputs=` names the files that come back. The program runs in its work directory,
so the script is named by its full path. `progress=` is a regular expression with a named group
`percent` that reads the percentage from its lines."""),
    code("""SIMULATE = str(Path("programs/simulate.py").resolve())

simulate = sk.program(
    [sys.executable, SIMULATE, "--steps", "{steps}", "--delay", "{delay}", "--label", "{label}",
     "--input", "{notes}", "--exit-code", "{code}"],
    params={"steps": int, "delay": (float, 0.05), "label": (str, "run"), "code": (int, 0)},
    inputs={"notes": "notes.txt"},
    outputs={"result": "result.txt"},
    progress=r"\\((?P<percent>\\d+)%\\)",
    timeout=30,
)
simulate"""),
    md("""Like any service, it runs right here when called. The reply is the message with the output
file's text, the exit code, the duration in seconds and the tail of its stderr:"""),
    code("""reply = simulate(steps=3, label="first", notes="three small words")
{key: reply[key] for key in ("result", "returncode", "stderr_tail")}"""),
    md("""## 2. Serve it and watch it run

Served, it answers over HTTP and ZeroMQ like every other service. Runs of concurrent messages go
side by side, up to `limit=` at once (the number of cores by default). While a run is going,
`status()` and the dashboard show its progress: its percent and its last line."""),
    code("""srv = sk.serve(simulate, name="simulate", http=0, zmq=0)
client = sk.Client(srv.url)
srv.dashboard()"""),
    code("""replies = []
worker = threading.Thread(target=lambda: replies.append(client.simulate(steps=20, delay=0.1, notes="a b")))
worker.start()


def half_way():
    running = srv.status()["stages"]["simulate"]["running"]
    return next((call for call in running if (call["percent"] or 0) >= 50), None)


call = wait_for(half_way, timeout=30)
print("at least half way; its last line starts with", repr(call["line"].split()[0]))
worker.join()
replies[0]["result"]"""),
    md("""## 3. When it fails

A non-zero exit is an error reply, `sk.ProgramFailed`, carrying the exit code and the end of
stderr; over HTTP it is a 500 with the same JSON error body, and `sk.Client` raises it again here.
By default (`keep="failed"`) the work directory of a failed run is kept, so you can look inside
(its `.stdout` and `.stderr` hold everything it printed); `status()` counts what is kept on disk."""),
    code("""try:
    client.simulate(steps=4, code=3, notes="")
except sk.ProgramFailed as error:
    print(error.returncode)
    print(error.stderr_tail)
    print(sorted(p.name for p in Path(error.workdir).iterdir()))"""),
    code("""stage = srv.status()["stages"]["simulate"]
stage["runs"], stage["failed"], stage["kept_dirs"]"""),
    md("""`clean()` removes the kept directories (it returns the bytes freed):"""),
    code("""simulate.clean() > 0, srv.status()["stages"]["simulate"]["kept_dirs"]"""),
    md("""## 4. When it hangs

`timeout=` bounds a run. Past it, the program's whole process group gets SIGTERM, then SIGKILL
after `grace` seconds, so no child it started survives it (nor keeps its pipes open), and the reply
is `sk.ServiceTimeout` naming the program. Stopping a served program stops its runs the same way."""),
    code("""stuck = sk.program([sys.executable, SIMULATE, "--hang"], name="stuck", timeout=1, grace=1, keep="never")
try:
    stuck()
except sk.ServiceTimeout as error:
    print(error)"""),
    md("""## 5. Stop

Stopping the served thing stops any run still going and removes its temporary root."""),
    code("""srv.stop()
srv"""),
    code("sk.shutdown()"),
    md("""The same program served headless: put the cells above in a notebook and run
`svckit run notebooks/06-external-program.ipynb`, or `svckit call` it from a shell."""),
]

for cell in cells:
    if cell.cell_type == "code":
        cell.metadata["tags"] = []
cells[-2].metadata["tags"] = ["teardown"]
cells[-3].metadata["tags"] = ["teardown"]

nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, "notebooks/06-external-program.ipynb")
