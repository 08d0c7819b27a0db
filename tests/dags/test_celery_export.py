"""One export across two Celery workers: 12 slices, one request id, one manifest, a worker killed.

A real distributed deployment (``run_airflow_deployment(executor="CeleryExecutor")``: api-server,
scheduler, dag-processor and two ``airflow celery worker`` processes, PostgreSQL and Redis from
Debian's packages), the CleverTap simulator and the GCS stack run ``clevertap_sliced_export``:
three events over four days, sliced by event and day (``CleverTapExportTaskGroup``).

* Both workers run slices; CleverTap never sees more than 3 requests in flight (the pool); the
  bucket holds exactly the simulator's records under one request id, with one complete manifest.
* A worker killed (SIGKILL) in the middle of a slice: the slice is retried on the other worker and
  the export is still exact, nothing left of the killed attempt.

Airflow 3 only; it runs in the full suite on Airflow 3.3, not in the version matrix.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from ct_airflow_provider.testing.gcs_emulator import GCSTestStack, run_gcs_stack
from ct_airflow_provider.testing.simulator import SimulatorServer, run_simulator
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS
from tests.dags.airflow_deployment import CELERY_EXECUTOR, AirflowDeployment, run_airflow_deployment

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the Celery deployment runs Airflow 3's workers"),
]

DAG_FILE = Path(__file__).parent / "dag_files" / "clevertap_sliced_export.py"
DAG_ID = "clevertap_sliced_export"
SLICES_TASK = "export.export"
EVENTS = ("Charged", "App Launched", "Product Viewed")
DAYS = 4
BUCKET = "ct-celery"
PREFIX = "sliced/"
WORKERS = ("worker-1", "worker-2")
POOL_SLOTS = 3
RUN_DEADLINE_S = 300.0


@dataclass
class Deployment:
    airflow: AirflowDeployment
    simulator: SimulatorServer
    gcs: GCSTestStack
    last_day: dt.date


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if importlib.util.find_spec("airflow.providers.celery") is None:
        pytest.fail("apache-airflow-providers-celery is not installed: run `make env` and the tests again")
    with run_simulator(events_per_day=60, population=200) as simulator, run_gcs_stack(set_env=False) as gcs:
        # Every CleverTap answer waits a little, so slices on both workers really overlap.
        simulator.faults.response_delay_seconds = 0.3
        gcs.create_bucket(BUCKET)
        last_day = simulator.truth.today - dt.timedelta(days=1)
        env = {
            "AIRFLOW_CONN_CLEVERTAP_DEFAULT": simulator.airflow_conn_env(),
            "AIRFLOW_CONN_CLEVERTAP_GCS_DEFAULT": gcs.connection_env(BUCKET, gcs.new_service_account_key()),
            "STORAGE_EMULATOR_HOST": gcs.emulator_url,
            "CT_SLICED_LAST_DAY": last_day.isoformat(),
        }
        home = tmp_path_factory.mktemp("airflow-celery-export-home")
        with run_airflow_deployment(
            home,
            [DAG_FILE],
            extra_env=env,
            pools={"clevertap_api": POOL_SLOTS},
            executor=CELERY_EXECUTOR,
            celery_workers=len(WORKERS),
            worker_concurrency=2,
        ) as airflow:
            airflow.wait_for_dag(DAG_ID)
            yield Deployment(airflow, simulator, gcs, last_day)


def _finished(deployment: Deployment, run_id: str) -> dict[str, Any]:
    (run,) = deployment.airflow.wait_for_runs(DAG_ID, {run_id}, RUN_DEADLINE_S)
    assert run["state"] == "success", f"run {run_id} ended {run['state']}; logs in {deployment.airflow.home}"
    return run


def _slices(deployment: Deployment, run_id: str) -> list[dict[str, Any]]:
    return [
        ti
        for ti in deployment.airflow.task_instances(DAG_ID)
        if ti["task_id"] == SLICES_TASK and ti["dag_run_id"] == run_id
    ]


def _check_bucket(deployment: Deployment) -> None:
    """One complete manifest under one request id, listing exactly the run's objects, holding the truth."""
    gcs, days = deployment.gcs, [deployment.last_day - dt.timedelta(days=n) for n in range(DAYS)]
    objects = set(gcs.list_objects(BUCKET, PREFIX)) - {
        n for n in gcs.list_objects(BUCKET, PREFIX) if "/_schemas/" in n
    }
    (manifest_name,) = [name for name in objects if name.endswith("-manifest.json")]
    manifest = orjson.loads(gcs.read_object(BUCKET, manifest_name))
    assert manifest["status"] == "complete" and manifest["reconciled"] is True
    listed = {f["object_name"] for f in manifest["files"]}
    assert objects == listed | {manifest_name}  # nothing else: no claim, no stale chunk of a killed try
    assert {name.split("/")[-1].split("-")[0] for name in objects} == {manifest["request_id"]}
    for event in EVENTS:
        for day in days:
            records = [
                orjson.loads(line)
                for f in manifest["files"]
                if f["event_name"] == event and f["day"] == f"{day:%Y%m%d}"
                for line in gcs.read_object(BUCKET, f["object_name"]).splitlines()[1:]
            ]
            truth = Counter(int(r["ts"]) for r in deployment.simulator.truth.events(event, day))
            assert Counter(int(r["ts"]) for r in records) == truth, (event, day)


def test_an_export_sliced_over_two_workers_is_exact_within_the_pool(deployment: Deployment) -> None:
    deployment.simulator.stats.reset()
    run_id = deployment.airflow.trigger(DAG_ID, None)["dag_run_id"]
    _finished(deployment, run_id)

    slices = _slices(deployment, run_id)
    assert sorted(ti["map_index"] for ti in slices) == list(range(len(EVENTS) * DAYS))
    assert {ti["state"] for ti in slices} == {"success"}
    per_worker = Counter(deployment.airflow.worker_named(ti["hostname"]) for ti in slices)
    assert set(per_worker) == set(WORKERS), f"slices per worker: {dict(per_worker)}"
    stats = deployment.simulator.stats.snapshot()
    assert stats["max_concurrent_observed"] <= POOL_SLOTS and stats["concurrency_rejections"] == 0, stats
    _check_bucket(deployment)


def test_a_slice_whose_worker_is_killed_is_retried_on_the_other(deployment: Deployment) -> None:
    airflow, gcs = deployment.airflow, deployment.gcs
    gcs.delete_all_objects(BUCKET)
    deployment.simulator.faults.response_delay_seconds = 1.5  # slices long enough to be caught running
    run_id = airflow.trigger(DAG_ID, None)["dag_run_id"]
    running: list[dict[str, Any]] = []

    def a_slice_runs() -> bool:
        running[:] = [ti for ti in _slices(deployment, run_id) if ti["state"] == "running" and ti["hostname"]]
        return bool(running)

    airflow.wait_until("a slice running on a worker", a_slice_runs, RUN_DEADLINE_S, poll_s=0.3)
    victim = running[0]
    killed = airflow.worker_named(victim["hostname"])
    airflow.kill_worker(killed)
    deployment.simulator.faults.response_delay_seconds = 0.3
    _finished(deployment, run_id)

    tries = airflow.task_instance_tries(DAG_ID, run_id, SLICES_TASK, map_index=victim["map_index"])
    assert [t["try_number"] for t in tries][:2] == [1, 2], tries
    assert tries[0]["hostname"] == victim["hostname"]
    (survivor,) = set(WORKERS) - {killed}
    assert tries[-1]["state"] == "success" and airflow.worker_named(tries[-1]["hostname"]) == survivor
    _check_bucket(deployment)
