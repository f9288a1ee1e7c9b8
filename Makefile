# Two commands matter: `make demo` and `make test`. Each sets up .venv on its own.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest services browser bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/subledger demo

test: $(STAMP) services lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) services browser
	$(BIN)/pytest

# PostgreSQL and Redis must answer before the integration tests run.
services:
	@bash scripts/ensure-services.sh

# The browser tests drive Debian's chromium; installed when missing (skipped if it cannot be).
browser:
	@bash scripts/ensure-chromium.sh

# Every benchmark, then `bench scale` (1,000,000 events): bench/results.md gets the figures,
# their ratios to raw psycopg, the targets and the machine.
bench: $(STAMP) services
	$(BIN)/python -m bench all --markdown bench/results.md

clean:
	rm -rf $(VENV) .subledger .mypy_cache .ruff_cache .pytest_cache test-artifacts
