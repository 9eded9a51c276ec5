# hakobu — the two commands: `make demo` (set-up + the main job on the embedded default) and
# `make test` (the whole suite against the real MariaDB and the BigQuery emulator).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test contract setup dev bench validate clean up down

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/hakobu demo

test: $(STAMP)
	$(BIN)/pytest -q -n 3 --dist loadgroup -m "not serial"
	$(BIN)/pytest -q -m serial

# the import contract and the size limits alone, every violation listed (tests/test_architecture.py)
contract: $(STAMP)
	PYTHONPATH=. $(BIN)/python tests/test_architecture.py

validate: $(STAMP)
	$(BIN)/hakobu validate

# the embedded default kept running for every other command: `make up`, `source .local/env`
up: $(STAMP)
	$(BIN)/hakobu up

down: $(STAMP)
	$(BIN)/hakobu down

dev: $(STAMP)
	bash scripts/dev.sh

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf .local
