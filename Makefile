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
	$(BIN)/python -m ct_airflow_provider.testing.system_packages
	$(BIN)/pytest -q
	$(MAKE) --no-print-directory test-matrix

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
	rm -rf $(VENV) $(TOOLS) $(AIRFLOW_HOME) .pytest_cache .mypy_cache .ruff_cache .venv-airflow-* .airflow-*

# -- Airflow version matrix ------------------------------------------------------------------------
# One environment per supported Airflow minor version, each from its own lock (requirements/airflow-X.Y.lock,
# resolved by `make lock-matrix` from requirements/airflow-X.Y.in), with its own AIRFLOW_HOME (.airflow-X.Y).
# `make test-airflow AIRFLOW_VERSION=2.11` runs one version's leg: the core tests (marker `core`), plus
# the browser and deployment tests (marker `deployment`) on the FULL_SUITE_VERSIONS.
# AIRFLOW_VERSION=lowest-direct runs the core with every direct dependency at its lowest allowed version;
# AIRFLOW_VERSION=3.1-py3.10 runs 3.1's on Python 3.10, 3.2-py3.12 runs 3.2's on Python 3.12.
# `make test-matrix` runs every leg but 3.3 on Python 3.11, whose full suite `make test` runs in .venv.
AIRFLOW_VERSIONS := 2.11 3.0 3.1 3.2 3.3
# Besides 3.3 (in .venv), the versions whose leg runs the browser, scheduler and backfill tests too.
FULL_SUITE_VERSIONS := 2.11
# Another Python: pythonX.Y on the PATH, or pyenv's newest X.Y (whose shim needs PYENV_VERSION).
find_python = $(shell (python$(1) -c 'import sys; print(sys.executable)' || \
	PYENV_VERSION=$$(pyenv versions --bare | grep '^$(subst .,\.,$(1))\.' | tail -1) python$(1) -c 'import sys; print(sys.executable)') 2>/dev/null)
PYTHON310 := $(call find_python,3.10)
PYTHON312 := $(call find_python,3.12)
MATRIX_VERSIONS ?= 2.11 3.0 $(if $(PYTHON310),3.1-py3.10,3.1) $(if $(PYTHON312),3.2-py3.12,3.2) lowest-direct
# The interpreter of a matrix environment: Python 3.10 or 3.12 for the -py3.10 and -py3.12 ones, else the project's.
matrix_python = $(if $(findstring -py3.12,$(1)),$(PYTHON312),$(if $(findstring -py3.10,$(1)),$(PYTHON310),$(PYTHON)))
AIRFLOW_VERSION ?= 3.3
MATRIX_PYTHON_VERSION ?= 3.11
MATRIX_TESTS ?= $(if $(filter $(AIRFLOW_VERSION),$(FULL_SUITE_VERSIONS)),-m "core or deployment",-m core)

.PHONY: lock-matrix test-airflow test-matrix

.venv-airflow-%/.synced: requirements/airflow-%.lock pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(call matrix_python,$*) $(CURDIR)/.venv-airflow-$*
	$(UV) pip sync --quiet --python $(CURDIR)/.venv-airflow-$*/bin/python requirements/airflow-$*.lock
	$(UV) pip install --quiet --python $(CURDIR)/.venv-airflow-$*/bin/python --no-deps -e .
	touch $@

lock-matrix: | $(UV)
	for v in $(AIRFLOW_VERSIONS); do \
	  $(UV) pip compile --quiet pyproject.toml --extra testing --group test $$(case " $(FULL_SUITE_VERSIONS) " in *" $$v "*) echo --group full-suite;; esac) \
	    --python-version $(MATRIX_PYTHON_VERSION) requirements/airflow-$$v.in --no-header -o requirements/airflow-$$v.lock || exit 1; \
	done
	$(UV) pip compile --quiet pyproject.toml --extra testing --group test --python-version $(MATRIX_PYTHON_VERSION) \
	  --resolution lowest-direct --no-header -o requirements/airflow-lowest-direct.lock
	$(UV) pip compile --quiet pyproject.toml --extra testing --group test --python-version 3.12 \
	  requirements/airflow-3.2-py3.12.in --no-header -o requirements/airflow-3.2-py3.12.lock
	$(UV) pip compile --quiet pyproject.toml --extra testing --group test --python-version 3.10 \
	  requirements/airflow-3.1-py3.10.in --no-header -o requirements/airflow-3.1-py3.10.lock

test-airflow: .venv-airflow-$(AIRFLOW_VERSION)/.synced
	rm -rf $(CURDIR)/.airflow-$(AIRFLOW_VERSION) && mkdir -p $(CURDIR)/.airflow-$(AIRFLOW_VERSION)
	AIRFLOW_HOME=$(CURDIR)/.airflow-$(AIRFLOW_VERSION) $(CURDIR)/.venv-airflow-$(AIRFLOW_VERSION)/bin/airflow db migrate >/dev/null
	@echo "== Airflow $(AIRFLOW_VERSION): $$($(CURDIR)/.venv-airflow-$(AIRFLOW_VERSION)/bin/python -c 'import airflow; print(airflow.__version__)')"
	$(if $(filter $(AIRFLOW_VERSION),$(FULL_SUITE_VERSIONS)),$(CURDIR)/.venv-airflow-$(AIRFLOW_VERSION)/bin/python -m ct_airflow_provider.testing.system_packages)
	AIRFLOW_HOME=$(CURDIR)/.airflow-$(AIRFLOW_VERSION) $(CURDIR)/.venv-airflow-$(AIRFLOW_VERSION)/bin/pytest -q $(MATRIX_TESTS)

# The legs spend most of their time waiting on Airflow's processes and the local servers, so they run
# MATRIX_JOBS at a time (each in its own environment, Airflow home and ports); each leg's output is
# printed in one piece when it ends.
MATRIX_JOBS ?= 2
test-matrix:
	@test -n "$(PYTHON310)" || echo "python3.10 not found: Airflow 3.1 runs on Python 3.11"
	@test -n "$(PYTHON312)" || echo "python3.12 not found: Airflow 3.2 runs on Python 3.11"
	$(MAKE) --no-print-directory -j$(MATRIX_JOBS) --output-sync=target $(addprefix matrix-leg-,$(MATRIX_VERSIONS))

matrix-leg-%:
	$(MAKE) --no-print-directory test-airflow AIRFLOW_VERSION=$*
