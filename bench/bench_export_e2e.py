"""End to end, simulator to emulator: the export against its two floors, measured in one run.

For each format the export (``ExportRun``: hook pages -> writer -> chunks -> uploads overlapping the
writing -> manifest) is timed against

(a) draining the same events from the simulator through the hook, and
(b) uploading the same bytes (the files that export wrote) to the emulator through the bucket hook,
    two uploads in flight as in the export: whole files (the Google provider's ``GCSHook.upload``) and streamed chunk by chunk
    (``start_file_upload``, as the export sends text files); the faster of the two is the floor.

Target: the export takes at most 1.3x the longer of (a) and (b). The CPU seconds that the export
process, the simulator and the emulator spend during each phase are reported too: their sum over
the machine's cores is the least time the export could take here, however well it overlaps. Each
case runs in a fresh process (its peak RSS is its own); the simulator and the GCS stack each run in
their own process too, so the measured process only does the export's own work. ``--sizes`` with two sizes shows whether peak memory
stays flat as the export grows.

    .venv/bin/python bench/bench_export_e2e.py                  # 1,000,000 events, every format
    .venv/bin/python bench/bench_export_e2e.py --quick          # 100,000 events
    .venv/bin/python bench/bench_export_e2e.py --sizes 250000 1000000 --formats csv
    .venv/bin/python bench/bench_export_e2e.py --quick --requests 1 3   # one stream against three
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_clevertap_hook import ACCOUNT_ID, EVENT, PASSCODE, simulator_process  # noqa: E402

BUCKET = "bench-exports"

_STACK_CHILD = """
import os, sys, orjson
from ct_airflow_provider.testing.gcs_emulator import run_gcs_stack
with run_gcs_stack(set_env=False, backend="memory") as stack:
    stack.create_bucket(sys.argv[1])
    key = stack.new_service_account_key()
    print(orjson.dumps({"url": stack.upstream_url, "conn": stack.connection_env(sys.argv[1], key)}).decode(), flush=True)
    sys.stdin.read()
"""


@contextmanager
def gcs_stack_process() -> Iterator[dict[str, str]]:
    """The local GCS stack in its own process; yields fake-gcs-server's URL and a bucket connection.

    The key is still exchanged at the stack's token endpoint, but objects go straight to
    fake-gcs-server: the test stack's permission gate is a Python proxy that would otherwise cost
    this 2-core machine as much CPU as the export itself, and no real bucket has it. The emulator
    keeps objects in memory: its filesystem backend rewrites an object at every chunk of a
    resumable upload (about 4x the CPU for a 75 MB file), CPU that real GCS does not take from the
    machine running the export.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", _STACK_CHILD, BUCKET],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        yield json.loads(process.stdout.readline())
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)


def _days(hook: object, total: int, today: dt.date) -> tuple[dt.date, dt.date]:
    """The fewest whole days, ending yesterday, holding at least ``total`` events (CleverTap's counts call)."""
    last = first = today - dt.timedelta(days=1)
    held = hook.count_events(EVENT, first, first)  # type: ignore[attr-defined]
    while held < total and (last - first).days < 59:
        first -= dt.timedelta(days=1)
        held += hook.count_events(EVENT, first, first)  # type: ignore[attr-defined]
    return first, last


class CpuClock:
    """CPU seconds used by this process and by each service process (simulator, GCS emulator).

    On a 2-core machine the export, the simulator and the emulator compete for the same cores: the
    CPU each one spends in a phase tells whether a phase was bound by the cores or by waiting.
    """

    def __init__(self, services: dict[str, list[int]]) -> None:
        import psutil

        self._processes = {name: [psutil.Process(pid) for pid in pids] for name, pids in services.items()}

    def read(self) -> dict[str, float]:
        own = os.times()
        seconds = {"export process": own.user + own.system}
        for name, processes in self._processes.items():
            seconds[name] = sum(sum(process.cpu_times()[:2]) for process in processes)
        return seconds

    def since(self, before: dict[str, float]) -> dict[str, float]:
        now = self.read()
        return {name: round(now[name] - before[name], 1) for name in now}


