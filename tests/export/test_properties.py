"""Hypothesis: awkward property values, keys and event names survive every format."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ct_airflow_provider.export import ExportNaming, LocalFolderSink, export_event
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

NAMING = ExportNaming(request_id="9", run_timestamp=1, database_id=0)

keys = st.text(max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
records = st.lists(
    st.fixed_dictionaries(
        {
            "profile": st.fixed_dictionaries(
                {"identity": st.text(max_size=10)}, optional={"make": st.text(max_size=5)}
            ),
            "ts": st.sampled_from([20240105000000, 20240105235959, 20240106120000]),
            "event_props": st.dictionaries(keys, values, max_size=5),
        },
        optional={"session_props": st.dictionaries(keys, values, max_size=2)},
    ),
    min_size=1,
    max_size=12,
)
event_names = st.text(min_size=1, max_size=20).filter(lambda name: "\n" not in name and "\r" not in name)


def _export(
    folder: Path, batch: list[dict[str, Any]], export_format: str, event_name: str
) -> dict[Any, list[Path]]:
    files = export_event(
        [batch], event_name=event_name, naming=NAMING, export_format=export_format,
        sink=LocalFolderSink(folder / "out"), work_dir=folder / "work",
    )  # fmt: skip
    assert files.records_written == len(batch)
    by_day: dict[Any, list[Path]] = {}
    for file in sorted(files, key=lambda f: (f.day, f.file_index)):
        by_day.setdefault(file.day, []).append(folder / "out" / file.object_name)
    return by_day


def _day_records(batch: list[dict[str, Any]], day: Any) -> list[dict[str, Any]]:
    return [expected_record(r) for r in batch if ts_datetime(r["ts"]).date() == day]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=records, event_name=event_names)
def test_every_format_reads_back_the_records(batch: list[dict[str, Any]], event_name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for day, paths in _export(folder / "json", batch, "json", event_name).items():
            lines = [line for path in paths for line in read_json(file_bytes(path))[1]]
            assert all(same(got, want) for got, want in zip(lines, _day_records(batch, day), strict=True))

        for day, paths in _export(folder / "csv", batch, "csv", event_name).items():
            want = _day_records(batch, day)
            header, rows = read_csv(file_bytes(paths[0]))
            assert len(rows) == len(want)
            for row, record in zip(rows, want, strict=True):
                for column, cell in zip(header, row, strict=True):
                    assert csv_cell_matches(cell, csv_value(record, column, event_name)), (
                        column,
                        cell,
                        record,
                    )

        for day, paths in _export(folder / "xml", batch, "xml", event_name).items():
            events = [element_node(e) for e in read_xml(file_bytes(paths[0]))]
            assert events == [expected_event_element(r, event_name) for r in _day_records(batch, day)]

        for day, paths in _export(folder / "parquet", batch, "parquet", event_name).items():
            table = read_parquet(paths[0])
            want = _day_records(batch, day)
            for row, record in zip(table.to_pylist(), want, strict=True):
                assert row["eventName"] == event_name
                assert row["ts"] == ts_datetime(record["ts"])
                for field in table.schema:
                    if field.name not in ("ts", "eventName"):
                        assert parquet_matches(row[field.name], record.get(field.name), field), (
                            field,
                            row,
                            record,
                        )
