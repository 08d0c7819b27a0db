"""What the event and profile export operators share: parameters, the window, names, lineage."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from ct_airflow_provider.export.errors import ExportConfigError
from ct_airflow_provider.export.formats import validate_format
from ct_airflow_provider.export.job import ExportResult, ExportRun, ExportSpec
from ct_airflow_provider.export.naming import ExportNaming
from ct_airflow_provider.export.windows import (
    ExportWindow,
    ExportWindowError,
    check_recurring_interval,
    once_only_window,
    recurring_window,
)
from ct_airflow_provider.hooks.clevertap import (
    CleverTapAuthError,
    CleverTapConfigError,
    CleverTapHook,
    EventExportNotAllowedError,
)
from ct_airflow_provider.hooks.gcs import BucketConnectionError, CleverTapGCSHook, get_bucket_hook

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024

#: Failures a retry cannot mend (a window CleverTap no longer holds, a bad setting, refused
#: credentials): the task fails at once instead of spending its retries on them.
NOT_RETRYABLE = (
    ExportWindowError,
    ExportConfigError,
    BucketConnectionError,
    CleverTapConfigError,
    CleverTapAuthError,
    EventExportNotAllowedError,
)
#: The Airflow pool that keeps a whole deployment within CleverTap's 3 concurrent requests.
CLEVERTAP_POOL = "clevertap_api"


def schedule_interval(timetable: Any) -> dt.timedelta | None:
    """The length of each run's data interval for timetables that have a fixed one, else ``None``.

    Airflow has no public accessor for it, so each known timetable is asked where it keeps it.
    Trigger timetables (what plain cron and timedelta schedules become in Airflow 3) have an
    interval of zero unless one is given: their runs have empty data intervals.
    """
    name = type(timetable).__name__
    if name == "DeltaDataIntervalTimetable":
        delta = getattr(timetable, "_delta", None)
        return delta if isinstance(delta, dt.timedelta) else None
    if name in {"CronTriggerTimetable", "DeltaTriggerTimetable", "MultipleCronTriggerTimetable"}:
        interval = getattr(timetable, "_interval", dt.timedelta(0))
        return interval if isinstance(interval, dt.timedelta) else None
    if name == "CronDataIntervalTimetable" and hasattr(timetable, "_get_next"):
        # A cron's intervals can differ ("0 0,4 * * *"): a day's worth of them must all be allowed.
        moment = timetable._get_next(dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
        gaps: list[dt.timedelta] = []
        for _ in range(8):
            following = timetable._get_next(moment)
            gaps.append(following - moment)
            moment = following
        shortest, longest = min(gaps), max(gaps)
        return shortest if shortest < dt.timedelta(hours=4) else longest
    return None


class _CleverTapToGCSBase(BaseOperator):
    template_fields: Sequence[str] = (
        "clevertap_conn_id",
        "gcs_conn_id",
        "from_date",
        "to_date",
        "export_format",
        "request_id",
        "object_prefix",
    )
    #: CleverTap requests an export keeps in flight (profiles: one stream; the events operator lets users choose).
    concurrent_requests = 1
    ui_color = "#e8f0fe"
    ui_fgcolor = "#1a1a1a"

    def __init__(
        self,
        *,
        clevertap_conn_id: str = CleverTapHook.default_conn_name,
        gcs_conn_id: str = CleverTapGCSHook.default_conn_name,
        from_date: str | dt.date | None = None,
        to_date: str | dt.date | None = None,
        export_format: str = "json",
        compression: str | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        database_id: int = 0,
        request_id: str | None = None,
        object_prefix: str = "",
        work_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.clevertap_conn_id = clevertap_conn_id
        self.gcs_conn_id = gcs_conn_id
        self.from_date = from_date
        self.to_date = to_date
        self.export_format = export_format
        self.compression = compression
        self.max_file_bytes = max_file_bytes
        self.database_id = database_id
        self.request_id = request_id
        self.object_prefix = object_prefix
        self.work_dir = work_dir
        self._result: ExportResult | None = None
        self._check_arguments()

    # -- checks that need no connection: at DAG parse time ---------------------------------------
    def _check_arguments(self) -> None:
        if not _is_template(self.export_format):
            validate_format(self.export_format, self.compression)
        if self.max_file_bytes < 1024:
            raise ValueError(
                f"max_file_bytes={self.max_file_bytes} is too small: give at least 1024 bytes "
                "(CleverTap's own limit is 100 MB, the default)."
            )
        if int(self.database_id) < 0:
            raise ValueError(f"database_id={self.database_id} must be 0 or more (CleverTap's instance id).")
        if (self.from_date is None) != (self.to_date is None):
            raise ValueError(
                "Give both from_date and to_date for a once-only export, or neither for a recurring export "
                "that covers each DAG run's data interval."
            )
        if self.from_date is None and self.has_dag():  # type: ignore[no-untyped-call]
            interval = schedule_interval(self.dag.timetable)
            if interval is not None:
                try:
                    check_recurring_interval(interval)
                except ExportWindowError as error:
                    raise ValueError(f"DAG {self.dag.dag_id!r}, task {self.task_id!r}: {error}") from None

    # -- at run time --------------------------------------------------------------------------------
    def _window(self, context: Context, hook: CleverTapHook) -> ExportWindow:
        now = dt.datetime.now(dt.UTC)
        if self.from_date is not None and self.to_date is not None:
            return once_only_window(self.from_date, self.to_date, today=now.astimezone(hook.timezone).date())
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None:
            raise ExportWindowError(
                "This run has no data interval (a manual run without a logical date) and the task has no "
                "from_date/to_date: give the dates, or trigger the DAG with a logical date."
            )
        return recurring_window(start, end, hook.timezone, now=now)

    def _naming(self, context: Context) -> ExportNaming:
        ti = context["ti"]
        dag_run = context["dag_run"]
        # Both derive from the DAG run, so a retry or a cleared task writes the same object names.
        request_id = (
            str(self.request_id)
            if self.request_id
            else _derived_request_id(ti.dag_id, ti.task_id, ti.map_index)
        )
        moment = dag_run.logical_date or dag_run.run_after
        return ExportNaming(
            request_id=request_id,
            run_timestamp=int(moment.timestamp()),
            database_id=int(self.database_id),
            prefix=self.object_prefix,
        )

    def _run(self, context: Context) -> tuple[ExportRun, CleverTapHook]:
        clevertap = CleverTapHook(clevertap_conn_id=self.clevertap_conn_id)
        bucket = get_bucket_hook(self.gcs_conn_id)
        export_format, compression = validate_format(self.export_format, self.compression)
        window = self._window(context, clevertap)
        spec = ExportSpec(
            naming=self._naming(context),
            window=window,
            export_format=export_format,
            compression=compression,
            max_file_bytes=self.max_file_bytes,
        )
        self.log.info(
            "Exporting %s as %s to gs://%s (%s), request %s, run timestamp %s",
            window.describe(), self.export_format, bucket.bucket_name, bucket.bucket_nickname,
            spec.naming.request_id, spec.naming.run_timestamp,
        )  # fmt: skip
        work_dir = Path(self.work_dir) if self.work_dir else None
        run = ExportRun(
            spec,
            bucket,
            self.log,  # type: ignore[arg-type]
            work_dir=work_dir,
            concurrent_requests=self.concurrent_requests,
        )
        return run, clevertap

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            self._result = self._export(context)
        except NOT_RETRYABLE as error:
            raise AirflowFailException(str(error)) from error
        return self._result.summary()

    def _export(self, context: Context) -> ExportResult:
        raise NotImplementedError

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: CleverTap as input, every file written as an output dataset."""
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:  # the OpenLineage provider is optional
            return None
        if self._result is None:
            return OperatorLineage()
        namespace = f"gs://{self._result.bucket}"
        return OperatorLineage(
            inputs=[Dataset(namespace="clevertap", name=self.clevertap_conn_id)],
            outputs=[Dataset(namespace=namespace, name=f.object_name) for f in self._result.files],
        )


def _is_template(value: object) -> bool:
    return isinstance(value, str) and "{{" in value


def _derived_request_id(dag_id: str, task_id: str, map_index: int | None) -> str:
    """A 10-digit id (CleverTap's are epoch-second sized) stable for one task, distinct between tasks."""
    digest = hashlib.sha256(
        f"{dag_id}\x00{task_id}\x00{map_index if map_index not in (None, -1) else ''}".encode()
    )
    return str(int.from_bytes(digest.digest()[:8], "big") % 9_000_000_000 + 1_000_000_000)
