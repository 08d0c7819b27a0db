r"""
### CleverTap events to GCS — recurring every 4 hours

The *Recurring* export of CleverTap's dialog: each run exports one 4-hour window of the schedule,
exactly the events whose `ts` falls in it (in the account's time zone), so consecutive runs export
every event once, with no gap and no duplicate. Change `EVERY_HOURS` to any value from 4 to 24;
anything else is refused when the DAG is parsed.

Files go to `clevertap/events/` in the bucket, named after the window's start: the scheduled run, a
retry, a backfill or a run triggered by hand of the same window write the same objects and replace
each other. **Trigger** by hand exports the latest window that had ended at the logical date you
give (or now), and its log says which.

**Backfill** the last 60 days (runs share the `clevertap_api` pool, 3 slots: CleverTap's limit of 3
concurrent requests per account; a paused DAG's backfill runs stay queued):

```bash
airflow pools set clevertap_api 3 "CleverTap: at most 3 concurrent requests per account"
airflow dags unpause clevertap_recurring_events
airflow backfill create --dag-id clevertap_recurring_events \
    --from-date "$(date -u -d '-59 days' +%F)" --to-date "$(date -u +%F)" \
    --reprocess-behavior completed --max-active-runs 3
```

Re-running a window rewrites the same objects and removes leftovers of the earlier attempt; a window
older than 60 days fails at once with a message saying so. See the README for the details.

Set `START_DATE` to the day you deploy, at midnight (it fixes the grid of windows): with catch-up
on, windows missed while the scheduler was down are exported when it comes back, so recurring
exports have no gaps.

`clevertap_daily_reconciliation` checks each whole day (account time zone) once its windows are
exported: it sums the records of the day's windows per event, compares them with CleverTap's own
counts and writes `<request id>-reconciliation-<yyyymmdd>.json` beside them. A day "short by k" got
late events after its windows ran (offline devices upload late): backfill that day's windows and
clear the day's reconciliation run.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.common.compat.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable

from ct_airflow_provider.operators import CleverTapEventsToGCSOperator, CleverTapReconcileOperator

EVERY_HOURS = 4
#: When recurring exports begin: older windows are for an explicit backfill (within 60 days).
START_DATE = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)

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

with DAG(
    dag_id="clevertap_daily_reconciliation",
    # Each morning, the day before (in the account's time zone) against CleverTap's counts.
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=True,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["clevertap", "export", "recurring", "reconciliation"],
):
    CleverTapReconcileOperator(
        task_id="reconcile_day",
        export_dag_id="clevertap_recurring_events",
        export_task_id="export_events",
        object_prefix="clevertap/events/",
        pool="clevertap_api",
        # A window of the day may still be running (or waiting for a retry): look again later.
        retries=3,
        retry_delay=dt.timedelta(hours=1),
    )
