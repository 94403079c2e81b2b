# Every target sets itself up: the virtualenv in $(VENV) is created and synced from
# uv.lock whenever it is missing or the lock changed. Another interpreter in a venv of its
# own: `make test VENV=.venv-3.13 PYTHON=python3.13`.
SHELL := bash
PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synced-$(UV_VERSION)
# The local DynamoDB of `make run`, `make emulators` and `make bench`: auto is dynalite (a
# second, independent implementation on Node, installed into .cache/ by npm on first use)
# where node and npm are, moto elsewhere; `make bench DYNAMODB=moto` for moto.
DYNAMODB ?= auto
DYNALITE := $(PY) -m harness.local.emulators.dynalite

.PHONY: help install dynalite run emulators test lint format clean parity bench soak fuzz \
	shadow-bench browser valgrind gate-check

help:
	@echo "make run    start the local emulators and both stacks on 127.0.0.1"
	@echo "make test   run the whole test suite"
	@echo "make lint   ruff, mypy and the import contracts"
	@echo "make parity replay the parity corpus against both stacks; reports in reports/parity/"
	@echo "make bench  the standard load-test comparison; reports in reports/bench/"
	@echo "make soak   the gateway under load for SOAK_MINUTES (10), faults and rollout"
	@echo "            changes included; fails on errors and leaks; reports in reports/soak/"
	@echo "make shadow-bench  the primary's p50/p99 at shadow_percent 100 against 0 (about 2 min);"
	@echo "            fails past 1.1x; figures in reports/shadow/shadow.json"
	@echo "make gate   instructions per request (callgrind) of each stack and the gateway against"
	@echo "            load_test/baseline.json (about 2 min); fails past a scenario's margin"
	@echo "make gate-check  the gate's own test: a deliberately slowed gateway fails it (1.5 min)"
	@echo "make fuzz   FUZZ_CASES (1000) generated and raw requests to both stacks and the gateway;"
	@echo "            fails on a 5xx, a difference or a broken OpenAPI promise; logs in reports/fuzz/"
	@echo "DYNAMODB=moto|dynalite|auto  the local DynamoDB of run, emulators and bench (default"
	@echo "            auto: dynalite, installed into .cache/ by npm, where Node 20+ is; else moto)"

# The production dependencies, the `tools` extra (emulators, parity suite, load test) and the
# dev group (tests, lint), into $(VENV) whatever its name (uv would otherwise sync .venv).
$(STAMP): pyproject.toml uv.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(VENV)/bin/uv sync --frozen --quiet --extra tools
	@touch $@

install: $(STAMP)

# dynalite 4.0.0 and its locked dependencies (harness/local/emulators/node/) into .cache/.
dynalite: $(STAMP)
	$(DYNALITE) install

run: $(STAMP)
	$(PY) -m harness.local.devstack --dynamodb $(DYNAMODB)

emulators: $(STAMP)
	$(PY) -m harness.local.emulators --dynamodb $(DYNAMODB)

# The whole suite against moto and, beside it, tests/stacks (the contract, sessions,
# concurrency, rate limit, faults) once more against dynalite where Node can run it: a
# behaviour that differs between the two stores fails here. The two runs share nothing (each
# starts its own emulators on free ports) and mostly wait on I/O, so they run at once on two
# cores; the dynalite run's output is shown after the main one's. dynalite is installed
# before pytest starts, never by it.
# The benchmark gate's own test (a slowed build must fail it) makes three gate runs under
# callgrind, about a minute and a half: a slow benchmark, so not in make test but in
# `make gate-check`, which .ci/run runs beside `make gate`.
# The stacks' tests and the tools' (the load test's and the parity suite's), mostly waiting on
# the servers and emulators they start, run as a third pytest beside the main one, so the
# suite keeps to about five minutes on two cores; their output follows the main run's.
GATE_TEST := tests/load_test/test_gate.py::test_a_slower_gateway_fails_the_gate_and_the_same_build_passes
DYNALITE_LOG := reports/tests/dynalite.log
TOOLS_TESTS := tests/stacks tests/load_test tests/parity parity_tests
TOOLS_LOG := reports/tests/beside.log

