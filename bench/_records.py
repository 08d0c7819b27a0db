"""CleverTap API event records for the format benchmarks, taken from the simulator's seed data.

A pool of distinct records (parsed once from ``ct_airflow_provider.testing.seed_data``, with device
fields as ``app=true`` sends them) is cycled with fresh, increasing ``ts`` values spread over a few
days, so that any number of records can be streamed page by page without holding them: memory
stays that of the pool whatever the count.
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
        seed=20240601, events_per_day=size * 4, days=3, as_of=dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC)
    )
    pool: list[dict[str, Any]] = []
    for day in data.days()[:-1]:
        pool += [orjson.loads(raw) for raw in data.event_record_bytes(event_name, day, 0, size, app_fields=True)]
        if len(pool) >= size:
            break
    return pool[:size]


def api_pages(
    count: int, pool: list[dict[str, Any]], *, days: int = 4, first_day: int = 20240601
) -> Iterator[list[dict[str, Any]]]:
    """Yield ``count`` records in pages of 5,000, cycling ``pool`` with ``ts`` in order over ``days`` days."""
    per_day = -(-count // days)
    size = len(pool)
    for start in range(0, count, PAGE_SIZE):
        page = []
        for index in range(start, min(start + PAGE_SIZE, count)):
            day, second = divmod(index, per_day)
            second = second * 86400 // per_day
            ts = (first_day + day) * 1_000_000 + (second // 3600) * 10_000 + (second // 60 % 60) * 100 + second % 60
            record = pool[index % size].copy()
            record["ts"] = ts
            page.append(record)
        yield page
