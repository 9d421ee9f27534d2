# Two entry points: `make demo` and `make test`. Both work on a fresh machine:
# they create .venv, install the project with pinned dependencies, then run.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= data/sim
PATIENTS ?= 4000
SEED ?= 0
RUN ?= out/demo

.PHONY: demo test lint install clean bench system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned resolver would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,scale]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

FHIR_SERVER := tests/servers/fhir
FHIR_SERVER_STAMP := $(FHIR_SERVER)/node_modules/.installed

# PostgreSQL and Node for the integration tests' real peers, installed only when missing.
system-deps:
	.ci/system-deps

# Medplum's FHIR engine behind our shim: exact versions from the committed package-lock.json.
$(FHIR_SERVER_STAMP): $(FHIR_SERVER)/package-lock.json | system-deps
	npm ci --prefix $(FHIR_SERVER) --no-audit --no-fund --loglevel=error
	touch $@

test: lint system-deps $(FHIR_SERVER_STAMP)
	$(BIN)/pytest

# A simulated hospital night, end to end: simulate → cohort report → train the three stages and both
# baselines → evaluate → export → FHIR test server with held-out ECGs → register, promote → run-once →
# summary and one annotated 12-lead PNG. --resume: a second `make demo` reuses the trained stages.
demo: $(STAMP) $(FHIR_SERVER_STAMP)
	$(BIN)/ecg-train simulate --patients $(PATIENTS) --seed $(SEED) --out $(DATA)
	$(BIN)/ecg-train cohort-report $(DATA)
	$(BIN)/ecg-train plot-examples --out $(DATA)/examples
	$(BIN)/ecg-train run --config model_training/configs/demo.yaml --data $(DATA) --out $(RUN) --resume
	$(BIN)/python scripts/demo.py --data $(DATA) --run $(RUN)

bench: $(STAMP) $(FHIR_SERVER_STAMP)
	$(BIN)/python bench/simulate.py
	$(BIN)/python bench/infer.py
	$(BIN)/python bench/mllp.py
	$(BIN)/python bench/fhir_throughput.py

clean:
	rm -rf $(VENV) data out .pytest_cache .ruff_cache $(FHIR_SERVER)/node_modules
