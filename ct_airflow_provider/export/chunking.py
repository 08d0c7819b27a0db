"""The one rotation layer: files split by event, day and size, handed to the sink as they finish.

Records of one event are split by the day of their ``ts``; each day's records go to files
``<...>-<yyyymmdd>-0-<db>``, ``-1-``, ... of at most ``max_file_bytes`` each, and a record is never
split between two files. Records arrive unsorted, so several days can be open at once; at most
``max_open_days`` files are open together (when more days interleave, the earliest opened day's
file is finished early and that day continues in its next file). Parquet, which pyarrow writes,
has its files named, limited and delivered through :class:`Delivery` all the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ct_airflow_provider.export.errors import ExportDataError
from ct_airflow_provider.export.files import (
    CONTENT_TYPES,
    GZIP_CONTENT_TYPE,
    ExportedFile,
    FileDigest,
    FileWorker,
    OutputFile,
    new_output_path,
)
from ct_airflow_provider.export.formats import RecordEncoder
from ct_airflow_provider.export.naming import PROFILES_NAME, ExportNaming
from ct_airflow_provider.export.records import day_of
from ct_airflow_provider.export.sinks import FileFollower, Sink

#: Default size limit of one file: CleverTap's 100 MB chunks.
DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024

#: At most this many files are open at once per export (one per day of the records).
DEFAULT_MAX_OPEN_DAYS = 64


@dataclass
class Delivery:
    """Where finished files of one export go: names them, hands them to the sink, lists them.

    :param naming: the export's naming.
    :param event_name: the event name, or ``profiles`` for a profile export.
    :param export_format: ``json``, ``csv``, ``xml`` or ``parquet``.
    :param gzip_level: gzip level for text formats, ``None`` for none.
    :param max_file_bytes: size limit per file.
    :param sink: receives every finished file.
    :param work_dir: where files are written before the sink takes them.
    :param profiles: whether this is a profile export (names use ``profiles``).
    """

    naming: ExportNaming
    event_name: str
    export_format: str
    gzip_level: int | None
    max_file_bytes: int
    sink: Sink
    work_dir: Path
    profiles: bool = False
    files: list[ExportedFile] = field(default_factory=list)
    worker: FileWorker = field(default_factory=FileWorker)

    @property
    def extension(self) -> str:
        """File extension, ``.gz`` included when gzipped."""
        return self.export_format + (".gz" if self.gzip_level is not None else "")

    @property
    def content_type(self) -> str:
        """Content type of the files."""
        return GZIP_CONTENT_TYPE if self.gzip_level is not None else CONTENT_TYPES[self.export_format]

    def new_path(self) -> Path:
        """A fresh path in the work directory for the next file."""
        return new_output_path(self.work_dir, self.extension)

    def object_name(self, day: date, file_index: int) -> str:
        """The object name of chunk ``file_index`` of ``day``."""
        if self.profiles:
            return self.naming.profile_object_name(day, file_index, self.extension)
        return self.naming.event_object_name(self.event_name, day, file_index, self.extension)

    def follow(self, path: Path, day: date, file_index: int) -> FileFollower | None:
        """Announce a file as it is started, so the sink can upload it while it is written.

        :param path: the new file.
        :param day: the day of its records.
        :param file_index: its chunk number.
        """
        return self.sink.follow(path, self.object_name(day, file_index), self.content_type)

    def deliver(self, path: Path, digest: FileDigest, day: date, file_index: int, records: int) -> None:
        """Describe a finished file and hand it to the sink.

        :param path: the finished file.
        :param digest: its size and checksums.
        :param day: the day of its records.
        :param file_index: its chunk number.
        :param records: how many records it holds.
        """
        exported = ExportedFile(
            object_name=self.object_name(day, file_index),
            event_name=PROFILES_NAME if self.profiles else self.event_name,
            day=day,
            file_index=file_index,
            records=records,
            bytes=digest.size,
            crc32c=digest.crc32c,
            content_type=self.content_type,
        )
        self.files.append(exported)
        self.sink.submit(path, exported)


def too_small_error(record_bytes: int, fixed_bytes: int, max_file_bytes: int, what: str) -> ExportDataError:
    """The error for a record that does not fit in a file even alone.

    :param record_bytes: the record's encoded size (before compression).
    :param fixed_bytes: bytes every file holds anyway (header, footer, metadata).
    :param max_file_bytes: the limit.
    :param what: the format, for the message.
    """
    need = record_bytes + fixed_bytes
    return ExportDataError(
        f"A record needs {record_bytes} bytes in {what} and every file needs {fixed_bytes} more, but "
        f"max_file_bytes is {max_file_bytes}: the record cannot fit in any file. "
        f"Raise max_file_bytes to at least {max(need * 2, 4096)} bytes."
    )


#: The buffer of a day without an open file: never appended to, since its room is -1.
_NO_BUFFER = bytearray()


class DayFiles:
    """The files of every day of one export in a text format; opens at most ``max_open`` at once.

    The :class:`~ct_airflow_provider.export.formats.FormatWriter` of the formats that stream (JSON,
    XML): :meth:`add` encodes records straight into their day's file. CSV adds its rows by day.

    :param delivery: where finished files go.
    :param encoder: the format's header, record encoding and footer.
    :param max_open: how many files may be open together.
    """

    def __init__(
        self, delivery: Delivery, encoder: RecordEncoder, max_open: int = DEFAULT_MAX_OPEN_DAYS
    ) -> None:
        self.delivery = delivery
        self.header = encoder.header
        self.footer = encoder.footer
        self.encode = encoder.encode
        self.max_open = max_open
        self.days: dict[int, DayChunks] = {}
        self._open: dict[int, DayChunks] = {}

    def day(self, day_number: int, day: date) -> DayChunks:
        """Return the chunks of ``day`` (``day_number`` is its ``yyyymmdd``), creating them on first use."""
        chunks = self.days.get(day_number)
        if chunks is None:
            chunks = self.days[day_number] = DayChunks(self, day_number, day)
        return chunks

    def _opening(self, chunks: DayChunks) -> None:
        if len(self._open) >= self.max_open:
            oldest = next(iter(self._open))
            self._open.pop(oldest).finish_file()
        self._open[chunks.day_number] = chunks

    def _closed(self, chunks: DayChunks) -> None:
        self._open.pop(chunks.day_number, None)

    def add(self, records: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Encode one page of records into their days' files.

        :param records: ``(yyyymmdd, file record)`` pairs.
        """
        days = self.days
        encode = self.encode
        for day_number, record in records:
            chunks = days.get(day_number)
            if chunks is None:
                chunks = self.day(day_number, day_of(day_number))
            # DayChunks.add written out: this loop runs once per record, and a call costs ~3% here.
            data = encode(record)
            size = len(data)
            if size > chunks._room:
                chunks._make_room(size)
            chunks._room -= size
            chunks._buffer += data
            chunks._records += 1

    def finish(self) -> None:
        """Finish every open file (in day order)."""
        for day_number in sorted(self._open):
            self._open[day_number].finish_file()

    def abort(self) -> None:
        """Delete every unfinished file."""
        for chunks in list(self._open.values()):
            chunks.abort()


