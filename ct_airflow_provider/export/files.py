"""One export file: what a finished file is (:class:`ExportedFile`), and how bytes get into it.

:class:`OutputFile` buffers, optionally gzips, and checksums (CRC32C) what is written, and answers
whether more bytes still fit under a size limit. For gzip the compressed size of data still inside the
compressor is not known, so the answer uses an upper bound (deflate never grows data by more than
a few bytes per 16 KiB); when the bound says no, the compressor is flushed (``Z_SYNC_FLUSH``) so the
size becomes exact and the answer is asked again. Files therefore fill up to their limit without
ever passing it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import queue
import tempfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import google_crc32c

#: Default gzip level: the one of the gzip command line.
DEFAULT_GZIP_LEVEL = 6

_BUFFER_BYTES = 1 << 18
# Gzip header and trailer (18 bytes) plus the final empty block and a sync flush marker, rounded up.
_GZIP_FIXED_OVERHEAD = 64

CONTENT_TYPES: dict[str, str] = {
    "json": "application/x-ndjson",
    "csv": "text/csv",
    "xml": "application/xml",
    "parquet": "application/vnd.apache.parquet",
}
GZIP_CONTENT_TYPE = "application/gzip"


@dataclass(frozen=True)
class ExportedFile:
    """A finished export file, as handed to a sink and listed in the manifest.

    :param object_name: full object name in the bucket (prefix included).
    :param event_name: the event name as CleverTap reports it, or ``profiles``.
    :param day: the day of the records' ``ts`` (for profiles: the day the export names).
    :param file_index: chunk number from 0, contiguous per event and day.
    :param records: number of records in the file.
    :param bytes: size of the file in bytes.
    :param crc32c: base64 of the big-endian CRC32C, as Google Cloud Storage reports ``crc32c`` for
        every object (composite ones included).
    :param content_type: the content type to store the object with.
    """

    object_name: str
    event_name: str
    day: date
    file_index: int
    records: int
    bytes: int
    crc32c: str
    content_type: str

    def as_dict(self) -> dict[str, Any]:
        """Return the file as plain JSON-able values (the day as ``yyyymmdd``, as in file names)."""
        return {
            "object_name": self.object_name,
            "event_name": self.event_name,
            "day": f"{self.day:%Y%m%d}",
            "file_index": self.file_index,
            "records": self.records,
            "bytes": self.bytes,
            "crc32c": self.crc32c,
            "content_type": self.content_type,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportedFile:
        """The file :meth:`as_dict` describes (as a slice of an export reports it)."""
        day = str(data["day"])
        return cls(
            object_name=str(data["object_name"]),
            event_name=str(data["event_name"]),
            day=date(int(day[:4]), int(day[4:6]), int(day[6:])),
            file_index=int(data["file_index"]),
            records=int(data["records"]),
            bytes=int(data["bytes"]),
            crc32c=str(data["crc32c"]),
            content_type=str(data["content_type"]),
        )


@dataclass(frozen=True)
class FileDigest:
    """Size and checksums of a closed file."""

    size: int
    crc32c: str


# CRC32C, not MD5: it is the checksum Google Cloud Storage keeps for every object, and it runs in
# hardware at gigabytes per second, where MD5 (1.7 ns a byte) would cost as much as writing the
# records themselves.
_crc32c_extend: Callable[[int, bytes], int] = google_crc32c.extend


class _Checksums:
    __slots__ = ("crc",)

    def __init__(self) -> None:
        self.crc = 0

    def update(self, data: bytes) -> None:
        self.crc = _crc32c_extend(self.crc, data)

    def digest(self, size: int) -> FileDigest:
        return FileDigest(size, base64.b64encode(self.crc.to_bytes(4, "big")).decode("ascii"))


def digest_of_path(path: Path) -> FileDigest:
    """Return size and checksums of a file already on disk (used for files written by a library).

    :param path: the file.
    """
    checksums = _Checksums()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            checksums.update(chunk)
            size += len(chunk)
    return checksums.digest(size)


class FileWorker:
    """A thread that gzips, checksums and writes file data while the caller serializes more.

    zlib releases the GIL while it compresses, so on a machine with two cores compression runs
    beside the serialization instead of after it. At most ``max_pending`` chunks wait in line, which
    bounds the memory it holds. A failure in the thread is raised in the caller at its next call.

    :param max_pending: chunks that may wait for the thread.
    """

    def __init__(self, max_pending: int = 8) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ct-export-files", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as exc:  # handed to the caller by _check()
                self._error = exc
            finally:
                self._jobs.task_done()

    def _check(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` (waits while the line is full)."""
        self._check()
        self._jobs.put(job)

    def wait(self) -> None:
        """Wait until every queued job ran; raise the first failure."""
        self._jobs.join()
        self._check()

    def close(self) -> None:
        """Stop the thread once the queued jobs ran."""
        self._jobs.put(None)
        self._thread.join()

    def __enter__(self) -> FileWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class OutputFile:
    """A file being written: buffered, optionally gzip-compressed, checksummed on the way out.

    Gzip files are compressed, checksummed and written in a :class:`FileWorker` thread. Plain files
    are written by the caller: a write and a CRC32C of 256 KiB take microseconds, less than
    handing them to another thread, which must take the GIL back after each step (measured: the
    caller waited for such a thread a tenth of the export's time).

    :param path: where to write (created or truncated).
    :param gzip_level: gzip compression level 1-9, or ``None`` for no compression.
    :param worker: the thread that compresses and writes gzip files.
    :param on_disk: called with the file's size each time bytes reach the disk (from the worker
        thread for gzip files), so that a sink can upload what is there while the rest is written.
    """

    __slots__ = (
        "_checksums",
        "_compressor",
        "_exact_out",
        "_handle",
        "_in_since_sync",
        "_on_disk",
        "_out_bytes",
        "_worker",
        "buffer",
        "path",
    )

    def __init__(
        self,
        path: Path,
        *,
        gzip_level: int | None,
        worker: FileWorker,
        on_disk: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self._handle = _open_empty(path)
        #: Bytes not yet written out. A writer may append to it directly (the same object for
        #: the file's life) as long as it stays within :meth:`room`.
        self.buffer = bytearray()
        self._checksums = _Checksums()
        # wbits 31: gzip wrapper; mtime 0 in the header keeps files reproducible.
        self._compressor = zlib.compressobj(gzip_level, zlib.DEFLATED, 31) if gzip_level is not None else None
        self._worker = worker
        self._on_disk = on_disk
        self._out_bytes = 0  # bytes on disk; updated by the worker thread
        self._exact_out = 0  # bytes on disk at the last point the caller waited for the worker
        self._in_since_sync = 0  # uncompressed bytes handed to the worker since then

    def write(self, data: bytes) -> None:
        """Append ``data`` (already checked with :meth:`fits`)."""
        self.buffer += data
        if len(self.buffer) >= _BUFFER_BYTES:
            self._drain()

    # In the worker thread for gzip files, in the caller's for plain ones ---------------------

    def _emit(self, data: bytes) -> None:
        if data:
            self._checksums.update(data)
            self._handle.write(data)
            self._out_bytes += len(data)
            if self._on_disk is not None:
                self._on_disk(self._out_bytes)

    def _process(self, data: bytes) -> None:
        self._emit(self._compressor.compress(data) if self._compressor is not None else data)

    def _sync(self) -> None:
        if self._compressor is not None:
            self._emit(self._compressor.flush(zlib.Z_SYNC_FLUSH))

    def _close(self) -> None:
        if self._compressor is not None:
            self._emit(self._compressor.flush(zlib.Z_FINISH))
        self._handle.close()

    # In the caller's thread -----------------------------------------------------------------

    def _drain(self) -> None:
        buffer = self.buffer
        if not buffer:
            return
        data = bytes(buffer)  # CRC32C takes bytes only; the worker thread needs its own copy anyway
        buffer.clear()
        if self._compressor is None:
            self._emit(data)
            self._exact_out = self._out_bytes
            return
        self._in_since_sync += len(data)
        self._worker.submit(partial(self._process, data))

    def _bound(self, extra: int) -> int:
        pending = self._in_since_sync + len(self.buffer) + extra
        if self._compressor is None:
            return self._exact_out + pending
        return self._exact_out + pending + (pending >> 10) + _GZIP_FIXED_OVERHEAD

    def room(self, footer_size: int, limit: int) -> int:
        """How many more bytes may be appended to :attr:`buffer` before asking :meth:`fits` again.

        That is the bytes that surely fit before a footer of ``footer_size`` within ``limit`` (for
        gzip a lower bound: when it is too small for what comes next, :meth:`fits` makes the
        size exact first), and at most what fills the buffer (:meth:`fits` writes it out).

        :param footer_size: bytes the file ends with.
        :param limit: the file size limit in bytes.
        """
        buffered = len(self.buffer)
        pending = self._in_since_sync + buffered + footer_size
        available = limit - self._exact_out
        if self._compressor is None:
            return min(available - pending, _BUFFER_BYTES - buffered)
        available -= _GZIP_FIXED_OVERHEAD
        # The largest total q with q + (q >> 10) <= available.
        total = available - (available >> 10) if available > 0 else 0
        while total > 0 and total + (total >> 10) > available:
            total -= 1
        return min(total - pending, _BUFFER_BYTES - buffered)

    def fits(self, size: int, footer_size: int, limit: int) -> bool:
        """Whether ``size`` more bytes, then a footer of ``footer_size``, keep the file within ``limit``.

        :param size: bytes about to be written.
        :param footer_size: bytes the file ends with (written by :meth:`finish`).
        :param limit: the file size limit in bytes.
        """
        if len(self.buffer) >= _BUFFER_BYTES:
            self._drain()
        if self._bound(size + footer_size) <= limit:
            return True
        if self._compressor is not None and (self._in_since_sync or self.buffer):
            self._drain()
            self._worker.submit(self._sync)
            self._worker.wait()
            self._exact_out = self._out_bytes
            self._in_since_sync = 0
            return self._bound(size + footer_size) <= limit
        return False

    def finish(self, footer: bytes = b"") -> FileDigest:
        """Write ``footer``, flush, close, and return size and checksums.

        :param footer: the bytes that end the file (for example the closing root tag of XML).
        """
        self.buffer += footer
        self._drain()
        if self._compressor is None:
            self._close()
        else:
            self._worker.submit(self._close)
            self._worker.wait()
        return self._checksums.digest(self._out_bytes)

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        self.buffer.clear()
        if self._compressor is not None:
            # Called while another error propagates: a failure of the worker must not hide it.
            with contextlib.suppress(Exception):
                self._worker.submit(self._handle.close)
                self._worker.wait()
        self._handle.close()
        self.path.unlink(missing_ok=True)


def _open_empty(path: Path) -> io.FileIO:
    """Open ``path`` for writing from its start, created if need be and emptied if it is not empty.

    Not ``open(path, "wb")``: an existing file (as :func:`new_output_path` makes them) would be
    truncated at open, and ext4 then flushes the whole file to disk when it is closed
    (``auto_da_alloc``), about 35 ms per 100 MB, in the export's own thread.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if os.fstat(descriptor).st_size:
            os.ftruncate(descriptor, 0)
        return open(descriptor, "wb", buffering=0)
    except BaseException:
        os.close(descriptor)
        raise


def new_output_path(directory: Path, suffix: str) -> Path:
    """Return a fresh, unique, empty file path inside ``directory``.

    :param directory: the work directory.
    :param suffix: file name suffix, for readability of the work directory.
    """
    handle, name = tempfile.mkstemp(prefix=".ct-export-", suffix="." + suffix, dir=directory)
    os.close(handle)
    return Path(name)
