"""The entry points: early validation, the ts filter and its counts, profile exports, clean work folders."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from ct_airflow_provider.export import (
    ExportConfigError,
    ExportDataError,
    LocalFolderSink,
    export_event,
    export_profiles,
    validate_format,
)
from tests.export.conftest import Exporter
from tests.export.readers import file_bytes, read_csv, read_json, read_parquet, read_xml, same
from tests.export.sample_records import NAMING, awkward_records, pages_of


def _export(tmp_path: Path, records: list[dict[str, Any]], **options: Any) -> Any:
    return export_event(
        pages_of(records),
        event_name=options.pop("event_name", "Charged"),
        naming=NAMING,
        export_format=options.pop("export_format", "json"),
        sink=LocalFolderSink(tmp_path / "out"),
        work_dir=tmp_path / "work",
        **options,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"export_format": "yaml"}, r"Unknown export format 'yaml'; choose one of json, csv, xml, parquet"),
        ({"export_format": "parquet", "compression": "gzip"}, r"leave compression unset for Parquet"),
        ({"compression": "zip"}, r"Unknown compression 'zip'; use 'gzip' or None"),
        ({"max_file_bytes": 100}, r"max_file_bytes=100 is too small .* use at least 1024"),
        ({"max_file_bytes": "100MB"}, r"max_file_bytes must be an integer"),
        ({"gzip_level": 11, "compression": "gzip"}, r"gzip_level must be an integer from 1 to 9"),
        ({"export_format": "parquet", "parquet_codec": "lzma"}, r"Unknown Parquet codec 'lzma'"),
        ({"event_name": ""}, r"event name must be a non-empty string"),
        ({"event_name": "two\nlines"}, r"holds a line break.*export this event as CSV, XML or Parquet"),
        ({"max_open_days": 0}, r"max_open_days must be an integer of at least 1"),
    ],
)
def test_bad_settings_fail_before_any_page_is_read(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    read = []

    def pages() -> Any:
        read.append(True)
        yield awkward_records()

    with pytest.raises(ExportConfigError, match=message):
        export_event(
            pages(),
            event_name=options.pop("event_name", "Charged"),
            naming=NAMING,
            export_format=options.pop("export_format", "json"),
            sink=LocalFolderSink(tmp_path / "out"),
            work_dir=tmp_path / "work",
            **options,
        )
    assert not read


def test_validate_format_normalizes() -> None:
    assert validate_format("JSON", "none") == ("json", None)
    assert validate_format("csv", "GZIP") == ("csv", "gzip")
    assert validate_format("parquet", None) == ("parquet", None)


@pytest.mark.parametrize(
    "bad_ts", [None, "20240105120000", 2024010512, 20241305120000, 20240105120000.0, True]
)
def test_a_record_without_a_valid_ts_is_named(tmp_path: Path, bad_ts: Any) -> None:
    records = awkward_records()[:3]
    records[1] = dict(records[1], ts=bad_ts)
    with pytest.raises(ExportDataError, match=r"ts"):
        _export(tmp_path, records)
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file()]


def test_a_record_without_ts_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExportDataError, match=r"without 'ts'.*event_props"):
        _export(tmp_path, [{"profile": {}, "event_props": {}}])


@pytest.mark.parametrize("export_format", ["json", "csv", "xml", "parquet"])
def test_keep_filter_drops_records_outside_the_window_and_counts(
    run_export: Exporter, export_format: str
) -> None:
    records = awkward_records()
    start, end = 20240106000000, 20240106003000
    files, _out = run_export(records, export_format, keep=lambda ts: start <= ts < end)
    wanted = [r for r in records if start <= r["ts"] < end]
    assert 0 < len(wanted) < len(records)
    assert files.records_received == len(records)
    assert files.records_kept == files.records_written == len(wanted)
    assert {f.day for f in files} == {dt.date(2024, 1, 6)}


def test_no_records_no_files(run_export: Exporter) -> None:
    files, _out = run_export([], "csv")
    assert list(files) == []
    assert files.records_received == 0


def test_work_folder_left_empty_after_success_and_failure(tmp_path: Path) -> None:
    _export(tmp_path, awkward_records(), export_format="parquet")
    assert list((tmp_path / "work").iterdir()) == []
    records = awkward_records()
    records[-1] = {"ts": "bad"}
    with pytest.raises(ExportDataError):
        _export(tmp_path, records, export_format="csv")
    assert list((tmp_path / "work").iterdir()) == []


def test_event_names_are_sanitized_in_object_names_only(run_export: Exporter) -> None:
    name = "Added To\tCart/Wishlist\x01"
    files, out = run_export(awkward_records()[:5], "json", event_name=name)
    assert all("-Added-To-Cart-Wishlist?-2024010" in f.object_name for f in files)
    assert all(f.event_name == name for f in files)
    assert read_json(file_bytes(out / files[0].object_name))[0] == name


PROFILES = [
    {
        "identity": "u1",
        "email": "u1@example.com",
        "name": 'Zoë, "the" first',
        "profileData": {"Customer Type": "Gold", "Age": 31},
        "events": {"App Launched": {"count": 3, "first_seen": 1700000000, "last_seen": 1700003600}},
        "platformInfo": [{"platform": "Android", "os_version": "13", "objectId": "__a"}],
    },
    {
        "email": "u2@example.com",
        "name": "Second\nLine",
        "profileData": {"Customer Type": "Silver", "Age": "unknown"},
        "events": {"Charged": {"count": 1, "first_seen": 1700000000, "last_seen": 1700000000}},
        "platformInfo": [],
    },
]


@pytest.mark.parametrize("export_format", ["json", "csv", "xml", "parquet"])
def test_profiles_keep_their_shape_under_the_profiles_name(tmp_path: Path, export_format: str) -> None:
    day = dt.date(2024, 1, 31)
    files = export_profiles(
        [PROFILES],
        day=day,
        naming=NAMING,
        export_format=export_format,
        sink=LocalFolderSink(tmp_path / "out"),
        work_dir=tmp_path / "work",
    )
    assert [f.object_name for f in files] == [f"1700000000-1700000123-profiles-20240131-0-7.{export_format}"]
    assert files[0].event_name == "profiles" and files[0].records == 2
    path = tmp_path / "out" / files[0].object_name
    if export_format == "json":
        title, lines = read_json(file_bytes(path))
        assert title == "profiles"
        assert all(same(got, want) for got, want in zip(lines, PROFILES, strict=True))
    elif export_format == "csv":
        header, rows = read_csv(file_bytes(path))
        assert header[:3] == ["identity", "email", "name"]
        assert "profileData.Customer Type" in header and "events.App Launched" in header
        assert rows[1][header.index("name")] == "Second\nLine"
        assert (
            rows[0][header.index("platformInfo")]
            == '[{"platform":"Android","os_version":"13","objectId":"__a"}]'
        )
    elif export_format == "xml":
        root = read_xml(file_bytes(path))
        assert root.tag == "Profiles"
        first = root[0]
        assert first.tag == "Profile" and first.findtext("identity") == "u1"
        assert first.find("platformInfo").findtext("os_version") == "13"
        assert [e.findtext("key") for e in first.find("profileData").iter("entry")] == ["Customer Type"]
    else:
        rows = read_parquet(path).to_pylist()
        assert rows[0]["identity"] == "u1" and rows[1]["identity"] is None
        assert rows[0]["platformInfo"] == [{"platform": "Android", "os_version": "13", "objectId": "__a"}]
        assert rows[1]["profileData"]["Age"] == '"unknown"' and rows[0]["profileData"]["Age"] == "31"


def test_profiles_need_a_day(tmp_path: Path) -> None:
    with pytest.raises(ExportConfigError, match=r"day must be a datetime\.date"):
        export_profiles(
            [PROFILES], day="2024-01-31", naming=NAMING, export_format="json",  # type: ignore[arg-type]
            sink=LocalFolderSink(tmp_path), work_dir=tmp_path,
        )  # fmt: skip