test: $(STAMP) browser
	@if $(DYNALITE) check; then $(DYNALITE) install; fi
	@mkdir -p $(dir $(DYNALITE_LOG)); second=; \
	if $(DYNALITE) check 2>/dev/null; then \
	    DUALSTACK_TEST_DYNAMODB=dynalite $(PY) -m pytest tests/stacks -p no:cacheprovider \
	        > $(DYNALITE_LOG) 2>&1 & second=$$!; \
	fi; \
	$(PY) -m pytest $(TOOLS_TESTS) --deselect "$(GATE_TEST)" -p no:cacheprovider \
	    > $(TOOLS_LOG) 2>&1 & third=$$!; \
	$(PY) -m pytest $(addprefix --ignore=,$(TOOLS_TESTS)); first=$$?; \
	wait $$third; tools=$$?; \
	echo "== tests/stacks and the load test's and parity suite's tests ($(TOOLS_LOG))"; \
	cat $(TOOLS_LOG); \
	if [ -n "$$second" ]; then \
	    wait $$second; again=$$?; \
	    echo "== tests/stacks again, against dynalite ($(DYNALITE_LOG))"; \
	    cat $(DYNALITE_LOG); \
	else \
	    again=0; echo "== tests/stacks ran against moto only: no Node 20+ with npm for dynalite"; \
	fi; \
	[ $$first -eq 0 ] && [ $$tools -eq 0 ] && [ $$again -eq 0 ]

gate-check: $(STAMP) valgrind
	$(PY) -m pytest -p no:cacheprovider "$(GATE_TEST)"

parity: $(STAMP)
	$(PY) -m parity_tests --report reports/parity

# The dashboard's browser tests drive Debian's Chromium through Playwright (never a browser
# Playwright downloads). Installed here when missing and this is a root shell with apt-get,
# as on CI; elsewhere `CHROMIUM=/path/to/chromium make test`.
comma := ,
CHROMIUM ?= /usr/bin/chromium
export DUALSTACK_CHROMIUM := $(CHROMIUM)

# $(call apt_install,PACKAGE,WHAT NEEDS IT,ANOTHER WAY): the Debian package, installed when this
# is a root shell with apt-get (as on CI); elsewhere stop, saying how to get it.
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "== installing $(1) for $(2)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1); \
	else \
	    echo "$(2) need $(1): apt-get install $(1) (Debian)$(3)"; exit 1; \
	fi

# valgrind's callgrind counts instructions: the benchmark gate, `overhead --instructions` and
# the gate's own test need it.
valgrind:
	@if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then \
	    $(call apt_install,valgrind,the benchmark gate and its test,); \
	fi

browser:
	@if ! [ -x "$(CHROMIUM)" ]; then \
	    $(call apt_install,chromium,the dashboard's browser tests,$(comma) or CHROMIUM=/path/to/chromium make test); \
	fi

bench: $(STAMP)
	$(PY) -m load_test bench --dynamodb $(DYNAMODB) --report reports/bench \
	    --json reports/bench/results.json

# The merge gate on CPU cost: instructions per request under callgrind against
# load_test/baseline.json (about 90 s on 2 cores); fails past a scenario's margin. Reports and
# the servers' logs in reports/gate/; `make gate GATE_ARGS=--update` rewrites the baseline.
GATE_ARGS ?=
.PHONY: gate
gate: $(STAMP) valgrind
	$(PY) -m load_test gate --report reports/gate $(GATE_ARGS)

# `make soak SOAK_MINUTES=60` for a longer one.
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(PY) -m load_test soak --minutes $(SOAK_MINUTES) --report reports/soak

shadow-bench: $(STAMP)
	$(PY) -m load_test shadow --dynamodb $(DYNAMODB) --json reports/shadow/shadow.json

# `make fuzz FUZZ_CASES=5000 FUZZ_SEED=7` for a longer run, or other cases.
FUZZ_CASES ?= 1000
FUZZ_SEED ?= 0
fuzz: $(STAMP)
	$(PY) -m parity_tests.fuzz --cases $(FUZZ_CASES) --seed $(FUZZ_SEED) --logs reports/fuzz

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache reports .cache
