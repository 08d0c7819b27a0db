"""Sinks: files moved or uploaded while the next is written, bounded backlog, failures named."""

from __future__ import annotations

import base64
import hashlib
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ct_airflow_provider.export import (
    ExportConfigError,
    ExportedFile,
    ExportSinkError,
    LocalFolderSink,
    UploadingSink,
    export_event,
)
from tests.export.sample_records import NAMING, awkward_records, pages_of


class FolderUploader:
    """A real uploader into a folder: copies the file, records when each upload ran."""

    def __init__(self, folder: Path, *, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.folder = folder
        self.delay = delay
        self.fail_on = fail_on
        self.uploads: list[tuple[str, str, float, float]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()

    def upload_file(self, local_path: str, object_name: str, content_type: str) -> None:
        started = time.monotonic()
        self.release.wait(timeout=30)
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in object_name:
            raise OSError("bucket said 503")
        target = self.folder / object_name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local_path, target)
        with self.lock:
            self.uploads.append((object_name, content_type, started, time.monotonic()))


def _file(name: str) -> ExportedFile:
    import datetime as dt

    return ExportedFile(name, "E", dt.date(2024, 1, 1), 0, 1, 3, "", None, "text/csv")


def test_uploads_overlap_with_writing_and_match_the_reported_checksums(tmp_path: Path) -> None:
    uploader = FolderUploader(tmp_path / "bucket", delay=0.05)
    records = awkward_records() * 4
    finished_writing = []
    with UploadingSink(uploader, max_in_flight=2) as sink:

        def pages() -> Any:
            yield from pages_of(records)
            finished_writing.append(time.monotonic())

        files = export_event(
            pages(), event_name="Charged", naming=NAMING, export_format="json", sink=sink,
            work_dir=tmp_path / "work", max_file_bytes=4096,
        )  # fmt: skip
    assert len(files) > 5
    # The first upload finished before the last page was even read: uploading overlapped writing.
    first_done = min(done for _, _, _, done in uploader.uploads)
    assert first_done < finished_writing[0]
    assert {name for name, *_ in uploader.uploads} == {f.object_name for f in files}
    for file in files:
        data = (tmp_path / "bucket" / file.object_name).read_bytes()
        assert len(data) == file.bytes
        assert base64.b64encode(hashlib.md5(data).digest()).decode() == file.md5
    # Local copies are gone once uploaded.
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file()]


def test_submit_waits_while_max_in_flight_files_are_pending(tmp_path: Path) -> None:
    uploader = FolderUploader(tmp_path / "bucket")
    uploader.release.clear()
    sink = UploadingSink(uploader, max_in_flight=2)
    paths = []
    for index in range(3):
        path = tmp_path / f"f{index}"
        path.write_bytes(b"abc")
        paths.append(path)
    sink.submit(paths[0], _file("a"))
    sink.submit(paths[1], _file("b"))
    third = threading.Thread(target=sink.submit, args=(paths[2], _file("c")))
    third.start()
    third.join(timeout=0.5)
    assert third.is_alive()  # backpressure: two files pending, the third waits
    assert paths[2].exists()
    uploader.release.set()
    third.join(timeout=10)
    assert not third.is_alive()
    sink.close()
    assert sorted(name for name, *_ in uploader.uploads) == ["a", "b", "c"]
    assert not any(path.exists() for path in paths)


def test_a_failed_upload_is_raised_by_close_with_its_object_name(tmp_path: Path) -> None:
    uploader = FolderUploader(tmp_path / "bucket", fail_on="20240106-0")
    sink = UploadingSink(uploader, max_in_flight=1)
    with pytest.raises(
        ExportSinkError, match=r"Upload of .*20240106-0-7\.csv failed: OSError: bucket said 503"
    ):
        try:
            export_event(
                pages_of(awkward_records()), event_name="Charged", naming=NAMING, export_format="csv",
                sink=sink, work_dir=tmp_path / "work",
            )  # fmt: skip
        finally:
            sink.close()
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file()]


def test_after_a_failure_further_files_are_refused_at_once(tmp_path: Path) -> None:
    uploader = FolderUploader(tmp_path / "bucket", fail_on="first")
    sink = UploadingSink(uploader, max_in_flight=1)
    first, second = tmp_path / "one", tmp_path / "two"
    first.write_bytes(b"1")
    second.write_bytes(b"2")
    sink.submit(first, _file("first"))
    deadline = time.monotonic() + 10
    while first.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(ExportSinkError, match="first"):
        sink.submit(second, _file("second"))
    assert not second.exists()
    with pytest.raises(ExportSinkError, match="first"):
        sink.close()


def test_uploader_without_upload_file_is_refused() -> None:
    with pytest.raises(ExportConfigError, match="upload_file"):
        UploadingSink(object())  # type: ignore[arg-type]
    with pytest.raises(ExportConfigError, match="max_in_flight"):
        UploadingSink(FolderUploader(Path("/nonexistent")), max_in_flight=0)


def test_local_folder_sink_keeps_the_prefix_as_folders(tmp_path: Path) -> None:
    source = tmp_path / "x"
    source.write_bytes(b"data")
    with LocalFolderSink(tmp_path / "out") as sink:
        sink.submit(source, _file("clevertap/exports/a.csv"))
    assert (tmp_path / "out" / "clevertap" / "exports" / "a.csv").read_bytes() == b"data"
    assert not source.exists()
