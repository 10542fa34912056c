# svckit: `make lab` opens the quickstart in JupyterLab; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROOT   := $(if $(filter 0,$(shell id -u)),--allow-root,)
NBVAL  := $(BIN)/pytest --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

.PHONY: lab test lint typecheck unit notebooks browser-deps binder-check execute-notebooks screenshots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[lab,test]'
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab $(ROOT) notebooks/01-quickstart.ipynb

lint: $(STAMP)
	$(BIN)/ruff check svckit tests benchmarks
	$(BIN)/ruff format --check svckit tests benchmarks

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

# what repo2docker builds from binder/ alone, in a fresh venv, then every notebook run there
binder-check:
	rm -rf /tmp/svckit-binder && $(PYTHON) -m venv /tmp/svckit-binder
	/tmp/svckit-binder/bin/python -m pip install --quiet --upgrade pip
	/tmp/svckit-binder/bin/python -m pip install --quiet -r binder/requirements.txt
	PATH=/tmp/svckit-binder/bin:$$PATH bash binder/postBuild
	PATH=/tmp/svckit-binder/bin:$$PATH python -m ipykernel install --prefix /tmp/svckit-binder --name python3 > /dev/null
	for nb in notebooks/*.ipynb; do \
		PATH=/tmp/svckit-binder/bin:$$PATH jupyter nbconvert --to notebook --execute \
			--ExecutePreprocessor.timeout=120 --output-dir /tmp/svckit-binder/out "$$nb" || exit 1; \
	done
	@echo "binder-check: every notebook ran in the Binder environment"

# refresh the committed outputs of every notebook (run after changing one)
execute-notebooks: $(STAMP)
	for nb in notebooks/*.ipynb; do \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=120 "$$nb" || exit 1; \
	done
	$(BIN)/python tools/strip_widget_state.py notebooks/*.ipynb

screenshots: $(STAMP) browser-deps
	SVCKIT_SCREENSHOT=docs/dashboard.png $(BIN)/pytest tests/browser -q

test: lint typecheck unit notebooks binder-check

clean:
	rm -rf $(VENV) build *.egg-info

# Benchmarks side by side with bare uvicorn, raw pyzmq, plain calls and service-flow (not a test).
SF_VENV := benchmarks/.venv-sf
.PHONY: bench

$(SF_VENV)/.installed:
	test -x $(SF_VENV)/bin/python || $(BIN)/python -m venv $(SF_VENV)
	$(SF_VENV)/bin/python -m pip install --quiet service-flow==0.3.1
	touch $@

bench: $(STAMP) $(SF_VENV)/.installed
	command -v wrk > /dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python benchmarks/run.py
