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
import os
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


class FileUpload(Protocol):
    """A resumable upload that reads its chunks from a local file (the bucket hook's ``start_file_upload``)."""

    @property
    def finished(self) -> bool:
        """Whether the last chunk was sent and the object created."""

    def send_chunk(self) -> None:
        """Read the next chunk from the file and send it; a chunk shorter than a whole one is the last."""

    def cancel(self) -> None:
        """Abandon the upload: no object is created."""


class Uploader(Protocol):
    """What :class:`UploadingSink` needs of a storage client (the GCS bucket hook implements it)."""

    @property
    def upload_chunk_bytes(self) -> int:
        """Size of each chunk of a resumable upload."""

    def start_file_upload(self, source: BinaryIO, object_name: str, content_type: str) -> FileUpload:
        """Start a resumable upload of ``object_name`` whose chunks are read from ``source``."""


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
    (``submit`` blocks while that many are pending, which bounds the disk the export uses). At most
    ``chunks_in_transfer`` chunks are sent at once, whatever the number of files open, from as many
    threads; each is read from disk just before it is sent and held once, which bounds the memory.
    After a failure, further ``follow`` and ``submit`` calls raise at once, and ``close`` raises the
    first failure with the object name.

    :param uploader: the bucket hook, or any object with its ``start_file_upload`` and
        ``upload_chunk_bytes``.
    :param max_in_flight: how many finished files may be pending at once (at least 1).
    :param chunks_in_transfer: how many chunks may be sent at once (at least 1); two keep the
        connection busy while the next chunk is read (docs/performance.md, request budget).
    """

    def __init__(self, uploader: Uploader, max_in_flight: int = 2, chunks_in_transfer: int = 2) -> None:
        missing = [
            name for name in ("start_file_upload", "upload_chunk_bytes") if not hasattr(uploader, name)
        ]
        if missing:
            raise ExportConfigError(
                "The uploader needs start_file_upload(source, object_name, content_type) and "
                f"upload_chunk_bytes (the bucket hook has both); {type(uploader).__name__} has no "
                f"{', '.join(missing)}."
            )
        for name, value in (("max_in_flight", max_in_flight), ("chunks_in_transfer", chunks_in_transfer)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ExportConfigError(f"{name} must be an integer of at least 1, got {value!r}.")
        self._uploader = uploader
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._chunk_pool = ThreadPoolExecutor(
            max_workers=chunks_in_transfer, thread_name_prefix="ct-export-chunks"
        )
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


class _StreamedUpload:
    """One file sent to a resumable upload while it is written.

    Each time a whole chunk is on disk beyond what was sent, a job on the sink's chunk threads has
    the upload read it (from the page cache: it was just written) and send it; once the file is
    finished the rest is sent and the object created. The local file is the only copy of the data,
    so memory holds only the chunks in transfer. One job per file runs at a time, so chunks go in
    order.
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
        self._upload: FileUpload | None = None
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
        if self._upload is None:
            self._source = open(self.local_path, "rb")  # noqa: SIM115 - closed by _end()
            self._upload = self.sink._uploader.start_file_upload(
                self._source, self.object_name, self.content_type
            )
        assert self._source is not None
        if last:  # at most a chunk is left (a whole one is followed by an empty last chunk)
            while not self._upload.finished:
                self._upload.send_chunk()
            assert self._file is not None
            if self._source.tell() != self._file.bytes:
                raise ExportSinkError(f"sent {self._source.tell()} bytes of a {self._file.bytes}-byte file")
            self._upload = None
        else:  # a whole chunk is on disk beyond what was sent
            # The client takes a short read for the file's end: never let it see one mid-file.
            on_disk = os.fstat(self._source.fileno()).st_size
            if on_disk - self._source.tell() < self._chunk:
                raise ExportSinkError(f"{self.local_path} holds {on_disk} bytes, fewer than it was said to")
            self._upload.send_chunk()
        with self._lock:
            self._sent = self._source.tell()

    def _terminate(self) -> None:
        if self._upload is not None:
            upload, self._upload = self._upload, None
            with contextlib.suppress(Exception):  # an abandoned session expires by itself anyway
                upload.cancel()

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
