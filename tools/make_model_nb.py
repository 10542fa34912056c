"""Write notebooks/08-serve-a-model.ipynb (then execute it in place)."""

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

TEST_FILE = """import pydantic
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import svckit as sk

iris = load_iris()
model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)


class Flower(pydantic.BaseModel):
    sepal_length: float = pydantic.Field(gt=0)
    sepal_width: float = pydantic.Field(gt=0)
    petal_length: float = pydantic.Field(gt=0)
    petal_width: float = pydantic.Field(gt=0)


@sk.service(name="predict")
def predict(flower: Flower) -> dict:
    x = [[flower.sepal_length, flower.sepal_width, flower.petal_length, flower.petal_width]]
    return {"species": str(iris.target_names[model.predict(x)[0]])}


SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_a_setosa_over_http(sk_serve):
    srv = sk_serve(predict, name="iris")            # a free port, stopped after the test
    assert sk.Client(srv.url).iris(flower=SETOSA)["species"] == "setosa"


def test_a_negative_length_is_refused_naming_the_field(sk_serve):
    srv = sk_serve(predict, name="iris")
    with pytest.raises(sk.BadMessage) as error:
        sk.Client(srv.url).iris(flower={**SETOSA, "sepal_length": -1})
    assert error.value.field == "flower.sepal_length"


def test_the_served_counts(sk_serve):
    srv = sk_serve(predict, name="iris")
    client = sk.Client(srv.url)
    for _ in range(20):
        client.iris(flower=SETOSA)
    status = srv.settle().status()
    assert (status["received"], status["replied"], status["errors"]) == (20, 20, 0)
"""

