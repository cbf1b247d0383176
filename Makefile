# Every target builds the environment first (idempotent: re-runs only when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: setup demo test bench-stream bench-quality bench-serving bench-enrich bench-interest clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(BIN)/reaseq demo

test: setup
	$(BIN)/python -m pytest -q

bench-stream: setup
	$(BIN)/python -m benchmarks.stream

bench-serving: setup
	$(BIN)/python -m benchmarks.serving

bench-enrich: setup
	$(BIN)/python -m benchmarks.enrich

bench-interest: setup
	$(BIN)/python -m benchmarks.interest

bench-quality: setup
	$(BIN)/python -m benchmarks.quality

clean:
	rm -rf $(VENV) .state model_store
