"""Sinks: where finished export files go.

A writer hands each finished file to a sink with :meth:`Sink.submit` and carries on writing the
next one while the sink delivers it. :class:`LocalFolderSink` moves files into a folder (tests, dry
runs); :class:`UploadingSink` uploads them through any object with an ``upload_file`` method (the
Google Cloud Storage hook provides one) from background threads, keeping at most ``max_in_flight``
finished files waiting on disk: when that many are pending, ``submit`` waits (backpressure).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from ct_airflow_provider.export.errors import ExportConfigError, ExportSinkError
from ct_airflow_provider.export.files import ExportedFile


@runtime_checkable
class Sink(Protocol):
    """Receives finished export files."""

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


class Uploader(Protocol):
    """What :class:`UploadingSink` needs of a storage client (the GCS bucket hook implements it)."""

    def upload_file(self, local_path: str, object_name: str, content_type: str) -> None:
        """Upload the file at ``local_path`` as ``object_name``; raise on failure."""


class LocalFolderSink:
    """Moves each finished file to ``folder/<object name>`` (creating sub-folders of the prefix).

    :param folder: the destination folder; created if missing.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.delivered: list[ExportedFile] = []

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
    """Uploads finished files from background threads while the writer writes the next ones.

    Each local file is deleted once its upload succeeds (or fails). At most ``max_in_flight``
    files are uploading or waiting; ``submit`` blocks while that many are pending, which bounds the
    disk the export uses. After a failure, further ``submit`` calls raise at once, and ``close``
    raises the first failure with the object name.

    :param uploader: any object with ``upload_file(local_path, object_name, content_type)``.
    :param max_in_flight: how many finished files may be pending at once (at least 1).
    """

    def __init__(self, uploader: Uploader, max_in_flight: int = 2) -> None:
        if not hasattr(uploader, "upload_file"):
            raise ExportConfigError(
                "The uploader needs an upload_file(local_path, object_name, content_type) method; "
                f"{type(uploader).__name__} has none."
            )
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ExportConfigError(f"max_in_flight must be an integer of at least 1, got {max_in_flight!r}.")
        self._uploader = uploader
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="ct-export-upload")
        self._futures: list[Future[None]] = []
        self._failure: ExportSinkError | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.delivered: list[ExportedFile] = []

    def _raise_if_failed(self) -> None:
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise failure

    def submit(self, local_path: Path, file: ExportedFile) -> None:
        """Queue the file for upload; waits while ``max_in_flight`` files are already pending.

        :param local_path: the finished file (deleted after its upload).
        :param file: its description.
        :raises ExportSinkError: if an earlier upload failed (the file is deleted, not uploaded).
        """
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
            Path(local_path).unlink(missing_ok=True)
            raise
        self._futures.append(self._pool.submit(self._upload, Path(local_path), file))

    def _upload(self, local_path: Path, file: ExportedFile) -> None:
        try:
            self._uploader.upload_file(str(local_path), file.object_name, file.content_type)
        except BaseException as exc:
            error = ExportSinkError(f"Upload of {file.object_name} failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            with self._lock:
                if self._failure is None:
                    self._failure = error
        else:
            with self._lock:
                self.delivered.append(file)
        finally:
            local_path.unlink(missing_ok=True)
            self._slots.release()

    def close(self) -> None:
        """Wait for every upload, stop the threads, and raise the first failure if there was one."""
        if not self._closed:
            self._closed = True
            for future in self._futures:
                future.result()
            self._pool.shutdown(wait=True)
        self._raise_if_failed()

    def __enter__(self) -> UploadingSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        # Already failing: wait for the threads, but let the original error propagate.
        with contextlib.suppress(ExportSinkError):
            self.close()
