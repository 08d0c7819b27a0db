"""One export run, start to finish: read the source, write the files, replace an earlier attempt, manifest last.

This is what the operators run; it knows nothing of Airflow. ``source`` is anything with the
CleverTap hook's page iterators and ``bucket`` anything with the bucket hook's object operations,
so the same run works against the real services, the simulator and emulator, or plain test doubles.

Exactly once, whatever happens:

1. The manifest of this request and run timestamp is deleted first: until the new one is written,
   the export is visibly incomplete.
2. Every file is written under a name that depends only on the request, the run timestamp, the
   event, the day and the file index, so a retry overwrites what an earlier attempt wrote.
3. Objects of this request and run timestamp that this attempt did not write (an earlier attempt
   produced more chunks, or data for an event that is now skipped) are deleted.
4. The manifest is written last: its presence marks the export complete.

An export may also be split into slices (events, days, or both) that run as separate tasks, on any
workers: each slice is an ``ExportRun`` with the export's request id and run timestamp and a
``slice_key``; it holds a claim of its own, deletes the manifest first, writes its files, removes
only its own stale objects, and reports its files instead of writing the manifest.
:meth:`ExportRun.complete_slices` then writes the export's one manifest from every slice's report,
once all succeeded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ct_airflow_provider.clevertap_api import MAX_CONCURRENT_REQUESTS
from ct_airflow_provider.export.claim import LEASE_SECONDS, POLL_SECONDS, ClaimStore, ExportClaim
from ct_airflow_provider.export.errors import ExportConfigError, ExportSinkError
from ct_airflow_provider.export.files import ExportedFile
from ct_airflow_provider.export.manifest import MANIFEST_CONTENT_TYPE, build_manifest
from ct_airflow_provider.export.naming import PROFILES_NAME, ExportNaming, sanitize_event_name
from ct_airflow_provider.export.profiles import ProfileDeduplicator
from ct_airflow_provider.export.reconcile import (
    CountSource,
    Reconciliation,
    ReconciliationError,
    check_reconcile_mode,
    reconcile,
)
from ct_airflow_provider.export.schemas import StoredSchema
from ct_airflow_provider.export.sinks import FileUpload, UploadingSink
from ct_airflow_provider.export.streams import StreamGroup, read_side_by_side
from ct_airflow_provider.export.tuning import ExportTuning, export_tuning
from ct_airflow_provider.export.windows import ExportWindow
from ct_airflow_provider.export.writer import ExportedFiles, export_event, export_profiles

Pages = Iterator[list[dict[str, Any]]]

#: Seconds between two progress lines in the task log.
PROGRESS_INTERVAL = 15.0

#: Requests an export keeps in flight unless told otherwise: CleverTap's limit per account, which is
#: what a single export needs to be bound by its own work rather than by CleverTap's latency.
DEFAULT_CONCURRENT_REQUESTS = MAX_CONCURRENT_REQUESTS


class RecordSource(CountSource, Protocol):
    """What an export reads: CleverTap's event and profile pages, and its counts (the CleverTap hook)."""

    def iter_event_pages(
        self, event_name: str, from_date: dt.date, to_date: dt.date, *, app_fields: bool = False
    ) -> Pages: ...

    def iter_profile_pages(self, event_name: str, from_date: dt.date, to_date: dt.date) -> Pages: ...


class Bucket(ClaimStore, Protocol):
    """Where an export writes (the bucket hook)."""

    @property
    def bucket_name(self) -> str: ...

    @property
    def upload_chunk_bytes(self) -> int: ...

    def start_file_upload(self, source: BinaryIO, object_name: str, content_type: str) -> FileUpload: ...

    def upload_bytes(self, data: bytes, object_name: str, content_type: str) -> None: ...

    def list_objects(self, prefix: str) -> list[str]: ...

    def delete_object(self, object_name: str) -> None: ...


@dataclass(frozen=True)
class ExportSpec:
    """Everything that decides what one export writes.

    :param naming: request id, run timestamp, database id and object prefix of every file name.
    :param window: the days to read and, for recurring exports, the ``ts`` range to keep.
    :param export_format: ``json``, ``csv``, ``xml`` or ``parquet``.
    :param compression: ``gzip`` or ``None`` (not for Parquet, which compresses itself).
    :param max_file_bytes: the largest file written; larger exports are split into chunks.
    """

    naming: ExportNaming
    window: ExportWindow
    export_format: str
    compression: str | None
    max_file_bytes: int


