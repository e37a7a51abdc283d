# Common commands. Each target installs what it needs into a local virtualenv,
# so a fresh machine with only Python (and make) can run them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Second environment: the oldest Pyramid we support (pyramid_redis_sessions needs it).
VENV110 ?= .venv-pyramid110
BIN110 := $(VENV110)/bin

.PHONY: test test-pyramid2 test-pyramid110 test-topologies lint demo bench clean system-deps docs dist

# demo_app/ is not part of the package (the wheel holds pyramid_redisx only): a .pth
# file puts the repository on the venv's path so that pserve, pshell and pyramid-redisx
# find demo_app (development.ini: use = call:demo_app:main) from any directory.
REPO_PTH = $(CURDIR)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,dev,demo,docs]'
	echo '$(REPO_PTH)' > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/pyramid_redisx_repo.pth"
	touch $@

$(BIN110)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV110)
	$(BIN110)/pip install -q 'pyramid==1.10.8' 'setuptools<81' 'pyramid_redis_sessions==1.0.1' -e '.[test]'
	echo '$(REPO_PTH)' > "$$($(BIN110)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/pyramid_redisx_repo.pth"
	touch $@

## test: lint, type-check, docs, the package, the whole suite on Pyramid 2 and on Pyramid 1.10.8, topologies
test: system-deps lint docs dist test-pyramid2 test-pyramid110 test-topologies

## system-deps: Debian's redis-server (TLS) and Chromium, when missing and run as root
system-deps:
	bash scripts/system-deps.sh

test-pyramid2: $(BIN)/.installed
	$(BIN)/pytest --ignore=tests/topology

# The browser and packaging tests do not depend on Pyramid's version: Pyramid 2 only.
test-pyramid110: $(BIN110)/.installed
	$(BIN110)/pytest -q --ignore=tests/topology -m 'not browser and not packaging and not docs'

## docs: the Sphinx documentation into docs/_build/html; any warning is an error
docs: $(BIN)/.installed
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

## dist: sdist and wheel into dist/, checked by twine
dist: $(BIN)/.installed
	rm -rf dist
	$(BIN)/python -m build -q --outdir dist . >/dev/null
	$(BIN)/twine check --strict dist/*

## test-topologies: Sentinel set and 6-node cluster on real servers, with fault tests (~2 min)
test-topologies: $(BIN)/.installed
	$(BIN)/pytest -q tests/topology

lint: $(BIN)/.installed
	$(BIN)/ruff check pyramid_redisx tests bench demo_app docs
	$(BIN)/ruff format --check pyramid_redisx tests bench demo_app docs
	$(BIN)/mypy

## demo: the demo app against an embedded Redis server started for it
demo: $(BIN)/.installed
	$(BIN)/python -m demo_app.run development.ini

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

## bench: in-process comparison, waitress throughput and pool pressure, the plot, the client cache
bench: $(BIN)/.bench-installed
	$(BIN)/python bench/bench_request.py
	$(BIN)/python bench/bench_server.py
	$(BIN)/python bench/bench_checkout.py | tee bench/results_checkout.txt
	$(BIN)/python bench/plot.py
	$(BIN)/python bench/bench_client_cache.py | tee bench/results_client_cache.txt
	$(BIN)/python bench/bench_server.py --apps bare,bare_extras,redisx,redisx_cached,no_redis \
		--json bench/results_server_client_cache.json | tee bench/results_server_client_cache.txt

clean:
	rm -rf $(VENV) $(VENV110) *.egg-info .pytest_cache .mypy_cache .ruff_cache docs/_build dist build artifacts
