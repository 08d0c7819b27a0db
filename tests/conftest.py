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
# google-auth looks for a metadata server when it has no other credentials: a closed loopback port
# answers at once, where the real address is off this machine. Tests of the worker's identity start
# their own metadata server and point a process at it.
os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:9")
os.environ.setdefault("GCE_METADATA_IP", "127.0.0.1:9")

pytest_plugins = ["ct_airflow_provider.testing.pytest_plugin"]
