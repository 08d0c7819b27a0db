"""What the event and profile export operators share: parameters, the window, names, lineage."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from ct_airflow_provider.config import export_tuning_from_config
from ct_airflow_provider.export.chunking import DEFAULT_MAX_FILE_BYTES
from ct_airflow_provider.export.errors import ExportConfigError
from ct_airflow_provider.export.formats import validate_format
from ct_airflow_provider.export.job import (
    DEFAULT_CONCURRENT_REQUESTS,
    ExportResult,
    ExportRun,
    ExportSpec,
    check_concurrent_requests,
)
from ct_airflow_provider.export.naming import ExportNaming
from ct_airflow_provider.export.windows import (
    ExportWindow,
    ExportWindowError,
    check_recurring_interval,
    once_only_window,
    recurring_window,
)
from ct_airflow_provider.export.writer import MIN_MAX_FILE_BYTES
from ct_airflow_provider.hooks.clevertap import (
    CleverTapAuthError,
    CleverTapConfigError,
    CleverTapHook,
    EventExportNotAllowedError,
)
from ct_airflow_provider.hooks.gcs import BucketConnectionError, CleverTapGCSHook, get_bucket_hook
from ct_airflow_provider.operators._schedule import latest_window, schedule_interval

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

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


class _CleverTapToGCSBase(BaseOperator):
    """
    What the event and profile exports share: the window, the files' format, size and names.

    With ``from_date`` and ``to_date`` the export is *once only*: those days (inclusive, within the
    last 60 days of the account's time zone). Without them it is *recurring*: each run exports
    exactly the records whose ``ts`` falls in its data interval, so consecutive runs export every
    record once. Recurring DAGs need a timetable with real intervals of 4 to 24 hours
    (``CronDataIntervalTimetable``, ``DeltaDataIntervalTimetable`` or ``CronTriggerTimetable(..., interval=...)``).
    Process-wide tuning comes from Airflow's ``[clevertap]`` configuration section
    (:mod:`ct_airflow_provider.config`).

    :param clevertap_conn_id: the ``clevertap`` connection (account, passcode, region, time zone). (templated)
    :param gcs_conn_id: the ``clevertap_gcs`` connection of the destination bucket. (templated)
    :param from_date: first day of a once-only export, ``YYYY-MM-DD``. (templated)
    :param to_date: last day of a once-only export, inclusive. (templated)
    :param export_format: ``json`` (default), ``csv``, ``xml`` or ``parquet``. (templated)
    :param compression: ``"gzip"`` for ``.json.gz``, ``.csv.gz`` or ``.xml.gz``; Parquet is always compressed.
    :param max_file_bytes: largest file written (default 100 MB, at least 1,024 bytes); bigger days
        are split into chunks.
    :param database_id: the database id that ends each file name (CleverTap's instance id).
    :param request_id: the export's request id; by default derived from the DAG and task, so it is
        stable across runs and retries and distinct between tasks. (templated)
    :param object_prefix: a folder in the bucket to write under, e.g. ``"clevertap/events/"``. (templated)
    :param work_dir: local scratch folder (default: the system's temporary folder).
    :param concurrent_requests: CleverTap requests the task keeps in flight, 1 to 3 (default 3,
        CleverTap's limit per account). The export's streams (one per event and day) are read that
        many at a time, so CleverTap prepares pages of some while others are written, and a stream
        told to wait backs off alone. The task takes as many slots of its pool (``pool_slots``,
        unless given): a pool of 3 slots (``clevertap_api``) keeps a deployment within the limit,
        however many exports it runs. Each request holds at most one page beyond the ones being
        written.
    :param kwargs: passed to :class:`~airflow.sdk.BaseOperator` (``task_id``, ``pool``, ``retries``...).
    """

    template_fields: Sequence[str] = (
        "clevertap_conn_id",
        "gcs_conn_id",
        "from_date",
        "to_date",
        "export_format",
        "request_id",
        "object_prefix",
    )
    ui_color = "#e8f0fe"
    ui_fgcolor = "#1a1a1a"
    #: Set on the slices of an export split across tasks (see the events operator's ``slice_key``).
    slice_key: str | None = None

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
        concurrent_requests: int = DEFAULT_CONCURRENT_REQUESTS,
        **kwargs: Any,
    ) -> None:
        self.concurrent_requests = check_concurrent_requests(concurrent_requests)
        # Each request in flight takes a pool slot: a pool of 3 slots then caps the deployment at 3.
        kwargs.setdefault("pool_slots", concurrent_requests)
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
        if self.max_file_bytes < MIN_MAX_FILE_BYTES:
            raise ValueError(
                f"max_file_bytes={self.max_file_bytes} is too small: give at least {MIN_MAX_FILE_BYTES} bytes "
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
    def _window(self, context: Context, hook: CleverTapHook) -> tuple[ExportWindow, int]:
        """The window to export and the run timestamp that names its files."""
        now = dt.datetime.now(dt.timezone.utc)
        dag_run = context["dag_run"]
        if self.from_date is not None and self.to_date is not None:
            window = once_only_window(
                self.from_date, self.to_date, today=now.astimezone(hook.timezone).date()
            )
            # Each run of a once-only export is an export of its own.
            return window, int((dag_run.logical_date or dag_run.run_after).timestamp())
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        # A run without a data interval (triggered by hand without a logical date) asks for the latest window.
        until = end or dag_run.run_after or now
        scheduled = latest_window(self.dag.timetable, self.dag.start_date, until)
        if scheduled is None:
            raise ExportWindowError(
                f"DAG {self.dag_id!r} has no recurring schedule, so its runs have no window to export: give "
                "from_date and to_date for a once-only export, or schedule the DAG with 4- to 24-hour windows."
            )
        if (start, end) == (scheduled.start, scheduled.end):
            self.log.info(
                "Exporting the run's window [%s, %s)", scheduled.start.isoformat(), scheduled.end.isoformat()
            )
        else:
            self.log.info(
                "This run's data interval %s is not a window of the DAG's schedule (a run triggered by hand?): "
                "exporting the schedule's latest window that had ended by %s, [%s, %s), under the same names as "
                "any other run of that window, so it replaces an earlier export of it rather than adding one.",
                f"[{start.isoformat()}, {end.isoformat()})" if start and end else "(none)",
                until.isoformat(), scheduled.start.isoformat(), scheduled.end.isoformat(),
            )  # fmt: skip
        window = recurring_window(scheduled.start, scheduled.end, hook.timezone, now=now)
        # Named after the window, not the run: every run of one window writes the same objects.
        return window, int(scheduled.start.timestamp())

    def _naming(self, context: Context, run_timestamp: int) -> ExportNaming:
        ti = context["ti"]
        # The request id derives from the task, so a retry or a cleared task writes the same object names.
        request_id = (
            str(self.request_id)
            if self.request_id
            else derived_request_id(ti.dag_id, ti.task_id, ti.map_index)
        )
        return ExportNaming(
            request_id=request_id,
            run_timestamp=run_timestamp,
            database_id=int(self.database_id),
            prefix=self.object_prefix,
        )

    def _run(self, context: Context) -> tuple[ExportRun, CleverTapHook]:
        tuning = export_tuning_from_config()
        clevertap = CleverTapHook(
            clevertap_conn_id=self.clevertap_conn_id, pause_gc_while_parsing=tuning.pause_gc_while_parsing
        )
        bucket = get_bucket_hook(self.gcs_conn_id)
        export_format, compression = validate_format(self.export_format, self.compression)
        window, run_timestamp = self._window(context, clevertap)
        spec = ExportSpec(
            naming=self._naming(context, run_timestamp),
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
            holder=_holder(context),
            tuning=tuning,
            slice_key=self.slice_key,
        )
        return run, clevertap

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            self._result = self._export(context)
        except NOT_RETRYABLE as error:
            raise AirflowFailException(str(error)) from error
        summary = self._result.summary()
        if self.slice_key is not None:  # what the export's manifest step collects
            summary["slice"] = self._result.slice_report()
        return summary

    def _export(self, context: Context) -> ExportResult:
        raise NotImplementedError

    def _note_refused_events(self, result: ExportResult) -> None:
        """Say once which events CleverTap would not export: expected, so not a warning."""
        if result.skipped_events:
            self.log.info(
                "Left out %d events that CleverTap does not export (it answers 'Export not allowed for this "
                "event' for notification events, which its own export leaves out too); the manifest lists "
                "them under skipped_events: %s",
                len(result.skipped_events), ", ".join(map(repr, result.skipped_events)),
            )  # fmt: skip

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


def derived_request_id(dag_id: str, task_id: str, map_index: int | None) -> str:
    """A 10-digit id (CleverTap's are epoch-second sized) stable for one task, distinct between tasks."""
    digest = hashlib.sha256(
        f"{dag_id}\x00{task_id}\x00{map_index if map_index not in (None, -1) else ''}".encode()
    )
    return str(int.from_bytes(digest.digest()[:8], "big") % 9_000_000_000 + 1_000_000_000)


def _holder(context: Context) -> str:
    """Who writes an export: the same for every try of one task instance, distinct between runs."""
    ti = context["ti"]
    map_index = "" if ti.map_index in (None, -1) else f"[{ti.map_index}]"
    return f"task {ti.dag_id}.{ti.task_id}{map_index} of run {ti.run_id}"
