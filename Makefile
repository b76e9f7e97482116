# Two entry points for a fresh machine; both create .venv on first use.
#   make up     set up, start Descent on embedded defaults (API and workers, no server to
#               install), train examples/xor.json through it, and keep serving until Ctrl-C
#   make test   set up (and, as root, apt-get install Debian's chromium for the browser
#               tests), then run the whole test suite
# Also: make demo (the training core alone, no service), make bench.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
WORKERS ?= 2
# pytest-xdist processes for make test (0: one process, no xdist); the tests that race
# deadlines stay in one xdist_group (tests/conftest.py), so never beside each other.
TEST_WORKERS ?= 2
# uv installs the service's packages in a few seconds where pip takes about twenty: the one on
# PATH, or one installed once per user (by pip, from PyPI) into this folder, which every
# clone then shares. Where neither works, pip does everything, as before.
UV_TOOLS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/descent/tools
UV := $(or $(shell command -v uv 2>/dev/null),$(UV_TOOLS)/bin/uv)

.PHONY: up demo test bench chromium bytecode

$(UV_TOOLS)/bin/uv:
	@$(PYTHON) -m pip install -q --disable-pip-version-check --target $(UV_TOOLS) 'uv>=0.5' \
	  >/dev/null 2>&1 || echo "note: could not install uv (pip will install instead)"

# The virtualenv: made by uv when it runs (with pip in it, for the test and bench extras,
# which pip installs: it takes the CPU build of torch from this machine's disk), else by venv.
$(BIN)/python: | $(UV)
	@{ test -x $(UV) && $(UV) venv -q --seed --python $(PYTHON) $(VENV) 2>/dev/null; } \
	  || $(PYTHON) -m venv $(VENV)

# The service alone (make up, make demo): no test tools, no torch, installed by uv (pip where
# uv is missing or fails). Output goes to $(VENV)/install.log and is shown only on failure;
# only what the service imports at start is byte-compiled (the bytecode target), not the rest.
$(VENV)/.installed-service: pyproject.toml | $(BIN)/python
	@echo "Installing Descent and its dependencies into $(VENV) (first time only)..."
	@{ test -x $(UV) && $(UV) pip install -q --python $(BIN)/python -e . \
	     >$(VENV)/install.log 2>&1; } \
	  || $(BIN)/python -m pip install -q --no-compile -e . >>$(VENV)/install.log 2>&1 \
	  || { cat $(VENV)/install.log; exit 1; }
	@touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

# Descent's modules, and the installed ones its processes import at start, compiled to bytecode
# ahead on every core (service/precompile.py: about a second; what is up to date is skipped).
# uv installs no bytecode, and where PYTHONDONTWRITEBYTECODE is set, as on this project's
# machines, every process (`descent up`, the API, the workers, tests' subprocesses) would
# otherwise compile each module it imports from source at every start.
bytecode: | $(BIN)/python
	@$(BIN)/python -m service.precompile || true

up: $(VENV)/.installed-service bytecode
	$(BIN)/descent up --port $(PORT) --workers $(WORKERS) --submit examples/xor.json

demo: $(VENV)/.installed-service bytecode
	$(BIN)/python examples/train_xor.py

test: $(VENV)/.installed chromium bytecode
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=20 $(PYTEST_ARGS)

# The browser tests (tests/browser) drive Debian's chromium: installed here when missing and
# run as root (CI); otherwise a hint, and those tests skip (fail under DESCENT_REQUIRE_SERVICES=1).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q && apt-get install -y -q chromium; } || \
	      echo "warning: could not install chromium; the browser tests will not run"; \
	  else \
	    echo "hint: the browser tests need Debian's chromium: sudo apt-get install -y chromium"; \
	  fi; }

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/kernels.py $(BENCH_ARGS)
