# looming: every target does its own set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOOMING := $(abspath $(BIN)/looming)
APP    ?= examples/static_website

.PHONY: help venv system-deps test lint typecheck unit run bench clean \
	test-fast check test-pythons test-all-pythons dist

help:
	@echo "make run    build and run the static website unikernel (http://127.0.0.1:8080)"
	@echo "make test   lint, type-check and run the whole test suite"
	@echo "make check  lint, type-check and run the fast tier (no root, qemu, peers or slow tests)"
	@echo "make test-all-pythons  the whole suite here, the fast tier on each of PYTHONS ($(PYTHONS))"
	@echo "make dist   build the sdist and the wheel into dist/"
	@echo "make bench  run the benchmarks in bench/ (looming beside its peers; BENCH_ARGS=--quick)"
	@echo "make clean  remove the virtual environment and build outputs"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Other interpreters, each in its own .venv-X.Y (python3.X on PATH or in pyenv).
PYTHONS ?= 3.11 3.12 3.13
DEFAULT_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
.venv-%/.installed: pyproject.toml
	py=$$(sh scripts/find-python.sh $*) && $$py -m venv .venv-$*
	.venv-$*/bin/pip install -q --upgrade pip
	.venv-$*/bin/pip install -q -e '.[test]'
	touch $@

# Peers the tests talk to (wrk, tshark, gnutls-cli, dnsmasq, ...): installed
# from Debian when missing and we are root; otherwise named and left alone.
system-deps:
	@sh scripts/system-deps.sh

lint: venv
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: venv
	$(BIN)/mypy

unit: venv system-deps
	$(BIN)/pytest -q -ra

test: lint typecheck unit

# The fast tier: what needs no root, no qemu, no peer program and is not slow
# (tests/tiers.py says how a test is classed), on one worker per core
# (pytest-xdist). Bytecode is written even under PYTHONDONTWRITEBYTECODE, so
# the next run reuses pytest's rewritten test modules instead of redoing them.
test-fast: venv
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -ra --fast -n auto

check: lint typecheck test-fast

# The fast tier, and the wheel installed and run in a fresh environment, on
# every interpreter in PYTHONS other than the default's (which the whole
# suite covers); a missing interpreter is an error.
test-pythons:
	@for v in $(filter-out $(DEFAULT_VERSION),$(PYTHONS)); do \
		echo "== Python $$v: fast tier in .venv-$$v"; \
		$(MAKE) --no-print-directory .venv-$$v/.installed || exit 1; \
		.venv-$$v/bin/pytest -q -ra --fast || exit 1; \
		.venv-$$v/bin/pytest -q -ra tests/packaging/test_wheel.py || exit 1; \
	done

test-all-pythons: test test-pythons

dist: venv
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .

run: venv
	cd $(APP) && $(LOOMING) configure -t unix && $(LOOMING) build && $(LOOMING) run

# Every area's benchmark, looming beside its peers; BENCH_ARGS=--quick for a short run.
BENCHES := http tcpip tcp tcp_hostile tls store store_serve vchan ffi sim image
BENCH_ARGS ?=
bench: venv system-deps
	$(BIN)/pip install -q -e '.[test,bench]'
	@for b in $(BENCHES); do \
		if [ -f bench/$$b.py ]; then \
			echo "== bench/$$b.py"; \
			$(BIN)/python -P bench/$$b.py $(BENCH_ARGS) || exit 1; \
		fi; \
	done

clean:
	rm -rf $(VENV) .venv-3.* _build dist build examples/*/_build examples/*/dist
