# Two entry points for a fresh machine; both create .venv on first use.
#   make up     set up, start Descent on embedded defaults (API and workers, no server to
#               install), train examples/xor.json through it, and keep serving until Ctrl-C
#   make test   set up, then run the whole test suite
# Also: make demo (the training core alone, no service), make bench.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
WORKERS ?= 2

.PHONY: up demo test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

up: $(VENV)/.installed
	$(BIN)/descent up --port $(PORT) --workers $(WORKERS) --submit examples/xor.json

demo: $(VENV)/.installed
	$(BIN)/python examples/train_xor.py

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/kernels.py $(BENCH_ARGS)
