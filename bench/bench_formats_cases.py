"""One measured case of bench_formats.py, run in its own process so cases cannot pollute each other.

    python bench/bench_formats_cases.py <case> <format> <records> <folder> [--without <tuning field>]

prints one JSON line: seconds (wall and CPU), records, bytes written, peak RSS. Cases:

* ``ours``: ``export_event`` into a local folder (files of at most 100 MB);
* ``ours_gzip``: the same with gzip;
* ``floor``: the format's own library doing only serialization of the same records, read back
  beforehand from what ``ours`` wrote (so the same content): ``orjson.dumps`` per line, the csv
  module's ``writerows`` of prebuilt rows, lxml serializing prebuilt ``<Event>`` elements,
  pyarrow writing the prebuilt table; only the serialization is timed;
* ``floor_records`` (Parquet): pyarrow building the table from the same records as Python objects
  (``Table.from_pylist``) and writing it;
* ``pandas``: the naive path: a DataFrame of all records, then ``to_json`` / ``to_csv`` /
  ``to_parquet`` / ``to_xml`` (``json_normalize`` for the flat formats, mixed-type columns made
  text for Parquet, column names made XML names for XML, as one must to make pandas write at all);
* ``generate``: only producing the API pages (what every case pays for its input).

``ours`` runs with the operators' default tuning (``config.default_export_tuning()``); ``--without
gc_threshold`` (or another field of ``ExportTuning``) runs it with that switch left alone.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import json
import os
import resource
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _records

from ct_airflow_provider.config import default_export_tuning
from ct_airflow_provider.export import ExportNaming, LocalFolderSink, export_event
from ct_airflow_provider.export.records import shape_event
from ct_airflow_provider.export.tuning import ExportTuning, export_tuning

_XML_FORBIDDEN = "[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]"
NAMING = ExportNaming(request_id="1717200000", run_timestamp=1717243200, database_id=4)


class PeakMemory:
    """Samples the process's resident memory every few milliseconds; ``peak`` in bytes."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        # ru_maxrss catches a spike between two samples.
        return max(self.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def settle_disk() -> None:
    """Write out what earlier cases left in the page cache, before a case's clock starts.

    Each case writes hundreds of MB; without this, a case could share the machine with the
    kernel writing back the previous case's files, and which side pays would depend on the
    order of the cases.
    """
    os.sync()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def tuning_without(field: str | None) -> ExportTuning:
    """The operators' default tuning, with ``field`` (if any) set to what changes nothing."""
    tuning = default_export_tuning()
    return tuning if field is None else dataclasses.replace(tuning, **{field: getattr(ExportTuning(), field)})


def warm_imports(export_format: str, tuning: ExportTuning) -> None:
    """Import what a format needs before the clock starts, as a worker process has long done.

    The floor cases import their library before timing too; this keeps one-off import costs
    (large here: this environment compiles modules on every import) out of the comparison.
    """
    if export_format == "parquet":
        # pyarrow first imported as an export imports it (which chooses Arrow's allocator).
        with export_tuning(tuning, export_format):
            import ct_airflow_provider.export.formats.parquet  # noqa: F401


def run_ours(
    export_format: str, count: int, folder: Path, compression: str | None, tuning: ExportTuning
) -> dict[str, Any]:
    warm_imports(export_format, tuning)
    pools = _records.day_pools(_records.record_pool())
    out = folder / "ours"
    shutil.rmtree(out, ignore_errors=True)
    gc.collect()
    settle_disk()
    baseline = psutil.Process().memory_info().rss
    memory = PeakMemory()
    wall, cpu = time.perf_counter(), time.process_time()
    with export_tuning(tuning, export_format):
        files = export_event(
            _records.api_pages(count, pools), event_name=_records.EVENT, naming=NAMING,
            export_format=export_format, compression=compression, sink=LocalFolderSink(out),
            work_dir=folder / "work",
        )  # fmt: skip
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = memory.stop()
    assert files.records_written == count
    return {"wall": wall, "cpu": cpu, "records": count, "bytes": files.bytes_written, "peak": peak,
            "baseline": baseline, "files": len(files)}  # fmt: skip


def run_generate(count: int) -> dict[str, Any]:
    pools = _records.day_pools(_records.record_pool())
    wall, cpu = time.perf_counter(), time.process_time()
    records = sum(len(page) for page in _records.api_pages(count, pools))
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "records": records}


def _timed(total: list[float], work: Any, *args: Any) -> Any:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work(*args)
    total[0] += time.perf_counter() - wall
    total[1] += time.process_time() - cpu
    return result


def _floor_folders(folder: Path) -> tuple[Path, Path]:
    """``ours``' files (the floors' input) and an emptied folder for the floor's files."""
    target = folder / "floor"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    settle_disk()
    return folder / "ours", target