class DayChunks:
    """The files of one day: fills the current one up to the limit, then starts the next.

    :param owner: the :class:`DayFiles` this day belongs to.
    :param day_number: ``yyyymmdd``.
    :param day: the same day as a date.
    """

    __slots__ = (
        "_buffer",
        "_file",
        "_fixed",
        "_follower",
        "_limit",
        "_records",
        "_room",
        "day",
        "day_number",
        "next_index",
        "owner",
        "records",
    )

    def __init__(self, owner: DayFiles, day_number: int, day: date) -> None:
        self.owner = owner
        self.day_number = day_number
        self.day = day
        self.next_index = 0
        self.records = 0
        self._file: OutputFile | None = None
        # The current file's buffer, appended to directly (no call per record); see OutputFile.room.
        self._buffer = _NO_BUFFER
        self._follower: FileFollower | None = None
        self._records = 0
        self._limit = owner.delivery.max_file_bytes
        self._fixed = len(owner.footer)
        # Bytes that may still go to the buffer: most records only subtract from it.
        self._room = -1

    def add(self, data: bytes) -> None:
        """Append one encoded record, starting a new file first if it would not fit in this one.

        :param data: the record as the file holds it (uncompressed).
        """
        size = len(data)
        if size > self._room:
            self._make_room(size)
        self._room -= size
        self._buffer += data
        self._records += 1

    def _make_room(self, size: int) -> None:
        current = self._file
        if current is not None:
            if current.fits(size, self._fixed, self._limit):
                self._room = current.room(self._fixed, self._limit)
                return
            self.finish_file()
        owner = self.owner
        owner._opening(self)
        delivery = owner.delivery
        path = delivery.new_path()
        try:
            follower = self._follower = delivery.follow(path, self.day, self.next_index)
        except BaseException:  # an earlier upload failed: this file will never be written
            path.unlink(missing_ok=True)
            raise
        current = self._file = OutputFile(
            path,
            gzip_level=delivery.gzip_level,
            worker=delivery.worker,
            on_disk=None if follower is None else follower.written,
        )
        current.write(owner.header)
        self._buffer = current.buffer
        if not current.fits(size, self._fixed, self._limit):
            self.abort()
            raise too_small_error(
                size, len(owner.header) + self._fixed, self._limit, delivery.export_format.upper()
            )
        self._room = current.room(self._fixed, self._limit)

    def finish_file(self) -> None:
        """Finish the current file, if any, and hand it to the sink."""
        current = self._file
        if current is None:
            return
        self._file = None
        self._buffer = _NO_BUFFER
        self._follower = None
        self._room = -1
        self.owner._closed(self)
        digest = current.finish(self.owner.footer)
        index = self.next_index
        self.next_index += 1
        records, self._records = self._records, 0
        self.records += records
        self.owner.delivery.deliver(current.path, digest, self.day, index, records)

    def abort(self) -> None:
        """Delete the current unfinished file."""
        if self._follower is not None:
            self._follower.abandon()
            self._follower = None
        if self._file is not None:
            self._file.abort()
            self._file = None
            self._buffer = _NO_BUFFER
            self._room = -1
            self.owner._closed(self)
