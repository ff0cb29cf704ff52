# Two commands a newcomer needs: `make run` (the quickstart) and `make test` (every check).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test check schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The quickstart: validate the manifests of one CPU worker serving Gemma 3 270M.
run: install
	$(BIN)/reconcile validate examples/quickstart
	cat examples/quickstart/*.yaml

test: install
	scripts/check

check: test

schemas: install
	$(BIN)/reconcile schemas --out schemas

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
