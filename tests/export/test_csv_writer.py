"""The CSV writer's own paths: rows formatted without csv.writer, the gather plan, spill batches.

Rows are formatted by the module itself for speed; csv.writer (minimal quoting, CRLF) is the
reference they must equal byte for byte. Files are checked against rows written here with
csv.writer under the file's own header (header order is checked in test_formats_roundtrip).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ct_airflow_provider.export import ExportNaming, LocalFolderSink, export_event, export_profiles
from ct_airflow_provider.export.chunking import Delivery
from ct_airflow_provider.export.errors import ExportDataError
from ct_airflow_provider.export.formats import csv as csv_format
from ct_airflow_provider.export.formats.csv import CsvWriter, format_row, json_text, padded_rows
from tests.export.readers import csv_value, expected_record, file_bytes, read_csv

NAMING = ExportNaming(request_id="9", run_timestamp=1, database_id=0)

# Text that exercises every quoting rule and the separators a faster formatter might rely on.
texts = st.text(alphabet=st.sampled_from(list('ab ,"\r\n\x00\x01é紅🎉\t')), max_size=8) | st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


def reference_cell(value: Any) -> Any:
    """What csv.writer is given for a value, by the documented cell rules."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json_text(value)
    return value


def reference_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([reference_cell(value) for value in values])
    return buffer.getvalue()


@settings(max_examples=400, deadline=None)
@given(row=st.lists(values, min_size=2, max_size=8))
def test_format_row_writes_what_csv_writer_writes(row: list[Any]) -> None:
    try:
        expected = reference_line(row)
    except ExportDataError:  # JSON cannot hold it (inf beside an integer beyond 64 bits): same error
        with pytest.raises(ExportDataError):
            format_row(row)
        return
    assert format_row(row) + "\r\n" == expected


@pytest.mark.parametrize(
    "row",
    [
        ["plain", "text"],
        ["a,b", 'say "hi"'],
        ["line\nbreak", "x"],  # not caught by the per-cell test: the row-level check must see it
        ["cr\ronly", 1],
        ["", ""],
        [None, None, None],
        [True, False, 0, -1, 2**70],
        [59.99, 1e100, -0.0, math.inf, math.nan],
        [[], {}, [1], [1, 2], ["a"], {"k": None}, [2**70]],
        ["nul\x00byte", "\x01"],
    ],
)
def test_format_row_examples(row: list[Any]) -> None:
    assert format_row(row) + "\r\n" == reference_line(row)


def test_format_row_hands_unexpected_types_to_csv_writer() -> None:
    class Text(str):
        pass

    assert format_row([Text("a,b"), (1, 2)]) + "\r\n" == reference_line([Text("a,b"), "(1, 2)"])


def test_padded_rows_get_an_empty_cell_per_late_column() -> None:
    assert padded_rows([b"a,b,c\r\n"], 3, 3) == [b"a,b,c\r\n"]
    assert padded_rows([b"a,b\r\n", b'"x,y",\r\n'], 2, 5) == [b"a,b,,,\r\n", b'"x,y",,,,\r\n']
    # A record without any field, before any column was known: every cell empty.
    assert padded_rows([b"\r\n"], 0, 3) == [b",,\r\n"]
    assert padded_rows([b"\r\n"], 0, 1) == [b'""\r\n']
    # The quoted empty cell of a one-column row is not quoted beside other cells.
    assert padded_rows([b'""\r\n', b'""""\r\n', b"z\r\n"], 1, 2) == [b",\r\n", b'"""",\r\n', b"z,\r\n"]


# -- whole exports against csv.writer ------------------------------------------------------------

