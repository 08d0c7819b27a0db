"""Pytest fixtures for testing DAGs that use this provider, with no cloud and no CleverTap account.

Enable them in a ``conftest.py``::

    pytest_plugins = ["ct_airflow_provider.testing.pytest_plugin"]

``gcs_stack`` runs fake-gcs-server and a local OAuth token endpoint, and hands out real service
account keys for it; ``clevertap_simulator`` runs the CleverTap API simulator over a real socket.
"""

from __future__ import annotations

from collections.abc import Iterator

try:
    import pytest
except ImportError as missing:  # pragma: no cover - only without the testing extra
    raise ImportError(
        "ct_airflow_provider.testing.pytest_plugin is a pytest plugin, and pytest is not installed: "
        "install the testing extra, `pip install 'ct-airflow-provider[testing]'`."
    ) from missing

from ct_airflow_provider.testing.gcs_emulator import GCSTestStack, run_gcs_stack
from ct_airflow_provider.testing.simulator import SimulatorServer, run_simulator


@pytest.fixture(scope="session")
def gcs_stack() -> Iterator[GCSTestStack]:
    """fake-gcs-server plus a token endpoint; sets ``STORAGE_EMULATOR_HOST`` while it runs."""
    with run_gcs_stack() as stack:
        yield stack


@pytest.fixture
def clevertap_simulator() -> Iterator[SimulatorServer]:
    """A fresh CleverTap API simulator on a free loopback port, with the default seed.

    Afterwards the process's request budget for its account is reset: 429s a test injected do
    not slow the next test down.
    """
    from ct_airflow_provider.hooks.clevertap import account_budget

    with run_simulator() as server:
        yield server
    account_budget(server.account_id).reset()


def connect_default_connections(
    monkeypatch: pytest.MonkeyPatch, simulator: SimulatorServer, gcs_stack: GCSTestStack, bucket: str
) -> None:
    """Point ``clevertap_default`` at ``simulator`` and ``clevertap_gcs_default`` at an empty ``bucket``.

    The bucket is created if needed and emptied; the connection gets a fresh Storage Admin key.
    """
    gcs_stack.create_bucket(bucket)
    gcs_stack.delete_all_objects(bucket)
    monkeypatch.setenv("AIRFLOW_CONN_CLEVERTAP_DEFAULT", simulator.airflow_conn_env())
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLEVERTAP_GCS_DEFAULT",
        gcs_stack.connection_env(bucket, gcs_stack.new_service_account_key()),
    )
