"""``make airflow``: one command brings up a local Airflow on the example DAGs, and Ctrl-C takes it down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import urllib3

from ct_airflow_provider.testing.processes import free_port

pytestmark = pytest.mark.slow

_DEADLINE_S = 240.0


def _wait_for(what: str, condition: Any, process: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + _DEADLINE_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"make airflow exited early:\n{log.read_text()[-3000:]}"
        try:
            result = condition()
            if result:
                return result
        except (urllib3.exceptions.HTTPError, OSError, ValueError, KeyError):
            pass
        time.sleep(1.0)
    raise AssertionError(f"{what}: not within {_DEADLINE_S:.0f} s:\n{log.read_text()[-3000:]}")


def test_local_airflow_starts_with_the_example_dags_connections_and_pool_then_stops(tmp_path: Path) -> None:
    port, home, log = free_port(), tmp_path / "home", tmp_path / "make-airflow.log"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "STORAGE_EMULATOR_HOST"
    }
    env.update({"CT_LOCAL_AIRFLOW_HOME": str(home), "CT_LOCAL_AIRFLOW_PORT": str(port)})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ct_airflow_provider.testing.local_airflow"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=20.0))
    url = f"http://127.0.0.1:{port}"
    try:
        health = _wait_for(
            "every component healthy",
            lambda: (
                (h := http.request("GET", f"{url}/api/v2/monitor/health").json())
                and all(
                    h[c]["status"] == "healthy"
                    for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                )
                and h
            ),
            process,
            log,
        )
        assert health["metadatabase"]["status"] == "healthy"
        output = log.read_text()
        assert f"http://localhost:{port}" in output
        password = orjson.loads((home / "simple_auth_manager_passwords.json.generated").read_bytes())["admin"]
        assert f"Password for user 'admin': {password}" in output  # the login is printed
        token = http.request(
            "POST", f"{url}/auth/token", json={"username": "admin", "password": password}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def api(path: str) -> Any:
            return http.request("GET", f"{url}/api/v2/{path}", headers=headers).json()

        dags = _wait_for(
            "the example DAGs parsed", lambda: api("dags")["total_entries"] == 5 and api("dags"), process, log
        )
        assert {d["dag_id"] for d in dags["dags"]} >= {
            "clevertap_once_only_events",
            "clevertap_recurring_events",
        }
        connections = {c["connection_id"]: c for c in api("connections")["connections"]}
        assert connections["clevertap_default"]["conn_type"] == "clevertap"
        assert connections["clevertap_gcs_default"]["conn_type"] == "clevertap_gcs"
        assert "private_key" not in str(connections["clevertap_gcs_default"])  # masked in API answers
        assert api("pools/clevertap_api")["slots"] == 3
        session = psutil.Process(process.pid)
        started = session.children(recursive=True)
        assert len(started) >= 4
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=90)
    assert process.returncode == 0
    assert "Stopping Airflow, the simulator and the GCS stack" in log.read_text()
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [], alive
