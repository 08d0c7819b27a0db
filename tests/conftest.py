"""Test-wide set-up: Airflow settings before Airflow is imported, and the project's fixtures."""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent

# Same defaults as the Makefile, so `.venv/bin/pytest tests/...` works on its own too.
os.environ.setdefault("AIRFLOW_HOME", str(_ROOT / ".airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")

pytest_plugins = ["ct_airflow_provider.testing.pytest_plugin"]
