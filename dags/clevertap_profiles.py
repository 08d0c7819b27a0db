r"""
### CleverTap user properties (profiles) to GCS — recurring and one time

Two DAGs, as CleverTap's dialog offers them, both writing to `clevertap/profiles/` in the bucket:

* `clevertap_recurring_profiles` exports every profile active in each 24-hour window, each once.
* `clevertap_one_time_profiles` exports the profiles active in a chosen range. CleverTap requires the
  recurring profile export to be stopped first: its first task waits (in reschedule mode, holding no
  worker slot) while a run of `clevertap_recurring_profiles` is queued or running, and times out
  naming it.

To run a one-time export, pause the recurring DAG so no new run starts:

```bash
airflow dags pause clevertap_recurring_profiles
```

Pausing does not end a run that is already queued or running: a paused DAG's runs never finish. Mark
such a run failed in the UI (Dag run > Mark run as > Failed), or unpause the DAG until it has
finished, then pause it again.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.common.compat.sdk import DAG, Param
from airflow.timetables.interval import DeltaDataIntervalTimetable

from ct_airflow_provider.operators import CleverTapProfilesToGCSOperator
from ct_airflow_provider.sensors import RecurringProfileExportSensor

RECURRING_DAG_ID = "clevertap_recurring_profiles"
#: When recurring profile exports begin (set it to the day you deploy).
START_DATE = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)

with DAG(
    dag_id=RECURRING_DAG_ID,
    schedule=DeltaDataIntervalTimetable(dt.timedelta(hours=24)),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["clevertap", "export", "profiles", "recurring"],
):
    CleverTapProfilesToGCSOperator(
        task_id="export_profiles",
        export_format="json",
        object_prefix="clevertap/profiles/",
        pool="clevertap_api",
        retries=2,
    )

with DAG(
    dag_id="clevertap_one_time_profiles",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["clevertap", "export", "profiles"],
    params={
        "from_date": Param(
            (dt.date.today() - dt.timedelta(days=1)).isoformat(), type="string", format="date", title="From"
        ),
        "to_date": Param(
            (dt.date.today() - dt.timedelta(days=1)).isoformat(), type="string", format="date", title="To"
        ),
        "export_format": Param("json", enum=["json", "csv", "xml", "parquet"], title="Format"),
    },
):
    wait = RecurringProfileExportSensor(
        task_id="wait_for_recurring_profile_export",
        recurring_dag_ids=[RECURRING_DAG_ID],
        poke_interval=60,
        timeout=6 * 3600,
    )
    export = CleverTapProfilesToGCSOperator(
        task_id="export_profiles",
        from_date="{{ params.from_date }}",
        to_date="{{ params.to_date }}",
        export_format="{{ params.export_format }}",
        object_prefix="clevertap/profiles/",
        pool="clevertap_api",
    )
    wait >> export
