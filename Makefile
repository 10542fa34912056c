# svckit: `make lab` opens the quickstart in JupyterLab; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test lint typecheck unit notebooks clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[lab,test]'
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/01-quickstart.ipynb

lint: $(STAMP)
	$(BIN)/ruff check svckit tests
	$(BIN)/ruff format --check svckit tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests

notebooks: $(STAMP)
	$(BIN)/pytest --nbval --nbval-current-env -p no:cacheprovider notebooks

test: lint typecheck unit notebooks

clean:
	rm -rf $(VENV) build *.egg-info
