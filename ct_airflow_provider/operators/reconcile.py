"""Check one day of a recurring export against CleverTap's own counts of that day."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from ct_airflow_provider.export.naming import check_prefix
from ct_airflow_provider.export.reconcile import (
    DayNotCoveredError,
    ReconciliationError,
    exported_on_day,
    reconcile,
)
from ct_airflow_provider.export.windows import ExportWindowError, once_only_window
from ct_airflow_provider.hooks.clevertap import CleverTapHook
from ct_airflow_provider.hooks.gcs import CleverTapGCSHook, get_bucket_hook
from ct_airflow_provider.operators._base import derived_request_id

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: ``fail``: a difference fails the task; ``warn``: it is logged and recorded only.
ON_MISMATCH = ("fail", "warn")


class CleverTapReconcileOperator(BaseOperator):
    """
    Compare the records a recurring export wrote for one day with CleverTap's count of that day.

    Recurring windows cut days into parts, so a day is checked once all its windows are exported:
    the operator reads the manifests of the export's windows from the bucket, sums their records
    per event for the day (in the account's time zone) and asks CleverTap's counts API for the same
    event and day. It writes ``<prefix><request id>-reconciliation-<yyyymmdd>.json`` beside the
    exports, and fails (or warns) naming each event that differs and by how much. CleverTap keeps
    receiving late events after a day ends: a day "short by k" is mended by exporting its windows
    again (a backfill), which replaces their files.

    :param export_task_id: the task id of the recurring export.
    :param export_dag_id: its DAG (default: this task's DAG). Together they give the request id.
    :param request_id: the export's request id, if it was set explicitly. (templated)
    :param day: the day to check, ``YYYY-MM-DD``; default: the last whole day (account time zone)
        before this run's data interval end. (templated)
    :param events: the events to check; default: every event CleverTap lists, minus those the
        export skipped. (templated)
    :param object_prefix: the export's ``object_prefix``. (templated)
    :param on_mismatch: ``"fail"`` (default) or ``"warn"``.
    :param clevertap_conn_id: the ``clevertap`` connection. (templated)
    :param gcs_conn_id: the ``clevertap_gcs`` connection of the bucket. (templated)
    """

    template_fields: Sequence[str] = (
        "request_id",
        "day",
        "events",
        "object_prefix",
        "clevertap_conn_id",
        "gcs_conn_id",
    )
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        export_task_id: str | None = None,
        export_dag_id: str | None = None,
        request_id: str | None = None,
        day: str | dt.date | None = None,
        events: list[str] | None = None,
        object_prefix: str = "",
        on_mismatch: str = "fail",
        clevertap_conn_id: str = CleverTapHook.default_conn_name,
        gcs_conn_id: str = CleverTapGCSHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not export_task_id and not request_id:
            raise ValueError(
                f"{self.task_id}: name the recurring export, by export_task_id (and export_dag_id if it "
                "runs in another DAG) or by its request_id."
            )
        if on_mismatch not in ON_MISMATCH:
            raise ValueError(f"on_mismatch={on_mismatch!r}: choose 'fail' or 'warn'.")
        self.export_task_id = export_task_id
        self.export_dag_id = export_dag_id
        self.request_id = request_id
        self.day = day
        self.events = events
        self.object_prefix = object_prefix
        self.on_mismatch = on_mismatch
        self.clevertap_conn_id = clevertap_conn_id
        self.gcs_conn_id = gcs_conn_id

    def _day(self, context: Context, hook: CleverTapHook) -> dt.date:
        today = dt.datetime.now(hook.timezone).date()
        if self.day:
            return once_only_window(self.day, self.day, today=today).first_day
        end = context.get("data_interval_end") or dt.datetime.now(dt.timezone.utc)
        return end.astimezone(hook.timezone).date() - dt.timedelta(days=1)

    def execute(self, context: Context) -> dict[str, Any]:
        clevertap = CleverTapHook(clevertap_conn_id=self.clevertap_conn_id)
        bucket = get_bucket_hook(self.gcs_conn_id)
        try:
            day = self._day(context, clevertap)
        except ExportWindowError as error:
            raise AirflowFailException(str(error)) from error
        request_id = self.request_id or derived_request_id(
            self.export_dag_id or self.dag_id, str(self.export_task_id), None
        )
        prefix = check_prefix(self.object_prefix)
        manifests = [
            orjson.loads(bucket.read_object(name))
            for name in bucket.list_objects(f"{prefix}{request_id}-")
            if name.endswith("-manifest.json")
        ]
        try:
            exported, windows = exported_on_day(manifests, day)
        except DayNotCoveredError as error:
            raise RuntimeError(f"Request {request_id}: {error}") from error  # a retry may find it done
        skipped = {name for manifest in manifests for name in manifest.get("skipped_events", {})}
        events = (
            list(self.events)
            if self.events
            else [name for name in clevertap.list_event_names() if name not in skipped]
        )
        key = f"{day:%Y%m%d}"
        found = reconcile(clevertap, {event: {key: n} for event, n in exported.items()}, events, [day])
        document = {
            "request_id": request_id,
            "day": key,
            "windows": windows,
            "reconciliation": found.as_manifest(),
            "reconciled": found.reconciled,
            "checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        object_name = f"{prefix}{request_id}-reconciliation-{key}.json"
        bucket.upload_bytes(
            orjson.dumps(document, option=orjson.OPT_INDENT_2), object_name, "application/json"
        )
        if found.reconciled:
            self.log.info(
                "%s: the %d windows of request %s match CleverTap's counts for %d events (gs://%s/%s)",
                day, len(windows), request_id, len(events), bucket.bucket_name, object_name,
            )  # fmt: skip
            return document
        message = (
            f"{day} of request {request_id} differs from CleverTap's own counts: {found.describe_mismatches()}. "
            "If the export is short, CleverTap has received events for that day after its windows were exported "
            "(offline devices upload late): export the day's windows again (a backfill), which replaces their "
            "files, and check again."
        )
        if self.on_mismatch == "fail":
            raise ReconciliationError(message)
        self.log.warning(message)
        return document
