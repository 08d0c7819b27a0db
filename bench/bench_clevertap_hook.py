"""Throughput of CleverTapHook.iter_event_pages against a bare urllib3 + orjson loop over the same pages.

Both drain the same event and days from one simulator process (started here, with a page cache
big enough that after a warm-up drain it only sends bytes), alternating rounds in one run so
that machine noise hits both alike. The target: the hook reaches at least 90% of the bare
loop's records per second.

    .venv/bin/python bench/bench_clevertap_hook.py           # 500,000 events
    .venv/bin/python bench/bench_clevertap_hook.py --quick   # 50,000 events
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import urllib3

EVENT = "App Launched"
BATCH_SIZE = 5000
ACCOUNT_ID = "BENCH-ACC-001"
PASSCODE = "BENCH-PASSCODE-NOT-SECRET"


@contextmanager
def simulator_process(events_per_day: int, page_cache_mb: int) -> Iterator[str]:
    """Run the simulator as its own process (its own GIL) and yield its URL."""
    command = [
        sys.executable, "-m", "ct_airflow_provider.testing.simulator", "--port", "0",
        "--events-per-day", str(events_per_day), "--page-cache-mb", str(page_cache_mb),
        "--account-id", ACCOUNT_ID, "--passcode", PASSCODE,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "listening on" in line:
                yield line.rsplit(" ", 1)[1].strip()
                break
        else:
            raise RuntimeError(f"the simulator exited with {process.wait()} before listening")
    finally:
        process.terminate()
        process.wait(timeout=30)


def pick_days(
    count: Callable[[dt.date, dt.date], int], today: dt.date, wanted: int
) -> tuple[dt.date, dt.date, int]:
    """The shortest run of whole days ending yesterday that holds at least ``wanted`` events."""
    to_day = today - dt.timedelta(days=1)
    from_day, total = to_day, count(to_day, to_day)
    while total < wanted and (to_day - from_day).days < 59:
        from_day -= dt.timedelta(days=1)
        total += count(from_day, from_day)
    return from_day, to_day, total


def bare_drain(url: str, from_day: dt.date, to_day: dt.date) -> int:
    """The baseline: POST for a cursor, then GET pages and parse them with orjson; nothing else."""
    http = urllib3.PoolManager(maxsize=1)
    headers = {"X-CleverTap-Account-Id": ACCOUNT_ID, "X-CleverTap-Passcode": PASSCODE}
    body = orjson.dumps(
        {"event_name": EVENT, "from": int(from_day.strftime("%Y%m%d")), "to": int(to_day.strftime("%Y%m%d"))}
    )
    started = http.request(
        "POST",
        f"{url}/1/events.json?batch_size={BATCH_SIZE}",
        body=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    cursor = orjson.loads(started.data)["cursor"]
    records = 0
    while cursor:
        page = orjson.loads(http.request("GET", f"{url}/1/events.json?cursor={cursor}", headers=headers).data)
        records += len(page["records"])
        cursor = page.get("next_cursor")
    http.clear()
    return records


def hook_drain(from_day: dt.date, to_day: dt.date) -> int:
    """The hook as the export layer uses it: one parsed page at a time."""
    from ct_airflow_provider.hooks.clevertap import CleverTapHook

    hook = CleverTapHook("ct_bench", batch_size=BATCH_SIZE)
    records = 0
    for page in hook.iter_event_pages(EVENT, from_day, to_day):
        records += len(page)
    hook.close()
    return records


def timed(drain: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    records = drain()
    return records, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50,000 events instead of 500,000")
    parser.add_argument("--events", type=int, default=None, help="events to drain (overrides --quick)")
    parser.add_argument("--rounds", type=int, default=3, help="timed drains of each kind, alternating")
    args = parser.parse_args()
    wanted = args.events or (50_000 if args.quick else 500_000)
    events_per_day = max(wanted // 4, 1000)
    page_cache_mb = max(256, wanted * 2 // 1000)

    with simulator_process(events_per_day, page_cache_mb) as url:
        os.environ["AIRFLOW_CONN_CT_BENCH"] = json.dumps(
            {
                "conn_type": "clevertap",
                "host": url,
                "login": ACCOUNT_ID,
                "password": PASSCODE,
                "extra": {"timezone": "Asia/Kolkata"},  # the simulator's default
            }
        )
        from ct_airflow_provider.hooks.clevertap import CleverTapHook

        hook = CleverTapHook("ct_bench")
        today = dt.datetime.now(hook.timezone).date()
        from_day, to_day, expected = pick_days(lambda a, b: hook.count_events(EVENT, a, b), today, wanted)
        hook.close()

        warm = bare_drain(url, from_day, to_day)  # renders every page once into the simulator's cache
        if warm != expected:
            raise SystemExit(f"the warm-up drain read {warm} records, the counts API says {expected}")
        bare_rates: list[float] = []
        hook_rates: list[float] = []
        for _ in range(args.rounds):
            for drain, rates in (
                (lambda: bare_drain(url, from_day, to_day), bare_rates),
                (lambda: hook_drain(from_day, to_day), hook_rates),
            ):
                records, seconds = timed(drain)
                if records != expected:
                    raise SystemExit(f"a drain read {records} records instead of {expected}")
                rates.append(records / seconds)

    best_ratio = max(hook_rates) / max(bare_rates)
    median_ratio = statistics.median(hook_rates) / statistics.median(bare_rates)
    print(
        f"\nDraining {expected:,} '{EVENT}' events ({from_day} to {to_day}), pages of {BATCH_SIZE}, ", end=""
    )
    print(f"{args.rounds} alternating rounds, simulator in its own process.\n")
    print("| drain | best records/s | median records/s |")
    print("|---|---:|---:|")
    print(f"| bare urllib3 + orjson loop | {max(bare_rates):,.0f} | {statistics.median(bare_rates):,.0f} |")
    print(
        f"| CleverTapHook.iter_event_pages | {max(hook_rates):,.0f} | {statistics.median(hook_rates):,.0f} |"
    )
    print(f"| hook / bare | {best_ratio:.1%} | {median_ratio:.1%} |")
    verdict = "meets" if median_ratio >= 0.9 else "MISSES"
    print(f"\nThe hook {verdict} the target of 90% of the bare loop (median ratio).")
    return 0 if median_ratio >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
