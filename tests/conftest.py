"""Test-wide set-up: Airflow settings before Airflow is imported, and the project's fixtures."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

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

#: The core of the suite, run on every supported Airflow version (`make test-airflow`, marker ``core``):
#: connections and their tests, every format through a real DAG run, recurring windows, profiles and
#: the sensor, the example DAGs.
CORE_TESTS = (
    "tests/test_provider_info.py",
    "tests/test_packaging.py",
    "tests/hooks/test_clevertap.py",
    "tests/hooks/test_gcs.py",
    "tests/hooks/test_gcs_identities.py",
    "tests/export/test_claim.py",
    "tests/operators/test_reconcile_days.py",
    "tests/export/test_windows.py",
    "tests/operators/test_export_dag_runs.py",
    "tests/sensors/test_profile_export.py",
    "tests/examples/test_example_dags.py",
    "tests/dags/test_backfill_airflow2.py",
)
#: The browser and deployment tests (marker ``deployment``): the connection forms and their Test in
#: Airflow's UI, a scheduler catching up, hand-triggered runs and backfills. Besides the newest Airflow,
#: they run on the versions in the Makefile's FULL_SUITE_VERSIONS (``-m "core or deployment"``).
DEPLOYMENT_TESTS = (
    "tests/ui/",
    "tests/dags/test_backfill.py",
)
#: The marker expressions that select part of the suite, and the files they need collected.
_SELECTIONS = {"core": CORE_TESTS, "core or deployment": CORE_TESTS + DEPLOYMENT_TESTS}


def _selected(relative: str, files: tuple[str, ...]) -> bool:
    return any(relative == f or (f.endswith("/") and relative.startswith(f)) for f in files)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "core: the tests run on every supported Airflow version")
    config.addinivalue_line("markers", "deployment: browser and deployment tests, on the full-suite versions")
    from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS

    if not AIRFLOW_V_3_0_PLUS:
        # As Airflow 2's webserver and scheduler do: the FAB auth manager's tables join the ORM, so the
        # foreign key of a DAG run's note to ab_user resolves when dag.test() clears an earlier run.
        import airflow.providers.fab.auth_manager.models  # noqa: F401


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With ``-m core`` (or ``-m "core or deployment"``), do not even import the other test modules:
    their tools (a browser, docker compose schemas) are not installed in the per-version environments."""
    files = _SELECTIONS.get(config.getoption("markexpr"))
    if files is None:
        return None
    try:
        relative = collection_path.resolve().relative_to(_ROOT).as_posix()
    except ValueError:
        return None
    if collection_path.is_dir():
        return not any(f.startswith(relative + "/") or relative.startswith(f) for f in files)
    if collection_path.name.startswith("test_") and collection_path.suffix == ".py":
        return not _selected(relative, files)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(item.path).relative_to(_ROOT).as_posix()
        if relative in CORE_TESTS:
            item.add_marker(pytest.mark.core)
        if _selected(relative, DEPLOYMENT_TESTS):
            item.add_marker(pytest.mark.deployment)


@pytest.fixture
def task_log(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    """What the tasks of ``dag.test()`` runs logged so far: Airflow 3.1 and later print it, Airflow 2.11
    prints it and hands it to Python's logging, Airflow 3.0 only hands it to logging."""
    caplog.set_level(logging.INFO)
    return lambda: capfd.readouterr().out + "\n" + caplog.text
