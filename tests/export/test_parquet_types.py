"""Parquet: types learned by pyarrow's JSON reader agree with the Python rules, block after block."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ct_airflow_provider.export import ExportDataError
from ct_airflow_provider.export.formats import parquet
from ct_airflow_provider.export.formats.json import encode_line
from ct_airflow_provider.export.formats.parquet import (
    _block_table,
    _json_paths,
    _merge,
    _python_type,
    _read_block,
    extend_columns,
    file_fields,
    json_text_encoder,
)
from tests.export.conftest import Exporter
from tests.export.readers import is_json_field, parquet_matches, read_parquet

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 2**63])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([2.0**53, -(2.0**60), 1e300, 0.5])
    | st.text(max_size=6)
    | st.sampled_from(["2024-01-05", "2024-01-05 10:00:00", "1970-01-01T00:00:00Z"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
    max_leaves=6,
)
record_lists = st.lists(st.dictionaries(st.sampled_from(["x", "y", "z", ""]), values, max_size=4), max_size=8)


def _schema(learned: pa.DataType) -> pa.Schema:
    """The files' schema of records of a learned type, as an export without earlier ones writes them."""
    return pa.schema(file_fields(extend_columns(None, learned)["columns"]))


def _lines(records: list[dict[str, Any]]) -> bytearray:
    return bytearray(b"".join(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE) for record in records))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(record_lists, min_size=1, max_size=4))
def test_inferred_types_give_the_schema_the_python_rules_give(blocks: list[list[dict[str, Any]]]) -> None:
    """Block by block, inferred where pyarrow can tell and looked at in Python otherwise.

    A block pyarrow reads gets the type Python gives it; the tables pyarrow read, when reused
    for the files, hold what reading the same lines with the learned schema gives (or are
    refused, and the lines read again), the values of mixed kinds as JSON text or not.
    """
    learned = pa.struct([])
    everything: list[dict[str, Any]] = []
    kept: list[tuple[bytearray, Path]] = []
    with tempfile.TemporaryDirectory() as folder:
        for number, records in enumerate(blocks):
            try:
                data = _lines(records)
            except TypeError:  # integers beyond 64 bits: such blocks are never handed to pyarrow
                data = None
            table_path = Path(folder, f"{number}.arrow")
            inferred = _read_block(data, table_path) if data else None
            in_python = _python_type(records)
            if inferred is not None:
                assert inferred.equals(in_python), (inferred, in_python, records)
                assert data is not None
                if table_path.exists():  # kept unless pyarrow's table of the lines is invalid
                    kept.append((data, table_path))
            learned = _merge(learned, in_python)
            everything += records
        schema = _schema(learned)
        assert schema.equals(_schema(_python_type(everything)), check_metadata=True), (schema, everything)
        paths = _json_paths(pa.struct(list(schema)))
        if paths:  # the export spills such values as JSON text once it knows: blocks as it has them
            encode = json_text_encoder(paths)
            kept = []
            for number, records in enumerate(blocks):
                data = bytearray(b"".join(encode_line(encode(record)) for record in records))
                table_path = Path(folder, f"encoded-{number}.arrow")
                if data and _read_block(data, table_path) is not None and table_path.exists():
                    kept.append((data, table_path))
        for data, table_path in kept:
            reused = _block_table(table_path, schema)
            if reused is None:
                continue
            expected = pa_json.read_json(
                pa.BufferReader(bytes(data)),
                parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
            )
            # (The reader leaves out the field metadata the files get from their schema.)
            assert reused.equals(expected), (reused, expected)


