"""A real Airflow 3 api-server for the browser tests: fresh home, SQLite, no login, Test button enabled."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import urllib3

from ct_airflow_provider.testing.processes import free_port, stop_process_group, tail

_AIRFLOW = Path(sys.executable).parent / "airflow"
_SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
#: A cold api-server on 2 busy cores needs ~15 s; the margin is for CI running other suites.
_STARTUP_DEADLINE_S = 120.0


@dataclass
class AirflowApiServer:
    """A running api-server started by :func:`run_api_server`."""

    url: str
    home: Path
    log_path: Path
    process_group: int
    #: The service account of the worker's own identity, where a metadata server gives it one.
    worker_identity: str = ""

    def log_text(self) -> str:
        """Everything the api-server has logged so far."""
        return self.log_path.read_text(errors="replace")

    def delete_all_connections(self) -> None:
        """Remove every connection through the REST API (all users are admins here: no token)."""
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=10.0))
        listing = http.request("GET", f"{self.url}/api/v2/connections?limit=1000")
        if listing.status != 200:
            raise RuntimeError(f"listing connections answered {listing.status}: {listing.data[:200]!r}")
        for connection in listing.json()["connections"]:
            connection_id = urllib.parse.quote(connection["connection_id"], safe="")
            deleted = http.request("DELETE", f"{self.url}/api/v2/connections/{connection_id}")
            if deleted.status != 204:
                raise RuntimeError(f"deleting {connection_id} answered {deleted.status}")


def isolated_airflow_env(home: Path, settings: dict[str, str], extra_env: dict[str, str]) -> dict[str, str]:
    """The environment of Airflow processes run by a test: their own home, nothing of the test's.

    Settings and connections of the test process itself (AIRFLOW_HOME, AIRFLOW_CONN_*, the GCS
    emulator of another fixture) must not leak in: the processes get exactly the settings every
    local Airflow of the tests shares (SQLite in ``home``, DAGs in ``home/dags``, everyone admin),
    then ``settings``, then ``extra_env``.

    :param home: the Airflow home folder.
    :param settings: what this kind of deployment sets on top.
    :param extra_env: what the test adds (connections, emulator addresses).
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AIRFLOW") and key != "STORAGE_EMULATOR_HOST"
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": _SIMPLE_AUTH_MANAGER,
            # Everyone is admin: the browser and API clients get in without a login page.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # Every component must sign and check the same tokens.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
    )
    env.update(settings)
    env.update(extra_env)
    return env


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=1.0, read=5.0))
    deadline = time.monotonic() + _STARTUP_DEADLINE_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"airflow api-server exited with code {process.returncode} before answering; "
                f"last lines of {log_path}:\n{tail(log_path)}"
            )
        try:
            response = http.request("GET", f"{url}/api/v2/monitor/health")
            if response.status == 200 and response.json()["metadatabase"]["status"] == "healthy":
                return
        except (urllib3.exceptions.HTTPError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"airflow api-server did not answer {url} within {_STARTUP_DEADLINE_S:.0f} s; "
                f"last lines of {log_path}:\n{tail(log_path)}"
            )
        time.sleep(0.25)


@contextlib.contextmanager
def run_api_server(home: Path, extra_env: dict[str, str] | None = None) -> Iterator[AirflowApiServer]:
    """Migrate a fresh SQLite database in ``home`` and run ``airflow api-server`` on a free port.

    The server and all its workers are stopped on exit, also when the body raised.

    :param home: an empty folder used as ``AIRFLOW_HOME``.
    :param extra_env: more environment for the server, e.g. ``STORAGE_EMULATOR_HOST``.
    """
    (home / "dags").mkdir(parents=True, exist_ok=True)
    env = isolated_airflow_env(home, {"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}, extra_env or {})
    log_path = home / "api-server.log"
    with log_path.open("wb") as log:
        migrate = subprocess.run(
            [str(_AIRFLOW), "db", "migrate"], env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if migrate.returncode != 0:
        raise RuntimeError(f"`airflow db migrate` failed; see {log_path}:\n{tail(log_path)}")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(_AIRFLOW), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(url, process, log_path)
        yield AirflowApiServer(url=url, home=home, log_path=log_path, process_group=process.pid)
    finally:
        stop_process_group(process)
