# Common commands. Each target installs what it needs into a local virtualenv,
# so a fresh machine with only Python (and make) can run them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Second environment: the oldest Pyramid we support (pyramid_redis_sessions needs it).
VENV110 ?= .venv-pyramid110
BIN110 := $(VENV110)/bin

# Locked environments: requirements/*.txt (exact versions, hashes) made by `make lock` from
# requirements/*.in with uv (docs/compatibility.rst). Installed from INDEX_URL only,
# whatever pip or uv configuration the machine has; the hashes make any mirror that
# serves the same files equivalent.
INDEX_URL ?= https://pypi.org/simple
TOOLS ?= .venv-tools
UV := $(TOOLS)/bin/uv
UV_FLAGS := --no-config --index-url $(INDEX_URL)
LOCK_FOR := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu

.PHONY: test test-pyramid2 test-pyramid110 test-topologies test-outages test-matrix lint demo bench bench-outages clean system-deps docs dist lock mutation mutation-blind-spots

# demo_app/ is not part of the package (the wheel holds pyramid_redisx only): a .pth
# file puts the repository on the venv's path so that pserve, pshell and pyramid-redisx
# find demo_app (development.ini: use = call:demo_app:main) from any directory.
REPO_PTH = $(CURDIR)

# uv itself, pinned with hashes, by pip (ignoring this machine's pip configuration).
$(UV): requirements/uv.txt
	$(PYTHON) -m venv $(TOOLS)
	PIP_CONFIG_FILE=/dev/null $(TOOLS)/bin/pip install -q --isolated --disable-pip-version-check --index-url $(INDEX_URL) --require-hashes --no-deps -r requirements/uv.txt
	touch $@

# A venv holds exactly its lock (uv pip sync), then the project, editable, without deps.
$(BIN)/.installed: requirements/pyramid2.txt pyproject.toml $(UV)
	$(PYTHON) -m venv $(VENV)
	$(UV) pip sync -q $(UV_FLAGS) --python $(BIN)/python --require-hashes requirements/pyramid2.txt
	$(UV) pip install -q $(UV_FLAGS) --python $(BIN)/python --no-deps --no-build-isolation -e .
	echo '$(REPO_PTH)' > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/pyramid_redisx_repo.pth"
	touch $@

# setuptools (requirements/pyramid110.in): Pyramid 1.10 loads pshell's shells through
# pkg_resources (gone in 81), whose older versions cannot find zope.interface 8 by name.
$(BIN110)/.installed: requirements/pyramid110.txt pyproject.toml $(UV)
	$(PYTHON) -m venv $(VENV110)
	$(UV) pip sync -q $(UV_FLAGS) --python $(BIN110)/python --require-hashes requirements/pyramid110.txt
	$(UV) pip install -q $(UV_FLAGS) --python $(BIN110)/python --no-deps --no-build-isolation -e .
	echo '$(REPO_PTH)' > "$$($(BIN110)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/pyramid_redisx_repo.pth"
	touch $@

## test: lint, type-check, docs, the package, the whole suite on Pyramid 2 and on Pyramid 1.10.8, topologies, outages
test: system-deps lint docs dist test-pyramid2 test-pyramid110 test-topologies test-outages

## lock: refresh requirements/*.txt to the newest releases PyPI has within pyproject.toml's ranges
lock: $(UV)
	$(UV) pip compile -q $(UV_FLAGS) $(LOCK_FOR) --generate-hashes --upgrade --custom-compile-command 'make lock' requirements/uv.in -o requirements/uv.txt
	$(UV) pip compile -q $(UV_FLAGS) $(LOCK_FOR) --generate-hashes --upgrade --custom-compile-command 'make lock' --no-emit-package pyramid-redisx requirements/pyramid2.in -o requirements/pyramid2.txt
	$(UV) pip compile -q $(UV_FLAGS) $(LOCK_FOR) --generate-hashes --upgrade --custom-compile-command 'make lock' --no-emit-package pyramid-redisx requirements/pyramid110.in -o requirements/pyramid110.txt
	$(UV) pip compile -q $(UV_FLAGS) $(LOCK_FOR) --generate-hashes --upgrade --custom-compile-command 'make lock' --no-emit-package pyramid-redisx requirements/bench.in -o requirements/bench.txt
	$(UV) pip compile -q $(UV_FLAGS) $(LOCK_FOR) --generate-hashes --upgrade --custom-compile-command 'make lock' --no-emit-package pyramid-redisx requirements/mutation.in -o requirements/mutation.txt

