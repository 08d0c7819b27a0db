"""The CSV writer on its own: speed against csv.writer on the same rows, and memory over many days.

``bench_formats.py`` times whole exports (shaping included) on four days of records. This script
separates what belongs to ``formats/csv.py``:

* ``speed``: ``CsvWriter`` fed the records as export_event feeds it (through ``shape_for_columns``:
  records in the API's own layout pass as they are), against the csv module's ``writerow`` of the
  same rows already converted to cells (what the writer did before it formatted rows itself), alternating in
  one process so that machine noise hits both;
* ``memory``: a whole CSV export (local folder) of N records spread over D days, in a fresh
  process, with its peak RSS: the writer must hold no more for more days or more records.

    .venv/bin/python bench/bench_csv_writer.py speed --records 300000
    .venv/bin/python bench/bench_csv_writer.py memory --records 265000 --days 3
    .venv/bin/python bench/bench_csv_writer.py memory --records 1100000 --days 11
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _records

from ct_airflow_provider.config import default_export_tuning
from ct_airflow_provider.export import ExportNaming, LocalFolderSink, export_event
from ct_airflow_provider.export.chunking import Delivery
from ct_airflow_provider.export.formats.csv import CsvWriter, cell_text
from ct_airflow_provider.export.records import shape_event, shape_for_columns
from ct_airflow_provider.export.tuning import export_tuning

NAMING = ExportNaming(request_id="1717200000", run_timestamp=1717243200, database_id=4)


def _file_pages(count: int) -> list[list[tuple[int, dict[str, Any]]]]:
    pools = _records.day_pools(_records.record_pool())
    return [
        [(record["ts"] // 1_000_000, shape_for_columns(record)) for record in page]
        for page in _records.api_pages(count, pools)
    ]


def _time_writer(
    pages: list[list[tuple[int, dict[str, Any]]]], folder: Path
) -> tuple[float, list[list[Any]]]:
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "spill").mkdir(parents=True)
    delivery = Delivery(
        NAMING, "Charged", "csv", None, 100 * 1024 * 1024, LocalFolderSink(folder / "out"), folder
    )
    writer = CsvWriter(delivery, folder / "spill", "Charged")
    gc.collect()
    started = time.perf_counter()
    for page in pages:
        writer.add(page)
    writer.finish()
    delivery.worker.close()
    seconds = time.perf_counter() - started
    # The same rows as csv.writer would be given them: values in column order, converted to cells.
    plan = writer._plan
    rows = [
        [cell_text(value) for value in plan.row(shape_event(record))]
        for page in pages[:20]
        for _, record in page
    ]
    return seconds, rows


def _time_csv_module(rows: list[list[Any]]) -> float:
    buffer = io.StringIO()
    started = time.perf_counter()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return time.perf_counter() - started


def speed(count: int, rounds: int) -> None:
    pages = _file_pages(count)
    folder = Path(tempfile.mkdtemp(prefix="bench-csv-"))
    try:
        for _ in range(rounds):
            seconds, rows = _time_writer(pages, folder)
            per_row_csv = _time_csv_module(rows) / len(rows)
            per_row_ours = seconds / count
            print(
                f"CsvWriter (add + finish, shaping excluded): {count / seconds:,.0f} records/s "
                f"({per_row_ours * 1e6:.1f} us/record); csv.writer.writerows of the converted rows "
                f"alone: {per_row_csv * 1e6:.1f} us/row; ratio {per_row_ours / per_row_csv:.2f}x"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def memory(count: int, days: int) -> None:
    pools = _records.day_pools(_records.record_pool(), days=days)
    folder = Path(tempfile.mkdtemp(prefix="bench-csv-"))
    process = psutil.Process()
    peak = [process.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    baseline = process.memory_info().rss
    sampler.start()
    started = time.perf_counter()
    try:
        with export_tuning(default_export_tuning(), "csv"):  # the operators' default tuning
            files = export_event(
                _records.api_pages(count, pools), event_name=_records.EVENT, naming=NAMING,
                export_format="csv", sink=LocalFolderSink(folder / "out"), work_dir=folder / "work",
            )  # fmt: skip
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        shutil.rmtree(folder, ignore_errors=True)
    top = max(peak[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({
        "records": count, "days": days, "files": len(files), "seconds": round(seconds, 2),
        "records_per_s": round(count / seconds), "rss_before_mb": baseline >> 20, "peak_rss_mb": top >> 20,
        "export_added_mb": (top - baseline) >> 20,
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("case", choices=["speed", "memory"])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=4, help="days the records cover (memory)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (speed)")
    args = parser.parse_args()
    if args.case == "speed":
        speed(args.records, args.rounds)
    else:
        memory(args.records, args.days)


if __name__ == "__main__":
    main()
