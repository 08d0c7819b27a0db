"""Files split per day and per max_file_bytes: never over the limit, never a record split, indices contiguous."""

from __future__ import annotations

import random
import string
from collections import defaultdict
from typing import Any

import pytest

from ct_airflow_provider.export import ExportDataError
from ct_airflow_provider.export.files import FileDigest, digest_of_path
from tests.export.conftest import Exporter
from tests.export.readers import (
    expected_record,
    file_bytes,
    read_csv,
    read_json,
    read_parquet,
    read_xml,
    same,
)


def _records(
    count: int, *, seed: int = 3, days: int = 2, incompressible: bool = False
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    records = []
    for index in range(count):
        size = rng.choice([5, 50, 400]) if not incompressible else 300
        text = "".join(rng.choice(string.ascii_letters + 'é紅, "\n') for _ in range(size))
        records.append(
            {
                "profile": {"identity": f"u{index}", "all_identities": [f"u{index}"]},
                "ts": (20240301 + index % days) * 1_000_000 + 120000 + index % 60,
                "event_props": {"Note": text, "Index": index, "Price": rng.random() * 100},
            }
        )
    return records


def _read_indices(path: Any, export_format: str) -> list[int]:
    data = file_bytes(path) if export_format != "parquet" else None
    if export_format == "json":
        assert data is not None
        title, lines = read_json(data)
        assert title == "Charged"
        return [line["eventProps"]["Index"] for line in lines]
    if export_format == "csv":
        assert data is not None
        header, rows = read_csv(data)
        return [int(row[header.index("eventProps.Index")]) for row in rows]
    if export_format == "xml":
        assert data is not None
        root = read_xml(data)
        return [
            int(entry.findtext("value")) for entry in root.iter("entry") if entry.findtext("key") == "Index"
        ]
    table = read_parquet(path)
    return [row["Index"] for row in table.column("eventProps").to_pylist()]


CASES = [
    ("json", None, 2048),
    ("json", "gzip", 1024),
    ("csv", None, 2048),
    ("csv", "gzip", 1024),
    ("xml", None, 4096),
    ("xml", "gzip", 1500),
    ("parquet", None, 12 * 1024),
]


@pytest.mark.parametrize(("export_format", "compression", "limit"), CASES)
@pytest.mark.parametrize("incompressible", [False, True])
def test_every_file_within_the_limit_and_every_record_once(
    run_export: Exporter, export_format: str, compression: str | None, limit: int, incompressible: bool
) -> None:
    records = _records(400, incompressible=incompressible)
    files, out = run_export(records, export_format, compression=compression, max_file_bytes=limit)
    per_day: dict[Any, list[Any]] = defaultdict(list)
    for file in files:
        size = (out / file.object_name).stat().st_size
        assert size == file.bytes <= limit, (file.object_name, size, limit)
        per_day[file.day].append(file)
    assert len(per_day) == 2
    for day_files in per_day.values():
        day_files.sort(key=lambda f: f.file_index)
        assert [f.file_index for f in day_files] == list(range(len(day_files)))
        assert len(day_files) > 2  # the limit really split the day
        indices: list[int] = []
        for file in day_files:
            found = _read_indices(out / file.object_name, export_format)
            assert len(found) == file.records > 0
            indices += found
        # Every record of the day once, in arrival order.
        day_number = int(day_files[0].day.strftime("%Y%m%d"))
        assert indices == [r["event_props"]["Index"] for r in records if r["ts"] // 1_000_000 == day_number]
    assert sum(f.records for f in files) == len(records)


def test_parquet_files_fill_up_rather_than_holding_one_row_group_each(run_export: Exporter) -> None:
    records = _records(3000, days=1)
    limit = 64 * 1024
    files, _out = run_export(records, "parquet", max_file_bytes=limit)
    sizes = sorted(f.bytes for f in files)
    assert all(size <= limit for size in sizes)
    # All files but the last of the day are reasonably full.
    assert sizes[1] > limit * 0.5, sizes


@pytest.mark.parametrize("export_format", ["json", "csv", "xml", "parquet"])
def test_a_record_too_big_for_any_file_is_refused_with_the_remedy(
    run_export: Exporter, export_format: str
) -> None:
    records = _records(3)
    records[1]["event_props"]["Note"] = "x" * 5000
    with pytest.raises(ExportDataError, match=r"max_file_bytes.*Raise max_file_bytes to at least \d+"):
        run_export(records, export_format, max_file_bytes=2048)


def test_a_small_limit_still_gives_files_the_standard_readers_accept(run_export: Exporter) -> None:
    records = _records(50, days=1)
    files, out = run_export(records, "json", max_file_bytes=1024)
    read: list[Any] = []
    for file in sorted(files, key=lambda f: f.file_index):
        read += read_json(file_bytes(out / file.object_name))[1]
    assert all(same(got, expected_record(r)) for got, r in zip(read, records, strict=True))


def test_days_interleaving_beyond_the_open_file_limit_stay_complete(run_export: Exporter) -> None:
    # Records cycling through 6 days while only 2 files may be open: each day continues in its next file.
    records = _records(120, days=6)
    files, _out = run_export(records, "json", max_open_days=2)
    per_day: dict[Any, list[Any]] = defaultdict(list)
    for file in files:
        per_day[file.day].append(file)
    assert len(per_day) == 6
    for day_files in per_day.values():
        day_files.sort(key=lambda f: f.file_index)
        assert [f.file_index for f in day_files] == list(range(len(day_files)))
    assert sum(f.records for f in files) == 120


@pytest.mark.parametrize("gzip_level", [None, 6])
def test_an_output_file_replaces_what_its_path_held(tmp_path: Any, gzip_level: int | None) -> None:
    import gzip

    from ct_airflow_provider.export.files import FileWorker, OutputFile

    path = tmp_path / "reused"
    path.write_bytes(b"stale bytes that must not survive" * 100)
    with FileWorker() as worker:
        output = OutputFile(path, gzip_level=gzip_level, worker=worker)
        output.write(b"fresh")
        digest = output.finish(b"\n")
    data = path.read_bytes()
    assert (gzip.decompress(data) if gzip_level else data) == b"fresh\n"
    assert digest.size == len(data)


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("export_format", ["json", "xml"])
def test_records_beyond_the_write_buffer_reach_the_file_whole_and_checksummed(
    run_export: Exporter, export_format: str, compression: str | None
) -> None:
    # Records pile up in a 256 KiB buffer that is written out when full; records bigger than
    # the buffer, and runs of records crossing it many times, must arrive intact and in order.
    records = _records(600, days=1, incompressible=True)
    rng = random.Random(5)
    for index in (0, 7, 299, 599):
        records[index]["event_props"]["Note"] = "".join(rng.choices(string.ascii_letters, k=400_000))
    files, out = run_export(records, export_format, compression=compression, max_file_bytes=1_000_000)
    assert len(files) > 1
    indices: list[int] = []
    for file in sorted(files, key=lambda f: f.file_index):
        path = out / file.object_name
        assert digest_of_path(path) == FileDigest(file.bytes, file.crc32c)
        assert file.bytes <= 1_000_000
        indices += _read_indices(path, export_format)
    assert indices == list(range(600))