## test-matrix: the redis-py internals' tests on each supported redis-py minor and the newest release, Pyramid 1.10.8/2.0/2.1, with and without hiredis (~15 min)
test-matrix: system-deps $(UV)
	$(PYTHON) scripts/matrix.py --uv $(UV) --index-url $(INDEX_URL)

## system-deps: Debian's redis-server (TLS) and Chromium, when missing and run as root
system-deps:
	bash scripts/system-deps.sh

test-pyramid2: $(BIN)/.installed
	$(BIN)/pytest --ignore=tests/topology -m 'not outages'

# The browser and packaging tests do not depend on Pyramid's version: Pyramid 2 only.
test-pyramid110: $(BIN110)/.installed
	$(BIN110)/pytest -q --ignore=tests/topology -m 'not browser and not packaging and not docs and not outages'

## docs: the Sphinx documentation into docs/_build/html; any warning is an error
docs: $(BIN)/.installed
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

## dist: sdist and wheel into dist/, checked by twine
dist: $(BIN)/.installed
	rm -rf dist
	$(BIN)/python -m build -q --no-isolation --outdir dist . >/dev/null
	$(BIN)/twine check --strict dist/*

## test-topologies: Sentinel set and 6-node cluster on real servers, with fault tests (~2 min)
test-topologies: $(BIN)/.installed
	$(BIN)/pytest -q tests/topology

## test-outages: SIGKILL, SIGSTOP and a black hole under load (waitress, gunicorn, wrk), a worker replaced during an outage (~3 min)
test-outages: system-deps $(BIN)/.installed
	$(BIN)/pytest -q -m outages tests/reliability

lint: $(BIN)/.installed
	$(BIN)/ruff check pyramid_redisx tests bench demo_app docs scripts mutation
	$(BIN)/ruff format --check pyramid_redisx tests bench demo_app docs scripts mutation
	$(BIN)/mypy

## demo: the demo app against an embedded Redis server started for it
demo: $(BIN)/.installed
	$(BIN)/python -m demo_app.run development.ini

$(BIN)/.bench-installed: $(BIN)/.installed requirements/bench.txt
	$(UV) pip sync -q $(UV_FLAGS) --python $(BIN)/python --require-hashes requirements/bench.txt
	$(UV) pip install -q $(UV_FLAGS) --python $(BIN)/python --no-deps --no-build-isolation -e .
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

## bench-outages: the breaker's cost per command, three outages with and without it, the plot (~8 min, needs wrk)
bench-outages: system-deps $(BIN)/.bench-installed
	$(BIN)/python bench/bench_breaker.py
	$(BIN)/python bench/bench_outages.py
	$(BIN)/python bench/plot_outages.py

$(BIN)/.mutation-installed: $(BIN)/.installed requirements/mutation.txt
	$(UV) pip sync -q $(UV_FLAGS) --python $(BIN)/python --require-hashes requirements/mutation.txt
	$(UV) pip install -q $(UV_FLAGS) --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $@

# MODULES="redact pools": only these (names in mutation/tests_for_modules.toml)
MODULES ?=
## mutation: mutmut on pyramid_redisx/, module by module, each against its mapped tests; report in docs/mutation-report.md (long: see docs/mutation.rst)
mutation: $(BIN)/.mutation-installed
	$(BIN)/python mutation/run.py $(MODULES)

## mutation-blind-spots: each bug of mutation/blind_spots.toml put in by hand must fail its test (add ARGS=--topology for Sentinel/Cluster)
mutation-blind-spots: $(BIN)/.installed
	$(BIN)/python mutation/blind_spots.py $(ARGS)

clean:
	rm -rf $(VENV) $(VENV110) $(TOOLS) matrix *.egg-info .pytest_cache .mypy_cache .ruff_cache docs/_build dist build artifacts mutation/work