@pytest.mark.parametrize(
    ("lines", "refused"),
    [
        ([{"a": 1}, {"a": "1"}], True),  # number, then text
        ([{"a": True}, {"a": 1}], True),  # boolean, then number
        ([{"a": 2**63}], True),  # read as a double by pyarrow
        ([{"a": 1.5}, {"a": 2**53 + 1}], True),  # an integer a double does not hold exactly
        ([{"a": 2.0**53}], True),  # might have been such an integer: asked again in Python
        ([{"a": 1.5}, {"a": 2**53 - 1}], False),
        ([{"a": 2**53 + 1}, {"a": 2}], False),
        ([{"a": "2024-01-05"}], False),  # inferred as a timestamp, which is text
    ],
)
def test_blocks_pyarrow_cannot_tell_are_refused(
    lines: list[dict[str, Any]], refused: bool, tmp_path: Path
) -> None:
    assert (_read_block(_lines(lines), tmp_path / "block.arrow") is None) is refused


def test_a_table_pyarrow_reads_invalid_is_not_kept(tmp_path: Path) -> None:
    # pyarrow 26, inferring, drops the null that starts a list: the types hold, the table not.
    inferred = _read_block(_lines([{"x": [None, False]}, {"x": [True]}]), tmp_path / "block.arrow")
    assert inferred is not None and inferred.field("x").type == pa.list_(pa.bool_())
    assert not (tmp_path / "block.arrow").exists()


def test_a_block_of_text_read_as_timestamps_is_read_again_from_its_lines(tmp_path: Path) -> None:
    data = _lines([{"a": "2024-01-05"}, {"a": "2024-01-06 10:00:00"}])
    inferred = _read_block(data, tmp_path / "block.arrow")
    assert inferred is not None and inferred.field("a").type == pa.string()
    # pyarrow read timestamps: cast back to text they would not be the text of the records.
    assert not (tmp_path / "block.arrow").exists()


def test_a_big_integer_in_an_inferred_block_is_remembered(tmp_path: Path) -> None:
    inferred = _read_block(
        _lines([{"a": {"b": [{"c": 2**60}]}}, {"a": {"b": [{"c": 3}]}}]), tmp_path / "block.arrow"
    )
    assert inferred is not None
    assert _schema(inferred).field("a").type == pa.struct(
        [pa.field("b", pa.list_(pa.struct([pa.field("c", pa.int64())])))]
    )
    learned = _merge(inferred, _python_type([{"a": {"b": [{"c": 0.5}]}}]))
    # Integers beyond 2**53 and a float: JSON text rather than a double that would round them
    # (and a list holding JSON text is JSON text itself).
    items = _schema(learned).field("a").type.field("b")
    assert is_json_field(items) and items.type == pa.string()


def _records(count: int, props: Any) -> list[dict[str, Any]]:
    return [
        {
            "profile": {"identity": f"u{index}"},
            "ts": 20240105000000 + index % 60,
            "event_props": props(index),
        }
        for index in range(count)
    ]


