# Two commands for a fresh machine with Python 3.11 and make: `make demo`, `make test`.
# Everything else they need (uv, the locked environment, Airflow's database) is set up here.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
UV_VERSION := 0.13.8
TOOLS := $(CURDIR)/.tools
VENV := $(CURDIR)/.venv
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
BIN := $(VENV)/bin

export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__TEST_CONNECTION := Enabled
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL ?= http://127.0.0.1:8080/execution/
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= INFO

.PHONY: env test test-fast lint typecheck demo airflow bench lock screenshots clean

$(TOOLS)/bin/uv:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required (looked for $(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The environment is rebuilt whenever the lock or the project metadata changes.
$(VENV)/.synced: requirements.lock pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

$(AIRFLOW_HOME)/.migrated: $(VENV)/.synced
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate >/dev/null
	touch $@

env: $(AIRFLOW_HOME)/.migrated

# Re-resolve after changing dependencies in pyproject.toml; commits only the hash-pinned export.
lock: | $(UV)
	$(UV) lock --quiet
	$(UV) export --quiet --all-groups --no-emit-project --no-header --format requirements-txt -o requirements.lock

lint: env
	$(BIN)/ruff check ct_airflow_provider dags tests bench
	$(BIN)/ruff format --check ct_airflow_provider dags tests bench

typecheck: env
	$(BIN)/mypy

test: env lint typecheck
	$(BIN)/python -m ct_airflow_provider.testing.browser_setup
	$(BIN)/pytest -q

test-fast: env
	$(BIN)/pytest -q -m "not slow"

demo: env
	AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING $(BIN)/python -m ct_airflow_provider.testing.demo

# A local Airflow (api-server, scheduler, dag-processor, triggerer) on the example DAGs, against the
# simulator and a local bucket; prints the URL and the login; Ctrl-C stops it.
AIRFLOW_PORT ?= 8080
airflow: env
	CT_LOCAL_AIRFLOW_PORT=$(AIRFLOW_PORT) $(BIN)/python -m ct_airflow_provider.testing.local_airflow

bench: env
	$(BIN)/python bench/run_all.py

screenshots: env
	CT_REFRESH_SCREENSHOTS=1 $(BIN)/pytest -q tests/ui

clean:
	rm -rf $(VENV) $(TOOLS) $(AIRFLOW_HOME) .pytest_cache .mypy_cache .ruff_cache
