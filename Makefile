# The user interface of sentiment-mlops. `make pipeline` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8000
MLFLOW_PORT ?= 5000
# extra arguments, e.g. make pipeline ARGS="-p epochs 2"
ARGS   ?=

.PHONY: help install pipeline test test-fast lab mlflow-ui lint format strip-notebooks clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

install: $(STAMP)  ## create .venv (if missing) and install the project with its dev tools

pipeline: $(STAMP)  ## run eda → train → evaluate → promote on the embedded defaults
	$(BIN)/python -m pipelines run $(ARGS)

test: $(STAMP)  ## the whole test suite (unit + end-to-end)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/python -m pytest -m "not e2e and not browser and not docker" $(ARGS)

lab: $(STAMP)  ## JupyterLab on the notebooks with the project's kernel
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ARGS)

mlflow-ui: $(STAMP)  ## MLflow UI on the project's tracking store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port $(MLFLOW_PORT)

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .

format: $(STAMP)  ## ruff format + fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

strip-notebooks: $(STAMP)  ## remove outputs and execution counts from notebooks/
	$(BIN)/nbstripout --drop-empty-cells=false notebooks/*.ipynb

clean:  ## remove outputs of runs (keeps .venv and the MLflow store)
	rm -rf output .pytest_cache .ruff_cache
