"""One export across Celery workers: wall time with one and with two workers, against CleverTap's limit.

A real distributed deployment (the test suite's ``run_airflow_deployment(executor="CeleryExecutor")``:
api-server, scheduler, dag-processor, PostgreSQL, Redis and N ``airflow celery worker`` processes)
runs ``clevertap_sliced_export`` (three events over four days, 12 slices of
``CleverTapExportTaskGroup``, the ``clevertap_api`` pool of 3 slots) against the simulator answering
every request after ``--latency`` seconds. For each number of workers, one warm-up run (the workers
import and parse once) and ``--runs`` timed runs; the figure is the DAG run's wall time (its start to
its end, as Airflow records them) against the least time CleverTap allows: the requests the
simulator handled during the run times the latency, divided by 3.

    .venv/bin/python bench/bench_scale_out.py                      # 1 and 2 workers, 0.4 s
    .venv/bin/python bench/bench_scale_out.py --workers 2 --runs 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ct_airflow_provider.testing.gcs_emulator import run_gcs_stack  # noqa: E402
from ct_airflow_provider.testing.simulator import run_simulator  # noqa: E402
from tests.dags.airflow_deployment import CELERY_EXECUTOR, run_airflow_deployment  # noqa: E402

DAG_FILE = ROOT / "tests" / "dags" / "dag_files" / "clevertap_sliced_export.py"
DAG_ID = "clevertap_sliced_export"
BUCKET = "bench-scale-out"
LIMIT = 3  # CleverTap's requests in flight per account


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def measure(workers: int, latency: float, runs: int) -> list[dict[str, float]]:
    """Timed runs of the sliced export on a deployment with ``workers`` Celery workers."""
    rows = []
    with (
        run_simulator(events_per_day=2000, population=500) as simulator,
        run_gcs_stack(set_env=False) as gcs,
        tempfile.TemporaryDirectory(prefix="bench-scale-out-") as home,
    ):
        gcs.create_bucket(BUCKET)
        env = {
            "AIRFLOW_CONN_CLEVERTAP_DEFAULT": simulator.airflow_conn_env(),
            "AIRFLOW_CONN_CLEVERTAP_GCS_DEFAULT": gcs.connection_env(BUCKET, gcs.new_service_account_key()),
            "STORAGE_EMULATOR_HOST": gcs.emulator_url,
            "CT_SLICED_LAST_DAY": (simulator.truth.today - dt.timedelta(days=1)).isoformat(),
        }
        with run_airflow_deployment(
            Path(home),
            [DAG_FILE],
            extra_env=env,
            pools={"clevertap_api": LIMIT},
            executor=CELERY_EXECUTOR,
            celery_workers=workers,
            worker_concurrency=LIMIT,
        ) as airflow:
            airflow.wait_for_dag(DAG_ID)
            for number in range(runs + 1):
                simulator.faults.response_delay_seconds = latency
                simulator.stats.reset()
                run_id = airflow.trigger(DAG_ID, None)["dag_run_id"]
                (run,) = airflow.wait_for_runs(DAG_ID, {run_id}, 900.0)
                if run["state"] != "success":
                    raise SystemExit(f"run {run_id} ended {run['state']}; logs in {home}")
                stats = simulator.stats.snapshot()
                seconds = (_time(run["end_date"]) - _time(run["start_date"])).total_seconds()
                limit = stats["requests_served"] * latency / LIMIT
                row = {
                    "seconds": seconds,
                    "requests": stats["requests_served"],
                    "limit": limit,
                    "ratio": seconds / limit,
                    "most_in_flight": stats["max_concurrent_observed"],
                }
                print(
                    f"workers={workers} run={number}{' (warm-up)' if number == 0 else ''}: {row}", flush=True
                )
                if number:
                    rows.append(row)
                time.sleep(1.0)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--latency", type=float, default=0.4)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    table = [
        "| workers | run s (median) | requests | limit s | ratio | most in flight |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for workers in args.workers:
        rows = measure(workers, args.latency, args.runs)
        seconds = statistics.median(row["seconds"] for row in rows)
        limit = statistics.median(row["limit"] for row in rows)
        most = max(row["most_in_flight"] for row in rows)
        requests = statistics.median(row["requests"] for row in rows)
        table.append(
            f"| {workers} | {seconds:.1f} | {requests:.0f} | {limit:.1f} | **{seconds / limit:.2f}x** | {most:.0f} |"
        )
    print("\n".join(table))


if __name__ == "__main__":
    main()
