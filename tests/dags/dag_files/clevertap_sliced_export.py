"""The DAG of the distributed export test (``tests/dags/test_celery_export.py``).

``clevertap_sliced_export``: three events over four days, one slice per event and day (12 mapped
tasks) and the manifest step, as :class:`~ct_airflow_provider.task_groups.CleverTapExportTaskGroup`
builds them. The test sets the last day (``CT_SLICED_LAST_DAY``, the simulator's yesterday).
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.providers.common.compat.sdk import DAG

from ct_airflow_provider.task_groups import CleverTapExportTaskGroup

EVENTS = ["Charged", "App Launched", "Product Viewed"]
DAYS = 4
LAST_DAY = dt.date.fromisoformat(
    os.environ.get("CT_SLICED_LAST_DAY")
    or (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()
)

with DAG(
    dag_id="clevertap_sliced_export",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["clevertap", "export", "test"],
):
    CleverTapExportTaskGroup(
        "export",
        events=EVENTS,
        from_date=(LAST_DAY - dt.timedelta(days=DAYS - 1)).isoformat(),
        to_date=LAST_DAY.isoformat(),
        export_format="json",
        max_file_bytes=16 * 1024,
        object_prefix="sliced/",
        retries=2,
        retry_delay=dt.timedelta(seconds=2),
    )
