r"""
### CleverTap events to GCS — once only

The *Once only* export of CleverTap's dialog: all user events or selected events, for a specific day,
a date range, yesterday, the previous month or the current month — any range inside the last 60 days
of the account's time zone — as JSON, CSV, XML or Parquet, into `clevertap/events/` in the bucket of
a `clevertap_gcs` connection.

Trigger it with **Trigger DAG** and fill in the form. Files land as
`<request id>-<run timestamp>-<event name>-<yyyymmdd>-<file index>-<database id>.<ext>`, at most
100 MB each, and `<request id>-<run timestamp>-manifest.json` is written last. The task's XCom
lists every file, the records per event and day, and the events skipped. From the command line:

```bash
airflow dags trigger clevertap_once_only_events \
    --conf '{"range": "specific_day", "day": "2026-11-30", "export_format": "csv"}'
```
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from ct_airflow_provider.export.windows import RANGE_PRESETS
from ct_airflow_provider.operators import CleverTapEventsToGCSOperator

with DAG(
    dag_id="clevertap_once_only_events",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["clevertap", "export"],
    # The selected events reach the operator as a list, whatever characters the names hold.
    render_template_as_native_obj=True,
    params={
        "event_type": Param(
            "all",
            enum=["all", "selected"],
            title="Type",
            description="All user events, or the events listed below.",
        ),
        "events": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Selected events",
            description="Event names, one per line, when Type is 'selected'.",
        ),
        "range": Param("yesterday", enum=list(RANGE_PRESETS), title="Range"),
        "day": Param(None, type=["null", "string"], format="date", title="Day (specific_day)"),
        "from_date": Param(None, type=["null", "string"], format="date", title="From (date_range)"),
        "to_date": Param(None, type=["null", "string"], format="date", title="To (date_range, inclusive)"),
        "export_format": Param("json", enum=["json", "csv", "xml", "parquet"], title="Format"),
        "gcs_conn_id": Param(
            "clevertap_gcs_default",
            type="string",
            title="Bucket connection",
            description="A 'CleverTap GCS bucket' connection.",
        ),
        "clevertap_conn_id": Param("clevertap_default", type="string", title="CleverTap connection"),
    },
) as dag:

    @task
    def resolve_range(params: dict[str, Any]) -> dict[str, str]:
        """Turn the chosen range into dates in the account's time zone, refusing what CleverTap cannot export."""
        import datetime as dt

        from ct_airflow_provider.export.windows import preset_range
        from ct_airflow_provider.hooks.clevertap import CleverTapHook

        today = dt.datetime.now(CleverTapHook(params["clevertap_conn_id"]).timezone).date()
        first, last = preset_range(
            params["range"],
            today=today,
            day=params["day"],
            from_date=params["from_date"],
            to_date=params["to_date"],
        )
        return {"from_date": first.isoformat(), "to_date": last.isoformat()}

    dates = resolve_range()
    export = CleverTapEventsToGCSOperator(
        task_id="export_events",
        clevertap_conn_id="{{ params.clevertap_conn_id }}",
        gcs_conn_id="{{ params.gcs_conn_id }}",
        events="{{ params.events if params.event_type == 'selected' else None }}",
        from_date=dates["from_date"],
        to_date=dates["to_date"],
        export_format="{{ params.export_format }}",
        object_prefix="clevertap/events/",
        pool="clevertap_api",
    )
