# svckit: `make lab` opens the quickstart in JupyterLab; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROOT   := $(if $(filter 0,$(shell id -u)),--allow-root,)
NBVAL  := $(BIN)/pytest --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

.PHONY: lab test lint typecheck unit notebooks browser-deps binder-check execute-notebooks screenshots soak clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[lab,test,docs]'
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab $(ROOT) notebooks/01-quickstart.ipynb

# ruff, and the import layers contract in pyproject.toml (modules import one way, bottom to top)
lint: $(STAMP)
	$(BIN)/ruff check svckit tests benchmarks
	$(BIN)/ruff format --check svckit tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian's chromium for the browser test (never a test tool's own browser download).
browser-deps:
	@if [ "$$SVCKIT_NO_BROWSER" = "1" ]; then echo "SVCKIT_NO_BROWSER=1: the browser test will be skipped"; \
	elif ! command -v chromium > /dev/null; then \
		echo "installing Debian chromium for the browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null) \
		|| { echo "could not install chromium: set SVCKIT_NO_BROWSER=1 to skip the browser test"; exit 1; }; \
	fi

unit: $(STAMP) browser-deps
	$(BIN)/pytest --doctest-modules svckit tests

# strict nbval (not --nbval-lax), three runs in a row
notebooks: $(STAMP)
	for run in 1 2 3; do $(NBVAL) notebooks || exit 1; done

# what repo2docker builds from binder/ alone: the Python that binder/runtime.txt names, a fresh venv
# with binder/requirements.txt, then binder/postBuild; then strict nbval over every notebook in it
binder-check:
	@set -e; \
	version=$$(sed -n 's/^python-\([0-9][0-9]*\.[0-9][0-9]*\)[[:space:]]*$$/\1/p' binder/runtime.txt); \
	test -n "$$version" || { echo "binder-check: binder/runtime.txt must say python-3.X, as repo2docker reads it"; exit 1; }; \
	python=python$$version; \
	command -v $$python > /dev/null || { echo "binder-check: binder/runtime.txt asks for Python $$version, but $$python is not on PATH"; exit 1; }; \
	rm -rf /tmp/svckit-binder; \
	$$python -m venv /tmp/svckit-binder || { echo "binder-check: $$python cannot make a venv (is Python $$version installed?)"; exit 1; }; \
	/tmp/svckit-binder/bin/python -c "import sys; v = '%d.%d' % sys.version_info[:2]; \
		sys.exit(None if v == '$$version' else 'binder-check: the venv runs Python ' + v + ', binder/runtime.txt says $$version')"; \
	echo "binder-check: Python $$version, as binder/runtime.txt says"
	/tmp/svckit-binder/bin/python -m pip install --quiet --upgrade pip
	/tmp/svckit-binder/bin/python -m pip install --quiet -r binder/requirements.txt
	PATH=/tmp/svckit-binder/bin:$$PATH bash binder/postBuild
	PATH=/tmp/svckit-binder/bin:$$PATH python -m ipykernel install --prefix /tmp/svckit-binder --name python3 > /dev/null
	PATH=/tmp/svckit-binder/bin:$$PATH python -m pytest --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider notebooks
	@echo "binder-check: strict nbval passed for every notebook in the Binder environment"

# refresh the committed outputs of every notebook (run after changing one)
execute-notebooks: $(STAMP)
	for nb in notebooks/*.ipynb; do \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=120 "$$nb" || exit 1; \
	done
	$(BIN)/python tools/strip_widget_state.py notebooks/*.ipynb

screenshots: $(STAMP) browser-deps
	SVCKIT_SCREENSHOT=docs/dashboard.png $(BIN)/pytest tests/browser -q

# the documentation site, into site/ (git-ignored): README sections, the notebooks as committed, the API
# reference from the docstrings; `make test` builds it with --strict (a broken link or reference fails)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck unit notebooks binder-check docs

# SOAK_SECONDS (60) of steady HTTP, ZMQ and pipeline traffic while the flow is re-served every 2 s;
# fails when a call fails, a message is lost, or RSS or descriptors grow (tests/test_soak.py: 5 s)
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --seconds $${SOAK_SECONDS:-60}

clean:
	rm -rf $(VENV) build *.egg-info

# Benchmarks side by side with bare uvicorn, FastAPI, raw pyzmq, plain calls and service-flow (not a test).
SF_VENV := benchmarks/.venv-sf
.PHONY: bench

$(SF_VENV)/.installed:
	test -x $(SF_VENV)/bin/python || $(BIN)/python -m venv $(SF_VENV)
	$(SF_VENV)/bin/python -m pip install --quiet service-flow==0.3.1
	touch $@

# FastAPI (a def endpoint on uvicorn in a thread): the second HTTP baseline, in a venv of its own
FASTAPI_VENV := benchmarks/.venv-fastapi
$(FASTAPI_VENV)/.installed:
	test -x $(FASTAPI_VENV)/bin/python || $(BIN)/python -m venv $(FASTAPI_VENV)
	$(FASTAPI_VENV)/bin/python -m pip install --quiet fastapi==0.165.0 'uvicorn[standard]==0.54.0'
	touch $@

bench: $(STAMP) $(SF_VENV)/.installed $(FASTAPI_VENV)/.installed
	command -v wrk > /dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python benchmarks/run.py
