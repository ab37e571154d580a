# looming: every target does its own set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOOMING := $(abspath $(BIN)/looming)
APP    ?= examples/static_website

.PHONY: help venv system-deps test lint typecheck unit run bench clean

help:
	@echo "make run    build and run the static website unikernel (http://127.0.0.1:8080)"
	@echo "make test   lint, type-check and run the whole test suite"
	@echo "make bench  run the benchmarks in bench/ (looming beside its peers; BENCH_ARGS=--quick)"
	@echo "make clean  remove the virtual environment and build outputs"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

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

run: venv
	cd $(APP) && $(LOOMING) configure -t unix && $(LOOMING) build && $(LOOMING) run

# Every area's benchmark, looming beside its peers; BENCH_ARGS=--quick for a short run.
BENCHES := http tcpip tcp tls store vchan ffi sim image
BENCH_ARGS ?=
bench: venv system-deps
	@for b in $(BENCHES); do \
		if [ -f bench/$$b.py ]; then \
			echo "== bench/$$b.py"; \
			$(BIN)/python bench/$$b.py $(BENCH_ARGS) || exit 1; \
		fi; \
	done

clean:
	rm -rf $(VENV) _build dist examples/*/_build examples/*/dist
