"""The entry points: a stream of API pages in, size-bounded export files handed to a sink out.

:func:`export_event` writes the records of one event; :func:`export_profiles` writes profile
records. Both read the pages once, shape each record (:mod:`~ct_airflow_provider.export.records`,
the one place of the shaping rules) and hand it with its day to the format's
:class:`~ct_airflow_provider.export.formats.FormatWriter`, which hands every finished file to the
sink while the next one is written. Memory stays bounded whatever the number of records: JSON and
XML stream straight into files; CSV and Parquet, which need every column (and type) before the
first file, spill records to per-day files in ``work_dir`` first.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ct_airflow_provider.export.chunking import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_OPEN_DAYS,
    DayFiles,
    Delivery,
)
from ct_airflow_provider.export.errors import ExportConfigError, ExportDataError, ExportError
from ct_airflow_provider.export.files import DEFAULT_GZIP_LEVEL, ExportedFile
from ct_airflow_provider.export.formats import (
    DEFAULT_PARQUET_CODEC,
    PARQUET_CODECS,
    FormatWriter,
    validate_format,
)
from ct_airflow_provider.export.formats.csv import CsvWriter
from ct_airflow_provider.export.formats.json import JsonEncoder
from ct_airflow_provider.export.formats.xml import XmlEncoder
from ct_airflow_provider.export.naming import PROFILES_NAME, ExportNaming, sanitize_event_name
from ct_airflow_provider.export.records import days_of_page, describe_record, shape_event, shape_for_columns
from ct_airflow_provider.export.schemas import SchemaSettler
from ct_airflow_provider.export.sinks import Sink

#: Smallest ``max_file_bytes`` accepted: below it no file could hold a record.
MIN_MAX_FILE_BYTES = 1024


class ExportedFiles(list[ExportedFile]):
    """The files one export call wrote, in the order they were handed to the sink, with its counts.

    A plain list of :class:`ExportedFile` for whoever only needs the files.

    :param files: the finished files.
    :param event_name: the event name, or ``profiles``.
    :param records_received: records read from the pages.
    :param records_kept: records that passed the ``keep`` filter (all of them without one); every
        kept record is in exactly one file.
    """

    def __init__(
        self, files: Iterable[ExportedFile], event_name: str, records_received: int, records_kept: int
    ) -> None:
        super().__init__(files)
        self.event_name = event_name
        self.records_received = records_received
        self.records_kept = records_kept

    @property
    def records_written(self) -> int:
        """Records across all files (equals :attr:`records_kept`)."""
        return sum(file.records for file in self)

    @property
    def bytes_written(self) -> int:
        """Bytes across all files."""
        return sum(file.bytes for file in self)


@dataclass(frozen=True)
class _Settings:
    export_format: str
    gzip_level: int | None
    max_file_bytes: int
    parquet_codec: str
    work_dir: Path


def _check_settings(
    export_format: str,
    compression: str | None,
    max_file_bytes: int,
    gzip_level: int,
    parquet_codec: str,
    work_dir: Path | str,
    sink: Sink,
    naming: ExportNaming,
) -> _Settings:
    export_format, compression = validate_format(export_format, compression)
    if isinstance(gzip_level, bool) or not isinstance(gzip_level, int) or not 1 <= gzip_level <= 9:
        raise ExportConfigError(f"gzip_level must be an integer from 1 to 9, got {gzip_level!r}.")
    if parquet_codec not in PARQUET_CODECS:
        raise ExportConfigError(
            f"Unknown Parquet codec {parquet_codec!r}; choose one of {', '.join(PARQUET_CODECS)}."
        )
    if isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int):
        raise ExportConfigError(f"max_file_bytes must be an integer number of bytes, got {max_file_bytes!r}.")
    if max_file_bytes < MIN_MAX_FILE_BYTES:
        raise ExportConfigError(
            f"max_file_bytes={max_file_bytes} is too small for any file to hold a record; "
            f"use at least {MIN_MAX_FILE_BYTES} (CleverTap uses {DEFAULT_MAX_FILE_BYTES})."
        )
    if not isinstance(naming, ExportNaming):
        raise ExportConfigError(f"naming must be an ExportNaming, got {type(naming).__name__}.")
    if not callable(getattr(sink, "submit", None)) or not callable(getattr(sink, "follow", None)):
        raise ExportConfigError(
            f"sink must have submit(local_path, file) and follow(local_path, object_name, content_type) "
            f"methods (see ct_airflow_provider.export.sinks.Sink); {type(sink).__name__} lacks one."
        )
    directory = Path(work_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportConfigError(f"The work directory {directory} cannot be created: {exc}.") from exc
    return _Settings(
        export_format,
        gzip_level if compression is not None else None,
        max_file_bytes,
        parquet_codec,
        directory,
    )


def _write(
    settings: _Settings,
    naming: ExportNaming,
    sink: Sink,
    pages: Iterable[Iterable[tuple[int, dict[str, Any]]]],
    event_name: str | None,
    max_open_days: int = DEFAULT_MAX_OPEN_DAYS,
    schema: SchemaSettler | None = None,
) -> list[ExportedFile]:
    """Write every page with the format's writer; return the files handed to the sink.

    :param settings: the checked settings.
    :param naming: names the files.
    :param sink: receives each finished file.
    :param pages: pages of ``(yyyymmdd, record)`` pairs.
    :param event_name: the event name, ``None`` for a profile export.
    :param max_open_days: how many days' files JSON and XML may keep open at once.
    :param schema: the stored schema CSV and Parquet files keep to (JSON and XML have none).
    """
    title = PROFILES_NAME if event_name is None else event_name
    # A private directory for the spill files of CSV and Parquet, removed whatever happens.
    spill_dir = Path(tempfile.mkdtemp(prefix=".ct-spill-", dir=settings.work_dir))
    delivery = Delivery(
        naming,
        title,
        settings.export_format,
        settings.gzip_level,
        settings.max_file_bytes,
        sink,
        settings.work_dir,
        profiles=event_name is None,
    )
    try:
        writer: FormatWriter
        if settings.export_format == "json":
            writer = DayFiles(delivery, JsonEncoder(title), max_open_days)
        elif settings.export_format == "xml":
            writer = DayFiles(delivery, XmlEncoder(event_name), max_open_days)
        elif settings.export_format == "csv":
            writer = CsvWriter(delivery, spill_dir, event_name, schema)
        else:
            # pyarrow is imported only for Parquet exports: it is the largest import of the package.
            from ct_airflow_provider.export.formats.parquet import ParquetWriter

            writer = ParquetWriter(delivery, spill_dir, event_name, settings.parquet_codec, schema)
        try:
            for records in pages:
                writer.add(records)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
    finally:
        delivery.worker.close()
        shutil.rmtree(spill_dir, ignore_errors=True)
    return delivery.files


def export_event(
    pages: Iterable[list[dict[str, Any]]],
    *,
    event_name: str,
    naming: ExportNaming,
    export_format: str,
    sink: Sink,
    work_dir: Path | str,
    compression: str | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    keep: Callable[[int], bool] | None = None,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
    parquet_codec: str = DEFAULT_PARQUET_CODEC,
    max_open_days: int = DEFAULT_MAX_OPEN_DAYS,
    schema: SchemaSettler | None = None,
) -> ExportedFiles:
    """Write the records of one event as export files, split per day and per ``max_file_bytes``.

    :param pages: pages of API event records (``records`` of each events page), in any ts order.
    :param event_name: the event name as CleverTap reports it.
    :param naming: request id, run timestamp, database id and prefix of the object names.
    :param export_format: ``json``, ``csv``, ``xml`` or ``parquet``.
    :param sink: receives each finished file (not closed here: the caller closes it after the
        last export of the run, then writes the manifest).
    :param work_dir: where files are written before the sink takes them, and spill files live.
    :param compression: ``"gzip"`` for ``.gz`` JSON, CSV or XML files, or ``None``.
    :param max_file_bytes: size limit of each file (default 100 MiB).
    :param keep: optional predicate on a record's ``ts`` (``yyyyMMddHHmmss`` integer); records for
        which it is false are not exported (counted in ``records_received`` only).
    :param gzip_level: gzip level 1-9 when ``compression`` is ``"gzip"``.
    :param parquet_codec: codec inside Parquet files: ``snappy`` (default), ``zstd``, ``gzip``,
        ``brotli``, ``lz4`` or ``none``.
    :param max_open_days: how many days' files may be open at once for JSON and XML.
    :param schema: the event's stored schema, which CSV and Parquet files keep to and extend (see
        :mod:`~ct_airflow_provider.export.schemas`); ``None``: the files' columns follow from this
        export's records alone.
    :raises ExportConfigError: for settings that cannot work, before any page is read.
    :raises ExportDataError: for a record that cannot be exported (no valid ``ts``, too big for
        ``max_file_bytes``, ...); files already handed to the sink stay with it.
    """
    settings = _check_settings(
        export_format, compression, max_file_bytes, gzip_level, parquet_codec, work_dir, sink, naming
    )
    if isinstance(max_open_days, bool) or not isinstance(max_open_days, int) or max_open_days < 1:
        raise ExportConfigError(f"max_open_days must be an integer of at least 1, got {max_open_days!r}.")
    sanitize_event_name(event_name)
    if settings.export_format == "json":
        JsonEncoder(event_name)  # an event name JSON cannot hold fails before any page is read
    # Fail now rather than at the first file if the names would be too long.
    naming.event_object_name(event_name, date(2000, 1, 1), 0, "json.gz")
    counts = [0, 0]  # received, kept
    # CSV reads its columns from records in the API's own layout: no shaped copy of those.
    shape = shape_for_columns if settings.export_format == "csv" else shape_event

    def prepared(page: list[dict[str, Any]]) -> Iterable[tuple[int, dict[str, Any]]]:
        # Checked a page at a time (C-level passes over the page, no generator per record); one
        # record at a time afterwards (no list of a page's shaped records): less memory and GC work.
        if type(page) is not list:
            page = list(page)
        counts[0] += len(page)
        days, records = days_of_page(page, keep)
        counts[1] += len(records)
        return zip(days, map(shape, records), strict=True)

    files = _write(settings, naming, sink, map(prepared, pages), event_name, max_open_days, schema)
    return _result(event_name, files, counts[0], counts[1])


def export_profiles(
    pages: Iterable[list[dict[str, Any]]],
    *,
    day: date,
    naming: ExportNaming,
    export_format: str,
    sink: Sink,
    work_dir: Path | str,
    compression: str | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
    parquet_codec: str = DEFAULT_PARQUET_CODEC,
    schema: SchemaSettler | None = None,
) -> ExportedFiles:
    """Write profile records as export files named with ``profiles`` for the event name.

    Profiles have no ``ts`` of their own, so every file of the export carries one day in its
    name: ``day``, which the caller sets to the last day of the export window (the day the
    profiles were read for). Records keep the API's own profile shape.

    :param pages: pages of API profile records.
    :param day: the day in the file names (the export window's last day).
    :param naming: request id, run timestamp, database id and prefix of the object names.
    :param export_format: ``json``, ``csv``, ``xml`` or ``parquet``.
    :param sink: receives each finished file (not closed here).
    :param work_dir: where files are written before the sink takes them.
    :param compression: ``"gzip"`` or ``None``.
    :param max_file_bytes: size limit of each file.
    :param gzip_level: gzip level 1-9 when gzipped.
    :param parquet_codec: codec inside Parquet files.
    :param schema: the stored schema of profile exports (see :func:`export_event`).
    :raises ExportConfigError: for settings that cannot work.
    :raises ExportDataError: for a record that is not a JSON object or does not fit in a file.
    """
    settings = _check_settings(
        export_format, compression, max_file_bytes, gzip_level, parquet_codec, work_dir, sink, naming
    )
    if not isinstance(day, date):
        raise ExportConfigError(f"day must be a datetime.date (the export window's last day), got {day!r}.")
    day_number = day.year * 10000 + day.month * 100 + day.day
    counts = [0]

    def prepared(page: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        for record in page:
            if not isinstance(record, dict):
                raise ExportDataError(
                    f"A profiles page holds something else than an object: {describe_record(record)}."
                )
            counts[0] += 1
            yield day_number, record

    files = _write(settings, naming, sink, map(prepared, pages), None, schema=schema)
    return _result(PROFILES_NAME, files, counts[0], counts[0])


def _result(event_name: str, files: list[ExportedFile], received: int, kept: int) -> ExportedFiles:
    result = ExportedFiles(files, event_name, received, kept)
    if result.records_written != kept:
        raise ExportError(
            f"Export of {event_name!r} kept {kept} records but its files hold {result.records_written}; "
            "this is a bug: please report it with the event's record count."
        )
    return result
