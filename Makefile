# The commands the README names. Each installs what is missing first.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test unit integration check lint typecheck bench clean

setup:
	@scripts/setup.sh

run: setup
	$(VENV)/bin/legato server

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

lint:
	$(VENV)/bin/ruff check src tests bench

typecheck:
	$(VENV)/bin/mypy

check: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

bench: setup
	bench/run-all.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
