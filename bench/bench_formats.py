"""Speed and memory of the export file writers, against each format's own library and naive pandas.

For each format (JSON, CSV, XML, Parquet) on records shaped like the simulator's (``Charged``
events with device fields, nested items, mixed-type keys; see ``_records.py``):

* ours: ``export_event`` into a local folder (100 MB files): records/s, MB/s written, peak RSS;
* floor: the format's library doing only serialization of the same content (orjson.dumps per
  line; csv writerows of prebuilt rows; lxml serializing prebuilt elements; pyarrow writing the
  prebuilt table), timed around serialization only;
* for Parquet also the floor from records: pyarrow building that table from the same records
  (``Table.from_pylist``) and writing it, the step every Python writer of Parquet pays;
* pandas: a DataFrame of all records, then to_json / to_csv / to_parquet / to_xml;
* ours again at 4x the records: peak memory must not grow with the record count.

Every case runs in its own process; ours and floor alternate when there are several rounds, and
ratios are medians of the per-round ratios, so that machine noise hits both sides alike. Targets:
ours within 2x of the floor, at least 3x faster than pandas, peak memory below 300 MB and within
10% between N and 4N records.

    .venv/bin/python bench/bench_formats.py            # 1,000,000 and 4,000,000 records
    .venv/bin/python bench/bench_formats.py --quick    # 100,000 and 400,000 records, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FORMATS = ("json", "csv", "xml", "parquet")
MB = 1_000_000


def run_case(case: str, export_format: str, count: int, folder: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        str(HERE / "bench_formats_cases.py"),
        case,
        export_format,
        str(count),
        str(folder),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{case} {export_format} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {case:9s} {export_format:8s} {count:>9,} records: {result['wall']:7.2f} s wall, "
          f"{result['cpu']:7.2f} s cpu" + (f", peak {result['peak'] / MB:6.0f} MB" if "peak" in result else ""),
          file=sys.stderr, flush=True)  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 / 400,000 records, 2 rounds")
    parser.add_argument("--records", type=int, help="records per case (default 1,000,000)")
    parser.add_argument(
        "--large", type=int, help="records of the memory check (default 4x --records; 0: skip)"
    )
    parser.add_argument(
        "--rounds", type=int, help="alternating ours/floor rounds (default 1, 2 with --quick)"
    )
    parser.add_argument(
        "--formats", default=",".join(FORMATS), help="comma-separated subset of json,csv,xml,parquet"
    )
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas cases")
    parser.add_argument(
        "--pandas-records",
        type=int,
        help="records of the pandas cases (default: --records, at most 250,000: pandas holds them all, "
        "at ~17 GB per million records for JSON and XML); compared per record",
    )
    parser.add_argument("--gzip", action="store_true", help="also time ours with gzip (JSON, CSV, XML)")
    parser.add_argument("--work-dir", type=Path, help="where files are written (default: a temporary folder)")
    args = parser.parse_args()
    count = args.records or (100_000 if args.quick else 1_000_000)
    large = args.large if args.large is not None else 4 * count
    rounds = args.rounds or (2 if args.quick else 1)
    formats = [name for name in args.formats.split(",") if name]
    pandas_count = args.pandas_records or min(count, 250_000)

    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-formats-", dir=args.work_dir))
    rows = []
    try:
        generate = run_case("generate", "json", count, root / "generate")
        for export_format in formats:
            folder = root / export_format
            ours_runs, floor_runs, records_floor_runs = [], [], []
            for _ in range(rounds):
                ours_runs.append(run_case("ours", export_format, count, folder))
                floor_runs.append(run_case("floor", export_format, count, folder))
                if export_format == "parquet":
                    records_floor_runs.append(run_case("floor_records", export_format, count, folder))
            shutil.rmtree(folder, ignore_errors=True)
            row: dict[str, Any] = {
                "format": export_format,
                "ours": min(ours_runs, key=lambda r: r["wall"]),
                "floor": min(floor_runs, key=lambda r: r["wall"]),
                "floor_ratio": statistics.median(o["wall"] / f["wall"] for o, f in zip(ours_runs, floor_runs, strict=True)),
            }  # fmt: skip
            if records_floor_runs:
                row["records_floor"] = min(records_floor_runs, key=lambda r: r["wall"])
                row["records_floor_ratio"] = statistics.median(
                    o["wall"] / f["wall"] for o, f in zip(ours_runs, records_floor_runs, strict=True)
                )
            if not args.no_pandas:
                row["pandas"] = run_case("pandas", export_format, pandas_count, folder)
                shutil.rmtree(folder, ignore_errors=True)
            if large:
                row["large"] = run_case("ours", export_format, large, folder)
                shutil.rmtree(folder, ignore_errors=True)
            if args.gzip and export_format != "parquet":
                row["gzip"] = run_case("ours_gzip", export_format, count, folder)
                shutil.rmtree(folder, ignore_errors=True)
            rows.append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(rows, count, large, rounds, generate))


def _per_record(result: dict[str, Any]) -> float:
    return float(result["wall"]) / int(result["records"])


def table(rows: list[dict[str, Any]], count: int, large: int, rounds: int, generate: dict[str, Any]) -> str:
    lines = [
        f"Records: {count:,} ``Charged`` events shaped like the simulator's, 100 MB files; {rounds} round(s); "
        f"producing the input pages takes {generate['wall']:.2f} s of each 'ours' time. Times are wall-clock.",
        "",
        "| format | ours records/s | ours MB/s | ours peak RSS | floor records/s | ours / floor time "
        "| pandas records/s | pandas / ours time per record | pandas peak RSS (records) "
        f"| peak RSS at {large:,} | memory growth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for row in rows:
        ours, floor = row["ours"], row["floor"]
        cells = [
            row["format"],
            f"{count / ours['wall']:,.0f}",
            f"{ours['bytes'] / MB / ours['wall']:.1f}",
            f"{ours['peak'] / MB:.0f} MB",
            f"{floor['records'] / floor['wall']:,.0f}",
            f"{row['floor_ratio']:.2f}x",
        ]
        pandas = row.get("pandas")
        if pandas:
            cells += [
                f"{pandas['records'] / pandas['wall']:,.0f}",
                f"{_per_record(pandas) / _per_record(ours):.1f}x",
                f"{pandas['peak'] / MB:.0f} MB ({pandas['records']:,})",
            ]
        else:
            cells += ["-", "-", "-"]
        big = row.get("large")
        growth = big["peak"] / ours["peak"] - 1 if big else None
        cells += [
            f"{big['peak'] / MB:.0f} MB" if big else "-",
            f"{growth:+.1%}" if growth is not None else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        verdicts.append(
            f"{row['format']}: ours/floor {row['floor_ratio']:.2f}x (target <= 2): "
            f"{'met' if row['floor_ratio'] <= 2 else 'NOT met'}"
            + (f"; pandas/ours {_per_record(pandas) / _per_record(ours):.1f}x (target >= 3): "
               f"{'met' if _per_record(pandas) / _per_record(ours) >= 3 else 'NOT met'}" if pandas else "")
            + f"; peak {ours['peak'] / MB:.0f} MB (target < 300): {'met' if ours['peak'] < 300 * MB else 'NOT met'}"
            + (f"; growth {growth:+.1%} (target within 10%): {'met' if abs(growth) <= 0.10 else 'NOT met'}"
               if growth is not None else "")
        )  # fmt: skip
    gzip_rows = [row for row in rows if "gzip" in row]
    if gzip_rows:
        lines += [
            "",
            "| format, gzip | ours records/s | ours MB/s (compressed) | peak RSS |",
            "|---|---:|---:|---:|",
        ]
        for row in gzip_rows:
            gz = row["gzip"]
            lines.append(
                f"| {row['format']}.gz | {count / gz['wall']:,.0f} | {gz['bytes'] / MB / gz['wall']:.1f} | {gz['peak'] / MB:.0f} MB |"
            )
    records_rows = [row for row in rows if "records_floor" in row]
    if records_rows:
        lines += [
            "",
            "| format | floor from records (pyarrow Table.from_pylist + write_table) records/s "
            "| ours / that floor time |",
            "|---|---:|---:|",
        ]
        for row in records_rows:
            floor = row["records_floor"]
            lines.append(
                f"| {row['format']} | {floor['records'] / floor['wall']:,.0f} | {row['records_floor_ratio']:.2f}x |"
            )
            verdicts.append(
                f"{row['format']}: ours / pyarrow from records {row['records_floor_ratio']:.2f}x "
                f"(the floor that includes building the table; target <= 2): "
                f"{'met' if row['records_floor_ratio'] <= 2 else 'NOT met'}"
            )
    return "\n".join(lines + [""] + [f"- {verdict}" for verdict in verdicts])


if __name__ == "__main__":
    main()
