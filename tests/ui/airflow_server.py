"""A real Airflow UI server for the browser tests: fresh home, SQLite, no login, Test button enabled.

On Airflow 3 that is ``airflow api-server`` (the React UI and REST API v2); on Airflow 2.11 it is
``airflow webserver`` (the Flask/FAB UI and REST API v1).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from ct_airflow_provider.testing.processes import free_port, stop_process_group, tail
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS

_AIRFLOW = Path(sys.executable).parent / "airflow"
_SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
#: The command that serves the UI, its host option, and the REST API and health check it answers.
if AIRFLOW_V_3_0_PLUS:
    _SERVER_COMMAND = "api-server"
    _HOST_OPTION = "--host"
    _REST_API = "/api/v2"
    _HEALTH_PATH = "/api/v2/monitor/health"
else:
    _SERVER_COMMAND = "webserver"
    _HOST_OPTION = "--hostname"
    _REST_API = "/api/v1"
    _HEALTH_PATH = "/health"
#: Airflow 2's webserver (FAB) lets everyone in as Admin with this in its ``webserver_config.py``.
_WEBSERVER_CONFIG_AIRFLOW_2 = '''"""Written by the tests: no login page, everyone is Admin."""

AUTH_ROLE_PUBLIC = "Admin"
'''
#: A cold api-server on 2 busy cores needs ~15 s; the margin is for CI running other suites.
_STARTUP_DEADLINE_S = 120.0


@dataclass
class AirflowApiServer:
    """A running UI server (api-server, or webserver on Airflow 2) started by :func:`run_api_server`."""

    url: str
    home: Path
    log_path: Path
    process_group: int
    #: The service account of the worker's own identity, where a metadata server gives it one.
    worker_identity: str = ""
    #: The server's environment, for the ``airflow`` commands of :meth:`stored_connection`.
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def log_text(self) -> str:
        """Everything the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    def stored_extra(self, connection_id: str) -> dict[str, object]:
        """The extra of a saved connection as the REST API gives it (secret values masked as ``***``)."""
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=10.0))
        quoted = urllib.parse.quote(connection_id, safe="")
        response = http.request("GET", f"{self.url}{_REST_API}/connections/{quoted}")
        if response.status != 200:
            raise RuntimeError(f"reading {connection_id} answered {response.status}: {response.data[:200]!r}")
        extra: dict[str, object] = json.loads(response.json()["extra"] or "{}")
        return extra

    def stored_connection(self, connection_id: str) -> dict[str, object]:
        """A saved connection as ``airflow connections get`` prints it, secrets unmasked.

        Runs the CLI in the server's environment (same home, database and Fernet key), so a test can
        check a stored secret itself, which the REST API only shows as ``***``.
        """
        result = subprocess.run(
            [str(_AIRFLOW), "connections", "get", connection_id, "--output", "json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"`airflow connections get {connection_id}` failed: {result.stderr[-500:]}")
        connections: list[dict[str, object]] = json.loads(result.stdout)
        return connections[0]

    def delete_all_connections(self) -> None:
        """Remove every connection through the REST API (all users are admins here: no token)."""
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=10.0))
        while True:  # API v1 answers at most 100 per page, whatever the limit asked for
            listing = http.request("GET", f"{self.url}{_REST_API}/connections?limit=100")
            if listing.status != 200:
                raise RuntimeError(f"listing connections answered {listing.status}: {listing.data[:200]!r}")
            connections = listing.json()["connections"]
            if not connections:
                return
            for connection in connections:
                connection_id = urllib.parse.quote(connection["connection_id"], safe="")
                deleted = http.request("DELETE", f"{self.url}{_REST_API}/connections/{connection_id}")
                if deleted.status != 204:
                    raise RuntimeError(f"deleting {connection_id} answered {deleted.status}")


def isolated_airflow_env(home: Path, settings: dict[str, str], extra_env: dict[str, str]) -> dict[str, str]:
    """The environment of Airflow processes run by a test: their own home, nothing of the test's.

    Settings and connections of the test process itself (AIRFLOW_HOME, AIRFLOW_CONN_*, the GCS
    emulator of another fixture) must not leak in: the processes get exactly the settings every
    local Airflow of the tests shares (SQLite in ``home``, DAGs in ``home/dags``, everyone admin),
    then ``settings``, then ``extra_env``.

    Everyone is admin through the simple auth manager on Airflow 3; on Airflow 2 through the REST
    API's ``default`` (no login) backend and a ``webserver_config.py`` written into ``home`` that
    makes the public role Admin.

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
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
    )
    # Everyone is admin: the browser and API clients get in without a login page.
    if AIRFLOW_V_3_0_PLUS:
        env.update(
            {
                "AIRFLOW__CORE__AUTH_MANAGER": _SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                # Every component must sign and check the same tokens.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            }
        )
    else:
        env["AIRFLOW__API__AUTH_BACKENDS"] = "airflow.api.auth.backend.default"
        home.mkdir(parents=True, exist_ok=True)
        (home / "webserver_config.py").write_text(_WEBSERVER_CONFIG_AIRFLOW_2)
    env.update(settings)
    env.update(extra_env)
    return env


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=1.0, read=5.0))
    deadline = time.monotonic() + _STARTUP_DEADLINE_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"airflow {_SERVER_COMMAND} exited with code {process.returncode} before answering; "
                f"last lines of {log_path}:\n{tail(log_path)}"
            )
        try:
            response = http.request("GET", f"{url}{_HEALTH_PATH}")
            if response.status == 200 and response.json()["metadatabase"]["status"] == "healthy":
                return
        except (urllib3.exceptions.HTTPError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"airflow {_SERVER_COMMAND} did not answer {url} within {_STARTUP_DEADLINE_S:.0f} s; "
                f"last lines of {log_path}:\n{tail(log_path)}"
            )
        time.sleep(0.25)


@contextlib.contextmanager
def run_api_server(home: Path, extra_env: dict[str, str] | None = None) -> Iterator[AirflowApiServer]:
    """Migrate a fresh SQLite database in ``home`` and serve the UI on a free port, with one worker.

    ``airflow api-server`` on Airflow 3, ``airflow webserver`` on Airflow 2. The server and all its
    workers are stopped on exit, also when the body raised.

    :param home: an empty folder used as ``AIRFLOW_HOME``.
    :param extra_env: more environment for the server, e.g. ``STORAGE_EMULATOR_HOST``.
    """
    (home / "dags").mkdir(parents=True, exist_ok=True)
    env = isolated_airflow_env(home, {"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}, extra_env or {})
    log_path = home / f"{_SERVER_COMMAND}.log"
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
            [
                str(_AIRFLOW),
                _SERVER_COMMAND,
                _HOST_OPTION,
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(url, process, log_path)
        yield AirflowApiServer(url=url, home=home, log_path=log_path, process_group=process.pid, env=env)
    finally:
        stop_process_group(process)
