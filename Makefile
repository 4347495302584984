# Quick start: `make demo` (main job on an embedded chain) and `make test` (the whole suite).
# Both build everything they need from nothing: a venv with pinned Python deps and the
# pinned npm toolchain (solc-js, OpenZeppelin, anvil).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: all install promtool postgres chaos-replicas test test-unit test-integration demo compile gas bench bench-cycle bench-sim bench-latency bench-metrics simulate lint clean

all: test

$(VENV)/.stamp: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev,sim]'
	touch $@

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.stamp node_modules/.stamp promtool postgres

# promtool unit-tests ops/alerts.yml (tests/ops/test_alerts.py). It comes with Debian's
# `prometheus` package (~10 s; the package starts no service): installed only when missing,
# with sudo only when not root. Without apt-get, say so: that test then skips, naming why.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "promtool not found and no apt-get: install Prometheus's promtool by hand" >&2; \
	    exit 0; \
	  fi; \
	  sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing promtool (Debian package prometheus)"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	}

# The journal's PostgreSQL tests start their own server (tests/pg.py: initdb in a temporary
# directory, loopback port, stopped after). Debian's `postgresql` package provides initdb and
# pg_ctl; installed only when missing (the tests need no service of the package's own).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "PostgreSQL not found and no apt-get: install PostgreSQL (initdb, pg_ctl) by hand" >&2; \
	    exit 1; \
	  fi; \
	  sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing PostgreSQL (Debian package postgresql)"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	}

# Recompile contracts/ into abis/ (deterministic; the artifacts are committed).
compile: node_modules/.stamp
	node scripts/compile.js

test: install
	$(PY) -m pytest -q

test-unit: $(VENV)/.stamp postgres
	$(PY) -m pytest -q tests/unit

test-integration: install
	$(PY) -m pytest -q tests/integration tests/keeper tests/cli

demo: $(VENV)/.stamp
	$(PY) -m keeper demo

gas: $(VENV)/.stamp
	$(PY) scripts/gas.py

bench: $(VENV)/.stamp
	$(PY) scripts/bench.py risk

# A no-action keeper cycle on anvil at 1, 100 and 1,000 vaults: requests and HTTP round trips
# of the keeper, the keeper one request per round trip, and the naive reader (~11 min;
# `$(PY) scripts/bench.py cycle --quick` for 1, 10, 100 in ~1 min).
bench-cycle: install
	$(PY) scripts/bench.py cycle

# A representative report: the gap and rally scenarios, both orders, every policy (~5 min on anvil).
simulate: install
	$(PY) -m keeper simulate --scenario gap35,gap50,flash,rally,black-thursday --paths 1 --seed 0 \
	    --workers 2 --out report

# Keeper-in-the-loop steps/s on anvil and the in-process chain, next to the raw chain rate.
bench-sim: install
	$(PY) scripts/bench.py sim

# Oracle round → action mined on anvil at 1 s and 12 s blocks, head ticks vs interval (~6 min).
bench-latency: install
	$(PY) scripts/bench.py latency

# What Prometheus metrics cost a 100-vault keeper tick on anvil: ratio with/without (~3 min).
bench-metrics: install
	$(PY) scripts/bench.py metrics --vaults 100

# Kill the leader replica many times (6 SIGKILL points x 4 rounds, 2 SIGSTOPs) with the
# production lease (10 s / 1 s) against anvil and a PostgreSQL server the tests start.
chaos-replicas: install
	$(PY) scripts/replica_chaos.py --rounds 4 --lease 10

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check keeper tests scripts
	$(VENV)/bin/mypy keeper

clean:
	rm -rf $(VENV) node_modules build *.egg-info .pytest_cache .mypy_cache