def service_pids() -> dict[str, list[int]]:
    """The simulator's and the GCS stack's processes (children of this benchmark)."""
    import psutil

    services: dict[str, list[int]] = {"simulator": [], "gcs emulator": []}
    for child in psutil.Process().children(recursive=True):
        command = " ".join(child.cmdline())
        services["simulator" if "testing.simulator" in command else "gcs emulator"].append(child.pid)
    return services


def run_case(export_format: str, events: int, requests: int) -> dict[str, object]:
    """One format at one size, in this (fresh) process; the services' addresses come from the environment."""
    from ct_airflow_provider.config import export_tuning_from_config
    from ct_airflow_provider.export.job import ExportRun, ExportSpec
    from ct_airflow_provider.export.naming import ExportNaming
    from ct_airflow_provider.export.sinks import LocalFolderSink
    from ct_airflow_provider.export.windows import ExportWindow
    from ct_airflow_provider.export.writer import export_event
    from ct_airflow_provider.hooks.clevertap import CleverTapHook
    from ct_airflow_provider.hooks.gcs import CleverTapGCSHook

    logging.basicConfig(level=logging.WARNING)
    tuning = export_tuning_from_config()  # the operators' tuning ([clevertap] section)
    hook = CleverTapHook("bench_clevertap", pause_gc_while_parsing=tuning.pause_gc_while_parsing)
    bucket = CleverTapGCSHook("bench_bucket")
    today = dt.datetime.now(hook.timezone).date()
    first, last = _days(hook, events, today)
    cpu = CpuClock(json.loads(os.environ["BENCH_SERVICE_PIDS"]))

    # The simulator builds the pages of a query the first time it serves them (5 CPU-seconds
    # for 1.1M events), which only the first case would pay: the drain is timed on a second pass.
    sum(len(page) for page in hook.iter_event_pages(EVENT, first, last))
    started, cpu_before = time.perf_counter(), cpu.read()
    drained = sum(len(page) for page in hook.iter_event_pages(EVENT, first, last))
    drain_seconds = time.perf_counter() - started
    drain_cpu = cpu.since(cpu_before)
    drain_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    naming = ExportNaming(
        request_id="1700000000", run_timestamp=int(time.time()), database_id=0, prefix=export_format
    )
    spec = ExportSpec(naming, ExportWindow(first, last), export_format, None, 100 * 1024 * 1024)
    started, cpu_before = time.perf_counter(), cpu.read()
    run = ExportRun(spec, bucket, logging.getLogger("bench"), tuning=tuning, concurrent_requests=requests)
    result = run.events(hook, [EVENT])
    export_seconds = time.perf_counter() - started
    export_cpu = cpu.since(cpu_before)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # The same bytes, uploaded alone: write the files locally (untimed), then upload them as the export does.
    with tempfile.TemporaryDirectory() as folder:
        with LocalFolderSink(folder) as sink:
            export_event(
                hook.iter_event_pages(EVENT, first, last),
                event_name=EVENT,
                naming=ExportNaming(
                    request_id="1700000001", run_timestamp=1, database_id=0, prefix="upload-floor"
                ),
                export_format=export_format,
                sink=sink,
                work_dir=Path(folder) / "work",
            )
        files = [p for p in Path(folder, "upload-floor").iterdir() if p.is_file()]
        started, cpu_before = time.perf_counter(), cpu.read()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(
                pool.map(
                    lambda p: bucket.upload(  # the Google provider's own upload of a file
                        bucket_name=bucket.bucket_name,
                        object_name=f"upload-floor/{p.name}",
                        filename=str(p),
                        chunk_size=bucket.upload_chunk_bytes,
                    ),
                    files,
                )
            )
        whole_file_seconds = time.perf_counter() - started
        whole_file_cpu = cpu.since(cpu_before)

        # The same files again, each streamed chunk by chunk as the export sends them.
        def stream(path: Path) -> None:
            with open(path, "rb") as source:
                upload = bucket.start_file_upload(
                    source, f"upload-floor/streamed-{path.name}", "application/octet-stream"
                )
                while not upload.finished:
                    upload.send_chunk()

        started, cpu_before = time.perf_counter(), cpu.read()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(stream, files))
        streamed_seconds = time.perf_counter() - started
        streamed_cpu = cpu.since(cpu_before)
    # The upload floor is the faster of the two ways.
    upload_seconds, upload_cpu = min(
        (whole_file_seconds, whole_file_cpu), (streamed_seconds, streamed_cpu), key=lambda pair: pair[0]
    )
    # The emulator holds objects in memory: free them before the next case.
    for prefix in (f"{export_format}/", "upload-floor/"):
        for name in bucket.list_objects(prefix):
            bucket.delete_object(name)
    return {
        "format": export_format,
        "requests": requests,
        "events": drained,
        "exported": result.records,
        "files": len(result.files),
        "mb": round(result.bytes / 1e6, 1),
        "drain_s": round(drain_seconds, 2),
        "upload_s": round(upload_seconds, 2),
        "upload_whole_files_s": round(whole_file_seconds, 2),
        "upload_streamed_s": round(streamed_seconds, 2),
        "export_s": round(export_seconds, 2),
        "ratio": round(export_seconds / max(drain_seconds, upload_seconds), 2),
        "peak_rss_mb": round(peak_mb),
        "peak_rss_after_drain_mb": round(drain_peak_mb),
        "cpu_s": {"drain": drain_cpu, "upload": upload_cpu, "export": export_cpu},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 events instead of 1,000,000")
    parser.add_argument("--sizes", type=int, nargs="+", help="event counts to run (default 1,000,000)")
    parser.add_argument("--formats", nargs="+", default=["json", "csv", "xml", "parquet"])
    parser.add_argument(
        "--requests", type=int, nargs="+", default=[3], help="concurrent_requests to run (default 3)"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        export_format, events, requests = args.case.split(":")
        print(json.dumps(run_case(export_format, int(events), int(requests))), flush=True)
        return 0
    sizes = args.sizes or ([100_000] if args.quick else [1_000_000])
    with simulator_process(100_000, 1024) as url, gcs_stack_process() as stack:
        env = dict(os.environ)
        env["STORAGE_EMULATOR_HOST"] = stack["url"]
        env["AIRFLOW_CONN_BENCH_BUCKET"] = stack["conn"]
        env["BENCH_SERVICE_PIDS"] = json.dumps(service_pids())
        env["AIRFLOW_CONN_BENCH_CLEVERTAP"] = json.dumps(
            {"conn_type": "clevertap", "host": url, "login": ACCOUNT_ID, "password": PASSCODE,
             "extra": {"timezone": "Asia/Kolkata"}}
        )  # fmt: skip
        rows = []
        for size in sizes:
            for export_format in args.formats:
                for requests in args.requests:
                    output = subprocess.run(
                        [sys.executable, __file__, "--case", f"{export_format}:{size}:{requests}"],
                        env=env, capture_output=True, text=True, check=True, cwd=ROOT,
                    )  # fmt: skip
                    rows.append(json.loads(output.stdout.strip().splitlines()[-1]))
                    print(rows[-1], file=sys.stderr, flush=True)
    cores = os.cpu_count() or 1
    print(
        "| format | concurrent_requests | events | files | MB | (a) drain s | (b) upload s | export s | export / max(a, b) "
        f"| export CPU s: own + simulator + emulator | least export s on {cores} cores | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        cpu = row["cpu_s"]["export"]  # type: ignore[index]
        total = sum(cpu.values())
        print(
            f"| {row['format']} | {row['requests']} | {row['events']:,} | {row['files']} | {row['mb']} | {row['drain_s']} | "
            f"{row['upload_s']} | {row['export_s']} | **{row['ratio']}** | "
            f"{cpu['export process']} + {cpu['simulator']} + {cpu['gcs emulator']} = {total:.1f} | "
            f"{total / cores:.1f} | {row['peak_rss_mb']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
