"""``make airflow``: a local Airflow with the example DAGs, a CleverTap simulator and a local bucket.

Starts the simulator and the GCS stack, registers ``clevertap_default`` and ``clevertap_gcs_default``
(in the metadata database, so they show in the UI's connection list and their Test works) and the
``clevertap_api`` pool, then runs ``airflow standalone`` (api-server, scheduler, dag-processor and
triggerer, LocalExecutor on SQLite) on the example DAGs, which prints the URL and the login. Ctrl-C
stops everything. The Airflow home is made anew at each start.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from ct_airflow_provider.testing.gcs_emulator import run_gcs_stack
from ct_airflow_provider.testing.processes import stop_process_group
from ct_airflow_provider.testing.simulator import run_simulator

BUCKET = "clevertap-local-exports"
DAGS = Path(__file__).resolve().parents[2] / "dags"
_AIRFLOW = Path(sys.executable).parent / "airflow"


def _airflow(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([str(_AIRFLOW), *args], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"`airflow {args[0]} {args[1]}` failed:\n{result.stdout}\n{result.stderr}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` stops it as Ctrl-C does: everything it started goes too


def main() -> int:
    home = Path(os.environ.get("CT_LOCAL_AIRFLOW_HOME", Path.cwd() / ".airflow-local")).resolve()
    port = int(os.environ.get("CT_LOCAL_AIRFLOW_PORT", "8080"))
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    with run_simulator(events_per_day=150) as simulator, run_gcs_stack(set_env=False) as gcs:
        gcs.create_bucket(BUCKET)
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "STORAGE_EMULATOR_HOST": gcs.emulator_url,
                # `airflow standalone` starts its components as `airflow ...` from the PATH.
                "PATH": f"{_AIRFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        _airflow(env, "db", "migrate")
        _airflow(env, "connections", "add", "clevertap_default", "--conn-json", simulator.airflow_conn_env())
        bucket_connection = gcs.connection_env(BUCKET, gcs.new_service_account_key(), "Local exports")
        _airflow(env, "connections", "add", "clevertap_gcs_default", "--conn-json", bucket_connection)
        _airflow(
            env, "pools", "set", "clevertap_api", "3", "CleverTap: at most 3 concurrent requests per account"
        )
        print(
            f"CleverTap simulator {simulator.url} (account {simulator.account_id}), bucket gs://{BUCKET} "
            f"on the local GCS emulator {gcs.emulator_url}\n"
            f"Airflow home {home}: starting Airflow on http://localhost:{port}; log in as admin with the password "
            "printed below. The DAGs start paused: unpause one, or trigger it. Ctrl-C stops everything.",
            flush=True,
        )
        airflow = subprocess.Popen([str(_AIRFLOW), "standalone"], env=env, start_new_session=True)
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            airflow.wait()
        except KeyboardInterrupt:
            print("\nStopping Airflow, the simulator and the GCS stack ...", flush=True)
        finally:
            signal.signal(signal.SIGTERM, previous)
            stop_process_group(airflow, grace_s=30.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
