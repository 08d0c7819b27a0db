"""Sinks: where export files go.

A writer hands each finished file to a sink with :meth:`Sink.submit` and carries on writing the
next one while the sink delivers it. :class:`LocalFolderSink` moves files into a folder (tests, dry
runs); :class:`UploadingSink` uploads them through the bucket hook from background threads, keeping
at most ``max_in_flight`` finished files waiting on disk: when that many are pending, ``submit``
waits (backpressure).

Text files (JSON, CSV, XML) only ever grow at their end, so the writer also announces each one when
it starts it (:meth:`Sink.follow`): :class:`UploadingSink` then streams the file into a resumable
upload, one chunk as soon as a chunk is on disk, and only the last chunk is left when the file is
finished. Upload and writing overlap within a file, not only between files: an export whose days
fill their files side by side would otherwise upload everything after writing everything. The
object exists only once the last chunk is sent, so an export that fails never leaves a partial
object.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, runtime_checkable

from ct_airflow_provider.export.errors import ExportConfigError, ExportSinkError
from ct_airflow_provider.export.files import ExportedFile


class FileFollower(Protocol):
    """Told how a file grows while it is written (see :meth:`Sink.follow`)."""

    def written(self, size: int) -> None:
        """The file now holds ``size`` bytes on disk (called from the thread that writes it)."""

    def abandon(self) -> None:
        """The file will not be finished (the export failed): drop what was sent of it."""


@runtime_checkable
class Sink(Protocol):
    """Receives finished export files."""

    def follow(self, local_path: Path, object_name: str, content_type: str) -> FileFollower | None:
        """Learn of a file as it is started; return a follower to be told how it grows, or ``None``.

        The file still arrives through :meth:`submit` once finished (or its follower is abandoned).

        :param local_path: the file being written.
        :param object_name: the object name it will have.
        :param content_type: its content type.
        """

    def submit(self, local_path: Path, file: ExportedFile) -> None:
        """Take ownership of the finished file at ``local_path``; return without waiting for delivery.

        :param local_path: the finished file; the sink moves or deletes it.
        :param file: its description (object name, checksums, content type).
        :raises ExportSinkError: if an earlier delivery already failed.
        """

    def close(self) -> None:
        """Wait for every delivery; raise the first failure, naming its object."""

    def __enter__(self) -> Sink: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class ObjectWriter(Protocol):
    """An upload sent as it is written (the Google client's ``BlobWriter``)."""

    def write(self, data: bytes) -> int:
        """Append ``data``; full chunks are sent before returning."""

    def close(self) -> None:
        """Send what is left and create the object."""

    def terminate(self) -> None:
        """Abandon the upload: no object is created."""


class Uploader(Protocol):
    """What :class:`UploadingSink` needs of a storage client (the GCS bucket hook implements it)."""

    @property
    def upload_chunk_bytes(self) -> int:
        """Size of each chunk of a resumable upload."""

    def open_object_writer(self, object_name: str, content_type: str) -> ObjectWriter:
        """Start an upload of ``object_name`` that is sent while it is written."""


class LocalFolderSink:
    """Moves each finished file to ``folder/<object name>`` (creating sub-folders of the prefix).

    :param folder: the destination folder; created if missing.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.delivered: list[ExportedFile] = []

    def follow(self, local_path: Path, object_name: str, content_type: str) -> None:
        """Nothing to do before a file is finished: it is moved whole."""

    def submit(self, local_path: Path, file: ExportedFile) -> None:
        """Move the file into the folder under its object name.

        :param local_path: the finished file.
        :param file: its description.
        """
        target = self.folder / file.object_name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(local_path, target)
        except OSError as exc:
            raise ExportSinkError(f"Could not move {file.object_name} into {self.folder}: {exc}") from exc
        self.delivered.append(file)

    def close(self) -> None:
        """Nothing to wait for: files are moved as they are submitted."""

    def __enter__(self) -> LocalFolderSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class UploadingSink:
    """Uploads files from background threads while the writer writes the next ones.

    A followed file (:meth:`follow`) is streamed into a resumable upload as it grows; any other
    file goes the same way once submitted, chunk after chunk. Each local file is deleted once its
    upload succeeds (or fails). At most ``max_in_flight`` finished files are uploading or waiting
    (``submit`` blocks while that many are pending, which bounds the disk the export uses). Chunks
    are sent one at a time, whatever the number of files open (which bounds the memory to one chunk:
    it is read from disk just before it is sent). After a failure, further ``follow`` and ``submit``
    calls raise at once, and ``close`` raises the first failure with the object name.

    :param uploader: the bucket hook, or any object with its ``open_object_writer`` and
        ``upload_chunk_bytes``.
    :param max_in_flight: how many finished files may be pending at once (at least 1).
    """

    def __init__(self, uploader: Uploader, max_in_flight: int = 2) -> None:
        missing = [
            name for name in ("open_object_writer", "upload_chunk_bytes") if not hasattr(uploader, name)
        ]
        if missing:
            raise ExportConfigError(
                "The uploader needs open_object_writer(object_name, content_type) and upload_chunk_bytes "
                f"(the bucket hook has both); {type(uploader).__name__} has no {', '.join(missing)}."
            )
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ExportConfigError(f"max_in_flight must be an integer of at least 1, got {max_in_flight!r}.")
        self._uploader = uploader
        self._slots = threading.BoundedSemaphore(max_in_flight)
        # One thread sends every chunk: each chunk in transfer holds about twice its size, and a second
        # thread cost more memory than the time it saved (docs/performance.md, request budget).
        self._chunk_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ct-export-chunks")
        self._streams: dict[Path, _StreamedUpload] = {}  # followed files not yet submitted
        self._all_streams: list[_StreamedUpload] = []
        self._failure: ExportSinkError | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.delivered: list[ExportedFile] = []

    def _raise_if_failed(self) -> None:
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise failure

    def _failed(self, object_name: str, exc: BaseException) -> None:
        error = ExportSinkError(f"Upload of {object_name} failed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        with self._lock:
            if self._failure is None:
                self._failure = error

    def _done(self, file: ExportedFile) -> None:
        with self._lock:
            self.delivered.append(file)

    def follow(self, local_path: Path, object_name: str, content_type: str) -> FileFollower:
        """Start streaming the file at ``local_path`` to ``object_name`` while it is written.

        :param local_path: the file being written (it must only grow at its end).
        :param object_name: the object's name.
        :param content_type: the object's content type.
        :raises ExportSinkError: if an earlier upload failed.
        """
        if self._closed:
            raise ExportSinkError(f"The sink is closed; {object_name} was not uploaded.")
        self._raise_if_failed()
        stream = _StreamedUpload(self, Path(local_path), object_name, content_type)
        self._streams[stream.local_path] = stream
        self._all_streams.append(stream)
        return stream

    def submit(self, local_path: Path, file: ExportedFile) -> None:
        """Queue the finished file for upload (or its last chunk, when followed).

        Waits while ``max_in_flight`` finished files are already pending.

        :param local_path: the finished file (deleted after its upload).
        :param file: its description.
        :raises ExportSinkError: if an earlier upload failed (the file is deleted, not uploaded).
        """
        stream = self._streams.pop(Path(local_path), None)
        if stream is None and not self._closed:  # a file written whole (Parquet): sent the same way
            stream = _StreamedUpload(self, Path(local_path), file.object_name, file.content_type)
            self._all_streams.append(stream)
        if self._closed:
            raise ExportSinkError(f"The sink is closed; {file.object_name} was not uploaded.")
        try:
            self._raise_if_failed()
            self._slots.acquire()
            try:
                self._raise_if_failed()
            except BaseException:
                self._slots.release()
                raise
        except BaseException:
            if stream is not None:
                stream.abandon()
            Path(local_path).unlink(missing_ok=True)
            raise
        assert stream is not None
        stream.complete(file)

    def _abandon_streams(self) -> None:
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.abandon()
        for stream in streams:
            stream.join()

    def close(self) -> None:
        """Wait for every upload, stop the threads, and raise the first failure if there was one.

        A followed file that was neither finished nor abandoned is abandoned (and reported).
        """
        if not self._closed:
            self._closed = True
            unfinished = sorted(stream.object_name for stream in self._streams.values() if stream.pending)
            self._abandon_streams()
            for stream in self._all_streams:
                stream.join()
            self._chunk_pool.shutdown(wait=True)
            if unfinished:
                with self._lock:
                    if self._failure is None:
                        self._failure = ExportSinkError(
                            f"These files were started but never finished, so they were not uploaded: "
                            f"{', '.join(unfinished)}; this is a bug: please report it."
                        )
        self._raise_if_failed()

    def __enter__(self) -> UploadingSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        # Already failing: stop the streams, wait for the threads, let the original error propagate.
        self._abandon_streams()
        with contextlib.suppress(ExportSinkError):
            self.close()


#: Bytes read from a local file at a time while a chunk is handed to the upload.
_PIECE_BYTES = 1 << 20


class _StreamedUpload:
    """One file sent to a resumable upload while it is written.

    Each time a whole chunk is on disk beyond what was sent, a job on the sink's chunk threads reads
    it back (from the page cache: it was just written) and sends it; once the file is finished the
    rest is sent and the object created. The local file is the only copy of the data, so memory
    holds only the chunks in transfer. One job per file runs at a time, so chunks go in order.
    """

    def __init__(self, sink: UploadingSink, local_path: Path, object_name: str, content_type: str) -> None:
        self.sink = sink
        self.local_path = local_path
        self.object_name = object_name
        self.content_type = content_type
        self._chunk = sink._uploader.upload_chunk_bytes
        self._lock = threading.Lock()
        self._size = 0  # bytes on disk
        self._sent = 0
        self._file: ExportedFile | None = None  # set once the file is finished and handed over
        self._abandoned = False
        self._failed = False
        self._job_queued = False
        self._writer: ObjectWriter | None = None
        self._source: BinaryIO | None = None
        self._ended = threading.Event()

    @property
    def pending(self) -> bool:
        """Neither finished nor abandoned yet."""
        with self._lock:
            return self._file is None and not self._abandoned

    def written(self, size: int) -> None:
        """The file holds ``size`` bytes on disk (called by the thread writing it)."""
        with self._lock:
            self._size = size
            self._queue_job()

    def complete(self, file: ExportedFile) -> None:
        """The file is finished (``file.bytes`` long) and handed over: send the rest, create the object."""
        with self._lock:
            self._file = file
            self._size = file.bytes
            self._queue_job()

    def abandon(self) -> None:
        """The file will not be finished: abandon the upload (the file's owner deletes the file)."""
        with self._lock:
            self._abandoned = True
            self._queue_job()

    def join(self) -> None:
        """Wait until the upload ended: object created, failed, or abandoned."""
        self._ended.wait()

    def _queue_job(self) -> None:  # called with the lock held
        if self._job_queued or self._ended.is_set():
            return
        if (
            self._abandoned
            or self._file is not None
            or (not self._failed and self._size - self._sent >= self._chunk)
        ):
            self._job_queued = True
            self.sink._chunk_pool.submit(self._job)

    def _next_step(self) -> str:
        with self._lock:
            if self._abandoned:
                return "abandon"
            if self._failed:
                if self._file is not None:
                    return "end"
                self._job_queued = False
                return "idle"
            if self._file is not None:
                return "last" if self._size - self._sent <= self._chunk else "chunk"
            if self._size - self._sent >= self._chunk:
                return "chunk"
            self._job_queued = False
            return "idle"

    def _job(self) -> None:
        while True:
            step = self._next_step()
            if step == "idle":  # _next_step() cleared _job_queued under the lock
                return
            if step in ("abandon", "end"):
                self._end(abandoned=step == "abandon")
                return
            try:
                self._send(last=step == "last")
            except BaseException as exc:
                self.sink._failed(self.object_name, exc)
                with self._lock:
                    self._failed = True
                self._terminate()
                continue
            if step == "last":
                assert self._file is not None
                self.sink._done(self._file)
                self._end(abandoned=False)
                return

    def _send(self, last: bool) -> None:
        if self._writer is None:
            self._source = open(self.local_path, "rb")  # noqa: SIM115 - closed by _end()
            self._writer = self.sink._uploader.open_object_writer(self.object_name, self.content_type)
        assert self._source is not None
        with self._lock:
            left = self._size - self._sent if last else self._chunk
        # Fed in pieces: the Google client keeps its own copy of the chunk until it is sent, so
        # reading the whole chunk at once would hold it twice.
        while left > 0:
            piece = self._source.read(min(_PIECE_BYTES, left))
            if not piece:
                raise ExportSinkError(f"{self.local_path} ended {left} bytes early")
            self._writer.write(piece)
            left -= len(piece)
            with self._lock:
                self._sent += len(piece)
        if last:
            assert self._file is not None
            if self._sent != self._file.bytes:
                raise ExportSinkError(f"sent {self._sent} bytes of a {self._file.bytes}-byte file")
            self._writer.close()
            self._writer = None

    def _terminate(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with contextlib.suppress(Exception):  # an abandoned session expires by itself anyway
                writer.terminate()

    def _end(self, abandoned: bool) -> None:
        self._terminate()
        if self._source is not None:
            self._source.close()
            self._source = None
        with self._lock:
            handed_over = self._file is not None and not abandoned
        if handed_over:
            # submit() handed the file over (and took a slot): it is ours to delete.
            self.local_path.unlink(missing_ok=True)
            self.sink._slots.release()
        self._ended.set()
