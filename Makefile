# Common commands. Each target installs what it needs into a local virtualenv,
# so a fresh machine with only Python (and make) can run them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Second environment: the oldest Pyramid we support (pyramid_redis_sessions needs it).
VENV110 ?= .venv-pyramid110
BIN110 := $(VENV110)/bin

.PHONY: test test-pyramid2 test-pyramid110 lint demo bench clean system-deps

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,dev,demo]'
	touch $@

$(BIN110)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV110)
	$(BIN110)/pip install -q 'pyramid==1.10.8' 'setuptools<81' 'pyramid_redis_sessions==1.0.1' -e '.[test]'
	touch $@

## test: lint, type-check, and the whole suite on Pyramid 2 and on Pyramid 1.10.8
test: system-deps lint test-pyramid2 test-pyramid110

## system-deps: Debian's redis-server (TLS) and Chromium, when missing and run as root
system-deps:
	bash scripts/system-deps.sh

test-pyramid2: $(BIN)/.installed
	$(BIN)/pytest

test-pyramid110: $(BIN110)/.installed
	$(BIN110)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check pyramid_redisx tests bench demo_app
	$(BIN)/ruff format --check pyramid_redisx tests bench demo_app
	$(BIN)/mypy

## demo: the demo app against an embedded Redis server started for it
demo: $(BIN)/.installed
	$(BIN)/python -m demo_app.run development.ini

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

## bench: in-process comparison, waitress throughput and pool pressure, the plot
bench: $(BIN)/.bench-installed
	$(BIN)/python bench/bench_request.py
	$(BIN)/python bench/bench_server.py
	$(BIN)/python bench/plot.py

clean:
	rm -rf $(VENV) $(VENV110) *.egg-info .pytest_cache .mypy_cache .ruff_cache