section_keys = st.sampled_from(["a", "b", "c", "d", "e,f", 'g"h'])
# Finite floats inside lists and objects: JSON refuses infinity beside an integer beyond 64 bits
# (tested above), which would fail the whole export.
json_values = st.recursive(
    scalars.filter(lambda value: not isinstance(value, float) or math.isfinite(value)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
cell_values = scalars | st.lists(json_values, max_size=3) | st.dictionaries(texts, json_values, max_size=3)
sections = st.dictionaries(section_keys, cell_values, max_size=4)
# Objects whose keys become columns draw their keys from section_keys: an empty key would name a
# column "field." that the reference reader (csv_value) cannot tell from the column "field".
non_objects = scalars | st.lists(json_values, max_size=3)
# The API's own layout (all four keys, three objects), which the writer reads without shaping.
api_layout_records = st.fixed_dictionaries(
    {
        "profile": st.dictionaries(
            st.sampled_from(["identity", "make", "email", "screen"]), cell_values, max_size=3
        ),
        "ts": st.sampled_from([20240105000000, 20240106120000]),
        "event_props": sections,
        "session_props": sections,
    }
)
event_records = st.lists(
    api_layout_records
    | st.fixed_dictionaries(
        {"ts": st.sampled_from([20240105000000, 20240106120000, 20240107235959])},
        optional={
            "profile": st.dictionaries(
                st.sampled_from(["identity", "make", "email"]), cell_values, max_size=3
            ),
            "event_props": sections | non_objects,  # an object in most records, not in some
            "session_props": sections,
            "extra": non_objects | sections,  # a top-level key: a column, or a section when an object
            # A top-level deviceInfo: its keys join the profile's device fields, and "identity"
            # then names a deviceInfo column as well as a profile one (which records of the API's
            # own layout, read without shaping, must keep apart).
            "deviceInfo": st.dictionaries(
                st.sampled_from(["make", "identity", "screen"]), cell_values, max_size=2
            ),
        },
    ),
    min_size=1,
    max_size=15,
)


def _check_files_match_reference(
    folder: Path, files: Any, records_by_day: dict[int, list[dict[str, Any]]], event_name: str | None
) -> None:
    headers = set()
    for file in files:
        data = file_bytes(folder / file.object_name)
        header, _rows = read_csv(data)
        headers.add(tuple(header))
        day = int(file.object_name.split("-")[-3])
        expected = "".join(
            reference_line([csv_value(record, column, event_name) for column in header])
            for record in records_by_day[day]
        )
        assert data == (reference_line(header) + expected).encode("utf-8")
    assert len(headers) <= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=event_records, flush_bytes=st.sampled_from([1, 200, 1 << 20]))
def test_event_files_are_what_csv_writer_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: list[Any], flush_bytes: int
) -> None:
    folder = Path(tmp_path) / f"case-{id(batch)}-{flush_bytes}"
    # A small flush size spills often: batches of rows formatted under several column counts.
    monkeypatch.setattr(csv_format, "_FLUSH_BYTES", flush_bytes)
    files = export_event(
        [batch], event_name="Charged, \"inc\"", naming=NAMING, export_format="csv",
        sink=LocalFolderSink(folder / "out"), work_dir=folder / "work",
    )  # fmt: skip
    assert files.records_written == len(batch)
    by_day: dict[int, list[dict[str, Any]]] = {}
    for record in batch:
        by_day.setdefault(record["ts"] // 1_000_000, []).append(expected_record(record))
    _check_files_match_reference(folder / "out", files, by_day, 'Charged, "inc"')


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(st.dictionaries(section_keys, non_objects | sections, max_size=3), min_size=1, max_size=10)
)
def test_profile_files_are_what_csv_writer_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: list[dict[str, Any]]
) -> None:
    # Profiles start with no column at all, so rows of zero and one column happen here.
    folder = Path(tmp_path) / f"case-{id(batch)}"
    monkeypatch.setattr(csv_format, "_FLUSH_BYTES", 1)
    files = export_profiles(
        [batch], day=dt.date(2024, 1, 31), naming=NAMING, export_format="csv",
        sink=LocalFolderSink(folder / "out"), work_dir=folder / "work",
    )  # fmt: skip
    _check_files_match_reference(folder / "out", files, {20240131: batch}, None)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=event_records, shuffle=st.randoms(use_true_random=False), flush_bytes=st.sampled_from([1, 1 << 20])
)
def test_files_do_not_depend_on_the_order_days_arrive_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: list[Any], shuffle: Any, flush_bytes: int
) -> None:
    """Streams read side by side hand the writer several days' pages interleaved: each day's records
    keep their order, the days' records mix. The files are those of the days read one after another."""
    monkeypatch.setattr(csv_format, "_FLUSH_BYTES", flush_bytes)
    by_day: dict[int, list[Any]] = {}
    for record in batch:
        by_day.setdefault(record["ts"] // 1_000_000, []).append(record)
    in_order = [record for day in sorted(by_day) for record in by_day[day]]
    waiting = {day: list(records) for day, records in by_day.items()}
    interleaved = []
    while waiting:
        day = shuffle.choice(sorted(waiting))
        interleaved.append(waiting[day].pop(0))
        if not waiting[day]:
            del waiting[day]
    written = []
    for name, records in (("in-order", in_order), ("interleaved", interleaved)):
        folder = tmp_path / f"case-{id(batch)}-{flush_bytes}-{name}"
        files = export_event(
            [records[start : start + 2] for start in range(0, len(records), 2)], event_name="E",
            naming=NAMING, export_format="csv", sink=LocalFolderSink(folder / "out"), work_dir=folder / "work",
        )  # fmt: skip
        written.append({file.object_name: file_bytes(folder / "out" / file.object_name) for file in files})
    assert written[0] == written[1]


def _read_export(
    tmp_path: Path, records: list[dict[str, Any]], **options: Any
) -> tuple[list[str], list[list[str]]]:
    out = tmp_path / "out"
    files = export_event(
        [records], event_name="E", naming=NAMING, export_format="csv",
        sink=LocalFolderSink(out), work_dir=tmp_path / "work", **options,
    )  # fmt: skip
    assert len(files) == 1
    return read_csv(file_bytes(out / files[0].object_name))


def test_a_late_key_of_an_earlier_field_gets_the_last_column(tmp_path: Path) -> None:
    # profile.b appears after eventProps.x: the values of one field are no longer next to each
    # other in column order, which the gather plan must rearrange.
    records = [
        {"ts": 20240105000000, "profile": {"a": "1"}, "event_props": {"x": 1}},
        {"ts": 20240105000001, "profile": {"b": "2", "a": "3"}, "event_props": {"x": 4}},
        {"ts": 20240105000002, "event_props": {"y": [5], "x": 6}, "profile": {"b": "7"}},
    ]
    header, rows = _read_export(tmp_path, records)
    assert header == ["ts", "eventName", "profile.a", "eventProps.x", "profile.b", "eventProps.y"]
    assert rows == [
        ["20240105000000", "E", "1", "1", "", ""],
        ["20240105000001", "E", "3", "4", "2", ""],
        ["20240105000002", "E", "", "6", "7", "[5]"],
    ]


def test_a_key_whose_type_changes_keeps_its_cells_right(tmp_path: Path) -> None:
    records = [
        {"ts": 20240105000000, "event_props": {"x": 1}, "extra": "top"},
        {"ts": 20240105000001, "event_props": {"x": "one, two"}, "extra": {"inner": True}},
        {"ts": 20240105000002, "event_props": {"x": [1, "2"]}, "extra": 3.5},
        {"ts": 20240105000003, "event_props": {"x": {"k": None}}, "extra": None},
        {"ts": 20240105000004, "event_props": {"x": None}},
    ]
    header, rows = _read_export(tmp_path, records)
    assert header == ["ts", "eventName", "eventProps.x", "extra", "extra.inner"]
    assert [row[2:] for row in rows] == [
        ["1", "top", ""],
        ["one, two", "", "true"],  # an object under "extra": its top-level cell is empty
        ['[1,"2"]', "3.5", ""],
        ['{"k":null}', "", ""],
        ["", "", ""],
    ]


def test_an_event_field_that_is_not_an_object_is_a_column_of_its_own(tmp_path: Path) -> None:
    records = [
        {"ts": 20240105000000, "event_props": {"x": 1}},
        {"ts": 20240105000001, "event_props": "not an object"},
    ]
    header, rows = _read_export(tmp_path, records)
    assert header == ["ts", "eventName", "eventProps.x", "eventProps"]
    assert rows == [["20240105000000", "E", "1", ""], ["20240105000001", "E", "", "not an object"]]


def test_pending_rows_are_bounded_across_all_days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows waiting to be spilled stay under one limit however many days the records cover."""
    monkeypatch.setattr(csv_format, "_FLUSH_BYTES", 4096)
    delivery = Delivery(NAMING, "E", "csv", None, 1 << 20, LocalFolderSink(tmp_path / "out"), tmp_path)
    (tmp_path / "spill").mkdir()
    writer = CsvWriter(delivery, tmp_path / "spill", "E")
    try:
        for start in range(0, 2000, 100):
            page = [
                (20240101 + index % 28, {"ts": 0, "eventProps": {"text": "x" * 50, "n": index}})
                for index in range(start, start + 100)
            ]
            writer.add(page)
            held = sum(len(row) for day in writer._days.values() for row in day.rows)
            assert held < 4096
        writer.finish()
    finally:
        delivery.worker.close()
    assert sum(file.records for file in delivery.files) == 2000
    assert len(delivery.files) == 28


def test_a_profile_key_named_like_a_device_info_column_gets_its_own_column(tmp_path: Path) -> None:
    # deviceInfo.screen exists (from a top-level deviceInfo) before any profile has "screen": the
    # profile's "screen", read from an API record without shaping, still needs a column of its own.
    records = [
        {
            "ts": 20240105000000,
            "deviceInfo": {"screen": "big"},
            "profile": {"identity": "a"},
            "event_props": {"x": 0},
            "session_props": {},
        },
        {
            "profile": {"identity": "b", "screen": "small"},
            "ts": 20240105000001,
            "event_props": {"x": 1},
            "session_props": {},
        },
    ]
    header, rows = _read_export(tmp_path, records)
    cells = [dict(zip(header, row, strict=True)) for row in rows]
    assert cells[0]["deviceInfo.screen"] == "big" and cells[0]["profile.identity"] == "a"
    assert cells[1]["profile.screen"] == "small" and cells[1]["deviceInfo.screen"] == ""
