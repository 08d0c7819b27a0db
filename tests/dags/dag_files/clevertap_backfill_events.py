"""A thin variant of ``dags/clevertap_recurring_events.py`` for the backfill test's own Airflow.

What matches the shipped DAG, because the test is about it: the operator in recurring mode (no
from_date/to_date, so each run exports its data interval), ``DeltaDataIntervalTimetable`` of 4 hours,
the ``clevertap_api`` pool, ``max_active_runs=3``, two retries, Parquet, the default connection ids.

What differs, and why:

* Two named events instead of all user events: small windows keep the test within minutes.
* ``start_date`` lies in the future and ``catchup`` is off, so unpausing the DAG schedules nothing:
  every run in the test deployment comes from ``airflow backfill create``.
* ``retry_delay`` is seconds instead of 5 minutes, so a refused window reaches its final state quickly.
* Two DAG ids from one definition: ``clevertap_backfill_events`` for the 3-day backfill and
  ``clevertap_backfill_edge`` for the windows at the 60-day edge (Airflow allows one running backfill
  per DAG, and each writes under its own prefix).
* ``clevertap_recurring_mixed`` is scheduled as the shipped DAG is (catch-up on, from yesterday's
  midnight UTC), so the scheduler runs its windows once the test unpauses it, and the test adds runs
  triggered by hand and a backfill over the same windows. Its exports keep one request in flight
  (one pool slot each), so that runs of one window can overlap and the claim must keep them apart;
  the others use CleverTap's whole budget (the pool's 3 slots), as the shipped DAG does.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.common.compat.sdk import DAG
from airflow.timetables.interval import DeltaDataIntervalTimetable

from ct_airflow_provider.operators import CleverTapEventsToGCSOperator
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS

EVERY_HOURS = 4
EVENTS = ["Charged", "App Launched"]

# Airflow 2's backfill runs no task before its start_date; there no scheduler runs in the test.
NOT_BEFORE = (
    dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
    if AIRFLOW_V_3_0_PLUS
    else dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
)
YESTERDAY = dt.datetime.now(dt.timezone.utc).replace(
    hour=0, minute=0, second=0, microsecond=0
) - dt.timedelta(days=1)

for dag_id, start_date, catchup in (
    ("clevertap_backfill_events", NOT_BEFORE, False),
    ("clevertap_backfill_edge", NOT_BEFORE, False),
    ("clevertap_recurring_mixed", YESTERDAY, True),
):
    with DAG(
        dag_id=dag_id,
        schedule=DeltaDataIntervalTimetable(dt.timedelta(hours=EVERY_HOURS)),
        start_date=start_date,
        catchup=catchup,
        # The test unpauses the scheduled DAG when its turn comes, so it does not compete with the backfills.
        is_paused_upon_creation=catchup,
        max_active_runs=3,
        tags=["clevertap", "export", "recurring", "test"],
    ) as dag:
        CleverTapEventsToGCSOperator(
            task_id="export_events",
            clevertap_conn_id="clevertap_default",
            gcs_conn_id="clevertap_gcs_default",
            events=EVENTS,
            export_format="parquet",
            object_prefix=f"{dag_id}/",
            pool="clevertap_api",
            concurrent_requests=1 if catchup else 3,
            retries=2,
            retry_delay=dt.timedelta(seconds=2),
        )
    globals()[dag_id] = dag
