# Two commands matter: `make demo` and `make test`. Both create .venv and install the project
# into it first, so a fresh clone needs nothing but Python >= 3.11 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench install geodb clean screenshots

RUNTIME_STAMP := $(VENV)/.runtime-stamp

# The demo needs only what the programs run with; tests, lint and benchmarks add the dev tools.
# pip -qq prints errors only: the machine's index notes and setuptools' editable-install notice are noise.
$(RUNTIME_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -qq --disable-pip-version-check -e .
	@touch $(RUNTIME_STAMP)

$(STAMP): pyproject.toml $(RUNTIME_STAMP)
	$(PY) -m pip install -qq --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(RUNTIME_STAMP)
	$(PY) -m demo

# Real components some tests need (Debian packages): installed when missing and running as root.
SYSTEM_PACKAGES := redis-server=redis-server chromium=chromium chromedriver=chromium-driver promtool=prometheus

test: $(STAMP)
	@sh tools/ensure-packages.sh $(SYSTEM_PACKAGES)
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check edge origin_stub geodb bench demo tests deploy/k8s/generate.py
	$(PY) -m mypy --strict edge origin_stub geodb bench demo deploy/k8s/generate.py

bench: $(STAMP)
	$(PY) -m bench.edge_bench
	$(PY) -m bench.purge_bench
	$(PY) -m bench.region_bench
	$(PY) -m bench.protection_bench
	$(PY) -m bench.router_bench
	$(PY) -m bench.router_bench --access-log

screenshots: $(STAMP)
	@sh tools/ensure-packages.sh chromium=chromium chromedriver=chromium-driver
	EDGECACHE_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q -p no:cacheprovider tests/browser

geodb: $(STAMP)
	$(PY) -m geodb.build --source geodb/source.csv --out geodb/demo-city.mmdb

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
