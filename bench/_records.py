"""CleverTap API event records for the format benchmarks, taken from the simulator's seed data.

A pool of distinct records (parsed once from ``ct_airflow_provider.testing.seed_data``, with device
fields as ``app=true`` sends them) is copied once per day with ``ts`` values on that day, then cycled,
so that any number of records can be streamed page by page without holding them: memory stays that
of the pools whatever the count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import orjson

from ct_airflow_provider.testing.seed_data import SeedData

EVENT = "Charged"
POOL_SIZE = 5000
PAGE_SIZE = 5000


def record_pool(size: int = POOL_SIZE, event_name: str = EVENT) -> list[dict[str, Any]]:
    """``size`` distinct API records of ``event_name`` (deterministic)."""
    data = SeedData(
        seed=20240601,
        events_per_day=size * 4,
        days=3,
        as_of=dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone.utc),
    )
    pool: list[dict[str, Any]] = []
    for day in data.days()[:-1]:
        pool += [
            orjson.loads(raw) for raw in data.event_record_bytes(event_name, day, 0, size, app_fields=True)
        ]
        if len(pool) >= size:
            break
    return pool[:size]


def day_pools(
    pool: list[dict[str, Any]], *, days: int = 4, first_day: int = 20240601
) -> list[list[dict[str, Any]]]:
    """The pool once per day, each record a copy whose ``ts`` falls on that day (spread over it)."""
    size = len(pool)
    out = []
    for day in range(days):
        records = []
        for index, record in enumerate(pool):
            second = index * 86400 // size
            copy = record.copy()
            copy["ts"] = (
                (first_day + day) * 1_000_000
                + (second // 3600) * 10_000
                + (second // 60 % 60) * 100
                + second % 60
            )
            records.append(copy)
        out.append(records)
    return out


def api_pages(count: int, pools: list[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """Yield ``count`` records in pages of 5,000: a quarter of them (with 4 day pools) on each day.

    Pages are slices of the day pools, so producing them costs next to nothing and the time of a
    case is the time of its writer. Writers must not (and do not) modify the records.
    """
    per_day = -(-count // len(pools))
    for start in range(0, count, PAGE_SIZE):
        stop = min(start + PAGE_SIZE, count)
        page: list[dict[str, Any]] = []
        index = start
        while index < stop:
            day, offset = divmod(index, per_day)
            records = pools[day]
            at = offset % len(records)
            take = min(stop - index, len(records) - at, per_day - offset)
            page += records[at : at + take]
            index += take
        yield page
