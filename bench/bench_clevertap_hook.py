"""Throughput of CleverTapHook.iter_event_pages against a bare urllib3 + orjson loop over the same pages.

Both drain the same event and days from one simulator process (started here, with a page cache
big enough that after a warm-up drain it only sends bytes), alternating rounds (ABBA) in one run
so that machine noise hits both alike; the verdict is the median of the paired ratios. The target: the hook reaches at least 90% of the bare
loop's records per second.

    .venv/bin/python bench/bench_clevertap_hook.py           # 500,000 events
    .venv/bin/python bench/bench_clevertap_hook.py --quick   # 50,000 events
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import urllib3

EVENT = "App Launched"
BATCH_SIZE = 5000
ACCOUNT_ID = "BENCH-ACC-001"
PASSCODE = "BENCH-PASSCODE-NOT-SECRET"
DRAINS = {
    "bare": "bare urllib3 + orjson loop",
    "hook": "CleverTapHook.iter_event_pages",
    "bare_gc_paused": "bare loop, GC paused while parsing",
    "hook_gc_running": "CleverTapHook, pause_gc_while_parsing=False",
}


@contextmanager
def simulator_process(events_per_day: int, page_cache_mb: int, extra_events: int = 0) -> Iterator[str]:
    """Run the simulator as its own process (its own GIL) and yield its URL.

    :param extra_events: synthetic events ("Custom Event 1", ...) added to the simulated account.
    """
    command = [
        sys.executable, "-m", "ct_airflow_provider.testing.simulator", "--port", "0",
        "--events-per-day", str(events_per_day), "--page-cache-mb", str(page_cache_mb),
        "--account-id", ACCOUNT_ID, "--passcode", PASSCODE, "--extra-events", str(extra_events),
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


def bare_drain(url: str, from_day: dt.date, to_day: dt.date, *, pause_gc: bool = False) -> int:
    """The baseline: POST for a cursor, then GET pages and parse them with orjson; nothing else.

    :param pause_gc: pause the cyclic GC around each parse, as the hook does (for reference).
    """
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
        data = http.request("GET", f"{url}/1/events.json?cursor={cursor}", headers=headers).data
        if pause_gc:
            gc.disable()
            page = orjson.loads(data)
            gc.enable()
        else:
            page = orjson.loads(data)
        records += len(page["records"])
        cursor = page.get("next_cursor")
    http.clear()
    return records


def hook_drain(from_day: dt.date, to_day: dt.date, *, pause_gc: bool = True) -> int:
    """The hook as the export operators use it: one parsed page at a time, the GC paused while parsing.

    :param pause_gc: the hook's ``pause_gc_while_parsing`` (the operators' default: on).
    """
    from ct_airflow_provider.hooks.clevertap import CleverTapHook

    hook = CleverTapHook("ct_bench", batch_size=BATCH_SIZE, pause_gc_while_parsing=pause_gc)
    records = 0
    for page in hook.iter_event_pages(EVENT, from_day, to_day):
        records += len(page)
    hook.close()
    return records


@dataclass
class Drain:
    records: int
    wall_seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.wall_seconds

    @property
    def cpu_rate(self) -> float:
        return self.records / self.cpu_seconds


def timed(drain: Callable[[], int]) -> Drain:
    gc.collect()  # each drain pays for its own garbage, not the previous one's
    wall, cpu = time.perf_counter(), time.process_time()
    records = drain()
    return Drain(records, time.perf_counter() - wall, time.process_time() - cpu)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50,000 events instead of 500,000")
    parser.add_argument("--events", type=int, default=None, help="events to drain (overrides --quick)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="timed drains of each kind, in alternating order"
    )
    args = parser.parse_args()
    wanted = args.events or (50_000 if args.quick else 500_000)
    events_per_day = max(wanted // 4, 1000)
    page_cache_mb = max(256, wanted * 2 // 1000)
    logging.getLogger("ct_airflow_provider").setLevel(logging.WARNING)  # counts polling is not news here

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
        runs: dict[str, list[Drain]] = {kind: [] for kind in DRAINS}
        drains: dict[str, Callable[[], int]] = {
            "bare": lambda: bare_drain(url, from_day, to_day),
            "hook": lambda: hook_drain(from_day, to_day),
            "bare_gc_paused": lambda: bare_drain(url, from_day, to_day, pause_gc=True),
            "hook_gc_running": lambda: hook_drain(from_day, to_day, pause_gc=False),
        }
        for round_number in range(args.rounds):
            # Reverse the order every other round, so a drift in machine load favours none.
            order = list(DRAINS) if round_number % 2 == 0 else list(reversed(DRAINS))
            for kind in order:
                runs[kind].append(timed(drains[kind]))
        for drain in (d for kind_runs in runs.values() for d in kind_runs):
            if drain.records != expected:
                raise SystemExit(f"a drain read {drain.records} records instead of {expected}")

    def paired(kind: str, baseline: str) -> float:
        """Median over rounds of the ratio of two drains run side by side."""
        return statistics.median(k.rate / b.rate for k, b in zip(runs[kind], runs[baseline], strict=True))

    hook_vs_bare = paired("hook", "bare")
    print(
        f"\nDraining {expected:,} '{EVENT}' events ({from_day} to {to_day}), pages of {BATCH_SIZE}, ", end=""
    )
    print(f"{args.rounds} rounds of each drain in alternating order, simulator in its own process.\n")
    print(
        "| drain | median records/s (wall) | best records/s (wall) | median records/s (client CPU) | vs bare loop (paired) |"
    )
    print("|---|---:|---:|---:|---:|")
    for kind, label in DRAINS.items():
        kind_runs = runs[kind]
        print(
            f"| {label} | {statistics.median(d.rate for d in kind_runs):,.0f} | {max(d.rate for d in kind_runs):,.0f} "
            f"| {statistics.median(d.cpu_rate for d in kind_runs):,.0f} | {paired(kind, 'bare'):.1%} |"
        )
    verdict = "meets" if hook_vs_bare >= 0.9 else "MISSES"
    print(
        f"\nThe hook {verdict} the target of 90% of the bare loop: {hook_vs_bare:.1%} (median of paired ratios)."
    )
    print(
        "The hook pauses the cyclic GC while it parses a page ([clevertap] pause_gc_while_parsing): "
        f"{paired('hook', 'hook_gc_running'):.2f}x the records/s of the hook without the pause (paired)."
    )
    return 0 if hook_vs_bare >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