cells = [
    md("""# Serve a model: train, serve, load, re-serve, test

A small, complete model-serving loop in one notebook: train a scikit-learn classifier on the
iris flowers (the data ships with scikit-learn, nothing is downloaded), serve its `predict`
over HTTP with a typed request, call it from Python and with `curl`, put it under load while
the dashboard charts the rate and latency, swap in a better model **in place** without one
failed call, read a real error's traceback, and test it all with the pytest fixtures."""),
    code("""import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydantic
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

import svckit as sk"""),
    md("""## Two models

A one-split decision tree (quick and weak) as version 1, a logistic regression as version 2.
The split is fixed (`random_state=0`), so the scores are the same on every run."""),
    code("""iris = load_iris()
X_train, X_test, y_train, y_test = train_test_split(
    iris.data, iris.target, test_size=0.3, random_state=0, stratify=iris.target
)
v1 = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X_train, y_train)
v2 = LogisticRegression(max_iter=1000).fit(X_train, y_train)
print(f"v1 accuracy {v1.score(X_test, y_test):.2f}, v2 accuracy {v2.score(X_test, y_test):.2f}")"""),
    md("""## A typed request

The request is described once, as a pydantic model: four measurements in centimetres, each
positive. svckit validates every request against it (a bad one is a 422 naming the field,
before the model sees it), and `/openapi.json` and `/docs` describe it."""),
    code("""class Flower(pydantic.BaseModel):
    sepal_length: float = pydantic.Field(gt=0, description="cm")
    sepal_width: float = pydantic.Field(gt=0, description="cm")
    petal_length: float = pydantic.Field(gt=0, description="cm")
    petal_width: float = pydantic.Field(gt=0, description="cm")


def predictor(model, version: str) -> sk.Service:
    \"\"\"The service that answers with `model`'s prediction for one flower.\"\"\"

    @sk.service(name="predict")
    def predict(flower: Flower) -> dict:
        x = [[flower.sepal_length, flower.sepal_width, flower.petal_length, flower.petal_width]]
        probabilities = model.predict_proba(x)[0]
        best = int(probabilities.argmax())
        return {"species": str(iris.target_names[best]), "confidence": round(float(probabilities[best]), 3),
                "model": version}

    return predict


setosa = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
predictor(v2, "v2")(flower=setosa)"""),
    md("""A service is still a function: called in a cell it answers right here. Now serve version 1
over HTTP on a free port (`http=0`); the cell returns at once."""),
    code("""srv = sk.serve(predictor(v1, "v1"), name="iris", http=0)
srv"""),
    code("""client = sk.Client(srv.url)
client.iris(flower={"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3})"""),
    md("""Version 1 calls this flower a versicolor (it is a virginica: the one-split tree cannot tell
them apart). Any HTTP client can call it: `POST /iris` with a JSON object. From the shell,
with `curl` (run here from Python, so the notebook works the same everywhere):"""),
    code("""def curl(*args: str) -> None:
    \"\"\"Run curl with `args` and print what it printed.\"\"\"
    print(subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=30).stdout)


setosa_json = '{"flower": {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}}'
curl("-X", "POST", "-H", "Content-Type: application/json", "-d", setosa_json, f"{srv.url}/iris")"""),
    md("""That is `curl -s -X POST -H 'Content-Type: application/json' -d '{"flower": {...}}' http://127.0.0.1:PORT/iris`
in a terminal. A negative length is refused before the model runs: 422, and the error names
the field:"""),
    code("""negative_json = setosa_json.replace('"sepal_length": 5.1', '"sepal_length": -1')
curl("-w", "\\nHTTP status %{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
     "-d", negative_json, f"{srv.url}/iris")"""),
    md("""## Under load, on the dashboard

The dashboard charts requests per second and latency (p50 and p99) over the last minute,
and draws the flow with each stage's mean and p99 time. Show it, then send requests from a
background thread for three seconds: the chart moves while the cell waits. (The counts move
too: this cell prints only what does not depend on timing.)"""),
    code("""dash = srv.dashboard(chart_seconds=60)   # the charts show the last minute
dash"""),
    code("""flowers = [dict(zip(Flower.model_fields, row, strict=True)) for row in X_test.round(1).tolist()]


def load(seconds: float, answers: list) -> None:
    \"\"\"Call the service as fast as one client can for `seconds`; keep which model answered.\"\"\"
    caller = sk.Client(srv.url)
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        try:
            answers.append(caller.iris(flower=flowers[i % len(flowers)])["model"])
        except sk.SvckitError as error:
            answers.append(type(error).__name__)
        i += 1
    caller.close()


answers: list = []
worker = threading.Thread(target=load, args=(3.0, answers))
worker.start()
worker.join()
print("calls answered by v1 only, none failed:", set(answers) == {"v1"})"""),
    md("""## A better model, served in place

Serving again under the same name replaces what is served on the same port: requests in
flight finish on the old version, new ones go to the new one, nothing is dropped. Do it
while the load runs, and count what the client saw (then ask about the virginica again):"""),
    code("""answers = []
worker = threading.Thread(target=load, args=(3.0, answers))
worker.start()
time.sleep(1.0)
sk.serve(predictor(v2, "v2"), name="iris", http=srv.http_port)   # the same name: replaced in place
worker.join()

failed = [a for a in answers if a not in ("v1", "v2")]
print("failed calls:", len(failed))
print("answered by:", sorted(set(answers)), "| v2 answered last:", answers[-1] == "v2")
client.iris(flower={"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3})["species"]"""),
    md("""The served thing's own counts agree: every request it received was answered, and none was
an error. `settle()` waits until nothing is in flight, so these do not depend on timing."""),
    code("""status = srv.settle().status()
print("errors:", status["errors"], "| received == replied:", status["received"] == status["replied"])"""),
    md("""## An error you can act on

Version 3 has a bug: it forgets a measurement. scikit-learn raises, the caller gets a 500
with the exception's type and message (and nothing of the traceback: that stays in the
kernel, unless you serve with `debug=True`)."""),
    code("""def buggy(model) -> sk.Service:
    @sk.service(name="predict")
    def predict(flower: Flower) -> dict:
        x = [[flower.sepal_length, flower.petal_length, flower.petal_width]]   # sepal_width is missing
        return {"species": str(iris.target_names[model.predict(x)[0]]), "model": "v3"}

    return predict


sk.serve(buggy(v2), name="iris", http=srv.http_port)
try:
    client.iris(flower=setosa)
except sk.RemoteError as error:
    print(error)"""),
    md("""`srv.errors` is a DataFrame of the recent errors: when (UTC), which stage, the type and
message, the request id (to find the request in `srv.traffic`), an excerpt of the message
that caused it, and the traceback. The dashboard's error rows open to the same traceback."""),
    code("""srv.settle().errors[["service", "type", "message", "excerpt"]]"""),
    md("""`srv.last_traceback()` prints the newest one, with svckit's own frames left out (its file
paths and line numbers depend on the machine, so this cell's output is not compared by nbval):"""),
    code("srv.last_traceback()", metadata={"tags": ["nbval-ignore-output"]}),
    md("""Roll back to version 2, in place again:"""),
    code("""sk.serve(predictor(v2, "v2"), name="iris", http=srv.http_port)
client.iris(flower=setosa)["model"]"""),
    md("""## Test it with the pytest fixtures

svckit's pytest plugin gives every test `sk_serve` (serve on a free port, stopped when the
test ends) and `sk_runtime`. The same service, in a test file run by pytest in another
process:"""),
    code("""here = Path.cwd()                      # the notebooks folder
os.chdir(tempfile.mkdtemp())           # write the test file somewhere scratch"""),
    code(f"%%writefile test_iris.py\n{TEST_FILE}"),
    code("""run = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "--color=no", "-p", "no:cacheprovider", "test_iris.py"],
    capture_output=True, text=True, timeout=120,
)
os.chdir(here)
print(run.stdout.strip().splitlines()[-1])"""),
    md("""The service keeps serving, and the dashboard above keeps its chart of the last minutes.
`srv.stop()` stops it (restarting the kernel does too).

Back to the start: `01-quickstart.ipynb`."""),
    code("""client.close()
srv.settle().state"""),
]

nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, "notebooks/08-serve-a-model.ipynb")
