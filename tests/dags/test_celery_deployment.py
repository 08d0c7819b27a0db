"""A distributed Airflow deployment: CeleryExecutor, two workers, PostgreSQL and Redis, all real.

The deployment (``run_airflow_deployment(executor="CeleryExecutor")``: api-server, scheduler,
dag-processor and two ``airflow celery worker`` processes, PostgreSQL for metadata and Celery's
results, Redis as broker) runs the DAGs of ``dag_files/celery_deployment.py``:

* eight mapped tasks are shared by both workers (each task instance records its worker's hostname);
* a task whose worker is killed mid-run (SIGKILL, as a lost machine) is noticed through its missing
  heartbeats and retried on the other worker, where it succeeds.

The second test kills a worker, so it comes last. Airflow 3 only; it runs in the full suite on
Airflow 3.3, not in the version matrix.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS
from tests.dags.airflow_deployment import CELERY_EXECUTOR, AirflowDeployment, run_airflow_deployment

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the Celery deployment runs Airflow 3's workers"),
]

DAG_FILE = Path(__file__).parent / "dag_files" / "celery_deployment.py"
FAN_OUT_DAG = "celery_fan_out"
FAN_OUT_TASK = "sleep_a_little"
FAN_OUT_TASKS = 8
LOST_WORKER_DAG = "celery_lost_worker"
LONG_TASK = "outlive_a_worker"
WORKERS = ("worker-1", "worker-2")
RUN_DEADLINE_S = 180.0
#: The first try must start (a worker forks a supervisor and a task process on 2 busy cores).
RUNNING_DEADLINE_S = 90.0


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDeployment]:
    if importlib.util.find_spec("airflow.providers.celery") is None:
        pytest.fail(
            "apache-airflow-providers-celery is not installed: it is in pyproject.toml's dev group; "
            "run `make env` (or sync requirements.lock) and run the tests again"
        )
    home = tmp_path_factory.mktemp("airflow-celery-home")
    with run_airflow_deployment(
        home, [DAG_FILE], executor=CELERY_EXECUTOR, celery_workers=len(WORKERS), worker_concurrency=2
    ) as deployment:
        assert sorted(deployment.worker_hostnames) == list(WORKERS)
        for dag_id in (FAN_OUT_DAG, LOST_WORKER_DAG):
            deployment.wait_for_dag(dag_id)
        yield deployment


def _run_to_success(airflow: AirflowDeployment, dag_id: str, run_id: str) -> None:
    (run,) = airflow.wait_for_runs(dag_id, {run_id}, RUN_DEADLINE_S)
    assert run["state"] == "success", (
        f"run {run_id} of {dag_id} ended {run['state']}; see the logs in {airflow.home}"
    )


def test_mapped_tasks_run_on_both_workers(airflow: AirflowDeployment) -> None:
    run_id = airflow.trigger(FAN_OUT_DAG, None)["dag_run_id"]
    _run_to_success(airflow, FAN_OUT_DAG, run_id)

    mapped = [ti for ti in airflow.task_instances(FAN_OUT_DAG) if ti["task_id"] == FAN_OUT_TASK]
    assert sorted(ti["map_index"] for ti in mapped) == list(range(FAN_OUT_TASKS))
    assert {ti["state"] for ti in mapped} == {"success"}
    per_worker = Counter(airflow.worker_named(ti["hostname"]) for ti in mapped)
    assert set(per_worker) == set(WORKERS), f"tasks per worker: {dict(per_worker)}"


def _running_try(airflow: AirflowDeployment, dag_id: str, task_id: str) -> dict[str, Any]:
    """Wait until the task instance runs on a worker (its hostname recorded); returns it."""
    found: list[dict[str, Any]] = []

    def running() -> bool:
        found[:] = [
            ti
            for ti in airflow.task_instances(dag_id)
            if ti["task_id"] == task_id and ti["state"] == "running" and ti["hostname"]
        ]
        return bool(found)

    airflow.wait_until(f"{dag_id}.{task_id} running on a worker", running, RUNNING_DEADLINE_S, poll_s=0.5)
    return found[0]


def test_task_of_a_killed_worker_is_retried_on_the_other(airflow: AirflowDeployment) -> None:
    run_id = airflow.trigger(LOST_WORKER_DAG, None)["dag_run_id"]
    first = _running_try(airflow, LOST_WORKER_DAG, LONG_TASK)
    assert first["try_number"] == 1
    killed = airflow.worker_named(first["hostname"])

    airflow.kill_worker(killed)
    _run_to_success(airflow, LOST_WORKER_DAG, run_id)

    tries = airflow.task_instance_tries(LOST_WORKER_DAG, run_id, LONG_TASK)
    assert [t["try_number"] for t in tries] == [1, 2]
    assert tries[0]["hostname"] == first["hostname"]
    assert tries[0]["state"] in ("failed", "up_for_retry"), tries[0]
    (survivor,) = set(WORKERS) - {killed}
    assert tries[1]["state"] == "success"
    assert airflow.worker_named(tries[1]["hostname"]) == survivor
    (final,) = [ti for ti in airflow.task_instances(LOST_WORKER_DAG) if ti["task_id"] == LONG_TASK]
    assert (final["try_number"], final["hostname"]) == (2, airflow.worker_hostnames[survivor])
