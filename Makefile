# Two commands a newcomer needs: `make run` (the quickstart) and `make test` (every check).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test check bench schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The quickstart: one CPU worker serving Gemma 3 270M. Validates the manifests and
# plans them against the recorded snapshot of that worker.
run: install
	scripts/fetch-gemma
	$(BIN)/reconcile validate examples/quickstart
	$(BIN)/reconcile plan examples/quickstart --dry-run --observed examples/snapshots/cpu-only.yaml

test: install
	scripts/check

check: test

# Speed and memory figures (printed, never asserted in tests).
bench: install
	scripts/install-llama-cpp
	scripts/fetch-gemma
	$(BIN)/python bench/plan_scale.py
	$(BIN)/python bench/gemma_estimate.py

schemas: install
	$(BIN)/reconcile schemas --out schemas

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
