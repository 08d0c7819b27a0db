"""Each format read back by an independent reader and compared record by record with the input."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ct_airflow_provider.export import ExportedFiles
from tests.export.conftest import Exporter
from tests.export.readers import (
    csv_cell_matches,
    csv_value,
    element_node,
    expected_event_element,
    expected_record,
    file_bytes,
    parquet_matches,
    read_csv,
    read_json,
    read_parquet,
    read_xml,
    same,
    ts_datetime,
)
from tests.export.sample_records import awkward_records

EVENT = "Charged"


def _by_day(records: list[dict[str, Any]]) -> dict[dt.date, list[dict[str, Any]]]:
    days: dict[dt.date, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        days[ts_datetime(record["ts"]).date()].append(record)
    return days


def _files_by_day(files: ExportedFiles, out: Path) -> dict[dt.date, list[Path]]:
    days: dict[dt.date, list[tuple[int, Path]]] = defaultdict(list)
    for file in files:
        days[file.day].append((file.file_index, out / file.object_name))
    return {day: [path for _, path in sorted(entries)] for day, entries in days.items()}


def _check_bookkeeping(files: ExportedFiles, out: Path, records: list[dict[str, Any]]) -> None:
    assert files.records_received == files.records_kept == files.records_written == len(records)
    assert {path.name for path in out.rglob("*") if path.is_file()} == {f.object_name for f in files}
    for file in files:
        assert (out / file.object_name).stat().st_size == file.bytes


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_json_lines_are_the_shaped_records(run_export: Exporter, compression: str | None) -> None:
    records = awkward_records()
    files, out = run_export(records, "json", compression=compression)
    _check_bookkeeping(files, out, records)
    for day, paths in _files_by_day(files, out).items():
        read: list[Any] = []
        for path in paths:
            title, lines = read_json(file_bytes(path))
            assert title == EVENT
            read += lines
        expected = [expected_record(r) for r in _by_day(records)[day]]
        assert len(read) == len(expected)
        for got, want in zip(read, expected, strict=True):
            assert same(got, want), (got, want)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_csv_rows_match_the_records_under_one_header(run_export: Exporter, compression: str | None) -> None:
    records = awkward_records()
    files, out = run_export(records, "csv", compression=compression, max_file_bytes=8 * 1024)
    _check_bookkeeping(files, out, records)
    headers = set()
    for day, paths in _files_by_day(files, out).items():
        rows: list[list[str]] = []
        for path in paths:
            header, file_rows = read_csv(file_bytes(path))
            headers.add(tuple(header))
            rows += file_rows
        expected = [expected_record(r) for r in _by_day(records)[day]]
        assert len(rows) == len(expected)
        for row, record in zip(rows, expected, strict=True):
            assert len(row) == len(header)
            for column, cell in zip(header, row, strict=True):
                assert csv_cell_matches(cell, csv_value(record, column, EVENT)), (column, cell, record)
    assert len(headers) == 1
    header = list(headers.pop())
    assert header[:2] == ["ts", "eventName"]
    assert (
        header.index("profile.identity")
        < header.index("eventProps.Amount")
        < header.index("sessionProps.utm_source")
    )
    # Every key of every record has its column.
    for record in map(expected_record, records):
        for section in ("profile", "deviceInfo", "eventProps", "sessionProps"):
            for key in record.get(section, {}):
                assert f"{section}.{key}" in header


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_xml_events_match_the_records(run_export: Exporter, compression: str | None) -> None:
    records = awkward_records()
    files, out = run_export(records, "xml", compression=compression)
    _check_bookkeeping(files, out, records)
    for day, paths in _files_by_day(files, out).items():
        events: list[Any] = []
        for path in paths:
            root = read_xml(file_bytes(path))
            assert root.tag == "Events"
            events += list(root)
        expected = [expected_event_element(expected_record(r), EVENT) for r in _by_day(records)[day]]
        assert [element_node(e) for e in events] == expected


def test_parquet_rows_match_the_records_with_one_schema(run_export: Exporter) -> None:
    records = awkward_records()
    files, out = run_export(records, "parquet", max_file_bytes=24 * 1024)
    _check_bookkeeping(files, out, records)
    schemas = set()
    for day, paths in _files_by_day(files, out).items():
        rows: list[dict[str, Any]] = []
        for path in paths:
            table = read_parquet(path)
            schemas.add(table.schema.to_string(show_field_metadata=True))
            rows += table.to_pylist()
            schema = table.schema
        expected = [expected_record(r) for r in _by_day(records)[day]]
        assert len(rows) == len(expected)
        for row, record in zip(rows, expected, strict=True):
            assert row["ts"] == ts_datetime(record["ts"])
            assert row["eventName"] == EVENT
            for field in schema:
                if field.name not in ("ts", "eventName"):
                    assert parquet_matches(row[field.name], record.get(field.name), field), (
                        field.name,
                        row,
                        record,
                    )
    assert len(schemas) == 1
    assert schema.field("ts").type == pa.timestamp("ms")
    assert schema.names[:2] == ["ts", "eventName"]
    props = schema.field("eventProps").type
    assert props.field("Amount").type == pa.float64()
    assert props.field("Quantity").type == pa.float64()  # whole numbers too: every number is a double
    # Mixed text and numbers: kept as JSON text, marked in the field metadata.
    assert props.field("Mixed").type == pa.string()
    assert props.field("Mixed").metadata == {b"ct_airflow_provider.encoding": b"json"}
    assert schema.field("profile").type.field("all_identities").type == pa.list_(pa.string())
