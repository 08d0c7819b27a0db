"""Sinks: files moved or uploaded while the next is written, bounded backlog, failures named."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

import google_crc32c
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


class FolderFileUpload:
    """A resumable upload into a folder, read from its file a chunk at a time as the Google client does.

    Chunks go to a hidden part file; a chunk shorter than a whole one is the last and makes the object.
    """

    def __init__(self, uploader: FolderUploader, source: Any, object_name: str, content_type: str) -> None:
        self.uploader = uploader
        self.source = source
        self.object_name = object_name
        self.content_type = content_type
        self.started = time.monotonic()
        self.part = uploader.folder / ".parts" / object_name
        self.part.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.part.open("wb")
        self.finished = False

    def send_chunk(self) -> None:
        uploader = self.uploader
        data = self.source.read(uploader.upload_chunk_bytes)
        with uploader.lock:
            uploader.sending += 1
            uploader.most_sending = max(uploader.most_sending, uploader.sending)
        try:
            uploader.release.wait(timeout=30)
            time.sleep(uploader.delay)
            if uploader.fail_on is not None and uploader.fail_on in self.object_name:
                raise OSError("bucket said 503")
            self.handle.write(data)
        finally:
            with uploader.lock:
                uploader.sending -= 1
        with uploader.lock:
            uploader.chunks.append((self.object_name, len(data), time.monotonic()))
        if len(data) < uploader.upload_chunk_bytes:
            self.handle.close()
            target = uploader.folder / self.object_name
            target.parent.mkdir(parents=True, exist_ok=True)
            self.part.rename(target)
            self.finished = True
            with uploader.lock:
                uploader.uploads.append((self.object_name, self.content_type, self.started, time.monotonic()))

    def cancel(self) -> None:
        self.handle.close()
        self.part.unlink()
        with self.uploader.lock:
            self.uploader.terminated.append(self.object_name)


class FolderUploader:
    """A real uploader into a folder: takes chunks read from files, records when; can wait, be slow or fail."""

    def __init__(
        self, folder: Path, *, delay: float = 0.0, fail_on: str | None = None, chunk_bytes: int = 1024
    ) -> None:
        self.folder = folder
        self.delay = delay
        self.fail_on = fail_on
        self.upload_chunk_bytes = chunk_bytes
        self.uploads: list[tuple[str, str, float, float]] = []
        self.chunks: list[tuple[str, int, float]] = []
        self.terminated: list[str] = []
        self.sending = 0  # chunks being sent, and the most at once
        self.most_sending = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()

    def start_file_upload(self, source: Any, object_name: str, content_type: str) -> FolderFileUpload:
        return FolderFileUpload(self, source, object_name, content_type)


def _file(name: str) -> ExportedFile:
    import datetime as dt

    return ExportedFile(name, "E", dt.date(2024, 1, 1), 0, 1, 3, "AAAAAA==", "text/csv")


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
        assert base64.b64encode(google_crc32c.Checksum(data).digest()).decode() == file.crc32c
    # Local copies are gone once uploaded.
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file()]


@pytest.mark.parametrize("chunks_in_transfer", [1, 2])
def test_files_written_side_by_side_send_at_most_chunks_in_transfer_at_once(
    tmp_path: Path, chunks_in_transfer: int
) -> None:
    # Each chunk in transfer is held in memory: however many files grow at once, the bound holds.
    uploader = FolderUploader(tmp_path / "bucket", delay=0.02, chunk_bytes=1024)
    work = tmp_path / "work"
    work.mkdir()
    paths = [work / f"day-{day}.json" for day in range(3)]
    with UploadingSink(uploader, max_in_flight=3, chunks_in_transfer=chunks_in_transfer) as sink:
        followers = [sink.follow(path, path.name, "application/json") for path in paths]
        for step in range(1, 9):
            for path, follower in zip(paths, followers, strict=True):
                with path.open("ab") as handle:
                    handle.write(bytes([48 + step]) * 1024)
                follower.written(step * 1024)
        for path in paths:
            sink.submit(
                path, ExportedFile(path.name, "E", _file("x").day, 0, 8, 8 * 1024, "", "application/json")
            )
    # Three files with chunks waiting: the sink sends as many at once as it may, never more.
    assert uploader.most_sending == chunks_in_transfer
    for path in paths:
        assert (tmp_path / "bucket" / path.name).read_bytes() == b"".join(
            bytes([48 + s]) * 1024 for s in range(1, 9)
        )
        # Whole chunks, then the empty last one that a file of whole chunks ends with.
        assert [size for name, size, _ in uploader.chunks if name == path.name] == [1024] * 8 + [0]


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


def test_an_uploader_without_file_uploads_is_refused() -> None:
    with pytest.raises(ExportConfigError, match="start_file_upload"):
        UploadingSink(object())  # type: ignore[arg-type]
    with pytest.raises(ExportConfigError, match="max_in_flight"):
        UploadingSink(FolderUploader(Path("/nonexistent")), max_in_flight=0)
    with pytest.raises(ExportConfigError, match="chunks_in_transfer"):
        UploadingSink(FolderUploader(Path("/nonexistent")), chunks_in_transfer=0)


def test_local_folder_sink_keeps_the_prefix_as_folders(tmp_path: Path) -> None:
    source = tmp_path / "x"
    source.write_bytes(b"data")
    with LocalFolderSink(tmp_path / "out") as sink:
        sink.submit(source, _file("clevertap/exports/a.csv"))
    assert (tmp_path / "out" / "clevertap" / "exports" / "a.csv").read_bytes() == b"data"
    assert not source.exists()


def _one_day_records(count: int) -> list[dict[str, Any]]:
    """``count`` records of one day, about 250 bytes each as JSON."""
    return [
        {"profile": {"identity": f"user-{index}"}, "ts": 20240105000000 + index % 60,
         "event_props": {"note": "x" * 200, "index": index}}
        for index in range(count)
    ]  # fmt: skip


def test_a_growing_file_is_sent_in_chunks_before_it_is_finished(tmp_path: Path) -> None:
    # 2 MB in one file, chunks of 64 KiB: the file's first chunks leave while later pages are written.
    uploader = FolderUploader(tmp_path / "bucket", chunk_bytes=64 * 1024)
    records = _one_day_records(8000)
    pages_read: list[float] = []

    def pages() -> Any:
        for page in pages_of(records, size=500):
            time.sleep(0.01)  # pages arrive over a network
            pages_read.append(time.monotonic())
            yield page

    with UploadingSink(uploader, max_in_flight=2) as sink:
        files = export_event(
            pages(), event_name="Charged", naming=NAMING, export_format="json", sink=sink,
            work_dir=tmp_path / "work",
        )  # fmt: skip
    assert len(files) == 1
    (file,) = files
    sent = [(size, at) for name, size, at in uploader.chunks if name == file.object_name]
    # The first chunk left before the last page was read (pages take 10 ms: time enough).
    assert sent[0][1] < pages_read[-1]
    # Every chunk but the last is exactly one chunk long, and together they are the file.
    assert all(size == 64 * 1024 for size, _ in sent[:-1])
    assert sum(size for size, _ in sent) == file.bytes
    data = (tmp_path / "bucket" / file.object_name).read_bytes()
    assert base64.b64encode(google_crc32c.Checksum(data).digest()).decode() == file.crc32c
    lines = data.splitlines()
    assert lines[0] == b"Charged" and len(lines) == 8001
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file()]


def test_an_export_failing_mid_file_abandons_its_upload_and_leaves_no_object(tmp_path: Path) -> None:
    uploader = FolderUploader(tmp_path / "bucket", chunk_bytes=64 * 1024)
    records = _one_day_records(8000)

    def pages() -> Any:
        yield from pages_of(records[:6000], size=500)
        deadline = time.monotonic() + 10  # fail once the upload has started
        while not uploader.chunks and time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("CleverTap went away")

    with pytest.raises(RuntimeError, match="went away"), UploadingSink(uploader) as sink:
        export_event(
            pages(), event_name="Charged", naming=NAMING, export_format="json", sink=sink,
            work_dir=tmp_path / "work",
        )  # fmt: skip
    assert uploader.chunks  # the upload had started...
    assert len(uploader.terminated) == 1  # ...and was abandoned
    assert uploader.uploads == []
    assert [p for p in (tmp_path / "bucket").rglob("*") if p.is_file()] == []
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file()]


def test_a_failed_chunk_is_raised_with_the_object_name_and_stops_the_export(tmp_path: Path) -> None:
    uploader = FolderUploader(tmp_path / "bucket", chunk_bytes=64 * 1024, fail_on="Charged")
    pages_read = []

    def pages() -> Any:
        for page in pages_of(_one_day_records(40000), size=500):
            pages_read.append(page)
            yield page

    with (
        pytest.raises(
            ExportSinkError, match=r"Upload of .*Charged-20240105-0-.*failed: OSError: bucket said 503"
        ),
        UploadingSink(uploader) as sink,
    ):
        export_event(
            pages(), event_name="Charged", naming=NAMING, export_format="json", sink=sink,
            work_dir=tmp_path / "work", max_file_bytes=1024 * 1024,
        )  # fmt: skip
    # The failure surfaced at the next file: the export did not read all 80 pages first.
    assert len(pages_read) < 80
    assert [p for p in (tmp_path / "bucket").rglob("*") if p.is_file()] == []
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
