# The two commands a fresh machine needs: `make demo` and `make test`. Both create .venv if missing.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.autopeft-installed
# pip warns about local index folders it cannot use; those lines are noise, real errors still fail the pipe.
PIPQ := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup demo test test-fast lint clean

$(STAMP): pyproject.toml constraints.txt requirements-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 $(PIPQ)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]" $(PIPQ)
	$(BIN)/pip install -q --no-deps -r requirements-assets.txt $(PIPQ)
	$(BIN)/python -c "import torch, autopeft.methods, autopeft.kernels; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/autopeft search --budget 0.5% --max-steps 300 --time-budget 10m --out runs/demo
	$(BIN)/autopeft pareto runs/demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q --durations=25  # the slowest tests listed: the suite must stay under ~20 min

test-fast: setup
	$(BIN)/pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs build dist *.egg-info