@dataclass
class ExportResult:
    """What an export wrote: the summary returned to XCom, and the manifest's content."""

    request_id: str
    run_timestamp: int
    bucket: str
    export_format: str
    files: list[ExportedFile] = field(default_factory=list)
    skipped_events: dict[str, str] = field(default_factory=dict)
    removed_stale_objects: list[str] = field(default_factory=list)
    manifest_object: str = ""
    reconciliation: Reconciliation | None = None

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def records_per_event_and_day(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for file in self.files:
            per_day = counts.setdefault(file.event_name, {})
            day = file.day.strftime("%Y%m%d")
            per_day[day] = per_day.get(day, 0) + file.records
        return counts

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary (what the operators push to XCom)."""
        return {
            "request_id": self.request_id,
            "run_timestamp": self.run_timestamp,
            "bucket": self.bucket,
            "format": self.export_format,
            "files": [f"gs://{self.bucket}/{f.object_name}" for f in self.files],
            "manifest": f"gs://{self.bucket}/{self.manifest_object}",
            "records": self.records,
            "bytes": self.bytes,
            "records_per_event_and_day": self.records_per_event_and_day(),
            "skipped_events": dict(self.skipped_events),
            "reconciled": None if self.reconciliation is None else self.reconciliation.reconciled,
        }

    def slice_report(self) -> dict[str, Any]:
        """What a slice of a sliced export reports for the export's manifest (JSON-able)."""
        return {
            "files": [file.as_dict() for file in self.files],
            "skipped_events": dict(self.skipped_events),
            "reconciliation": None if self.reconciliation is None else self.reconciliation.as_manifest(),
        }


def check_concurrent_requests(value: object) -> int:
    """Return ``value`` if it is a number of concurrent CleverTap requests an export may use.

    :param value: the requested concurrency.
    :raises ExportConfigError: (a ``ValueError``) unless it is an integer from 1 to
        :data:`MAX_CONCURRENT_REQUESTS`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENT_REQUESTS:
        raise ExportConfigError(
            f"concurrent_requests={value!r}: give an integer from 1 to {MAX_CONCURRENT_REQUESTS}, "
            "CleverTap's limit of concurrent requests per account (more are answered with 429)."
        )
    return value


class _Progress:
    """Counts what flows through and logs a line every ``PROGRESS_INTERVAL`` seconds, never per record."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.records = 0
        self.files = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._last = self.started
        self._lock = threading.Lock()  # streams of several events are counted side by side

    def pages(self, pages: Iterable[list[dict[str, Any]]], label: str) -> Pages:
        for page in pages:
            with self._lock:
                self.records += len(page)
                now = time.monotonic()
                due = now - self._last >= PROGRESS_INTERVAL
                if due:
                    self._last = now
            if due:
                self.log.info(
                    "%s: %s, %d records read, %d files (%.1f MB) written, %.0f records/s",
                    self.what, label, self.records, self.files, self.bytes / 1e6, self.records / (now - self.started),
                )  # fmt: skip
            yield page
            del page  # written: not held while the next page is awaited

    def wrote(self, files: Sequence[ExportedFile]) -> None:
        with self._lock:
            self.files += len(files)
            self.bytes += sum(f.bytes for f in files)


class ExportRun:
    """One export of one request and run timestamp into one bucket.

    :param spec: what to write.
    :param bucket: where to write it.
    :param log: the task's logger, for progress and warnings.
    :param work_dir: local scratch space (spill files, chunks waiting for upload); a temporary
        folder by default.
    :param max_in_flight: finished files waiting for or being uploaded while the next is written.
    :param concurrent_requests: CleverTap requests the export may have in flight at once (1 to 3,
        CleverTap's limit per account, the default): its streams (one per event and day) are read
        that many at a time, each event's pages written by its own thread.
    :param holder: who writes this run, the same for every try of one task (see
        :class:`~ct_airflow_provider.export.claim.ExportClaim`); a unique name by default.
    :param claim_lease_seconds: a claim on the run not renewed for this long is taken over.
    :param tuning: process-wide settings applied while the export runs (see
        :mod:`~ct_airflow_provider.export.tuning`); none by default.
    :param slice_key: this run is one slice of a sliced export (its events and the days of
        ``spec.window``), named by this key (unique within the export): it writes no manifest and
        removes only its own stale objects (see :meth:`complete_slices`).
    """

    def __init__(
        self,
        spec: ExportSpec,
        bucket: Bucket,
        log: logging.Logger,
        *,
        work_dir: Path | None = None,
        max_in_flight: int = 2,
        concurrent_requests: int = DEFAULT_CONCURRENT_REQUESTS,
        holder: str | None = None,
        claim_lease_seconds: float = LEASE_SECONDS,
        tuning: ExportTuning | None = None,
        slice_key: str | None = None,
    ) -> None:
        self.tuning = tuning or ExportTuning()
        self.slice_key = slice_key
        self._slice_events: Sequence[str] = ()
        self.concurrent_requests = check_concurrent_requests(concurrent_requests)
        self.holder = holder or f"export {uuid.uuid4().hex[:12]} (process {os.getpid()})"
        self.claim_lease_seconds = claim_lease_seconds
        self.spec = spec
        self.bucket = bucket
        self.log = log
        self.work_dir = work_dir
        self.max_in_flight = max_in_flight
        naming = spec.naming
        self.prefix = naming.run_prefix()
        self.manifest_object = naming.manifest_object_name()
        self.result = ExportResult(
            request_id=naming.request_id,
            run_timestamp=naming.run_timestamp,
            bucket=bucket.bucket_name,
            export_format=spec.export_format,
            manifest_object=self.manifest_object,
        )

    def events(
        self,
        source: RecordSource,
        event_names: Sequence[str],
        *,
        skippable: tuple[type[Exception], ...] = (),
        reconcile_mode: str = "off",
    ) -> ExportResult:
        """Export each event of ``event_names``; an event raising one of ``skippable`` is skipped.

        :param reconcile_mode: compare the records written with CleverTap's counts before the
            manifest (``fail``, ``warn`` or ``off``; see :mod:`~ct_airflow_provider.export.reconcile`).
            Only whole days are compared: a recurring window's days are checked by a daily task.
        """
        check_reconcile_mode(reconcile_mode)
        self._slice_events = list(event_names)
        progress = _Progress(self.log, f"Export {self.spec.naming.request_id}")
        keep = self.spec.window.keep()
        with export_tuning(self.tuning, self.spec.export_format), self._claim(), self._scratch() as scratch:
            with self._sink() as sink:
                self._begin()
                self._write_events(source, event_names, skippable, progress, sink, scratch, keep)
            if reconcile_mode != "off" and not self.spec.window.is_recurring:
                self._reconcile(source, event_names, reconcile_mode)
            return self._finish(progress)

    def _reconcile(self, source: RecordSource, event_names: Sequence[str], mode: str) -> None:
        exported = [name for name in event_names if name not in self.result.skipped_events]
        found = reconcile(
            source,
            self.result.records_per_event_and_day(),
            exported,
            self.spec.window.days,
            concurrent_requests=self.concurrent_requests,
        )
        self.result.reconciliation = found
        if found.reconciled:
            self.log.info(
                "Reconciled with CleverTap's counts: %d records of %d events over %d days, every event and day equal",
                self.result.records, len(exported), len(self.spec.window.days),
            )  # fmt: skip
            return
        message = (
            f"The export differs from CleverTap's own counts: {found.describe_mismatches()}. CleverTap keeps "
            "receiving events for a day after it ends (offline devices upload late): export the day again "
            "later, which replaces its files."
        )
        if mode == "fail":
            raise ReconciliationError(message + " (reconcile='warn' writes the manifest anyway.)")
        self.log.warning('%s The manifest says "reconciled": false.', message)

    def _write_events(
        self,
        source: RecordSource,
        event_names: Sequence[str],
        skippable: tuple[type[Exception], ...],
        progress: _Progress,
        sink: UploadingSink,
        scratch: Path,
        keep: Callable[[int], bool] | None,
    ) -> None:
        def write(group: StreamGroup, pages: Iterator[list[dict[str, Any]]]) -> ExportedFiles:
            return export_event(
                progress.pages(pages, group.name),
                event_name=group.name,
                naming=self.spec.naming,
                export_format=self.spec.export_format,
                compression=self.spec.compression,
                max_file_bytes=self.spec.max_file_bytes,
                sink=sink,
                work_dir=scratch / "events",
                keep=keep,
                schema=self._schema(group.name),
            )

        # app_fields: the device fields that CleverTap's own files carry as deviceInfo.
        groups = [
            StreamGroup(
                name, [self._day_stream(source.iter_event_pages, name, day, True) for day in self._days()]
            )
            for name in event_names
        ]
        outcomes = read_side_by_side(groups, write, concurrency=self.concurrent_requests, skippable=skippable)
        for event_name, outcome in zip(event_names, outcomes, strict=True):
            if isinstance(outcome, Exception):
                # The source may refuse an event when its query starts or on its first page.
                self._skip(event_name, outcome)
                continue
            progress.wrote(outcome)
            self.result.files.extend(outcome)

    def profiles(
        self, source: RecordSource, event_names: Sequence[str], *, skippable: tuple[type[Exception], ...] = ()
    ) -> ExportResult:
        """Export every profile active in the window (that did any of ``event_names``), each once."""
        if self.slice_key is not None:
            raise ExportConfigError(
                "A profile export cannot be sliced: a profile active in two slices (two events or two days) "
                "would be exported twice. Export profiles in one task."
            )
        progress = _Progress(self.log, f"Profile export {self.spec.naming.request_id}")
        window = self.spec.window
        with export_tuning(self.tuning, self.spec.export_format), self._claim(), self._scratch() as scratch:
            with self._sink() as sink:
                self._begin()
                unique = ProfileDeduplicator(scratch / "profiles.sqlite")
                try:
                    # One group per event and day: the profiles of each are kept in the streams'
                    # order, whatever order their pages arrive in (see ProfileDeduplicator).
                    days = self._days()
                    groups = [
                        StreamGroup(name, [self._day_stream(source.iter_profile_pages, name, day)])
                        for name in event_names
                        for day in days
                    ]
                    ranks = {id(group): rank for rank, group in enumerate(groups)}

                    def collect(group: StreamGroup, pages: Iterator[list[dict[str, Any]]]) -> None:
                        unique.add_pages(progress.pages(pages, group.name), source_rank=ranks[id(group)])

                    outcomes = read_side_by_side(
                        groups, collect, concurrency=self.concurrent_requests, skippable=skippable
                    )
                    for group, outcome in zip(groups, outcomes, strict=True):
                        if (
                            isinstance(outcome, BaseException)
                            and group.name not in self.result.skipped_events
                        ):
                            self._skip(group.name, outcome)
                    self.log.info(
                        "%d profile records read, %d unique profiles to export", unique.seen, len(unique)
                    )
                    files = export_profiles(
                        unique.pages(),
                        naming=self.spec.naming,
                        day=window.last_day,
                        export_format=self.spec.export_format,
                        compression=self.spec.compression,
                        max_file_bytes=self.spec.max_file_bytes,
                        sink=sink,
                        work_dir=scratch / "profiles",
                        schema=self._schema(PROFILES_NAME),
                    )
                finally:
                    unique.close()
                progress.wrote(files)
                self.result.files.extend(files)
            return self._finish(progress)

    # -- the exactly-once protocol ---------------------------------------------------------------
    def _begin(self) -> None:
        # An earlier attempt's manifest would mark this attempt complete before it is.
        self.bucket.delete_object(self.manifest_object)

    def _skip(self, event_name: str, error: Exception) -> None:
        """An event the caller expects CleverTap to refuse: recorded in the manifest, the caller says why."""
        self.result.skipped_events[event_name] = str(error)

    def _finish(self, progress: _Progress) -> ExportResult:
        written = {f.object_name for f in self.result.files}
        self._remove_stale(self.bucket.list_objects(self.prefix), written, self._owned_pattern())
        elapsed = max(time.monotonic() - progress.started, 1e-9)
        if self.slice_key is not None:
            self._held_claim.check()
            self.log.info(
                "Slice %s of export %s complete: %d records in %d files (%.1f MB) in %.1f s; the export's "
                "manifest is written once every slice is (gs://%s/%s)",
                self.slice_key, self.result.request_id, self.result.records, len(self.result.files),
                self.result.bytes / 1e6, elapsed, self.result.bucket, self.manifest_object,
            )  # fmt: skip
            return self.result
        self._write_manifest()
        self.log.info(
            "Export %s complete: %d records in %d files (%.1f MB) in %.1f s (%.0f records/s); manifest gs://%s/%s",
            self.result.request_id, self.result.records, len(self.result.files), self.result.bytes / 1e6,
            elapsed, progress.records / elapsed, self.result.bucket, self.manifest_object,
        )  # fmt: skip
        return self.result

    def complete_slices(self, reports: Sequence[Mapping[str, Any]]) -> ExportResult:
        """Write the manifest of a sliced export from every slice's report, once all succeeded.

        Every file a slice reported must be in the bucket (else the export fails, naming them);
        objects of the run that no slice reported (left by a slice no longer planned, or by an
        attempt whose retry wrote fewer chunks) are removed first.

        :param reports: :meth:`ExportResult.slice_report` of every slice.
        :raises ExportSinkError: a reported file is missing.
        """
        if not reports:
            raise ExportConfigError(
                "No slice of this export reported its files: there is nothing to complete."
            )
        files = [ExportedFile.from_dict(file) for report in reports for file in report["files"]]
        names = [file.object_name for file in files]
        if len(set(names)) != len(names):
            twice = sorted(name for name, count in Counter(names).items() if count > 1)
            raise ExportConfigError(
                f"Two slices reported the same files ({', '.join(twice[:5])}): the slices overlap. Give each "
                "event and day to one slice only."
            )
        counts: dict[str, Any] = {}
        for report in reports:
            self.result.skipped_events.update(report.get("skipped_events") or {})
            for event, days in (report.get("reconciliation") or {}).items():
                counts.setdefault(event, {}).update(days)  # slices of one event hold other days
        checked = [report.get("reconciliation") is not None for report in reports]
        if all(checked):
            self.result.reconciliation = Reconciliation.from_manifest(counts)
        self.result.files = files
        with self._claim():
            present = self.bucket.list_objects(self.prefix)
            missing = sorted(set(names).difference(present))
            if missing:
                raise ExportSinkError(
                    f"{len(missing)} files that slices reported are not in the bucket ({', '.join(missing[:5])}): "
                    "clear the slices that wrote them so they run again, then this step."
                )
            self._remove_stale(present, set(names), None)
            self._write_manifest()
        self.log.info(
            "Export %s complete: %d slices, %d records in %d files (%.1f MB); manifest gs://%s/%s",
            self.result.request_id, len(reports), self.result.records, len(files), self.result.bytes / 1e6,
            self.result.bucket, self.manifest_object,
        )  # fmt: skip
        return self.result

    def _owned_pattern(self) -> re.Pattern[str] | None:
        """The names of the objects a slice writes (its events on its days); ``None``: the whole run's."""
        if self.slice_key is None:
            return None
        events = "|".join(re.escape(sanitize_event_name(name)) for name in self._slice_events) or "(?!)"
        days = "|".join(f"{day:%Y%m%d}" for day in self._days())
        database = self.spec.naming.database_id
        return re.compile(rf"{re.escape(self.prefix)}(?:{events})-(?:{days})-\d+-{database}\.[a-z.]+")

    def _remove_stale(self, present: Iterable[str], written: set[str], owned: re.Pattern[str] | None) -> None:
        """Delete the run's objects (``present``, of ``owned`` names) this attempt did not write."""
        for name in present:
            if name in written or name == self.manifest_object:
                continue
            if owned is None or owned.fullmatch(name):
                self.bucket.delete_object(name)
                self.result.removed_stale_objects.append(name)
        if self.result.removed_stale_objects:
            self.log.info(
                "Removed %d objects an earlier attempt wrote and this one did not: %s",
                len(self.result.removed_stale_objects), ", ".join(self.result.removed_stale_objects[:10]),
            )  # fmt: skip

    def _write_manifest(self) -> None:
        manifest = build_manifest(
            naming=self.spec.naming,
            files=self.result.files,
            export_format=self.spec.export_format,
            window=self.spec.window.describe(),
            compression=self.spec.compression,
            skipped_events=self.result.skipped_events,
            reconciliation=self.result.reconciliation,
            window_ts=self.spec.window.ts_bounds(),
        )
        # Only the claim's holder may mark the export complete.
        self._held_claim.check()
        self.bucket.upload_bytes(manifest, self.manifest_object, MANIFEST_CONTENT_TYPE)

    # -- plumbing ----------------------------------------------------------------------------------
    def _days(self) -> list[dt.date]:
        return list(self.spec.window.days)

    @staticmethod
    def _day_stream(
        read: Callable[..., Pages], event_name: str, day: dt.date, app_fields: bool = False
    ) -> Callable[[], Pages]:
        """One stream: the pages of one event on one day, from ``read`` (a page iterator of the source)."""
        if app_fields:
            return lambda: read(event_name, day, day, app_fields=True)
        return lambda: read(event_name, day, day)

    def _schema(self, event_name: str) -> StoredSchema | None:
        """The event's schema in the bucket, which CSV and Parquet files keep to from run to run."""
        if self.spec.export_format not in ("csv", "parquet"):
            return None
        return StoredSchema(self.bucket, self.spec.naming.schema_object_name(event_name), self.log)

    def _claim(self) -> ExportClaim:
        self._held_claim = ExportClaim(
            self.bucket,
            self.spec.naming.claim_object_name(self.slice_key),
            self.holder,
            self.log,
            lease_seconds=self.claim_lease_seconds,
            poll_seconds=min(POLL_SECONDS, self.claim_lease_seconds / 4),
        )
        return self._held_claim

    def _sink(self) -> UploadingSink:
        return UploadingSink(self.bucket, max_in_flight=self.max_in_flight)

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[Path]:
        """A private scratch folder (spill files, chunks waiting to upload), removed even on failure."""
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(
            prefix="ct-export-", dir=self.work_dir, ignore_cleanup_errors=True
        ) as path:
            yield Path(path)
