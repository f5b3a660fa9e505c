# Two commands: `make run` and `make test`. Everything else is set up on the way.
# `make demo` shows the bridge working against fake GHL and Instantly, no account needed.
# `make bench` measures the bridge against its limits (bench/RESULTS.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` listens on this machine only; HOST=0.0.0.0 make run opens it to the network.
HOST ?= 127.0.0.1
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/instantly-ghl-bridge init-env
	$(BIN)/instantly-ghl-bridge migrate
	HOST=$(HOST) $(BIN)/instantly-ghl-bridge run

# The bridge on a throw-away database, fed by the fakes in tests/support. `make demo
# DEMO_ARGS="--port 9000"` picks the page's port; --exit-after-setup stops once events synced.
demo: $(STAMP)
	$(BIN)/python -m tests.support.demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check bridge migrations tests bench
	$(BIN)/ruff format --check bridge migrations tests bench

# Benchmarks (bench/): about 9 minutes on 2 cores; prints the table, writes bench/RESULTS.md.
# Needs wrk (Debian: apt-get install wrk). Loopback and local fakes only.
bench: $(STAMP)
	@command -v wrk >/dev/null || echo "bench: wrk not found (apt-get install wrk); the webhook throughput row will be skipped"
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
