"""What each switch of the ``[clevertap]`` tuning gains: the writers with the operators' defaults
against the same writers with one switch left alone, in alternating rounds, one process per case.

* ``gc_threshold`` (20,000): JSON, CSV and XML writers' CPU time;
* ``arrow_memory_pool`` (jemalloc): the Parquet writer's CPU time and peak memory.

``pause_gc_while_parsing`` is measured by ``bench_clevertap_hook.py`` (the hook with and without the
pause); ``malloc_mmap_threshold`` (opt-in) by ``bench_export_e2e.py --sizes`` with
``AIRFLOW__CLEVERTAP__MALLOC_MMAP_THRESHOLD`` set and unset. Method and figures: docs/performance.md,
"Tuning".

    .venv/bin/python bench/bench_tuning.py            # 400,000 records, 3 rounds
    .venv/bin/python bench/bench_tuning.py --quick    # 100,000 records, 2 rounds
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

HERE = Path(__file__).resolve().parent
#: (switch, format) pairs measured, each against the defaults.
CASES = [
    ("gc_threshold", "json"),
    ("gc_threshold", "csv"),
    ("gc_threshold", "xml"),
    ("arrow_memory_pool", "parquet"),
]


def run(export_format: str, records: int, without: str | None, folder: Path) -> dict[str, float]:
    shutil.rmtree(folder, ignore_errors=True)
    command = [
        sys.executable,
        str(HERE / "bench_formats_cases.py"),
        "ours",
        export_format,
        str(records),
        str(folder),
    ]
    if without is not None:
        command += ["--without", without]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 records, 2 rounds")
    parser.add_argument("--records", type=int, help="records per case (default 400,000)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3)")
    args = parser.parse_args()
    records = args.records or (100_000 if args.quick else 400_000)
    rounds = args.rounds or (2 if args.quick else 3)

    print(f"\n{records:,} records per case, {rounds} alternating rounds, medians of paired ratios.\n")
    print(
        "| switch | format | CPU s, defaults | CPU s, switch left alone | CPU ratio | peak MB, defaults | peak MB, left alone |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="ct-bench-tuning-") as work:
        for switch, export_format in CASES:
            tuned: list[dict[str, float]] = []
            plain: list[dict[str, float]] = []
            for round_number in range(rounds):
                order = (None, switch) if round_number % 2 == 0 else (switch, None)
                for without in order:
                    result = run(export_format, records, without, Path(work) / "case")
                    (tuned if without is None else plain).append(result)
            ratio = statistics.median(p["cpu"] / t["cpu"] for t, p in zip(tuned, plain, strict=True))
            print(
                f"| {switch} | {export_format} | {statistics.median(r['cpu'] for r in tuned):.2f} "
                f"| {statistics.median(r['cpu'] for r in plain):.2f} | {ratio:.2f} "
                f"| {statistics.median(r['peak'] for r in tuned) / 2**20:.0f} "
                f"| {statistics.median(r['peak'] for r in plain) / 2**20:.0f} |",
                flush=True,
            )
    print("\nCPU ratio: the writer's CPU time with the switch left alone over its time with the defaults.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
