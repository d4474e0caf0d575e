# clipscale: `make help` lists the targets. Every target creates the environment if it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, from the wheels this platform serves (a CPU/CUDA build of your choice elsewhere)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ROOT ?= runs
SWEEP ?= demo
SOURCE ?= store
OUT ?= reports/$(if $(filter paper,$(SOURCE)),paper,$(SWEEP))
PYTEST_ARGS ?=
export TQDM_DISABLE ?= 1

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
	@echo "  variables: SWEEP=$(SWEEP) ROOT=$(ROOT) SOURCE=store|paper|both OUT=$(OUT)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## Create the virtual environment (.venv) with every dependency

demo: venv ## Run the embedded default end to end: 12 tiny points, evaluation, power-law fit
	@# two processes, one per generated dataset, one core each (tiny models gain nothing from a
	@# second thread; benchmarks/demo_seconds.py measures it); either failing fails the target
	OMP_NUM_THREADS=1 $(PY) launch.py -m sweep=demo root=$(ROOT) data=syn32k & pid=$$!; \
	OMP_NUM_THREADS=1 $(PY) launch.py -m sweep=demo root=$(ROOT) data=syn4k; rc=$$?; \
	wait $$pid && exit $$rc
	$(PY) -m analysis --source store --root $(ROOT) --out reports/demo

sweep: venv ## Run a named sweep locally: make sweep SWEEP=demo
	$(PY) launch.py -m sweep=$(SWEEP) root=$(ROOT)

dry-run: venv ## Print a sweep's plan (points, steps, GPUs, compute, state): make dry-run SWEEP=paper
	$(PY) launch.py -m sweep=$(SWEEP) root=$(ROOT) dry_run=true

status: venv ## Status table of a sweep's points: make status SWEEP=demo
	$(PY) -m launcher.status --sweep $(SWEEP) --root $(ROOT)

eval: venv ## Evaluate a run's newest checkpoint on its suite: make eval RUN=runs/<id> [EVAL=paper]
	@test -n "$(RUN)" || { echo "usage: make eval RUN=runs/<run id> [EVAL=embedded|paper]"; exit 2; }
	$(PY) -m evaluation run --run-dir $(RUN) $(if $(EVAL),--eval $(EVAL))

export-csv: venv ## Export the store as the paper's CSV shape: make export-csv ROOT=runs
	$(PY) -m evaluation export --root $(ROOT) --out $(OUT)/results.csv

analyze: venv ## Fit and plot scaling laws: make analyze SOURCE=store|paper|both
	$(PY) -m analysis --source $(SOURCE) --root $(ROOT) --out $(OUT)

PACKAGES := core synthetic training store evaluation analysis launcher hydra_plugins/clipscale_launcher hydra_plugins/clipscale_sweeper

test: venv ## Run the whole test suite (what CI runs, after lint): the SLURM tests beside the rest
	@# two pytest sessions at once: the tests that need the cluster, one after another (they share
	@# its two nodes and mostly wait on SLURM), and the rest; the SLURM session's report follows
	@# (exit status 5, no test selected there by PYTEST_ARGS, counts as success)
	@# the free space where the tests' folders go: their runs write checkpoints (peak 1.2 GB)
	@echo "free disk for the tests: $$(df -h --output=avail "$${TMPDIR:-/tmp}" | tail -1 | tr -d ' ')"
	$(PY) -m pytest -q -m slurm -p no:cacheprovider --durations=15 $(PYTEST_ARGS) > .test-slurm.log 2>&1 & pid=$$!; \
	$(PY) -m pytest -q -m "not slurm" --durations=25 $(PYTEST_ARGS); rc=$$?; \
	wait $$pid; rs=$$?; [ $$rs -eq 5 ] && rs=0; echo "=== tests that need the SLURM cluster ==="; cat .test-slurm.log; \
	exit $$(( rc != 0 ? rc : rs ))

test-fast: venv ## The edit loop: unit tests only (no end-to-end runs, no SLURM cluster), stop at the first failure
	$(PY) -m pytest -q -x -m "not slow and not slurm" $(PYTEST_ARGS)

lint: venv ## ruff and mypy on the packages
	$(VENV)/bin/ruff check $(PACKAGES) launch.py tests benchmarks scripts
	$(VENV)/bin/mypy $(PACKAGES) --ignore-missing-imports

clean: ## Remove runs, generated data and reports (keeps .venv)
	rm -rf runs data reports

.PHONY: help venv demo sweep dry-run status eval export-csv analyze test test-fast lint clean
