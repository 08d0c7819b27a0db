"""Deterministic CleverTap API event records for the benchmarks, shaped like the reference record.

Used when ``ct_airflow_provider.testing.seed_data`` is not available; the shape follows
``/work/shared/reference/clevertap-api.md`` (profile with identities and ``profileData``, a 14-digit
``ts``, ``event_props`` whose keys vary from record to record, ``session_props``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

_CATEGORIES = [
    "Mens Watch",
    "Womens Shoes",
    "Books",
    "Kitchen, Home & Garden",
    'Toys "R" Fun',
    "Électronique",
]
_PRODUCTS = ["Casio Chronograph Watch", "Running shoe, size 42", "The Millionaire Next Door", "Kettle 1.7L"]
_PLATFORMS = ["Android", "iOS", "Web"]
_SOURCES = ["google", "newsletter", "facebook", "direct"]


def api_records(
    count: int, *, seed: int = 7, days: int = 3, start_day: int = 20240105
) -> Iterator[dict[str, Any]]:
    """Yield ``count`` API event records spread over ``days`` consecutive days (in ts order per page).

    :param count: how many records to yield.
    :param seed: random seed; the same seed gives the same records.
    :param days: number of days the records' ``ts`` spreads over (days 1..28 of one month).
    :param start_day: first day as yyyymmdd.
    """
    rng = random.Random(seed)
    for index in range(count):
        day = start_day + (index * days // max(count, 1))
        second = index % 86400
        ts = day * 1_000_000 + (second // 3600) * 10_000 + (second // 60 % 60) * 100 + second % 60
        user = rng.randrange(50_000)
        props: dict[str, Any] = {
            "CT Source": "Mobile",
            "Amount": round(rng.uniform(1, 500), 2),
            "Category": rng.choice(_CATEGORIES),
            "Product name": rng.choice(_PRODUCTS),
            "Currency": "USD",
            "Quantity": rng.randrange(1, 5),
        }
        if index % 3 == 0:
            props["Coupon"] = f"SAVE{rng.randrange(100)}"
        if index % 5 == 0:
            props["Gift"] = rng.random() < 0.5
        if index % 7 == 0:
            props["Tags"] = ["sale", "new"]
        yield {
            "profile": {
                "objectId": f"__{user:032x}",
                "identity": f"user-{user}",
                "email": f"user{user}@example.com",
                "phone": f"+1415555{user:04d}",
                "name": f"User {user}",
                "platform": _PLATFORMS[user % 3],
                "all_identities": [f"user-{user}", f"user{user}@example.com"],
                "profileData": {
                    "Customer Type": "Gold" if user % 4 == 0 else "Silver",
                    "Age": 20 + user % 50,
                },
            },
            "ts": ts,
            "event_props": props,
            "session_props": {"utm_source": rng.choice(_SOURCES), "session_source": "App"},
        }


def api_pages(count: int, *, page_size: int = 5000, **kwargs: Any) -> Iterator[list[dict[str, Any]]]:
    """Yield the records of :func:`api_records` in pages of ``page_size``, as the API cursor does."""
    page: list[dict[str, Any]] = []
    for record in api_records(count, **kwargs):
        page.append(record)
        if len(page) == page_size:
            yield page
            page = []
    if page:
        yield page
