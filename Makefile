# Two commands a newcomer needs: `make run` (the quickstart) and `make test` (every check).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run stop test check bench schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The quickstart (reconcile up): a git repo, the server and a local agent serving SmolLM2 (route chat)
# and Gemma 3 270M on CPU.
run: install
	scripts/install-llama-cpp
	scripts/fetch-gemma
	scripts/fetch-smollm2
	scripts/quickstart

# Stop the quickstart (reconcile down): server, instances, agent.
stop:
	scripts/stop-quickstart

test: install
	scripts/install-llama-cpp
	scripts/install-postgres
	scripts/install-chromium
	scripts/fetch-smollm2
	scripts/check

check: test

# Speed and memory figures (printed, never asserted in tests).
bench: install
	scripts/install-llama-cpp
	scripts/fetch-gemma
	scripts/fetch-smollm2
	$(BIN)/python bench/plan_scale.py
	$(BIN)/python bench/gemma_estimate.py
	$(BIN)/python bench/hostile_input.py
	$(BIN)/python bench/converge.py
	$(BIN)/python bench/idle.py
	$(BIN)/python bench/quickstart.py
	scripts/install-postgres
	$(BIN)/python bench/failover.py

schemas: install
	$(BIN)/reconcile schemas --out schemas

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
