"""DAGs for the Celery deployment test (``tests/dags/test_celery_deployment.py``): no CleverTap, no GCS.

* ``celery_fan_out``: eight mapped tasks of a couple of seconds each, more than one worker runs at
  once, so both workers of the deployment get some.
* ``celery_lost_worker``: one long task with a retry; the test kills the worker running it, and
  the retry must run on the other worker.

Neither is scheduled (``schedule=None``): every run is triggered by the test.
"""

from __future__ import annotations

import datetime as dt
import time

from airflow.providers.common.compat.sdk import DAG, task

#: Mapped tasks of the fan-out DAG, and how long each sleeps.
FAN_OUT_TASKS = 8
FAN_OUT_SLEEP_S = 2.0
#: Long enough for the test to see the task running and kill its worker well before it ends.
LONG_TASK_SLEEP_S = 40.0
START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)

with DAG(dag_id="celery_fan_out", schedule=None, start_date=START, catchup=False, tags=["test"]):

    @task
    def slice_numbers() -> list[int]:
        return list(range(FAN_OUT_TASKS))

    @task
    def sleep_a_little(number: int) -> int:
        time.sleep(FAN_OUT_SLEEP_S)
        return number

    sleep_a_little.expand(number=slice_numbers())


with DAG(dag_id="celery_lost_worker", schedule=None, start_date=START, catchup=False, tags=["test"]):

    @task(retries=1, retry_delay=dt.timedelta(seconds=2))
    def outlive_a_worker() -> None:
        time.sleep(LONG_TASK_SLEEP_S)

    outlive_a_worker()