def run_floor(export_format: str, folder: Path) -> dict[str, Any]:
    """Serialization only, per file of ``ours``, of objects rebuilt from that file beforehand."""
    source, target = _floor_folders(folder)
    total = [0.0, 0.0]
    records = written = 0
    for path in sorted(source.rglob(f"*.{export_format}")):
        out = target / path.name
        if export_format == "json":
            with open(path, "rb") as handle:
                title = handle.readline()
                objects = [orjson.loads(line) for line in handle]

            def write_json(objects: list[Any] = objects, out: Path = out, title: bytes = title) -> None:
                dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
                with open(out, "wb") as handle:
                    handle.write(title)
                    for obj in objects:
                        handle.write(dumps(obj, option=option))

            _timed(total, write_json)
        elif export_format == "csv":
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
            objects = rows[1:]

            def write_csv(rows: list[list[str]] = rows, out: Path = out) -> None:
                with open(out, "w", newline="", encoding="utf-8") as handle:
                    csv.writer(handle).writerows(rows)

            _timed(total, write_csv)
        elif export_format == "xml":
            from lxml import etree

            root = etree.parse(str(path)).getroot()
            objects = list(root)

            def write_xml(root: Any = root, out: Path = out) -> None:
                with etree.xmlfile(str(out), encoding="UTF-8") as xml_file:
                    xml_file.write_declaration()
                    with xml_file.element("Events"):
                        for event in root:
                            xml_file.write(event, pretty_print=True)

            _timed(total, write_xml)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            objects = range(table.num_rows)  # type: ignore[assignment]

            def write_parquet(table: Any = table, out: Path = out) -> None:
                pq.write_table(table, out, compression="snappy")

            _timed(total, write_parquet)
        records += len(objects)
        written += out.stat().st_size
        del objects
        gc.collect()
    return {"wall": total[0], "cpu": total[1], "records": records, "bytes": written}


def run_floor_from_records(folder: Path) -> dict[str, Any]:
    """Parquet only: pyarrow turning the same records, as Python objects, into Parquet files.

    The Parquet floor above writes a table that already exists, so it leaves out what every
    Python program writing Parquet pays: building the columns from its records. Here pyarrow
    does both (``Table.from_pylist`` with the files' own schema, then ``write_table``), which is
    the counterpart of ``orjson.dumps`` for JSON. The records are read back from our files
    beforehand; only the conversion and the writing are timed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, target = _floor_folders(folder)
    total = [0.0, 0.0]
    records = written = 0
    for path in sorted(source.rglob("*.parquet")):
        table = pq.read_table(path)
        gc.disable()  # millions of new objects: collections would cost more than the case itself
        rows = table.to_pylist()
        schema = table.schema
        del table
        out = target / path.name

        def write_parquet(rows: list[dict[str, Any]] = rows, schema: Any = schema, out: Path = out) -> None:
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), out, compression="snappy")

        _timed(total, write_parquet)
        records += len(rows)
        written += out.stat().st_size
        del rows
        gc.enable()
        gc.collect()
    return {"wall": total[0], "cpu": total[1], "records": records, "bytes": written}


def _shaped(count: int) -> Iterator[dict[str, Any]]:
    pools = _records.day_pools(_records.record_pool())
    for page in _records.api_pages(count, pools):
        yield from map(shape_event, page)


def run_pandas(export_format: str, count: int, folder: Path) -> dict[str, Any]:
    import pandas as pd

    if export_format == "parquet":
        import pyarrow.parquet  # noqa: F401
    if export_format == "xml":
        import lxml.etree  # noqa: F401

    out = folder / f"pandas.{export_format}"
    settle_disk()
    memory = PeakMemory()
    wall, cpu = time.perf_counter(), time.process_time()
    records = list(_shaped(count))
    for record in records:
        record["eventName"] = _records.EVENT
    if export_format == "json":
        pd.DataFrame(records).to_json(out, orient="records", lines=True, force_ascii=False)
    else:
        frame = pd.json_normalize(records)
        del records
        if export_format == "csv":
            frame.to_csv(out, index=False)
        elif export_format == "parquet":
            for column in frame.select_dtypes(include="object").columns:
                frame[column] = frame[column].astype(str)
            frame.to_parquet(out, compression="snappy", index=False)
        else:
            # lxml refuses lists and characters XML forbids, and dots or spaces in element names.
            for column in frame.select_dtypes(include="object").columns:
                frame[column] = frame[column].astype(str).str.replace(_XML_FORBIDDEN, "\ufffd", regex=True)
            frame.columns = [
                "c_" + "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in column)
                for column in frame.columns
            ]
            frame.to_xml(out, index=False, root_name="Events", row_name="Event", parser="lxml")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall": wall, "cpu": cpu, "records": count, "bytes": out.stat().st_size, "peak": memory.stop()}


def main() -> None:
    case, export_format, count, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    tuning = tuning_without(sys.argv[6] if sys.argv[5:6] == ["--without"] else None)
    folder.mkdir(parents=True, exist_ok=True)
    if case == "ours":
        result = run_ours(export_format, count, folder, None, tuning)
    elif case == "ours_gzip":
        result = run_ours(export_format, count, folder, "gzip", tuning)
    elif case == "floor":
        result = run_floor(export_format, folder)
    elif case == "floor_records":
        result = run_floor_from_records(folder)
    elif case == "pandas":
        result = run_pandas(export_format, count, folder)
    elif case == "generate":
        result = run_generate(count)
    else:
        raise SystemExit(f"unknown case {case!r}")
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # skip tearing down large heaps: the case is measured already


if __name__ == "__main__":
    main()
