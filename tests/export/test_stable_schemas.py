"""A month of exports reads as one table: the schema each event keeps in the bucket, from run to run.

Runs of one event whose records differ (a new key, whole numbers where there were fractions, a
number sent as text, a key that disappears) export into one folder, their schema kept in the real
GCS stack; afterwards pyarrow and DuckDB read every file as one table, and every value is there.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import threading
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ct_airflow_provider.export import ExportNaming, LocalFolderSink, export_event
from ct_airflow_provider.export.formats.parquet import VARIANT_SUFFIX, extend_columns
from ct_airflow_provider.export.schemas import StoredSchema, StoredSchemaError
from ct_airflow_provider.hooks.gcs import CleverTapGCSHook
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from tests.export.conftest import empty_bucket_hook
from tests.export.sample_records import pages_of

BUCKET = "ct-schemas"
EVENT = "Charged"
LOG = logging.getLogger("test_stable_schemas")


@pytest.fixture
def bucket(gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch) -> CleverTapGCSHook:
    return empty_bucket_hook(gcs_stack, monkeypatch, BUCKET)


def _naming(run: int) -> ExportNaming:
    return ExportNaming(
        request_id="1700000000", run_timestamp=1700000000 + run * 3600, database_id=7, prefix="ct"
    )


def _export(
    bucket: Any, tmp_path: Path, run: int, records: list[dict[str, Any]], export_format: str, **options: Any
) -> list[Path]:
    naming = _naming(run)
    sink = LocalFolderSink(tmp_path / "out")
    files = export_event(
        pages_of(records),
        event_name=EVENT,
        naming=naming,
        export_format=export_format,
        sink=sink,
        work_dir=tmp_path / f"work-{run}",
        schema=StoredSchema(bucket, naming.schema_object_name(EVENT), LOG),
        **options,
    )
    return [tmp_path / "out" / file.object_name for file in files]


def _record(run: int, index: int, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "profile": {"identity": f"r{run}-u{index}"},
        "ts": 20261101000000 + run * 1_000_000 + index // 60 * 100 + index % 60,  # one day per run
        "event_props": props,
    }


def _runs() -> list[list[dict[str, Any]]]:
    """Four runs of one event, each differing from the ones before."""
    run_a = [_record(0, i, {"Amount": 10.25 + i, "Category": "books"}) for i in range(50)]
    # A new key, and one amount sent as text.
    run_b = [
        _record(1, i, {"Amount": "12.5" if i == 7 else 3.5 * i, "Category": "toys", "Coupon": f"C{i}"})
        for i in range(50)
    ]
    # Whole numbers only; Category disappears.
    run_c = [_record(2, i, {"Amount": i, "Coupon": "NONE"}) for i in range(50)]
    # An object where a number was, a number where text was, a new nested key.
    run_d = [
        _record(3, i, {"Amount": {"value": i} if i == 3 else 2.0 * i, "Category": 5 if i == 4 else "games"})
        for i in range(50)
    ]
    return [run_a, run_b, run_c, run_d]


def test_a_month_of_parquet_exports_reads_as_one_table(bucket: CleverTapGCSHook, tmp_path: Path) -> None:
    runs = _runs()
    paths = [
        path
        for run, records in enumerate(runs)
        for path in _export(bucket, tmp_path, run, records, "parquet")
    ]

    # Every column has one type in every file that has it; later runs only add columns.
    schemas = [pq.read_schema(path) for path in paths]
    seen: dict[str, pa.DataType] = {}
    for schema in schemas:
        for field in schema.field("eventProps").type:
            assert seen.setdefault(field.name, field.type) == field.type, field.name
    unified = pa.unify_schemas(schemas)
    props = unified.field("eventProps").type
    assert [field.name for field in props] == [
        "Amount",
        "Category",
        "Amount" + VARIANT_SUFFIX,
        "Coupon",
        "Category" + VARIANT_SUFFIX,
    ]  # fmt: skip: columns in the order the runs showed them
    assert props.field("Amount").type == pa.float64()
    assert props.field("Category").type == pa.string()

    # pyarrow reads every file with the unified schema; sums work.
    table = ds.dataset([str(path) for path in paths], format="parquet", schema=unified).to_table()
    amounts = pc.struct_field(table.column("eventProps"), "Amount")
    numbers = [
        float(r["event_props"]["Amount"])
        for records in runs
        for r in records
        if type(r["event_props"]["Amount"]) in (int, float)
    ]
    assert pc.sum(amounts).as_py() == pytest.approx(sum(numbers))

    # Every original value comes back, from its column or its variant column.
    by_identity = {row["profile"]["identity"]: row["eventProps"] for row in table.to_pylist()}
    assert len(by_identity) == sum(len(records) for records in runs)
    for records in runs:
        for record in records:
            row = by_identity[record["profile"]["identity"]]
            for key, value in record["event_props"].items():
                variant = row.get(key + VARIANT_SUFFIX)
                if row[key] is not None:
                    assert row[key] == value and variant is None
                else:
                    assert json.loads(variant) == value and type(json.loads(variant)) is type(value)
            if "Category" not in record["event_props"]:
                assert row["Category"] is None

    # DuckDB reads them as one table too, Amount a DOUBLE it can add up.
    files = [str(path) for path in paths]
    with duckdb.connect() as db:
        total, kind, texts = db.execute(
            "SELECT sum(eventProps.Amount), any_value(typeof(eventProps.Amount)), "
            f"list(eventProps.Amount{VARIANT_SUFFIX}) FILTER (WHERE eventProps.Amount{VARIANT_SUFFIX} IS NOT NULL) "
            "FROM read_parquet(?, union_by_name = true)",
            [files],
        ).fetchone()
    assert kind == "DOUBLE"
    assert total == pytest.approx(sum(numbers))
    assert sorted(texts) == sorted(
        json.dumps(value, separators=(",", ":")) for value in ({"value": 3}, "12.5")
    )

    # The stored schema says the same, and reads as documented.
    stored = orjson.loads(bucket.read_object_generation("ct/_schemas/Charged.json")[0])  # type: ignore[index]
    columns = dict(stored["parquet"]["columns"])
    assert columns["eventProps"]["struct"] == [
        ["Amount", "double"], ["Category", "string"], ["Amount" + VARIANT_SUFFIX, "json"], ["Coupon", "string"],
        ["Category" + VARIANT_SUFFIX, "json"],
    ]  # fmt: skip


def test_the_first_export_decides_and_later_ones_keep_its_types(
    bucket: CleverTapGCSHook, tmp_path: Path
) -> None:
    # Whole numbers first: a later run's fractions still fit (numbers are doubles), nothing to a variant.
    _export(bucket, tmp_path, 0, [_record(0, i, {"Count": i}) for i in range(20)], "parquet")
    paths = _export(bucket, tmp_path, 1, [_record(1, i, {"Count": i + 0.5}) for i in range(20)], "parquet")
    props = pq.read_schema(paths[0]).field("eventProps").type
    assert [(field.name, field.type) for field in props] == [("Count", pa.float64())]
    # Text in the first run: later numbers go to the variant column, the column stays text.
    _export(bucket, tmp_path, 2, [_record(2, i, {"Label": f"L{i}"}) for i in range(20)], "parquet")
    paths = _export(bucket, tmp_path, 3, [_record(3, i, {"Label": i}) for i in range(20)], "parquet")
    table = pq.read_table(paths[0])
    props = table.schema.field("eventProps").type
    assert props.field("Label").type == pa.string()
    assert props.field("Label" + VARIANT_SUFFIX).metadata == {b"ct_airflow_provider.encoding": b"json"}
    rows = table.column("eventProps").to_pylist()
    assert sorted(json.loads(row["Label" + VARIANT_SUFFIX]) for row in rows) == list(range(20))
    assert all(row["Label"] is None and row["Count"] is None for row in rows)


def _csv_header_and_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def test_csv_headers_of_later_exports_extend_the_earlier_ones(
    bucket: CleverTapGCSHook, tmp_path: Path
) -> None:
    runs = _runs()
    # The third run's records show their keys in another order: the columns keep theirs.
    runs[2] = [_record(2, i, {"Coupon": "NONE", "Amount": i}) for i in range(50)]
    headers, rows = [], {}
    for run, records in enumerate(runs):
        (path,) = _export(bucket, tmp_path, run, records, "csv")
        header, file_rows = _csv_header_and_rows(path)
        headers.append(header)
        rows.update({row["profile.identity"]: row for row in file_rows})
    assert headers[0] == ["ts", "eventName", "profile.identity", "eventProps.Amount", "eventProps.Category"]
    for earlier, later in itertools.pairwise(headers):
        assert later[: len(earlier)] == earlier
    assert headers[1] == headers[0] + ["eventProps.Coupon"]
    assert headers[2] == headers[3] == headers[1]  # no key is ever removed or reordered
    for records in runs:
        for record in records:
            row = rows[record["profile"]["identity"]]
            for key in ("Amount", "Category", "Coupon"):
                value = record["event_props"].get(key)
                expected = (
                    "" if value is None else json.dumps(value) if isinstance(value, dict) else str(value)
                )
                assert row.get(f"eventProps.{key}", "") == expected.replace(" ", ""), (key, row)
    # DuckDB reads every file as one table, each value under its own column.
    with duckdb.connect() as db:
        total = db.execute(
            'SELECT sum(TRY_CAST("eventProps.Amount" AS DOUBLE)) FROM read_csv(?, union_by_name = true, all_varchar = true)',
            [[str(path) for path in sorted((tmp_path / "out").rglob("*.csv"))]],
        ).fetchone()[0]  # type: ignore[index]
    numbers = [
        r["event_props"]["Amount"]
        for records in runs
        for r in records
        if type(r["event_props"]["Amount"]) is not dict
    ]
    assert total == pytest.approx(sum(float(value) for value in numbers))


class _RacingBucket:
    """The bucket, with every schema write held until both exports have read the schema."""

    def __init__(self, bucket: CleverTapGCSHook, barrier: threading.Barrier) -> None:
        self.bucket, self.barrier, self.writes = bucket, barrier, 0

    def read_object_generation(self, object_name: str) -> tuple[bytes, int] | None:
        return self.bucket.read_object_generation(object_name)

    def write_object_if_generation(
        self, data: bytes, object_name: str, content_type: str, generation: int
    ) -> int | None:
        if self.writes == 0:
            self.writes += 1
            self.barrier.wait(timeout=30)  # both exports read the schema before either writes
        return self.bucket.write_object_if_generation(data, object_name, content_type, generation)

    def delete_object_if_generation(self, object_name: str, generation: int) -> None:
        self.bucket.delete_object_if_generation(object_name, generation)


@pytest.mark.parametrize("export_format", ["parquet", "csv"])
def test_two_exports_at_once_end_with_one_schema_holding_both(
    bucket: CleverTapGCSHook, tmp_path: Path, export_format: str
) -> None:
    _export(bucket, tmp_path, 0, [_record(0, i, {"Amount": 1.5 * i}) for i in range(20)], export_format)
    barrier = threading.Barrier(2)
    found: dict[int, list[Path]] = {}
    errors: list[BaseException] = []

    def run(number: int, props: dict[str, Any]) -> None:
        naming = _naming(number)
        try:
            sink = LocalFolderSink(tmp_path / "out")
            files = export_event(
                pages_of([_record(number, i, dict(props, Amount=i)) for i in range(20)]),
                event_name=EVENT,
                naming=naming,
                export_format=export_format,
                sink=sink,
                work_dir=tmp_path / f"work-{number}",
                schema=StoredSchema(_RacingBucket(bucket, barrier), naming.schema_object_name(EVENT), LOG),  # type: ignore[arg-type]
            )
            found[number] = [tmp_path / "out" / file.object_name for file in files]
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(1, {"Coupon": "X"})),
        threading.Thread(target=run, args=(2, {"Region": 3})),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    stored = orjson.loads(bucket.read_object_generation("ct/_schemas/Charged.json")[0])  # type: ignore[index]
    if export_format == "csv":
        stored_columns = stored["csv"]["columns"]
        assert stored_columns[:2] == [["profile", "identity"], ["eventProps", "Amount"]]
        assert sorted(map(tuple, stored_columns[2:])) == [("eventProps", "Coupon"), ("eventProps", "Region")]
        # Each export's header is the schema as it stood when it wrote its files: a prefix of the stored one.
        stored_header = ["ts", "eventName"] + [".".join(path) for path in stored_columns]
        for paths in found.values():
            header, _rows = _csv_header_and_rows(paths[0])
            assert stored_header[: len(header)] == header
    else:
        props = dict(dict(stored["parquet"]["columns"])["eventProps"]["struct"])
        assert props == {"Amount": "double", "Coupon": "string", "Region": "double"}
        schemas = [pq.read_schema(path) for paths in found.values() for path in paths]
        pa.unify_schemas(schemas)  # one type per column across both exports


def test_stored_parquet_columns_follow_the_rules() -> None:
    def learned(**types: pa.DataType) -> pa.DataType:
        return pa.struct(list(types.items()))

    first = extend_columns(None, learned(a=pa.int64(), b=pa.null(), c=pa.list_(pa.string()), d=pa.struct([])))
    assert first == {"columns": [["a", "double"], ["b", "null"], ["c", {"list": "string"}], ["d", "json"]]}
    later = extend_columns(
        first, learned(e=pa.bool_(), c=pa.list_(pa.int64()), b=pa.string(), a=pa.float64(), d=pa.int64())
    )
    # A null column takes the first type it sees; a list that no longer fits gets a variant; new keys at the end.
    assert later == {
        "columns": [
            ["a", "double"], ["b", "string"], ["c", {"list": "string"}], ["d", "json"], ["e", "bool"],
            ["c" + VARIANT_SUFFIX, "json"],
        ]
    }  # fmt: skip
    assert extend_columns(later, learned(c=pa.list_(pa.string()), a=pa.int64())) == later
    big = extend_columns(None, learned(n=pa.uint64()))  # integers beyond a double's exact range
    assert big == {"columns": [["n", "int64"]]}
    assert extend_columns(big, learned(n=pa.float64()))["columns"][-1] == ["n" + VARIANT_SUFFIX, "json"]


def test_a_stored_schema_that_is_not_one_is_refused_with_the_remedy(
    bucket: CleverTapGCSHook, tmp_path: Path
) -> None:
    name = _naming(0).schema_object_name(EVENT)
    assert name == "ct/_schemas/Charged.json"
    bucket.upload_bytes(b"{not json", name, "application/json")
    with pytest.raises(StoredSchemaError, match=r"ct/_schemas/Charged.json is not JSON .*delete it to start"):
        _export(bucket, tmp_path, 0, [_record(0, 0, {"a": 1})], "parquet")
    bucket.upload_bytes(
        b'{"version": 1, "parquet": {"columns": [["eventProps", "decimal"]]}}', name, "application/json"
    )
    with pytest.raises(Exception, match=r"column type this version does not know"):
        _export(bucket, tmp_path, 0, [_record(0, 0, {"a": 1})], "parquet")


class _CountingBucket:
    """The bucket, counting the schema's reads and writes."""

    def __init__(self, bucket: CleverTapGCSHook) -> None:
        self.bucket, self.reads, self.writes = bucket, 0, 0

    def read_object_generation(self, object_name: str) -> tuple[bytes, int] | None:
        self.reads += 1
        return self.bucket.read_object_generation(object_name)

    def write_object_if_generation(
        self, data: bytes, object_name: str, content_type: str, generation: int
    ) -> int | None:
        self.writes += 1
        return self.bucket.write_object_if_generation(data, object_name, content_type, generation)


@pytest.mark.parametrize("export_format", ["parquet", "csv"])
def test_an_export_reads_the_schema_once_and_writes_it_only_when_it_grows(
    bucket: CleverTapGCSHook, tmp_path: Path, export_format: str
) -> None:
    counts = []
    for run, props in enumerate([{"a": 1.5}, {"a": 2.5}, {"a": 3.5, "b": "new"}]):
        counting = _CountingBucket(bucket)
        naming = _naming(run)
        export_event(
            pages_of([_record(run, i, props) for i in range(300)], size=10),  # 30 pages over one day
            event_name=EVENT,
            naming=naming,
            export_format=export_format,
            sink=LocalFolderSink(tmp_path / "out"),
            work_dir=tmp_path / f"work-{run}",
            schema=StoredSchema(counting, naming.schema_object_name(EVENT), LOG),  # type: ignore[arg-type]
        )
        counts.append((counting.reads, counting.writes))
    assert counts == [(1, 1), (1, 0), (1, 1)]
