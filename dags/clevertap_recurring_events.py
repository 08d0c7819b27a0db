"""
### CleverTap events to GCS — recurring every 4 hours

The *Recurring* export of CleverTap's dialog: each run exports exactly the events whose `ts` falls in
its data interval (in the account's time zone), so consecutive runs export every event once, with no
gap and no duplicate. Change `EVERY_HOURS` to any value from 4 to 24; anything else is refused when
the DAG is parsed.

**Backfill** the last 60 days (runs share the `clevertap_api` pool, 3 slots: CleverTap's limit of 3
concurrent requests per account; a paused DAG's backfill runs stay queued):

    airflow pools set clevertap_api 3 "CleverTap: at most 3 concurrent requests per account"
    airflow dags unpause clevertap_recurring_events
    airflow backfill create --dag-id clevertap_recurring_events \
        --from-date "$(date -u -d '-59 days' +%F)" --to-date "$(date -u +%F)" \
        --reprocess-behavior completed --max-active-runs 3

Re-running a window rewrites the same objects and removes leftovers of the earlier attempt; a window
older than 60 days fails at once with a message saying so. See the README for the details.

Set `START_DATE` to the day you deploy: with catch-up on, windows missed while the scheduler was
down are exported when it comes back, so recurring exports have no gaps.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.common.compat.sdk import DAG
from airflow.timetables.interval import DeltaDataIntervalTimetable

from ct_airflow_provider.operators import CleverTapEventsToGCSOperator

EVERY_HOURS = 4
#: When recurring exports begin: older windows are for an explicit backfill (within 60 days).
START_DATE = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)

with DAG(
    dag_id="clevertap_recurring_events",
    schedule=DeltaDataIntervalTimetable(dt.timedelta(hours=EVERY_HOURS)),
    start_date=START_DATE,
    catchup=True,
    max_active_runs=3,
    doc_md=__doc__,
    tags=["clevertap", "export", "recurring"],
) as dag:
    CleverTapEventsToGCSOperator(
        task_id="export_events",
        clevertap_conn_id="clevertap_default",
        gcs_conn_id="clevertap_gcs_default",
        events=None,
        export_format="parquet",
        object_prefix="clevertap/events/",
        pool="clevertap_api",
        retries=2,
        retry_delay=dt.timedelta(minutes=5),
    )