def _rows(files: Any, out: Path) -> tuple[pa.Schema, list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    schemas = set()
    schema = None
    for file in sorted(files, key=lambda f: (f.day, f.file_index)):
        table = read_parquet(out / file.object_name)
        schemas.add(table.schema.to_string(show_field_metadata=True))
        schema = table.schema
        rows += table.to_pylist()
    assert len(schemas) == 1 and schema is not None
    return schema, rows


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few records for type inference (and row groups of a few records)."""
    monkeypatch.setattr(parquet, "_BLOCK_BYTES", 300)


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize(
    ("late_value", "column_type"),
    [
        ("text", pa.string()),  # a type change long after the first blocks: JSON text
        (2**60, pa.int64()),  # a big integer after many small ones: int64 still holds it
        (2**64, pa.string()),  # beyond int64: JSON text
        (True, pa.string()),
        (None, pa.float64()),  # numbers are doubles
    ],
)
def test_a_late_value_decides_the_type_of_every_file(
    run_export: Exporter, late_value: Any, column_type: pa.DataType
) -> None:
    count = 400
    records = _records(count, lambda index: {"Count": late_value if index == count - 3 else index})
    files, out = run_export(records, "parquet", max_file_bytes=8 * 1024)
    assert len(files) > 1
    schema, rows = _rows(files, out)
    field = schema.field("eventProps").type.field("Count")
    assert is_json_field(field) is (column_type == pa.string())
    assert field.type == column_type
    assert len(rows) == count
    by_identity = {row["profile"]["identity"]: row for row in rows}
    for record in records:
        row = by_identity[record["profile"]["identity"]]
        assert parquet_matches(row["eventProps"]["Count"], record["event_props"]["Count"], field)


@pytest.mark.usefixtures("small_blocks")
def test_integers_and_floats_mix_into_doubles_only_when_exact(run_export: Exporter) -> None:
    def props(index: int) -> dict[str, Any]:
        # One integer beyond 2**53, in an early block; one float, in a late block of small integers.
        inexact = 2**53 + 1 if index == 10 else 0.5 if index == 390 else index
        return {"Exact": index + 0.5 if index % 50 == 0 else index, "Inexact": inexact}

    records = _records(400, props)
    files, out = run_export(records, "parquet")
    schema, rows = _rows(files, out)
    props_type = schema.field("eventProps").type
    assert props_type.field("Exact").type == pa.float64()
    assert is_json_field(props_type.field("Inexact"))
    by_identity = {row["profile"]["identity"]: row for row in rows}
    for record in records:
        row = by_identity[record["profile"]["identity"]]["eventProps"]
        assert parquet_matches(row["Exact"], float(record["event_props"]["Exact"]), props_type.field("Exact"))
        assert parquet_matches(row["Inexact"], record["event_props"]["Inexact"], props_type.field("Inexact"))


@pytest.mark.usefixtures("small_blocks")
def test_a_failed_export_leaves_no_helper_thread(run_export: Exporter) -> None:
    records = _records(300, lambda index: {"Count": index})
    records[250]["ts"] = 20241305000000  # month 13
    with pytest.raises(ExportDataError, match="not a calendar day"):
        run_export(records, "parquet")
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("parquet-")]


def _write_directly(records: list[dict[str, Any]], folder: Path) -> tuple[parquet.ParquetWriter, Any, Path]:
    """The Parquet writer driven by hand, to see how many records it read twice."""
    from ct_airflow_provider.export import LocalFolderSink
    from ct_airflow_provider.export.chunking import Delivery
    from ct_airflow_provider.export.records import shape_event
    from tests.export.sample_records import NAMING, pages_of

    out = folder / "out"
    spill = folder / "spill"
    spill.mkdir(parents=True)
    delivery = Delivery(NAMING, "Charged", "parquet", None, 1 << 20, LocalFolderSink(out), folder)
    writer = parquet.ParquetWriter(delivery, spill, "Charged", "snappy")
    try:
        for page in pages_of(records, size=50):
            writer.add((record["ts"] // 1_000_000, shape_event(record)) for record in page)
        writer.finish()
    finally:
        delivery.worker.close()
    return writer, delivery.files, out


@pytest.mark.usefixtures("small_blocks")
def test_records_are_read_once_when_their_types_hold(tmp_path: Path) -> None:
    records = _records(400, lambda index: {"Count": index, "Price": index + 0.5, "Tags": [str(index)]})
    for index, record in enumerate(records):
        record["ts"] += (index % 3) * 1_000_000  # three days, interleaved
    writer, files, out = _write_directly(records, tmp_path)
    assert writer.records_read_twice == 0
    # Each day's spill and the tables kept for it are gone once its files are written.
    assert not list((tmp_path / "spill").iterdir())
    schema, rows = _rows(files, out)
    assert schema.field("eventProps").type.field("Count").type == pa.float64()  # numbers are doubles
    assert sorted(row["profile"]["identity"] for row in rows) == sorted(f"u{i}" for i in range(400))
    by_identity = {row["profile"]["identity"]: row for row in rows}
    for record in records:
        assert by_identity[record["profile"]["identity"]]["eventProps"] == record["event_props"]


@pytest.mark.usefixtures("small_blocks")
def test_records_spilled_before_a_key_turned_to_json_text_are_read_again(tmp_path: Path) -> None:
    # "Count" is a number in the first 200 records, text in one record after them.
    records = _records(400, lambda index: {"Count": "many" if index == 200 else index})
    writer, files, out = _write_directly(records, tmp_path)
    assert 0 < writer.records_read_twice < 400
    schema, rows = _rows(files, out)
    field = schema.field("eventProps").type.field("Count")
    assert is_json_field(field)
    by_identity = {row["profile"]["identity"]: row for row in rows}
    for record in records:
        row = by_identity[record["profile"]["identity"]]
        assert parquet_matches(row["eventProps"]["Count"], record["event_props"]["Count"], field)


def test_a_failed_delivery_leaves_no_parquet_file_behind(tmp_path: Path) -> None:
    """Days are written two at a time: the files of a day never handed over are deleted too."""
    from ct_airflow_provider.export import ExportSinkError, LocalFolderSink, export_event
    from tests.export.sample_records import NAMING, pages_of

    class FailingSecondFile(LocalFolderSink):
        def submit(self, local_path: Path, file: Any) -> None:
            if file.day.day == 6:
                local_path.unlink()
                raise ExportSinkError("the bucket went away")
            super().submit(local_path, file)

    records = _records(300, lambda index: {"Count": index})
    for index, record in enumerate(records):
        record["ts"] += (index % 4) * 1_000_000  # four days: 5, 6, 7 and 8 January
    with pytest.raises(ExportSinkError, match="went away"):
        export_event(
            pages_of(records), event_name="Charged", naming=NAMING, export_format="parquet",
            sink=FailingSecondFile(tmp_path / "out"), work_dir=tmp_path / "work",
        )  # fmt: skip
    assert [path.name for path in (tmp_path / "out").rglob("*.parquet")] == [
        f"{NAMING.request_id}-{NAMING.run_timestamp}-Charged-20240105-0-{NAMING.database_id}.parquet"
    ]
    assert not [path for path in (tmp_path / "work").rglob("*") if path.is_file()]
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("parquet-")]


@pytest.mark.parametrize("buffered_bytes", [16 << 20, 500])  # 500: lines go to the spill files early
def test_files_do_not_depend_on_the_order_days_arrive_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, buffered_bytes: int
) -> None:
    """Streams read side by side hand the writer several days' pages interleaved: each day's records
    keep their order, the days' records mix. The files are those of the days read one after another,
    byte for byte: the same schema (keys in the days' order), row groups and JSON text."""
    monkeypatch.setattr(parquet, "_BLOCK_BYTES", 300)
    monkeypatch.setattr(parquet, "_MAX_BUFFERED_BYTES", buffered_bytes)

    def props(index: int) -> dict[str, Any]:
        day = index % 3
        values: dict[str, Any] = {f"Day{day}Key": index, "Count": index}
        if index % 37 == day:  # a key of mixed kinds, first seen at a different point of each day
            values["Count"] = "many"
        if index > 150 + 20 * day:  # a key each day shows late, at a different point
            values["Late"] = [index]
        return values

    records = _records(300, props)
    for index, record in enumerate(records):
        record["ts"] += (index % 3) * 1_000_000
    by_day: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        by_day.setdefault(record["ts"] // 1_000_000, []).append(record)
    in_order = [record for day in sorted(by_day) for record in by_day[day]]
    # The last day first, then the others side by side.
    interleaved = by_day[max(by_day)] + [
        record for record in records if record["ts"] // 1_000_000 != max(by_day)
    ]
    written = []
    for name, ordered in (("in-order", in_order), ("interleaved", interleaved)):
        _writer, files, out = _write_directly(ordered, tmp_path / name)
        written.append({file.object_name: (out / file.object_name).read_bytes() for file in files})
    first = pq.ParquetFile(pa.BufferReader(next(iter(written[0].values()))))
    assert first.metadata.num_row_groups > 3  # several blocks per day
    assert written[0] == written[1]
