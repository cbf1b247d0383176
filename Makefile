# Every target builds the environment first (idempotent: re-runs only when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: setup demo up down test check browser wrk vllm-env bench-baselines bench-stream bench-quality bench-serving bench-enrich bench-interest bench-training bench-load bench-demo bench-beauty bench-ablation bench-catalog device-bundle clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(BIN)/reaseq demo

# The same stack as the demo, kept running; DATASET=path feeds it your data and trains a model on it.
up: setup
	$(BIN)/reaseq up $(if $(DATASET),--dataset $(DATASET) --train)

down: setup
	$(BIN)/reaseq down

test: setup browser wrk vllm-env check
	$(BIN)/python -m pytest -q

# The structure and style contract: imports only down the layers and no cycles (pyproject's importlinter section),
# lint and format at the configured line length, and types.
check: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# vLLM's own environment for the LLM tests (several GB, minutes: once), so no test waits on a package index. The stamp
# is the file infra/vllm.py writes into it; make touches it too, so an edit that leaves the pins alone costs one check.
VLLM_STAMP := $(or $(REASEQ_STATE_DIR),.state)/vllm-env/.installed

vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m infra.vllm
	@touch $@

# Headless Chromium for the operator page's test (Debian's package; not on a fresh machine). Its recommends are a
# desktop's (avahi, udev, upower, a systemd upgrade); headless rendering needs none, and a font comes with fontconfig.
browser: SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# Debian's HTTP load generator: bench-serving drives Triton with it, a client this project did not write.
wrk: SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
wrk:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }

bench-stream: setup
	$(BIN)/python -m benchmarks.stream

bench-serving: setup wrk
	$(BIN)/python -m benchmarks.serving

bench-enrich: setup
	$(BIN)/python -m benchmarks.enrich

bench-interest: setup
	$(BIN)/python -m benchmarks.interest

bench-training: setup
	$(BIN)/python -m benchmarks.training

bench-load: setup
	$(BIN)/python -m benchmarks.load

bench-demo: setup
	$(BIN)/python -m benchmarks.demo

bench-baselines: setup
	$(BIN)/python -m benchmarks.baselines

bench-quality: setup
	$(BIN)/python -m benchmarks.quality

# The ablation at convergence: every row on Scientific at seeds 42, 7 and 1, then their means, spreads and each seed's
# paired interval. Each finished row is kept in benchmarks/results/rows (with its test ranks) and each seed's table in
# its own file, so that the ablation is built over several sessions.
ABLATION_SEEDS ?= 42 7 1
ABLATION_PRESET ?= ablation-cpu
bench-ablation: setup
	for seed in $(ABLATION_SEEDS); do \
		test -f benchmarks/results/quality-scientific-seed$$seed.json || \
		$(BIN)/python -m benchmarks.quality --datasets amazon-scientific --preset $(ABLATION_PRESET) --seed $$seed --resume || exit 1; \
	done
	$(BIN)/python -m benchmarks.combine_seeds $(foreach seed,$(ABLATION_SEEDS),benchmarks/results/quality-scientific-seed$(seed).json) \
		--out benchmarks/results/quality-scientific.json

# What the catalog's size costs serving: ID assignment, a replica's start-up and memory, request latency, at 10^4..10^6 items
bench-catalog: setup
	$(BIN)/python -m benchmarks.catalog

# TIGER on Beauty on this machine's CPU in one command (within 150 minutes on 2 cores): the preset of benchmarks/sizes.py
bench-beauty: setup
	$(BIN)/python -m benchmarks.quality --datasets amazon-beauty --models tiger --preset beauty-cpu

# The same on a GPU machine without network: data and wheels in .device/, and the command to run there
device-bundle: setup
	$(BIN)/python -m benchmarks.device_bundle

clean:
	rm -rf $(VENV) .state model_store
