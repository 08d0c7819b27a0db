"""Wall time of exports against CleverTap's request limit, with a simulator that is slow to answer.

CleverTap, not our CPU, is what users wait for: each page takes it a while to prepare, and an account
may have 3 requests in flight. The simulator (its own process) answers every request after a fixed
latency; each case exports in a fresh process with the operators' defaults (3 requests in flight)
and is compared with the least time CleverTap allows: the requests the simulator handled times the
latency, divided by 3. Cases, per latency (0.1, 0.4 and 1 s):

* (a) 12 events x 1 day, (b) 3 events x 7 days: events, JSON;
* (c) profiles over 3 days.

The simulated account has 5 synthetic events on top of its usual 7 exportable ones, so that (a)
really reads 12 events, and 20,000 events per day before each event's weight, so that a stream
(one event, one day) has several pages of 5,000 records as real exports do: 3 to 5 for the
biggest events, 2 or 3 for the synthetic ones (weight 0.5), 1 for the smallest.

Before the timed runs, each case runs once with an instant simulator (latency 0): that warms the
simulator's pages (it builds a query's pages the first time it serves them, CPU that CleverTap does
not take from the machine running the export), and its time is the export's own floor on this
machine (reading, writing and uploading on 2 cores shared with the simulator and the emulator).
Where that floor is above the limit, the case is bound by this machine, not by CleverTap.

Target: every case within 1.3x of the limit; the simulator never sees more than 3 requests in flight.

    .venv/bin/python bench/bench_api_bound.py                    # latencies 0.1, 0.4 and 1 s
    .venv/bin/python bench/bench_api_bound.py --latencies 0.4 --requests 1 3   # against one at a time
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_clevertap_hook import ACCOUNT_ID, PASSCODE, simulator_process  # noqa: E402
from bench_export_e2e import gcs_stack_process  # noqa: E402

from ct_airflow_provider.testing.seed_data import event_specs  # noqa: E402

#: Synthetic events added to the simulated account: with its 7 exportable ones, 12 for case (a).
EXTRA_EVENTS = 5
#: Records per event and day before each event's weight: several pages of 5,000 per stream.
EVENTS_PER_DAY = 20_000
#: The simulator's events that CleverTap's export accepts.
EXPORTABLE = [spec.name for spec in event_specs(EXTRA_EVENTS) if spec.exportable]
CASES = {
    "a": ("12 events x 1 day", 12, 1),
    "b": ("3 events x 7 days", 3, 7),
    "c": ("profiles x 3 days", 0, 3),
}


def run_case(case: str, requests: int) -> dict[str, object]:
    """One export in this (fresh) process; the services' addresses come from the environment."""
    from ct_airflow_provider.config import export_tuning_from_config
    from ct_airflow_provider.export.job import ExportRun, ExportSpec
    from ct_airflow_provider.export.naming import ExportNaming
    from ct_airflow_provider.export.windows import ExportWindow
    from ct_airflow_provider.hooks.clevertap import CleverTapHook, EventExportNotAllowedError
    from ct_airflow_provider.hooks.gcs import CleverTapGCSHook

    logging.basicConfig(level=logging.WARNING)
    # A worker's task runner loads Airflow's plugins before the task starts; the Google provider's
    # upload asks for them (hook lineage) on first use: load them before the clock, as a worker has.
    from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

    get_hook_lineage_collector()
    _, events, days = CASES[case]
    hook = CleverTapHook("bench_clevertap")
    bucket = CleverTapGCSHook("bench_bucket")
    names = hook.list_event_names()  # before the clock: the operators list them too, once
    chosen = EXPORTABLE[:events]
    assert len(chosen) == events and set(chosen) <= set(names), (chosen, names)
    last = dt.datetime.now(hook.timezone).date() - dt.timedelta(days=1)
    naming = ExportNaming(request_id="1700000000", run_timestamp=int(time.time()), database_id=0, prefix=case)
    spec = ExportSpec(naming, ExportWindow(last - dt.timedelta(days=days - 1), last), "json", None, 100 << 20)
    run = ExportRun(
        spec,
        bucket,
        logging.getLogger("bench"),
        concurrent_requests=requests,
        tuning=export_tuning_from_config(),
    )
    control = urllib3.PoolManager()
    control.request("DELETE", os.environ["BENCH_SIMULATOR_URL"] + "/_simulator/stats")
    started = time.perf_counter()
    if events:
        result = run.events(hook, chosen)
    else:
        result = run.profiles(hook, names, skippable=(EventExportNotAllowedError,))
    seconds = time.perf_counter() - started
    if events:
        exported = result.records_per_event_and_day()
        assert len(exported) == events and not result.skipped_events, (
            sorted(exported),
            result.skipped_events,
        )
    stats = json.loads(control.request("GET", os.environ["BENCH_SIMULATOR_URL"] + "/_simulator/stats").data)
    for name in bucket.list_objects(f"{case}"):
        bucket.delete_object(name)
    return {
        "records": result.records,
        "seconds": round(seconds, 2),
        "requests": stats["requests_served"],
        "most_in_flight": stats["max_concurrent_observed"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def run_case_process(case: str, requests: int, env: dict[str, str]) -> dict[str, object]:
    """:func:`run_case` in a fresh process (its peak RSS its own)."""
    output = subprocess.run(
        [sys.executable, __file__, "--case", f"{case}:{requests}"],
        env=env, capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    result: dict[str, object] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.1, 0.4, 1.0])
    parser.add_argument(
        "--requests", type=int, nargs="+", default=[3], help="concurrent_requests to run (default 3)"
    )
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case, requests = args.case.split(":")
        print(json.dumps(run_case(case, int(requests))), flush=True)
        return 0
    rows = []
    with simulator_process(EVENTS_PER_DAY, 1024, EXTRA_EVENTS) as url, gcs_stack_process() as stack:
        control = urllib3.PoolManager()
        env = dict(os.environ)
        env["STORAGE_EMULATOR_HOST"] = stack["url"]
        env["AIRFLOW_CONN_BENCH_BUCKET"] = stack["conn"]
        env["BENCH_SIMULATOR_URL"] = url
        env["AIRFLOW_CONN_BENCH_CLEVERTAP"] = json.dumps(
            {"conn_type": "clevertap", "host": url, "login": ACCOUNT_ID, "password": PASSCODE,
             "extra": {"timezone": "Asia/Kolkata"}}
        )  # fmt: skip
        floors: dict[tuple[str, int], float] = {}
        for case in args.cases:  # instant CleverTap: warms the simulator, measures the floor
            for requests in args.requests:
                floors[case, requests] = float(run_case_process(case, requests, env)["seconds"])
        for latency in args.latencies:
            control.request(
                "POST", url + "/_simulator/faults", body=json.dumps({"response_delay_seconds": latency})
            )
            for case in args.cases:
                for requests in args.requests:
                    row: dict[str, object] = {"case": case, "latency": latency, "concurrent": requests}
                    row.update(run_case_process(case, requests, env))
                    row["limit"] = round(row["requests"] * latency / 3, 2)
                    row["ratio"] = round(row["seconds"] / row["limit"], 2)
                    row["floor"] = floors[case, requests]
                    rows.append(row)
                    print(row, file=sys.stderr, flush=True)
    print(
        "| case | latency s | concurrent_requests | records | task s | requests | limit s (requests x latency / 3) "
        "| ratio | task s at latency 0 | most in flight | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {CASES[str(row['case'])][0]} | {row['latency']} | {row['concurrent']} | {row['records']:,} | {row['seconds']} "
            f"| {row['requests']} | {row['limit']} | **{row['ratio']}** | {row['floor']} | {row['most_in_flight']} "
            f"| {row['peak_rss_mb']} |"
        )
    worst = (
        max(float(row["ratio"]) for row in rows if row["concurrent"] == 3)
        if any(r["concurrent"] == 3 for r in rows)
        else 0.0
    )
    most = max(int(row["most_in_flight"]) for row in rows)
    machine_bound = sorted(
        f"{row['case']} at {row['latency']} s" for row in rows if float(row["floor"]) > float(row["limit"])
    )
    print(
        f"\nWorst ratio with the defaults: {worst:.2f} (target 1.3); most requests in flight: {most} (limit 3)."
    )
    if machine_bound:
        print(
            f"Bound by this machine (the export alone takes longer than the limit): {', '.join(machine_bound)}."
        )
    return 0 if worst <= 1.3 and most <= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
