"""Once-only ranges and recurring windows: CleverTap's limits, and exactly-once coverage."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ct_airflow_provider.export.windows import (
    ExportWindowError,
    day_of_ts,
    once_only_window,
    preset_range,
    recurring_window,
    ts_of,
)

TODAY = dt.date(2026, 11, 29)
KOLKATA = ZoneInfo("Asia/Kolkata")
NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)


def test_specific_day_and_range_within_60_days() -> None:
    assert once_only_window("2026-11-28", "2026-11-28", today=TODAY).days == [dt.date(2026, 11, 28)]
    window = once_only_window("20261001", dt.date(2026, 10, 3), today=TODAY)
    assert window.days == [dt.date(2026, 10, 1), dt.date(2026, 10, 2), dt.date(2026, 10, 3)]
    assert window.keep() is None
    assert once_only_window("2026-09-30", "2026-09-30", today=TODAY).first_day == TODAY - dt.timedelta(
        days=60
    )


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-09-29", "2026-10-02", "more than 60 days ago"),
        ("2026-11-20", "2026-11-10", "is after to_date"),
        ("2026-11-28", "2026-11-30", "is in the future"),
        ("yesterday", "2026-11-30", "is not a date"),
    ],
)
def test_refused_ranges_name_the_limit(start: str, end: str, message: str) -> None:
    with pytest.raises(ExportWindowError, match=message):
        once_only_window(start, end, today=TODAY)


def test_recurring_window_fetches_covering_days_and_filters_ts() -> None:
    start = dt.datetime(2026, 11, 27, 20, 0, tzinfo=dt.timezone.utc)  # 01:30 next day in Kolkata
    window = recurring_window(start, start + dt.timedelta(hours=4), KOLKATA, now=NOW)
    assert window.days == [dt.date(2026, 11, 28)]
    keep = window.keep()
    assert keep is not None
    assert keep(20261128013000) and keep(20261128052959) and not keep(20261128053000)
    assert not keep(20261128012959)


def test_window_ending_at_midnight_asks_for_one_day() -> None:
    start = dt.datetime(2026, 11, 27, 0, 0, tzinfo=dt.timezone.utc)
    window = recurring_window(start, start + dt.timedelta(hours=24), ZoneInfo("UTC"), now=NOW)
    assert window.days == [dt.date(2026, 11, 27)]


@pytest.mark.parametrize(
    ("hours", "message"),
    [(0, "empty data interval"), (3, "every 4 to 24 hours"), (25, "every 4 to 24 hours")],
)
def test_recurring_interval_limits(hours: int, message: str) -> None:
    start = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
    with pytest.raises(ExportWindowError, match=message):
        recurring_window(start, start + dt.timedelta(hours=hours), KOLKATA, now=NOW)


def test_recurring_window_past_retention_is_refused() -> None:
    start = dt.datetime(2026, 9, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(ExportWindowError, match="past CleverTap's 60 days"):
        recurring_window(start, start + dt.timedelta(hours=4), KOLKATA, now=NOW)


@given(
    offset_minutes=st.integers(min_value=0, max_value=60 * 24 * 50),
    hours=st.integers(min_value=4, max_value=24),
    moments=st.lists(st.integers(min_value=0, max_value=3 * 24 * 3600), min_size=1, max_size=50),
    zone=st.sampled_from(["UTC", "Asia/Kolkata", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]),
)
def test_consecutive_windows_keep_every_ts_exactly_once(
    offset_minutes: int, hours: int, moments: list[int], zone: str
) -> None:
    tz = ZoneInfo(zone)
    origin = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=offset_minutes)
    step = dt.timedelta(hours=hours)
    windows = [
        recurring_window(origin + i * step, origin + (i + 1) * step, tz, now=origin + 41 * step)
        for i in range(40)
    ]
    for second in moments:
        moment = origin + dt.timedelta(hours=hours) + dt.timedelta(seconds=second)
        ts = ts_of(moment, tz)
        holders = [w for w in windows if (keep := w.keep()) is not None and keep(ts)]
        assert len(holders) == 1, (ts, [w.describe() for w in holders])
        assert day_of_ts(ts) in holders[0].days


@pytest.mark.parametrize(
    ("preset", "kwargs", "expected"),
    [
        ("specific_day", {"day": "2026-11-02"}, (dt.date(2026, 11, 2), dt.date(2026, 11, 2))),
        (
            "date_range",
            {"from_date": "2026-11-01", "to_date": "2026-11-05"},
            (dt.date(2026, 11, 1), dt.date(2026, 11, 5)),
        ),
        ("yesterday", {}, (dt.date(2026, 11, 28), dt.date(2026, 11, 28))),
        ("current_month", {}, (dt.date(2026, 11, 1), TODAY)),
        ("previous_month", {}, (dt.date(2026, 10, 1), dt.date(2026, 10, 31))),
    ],
)
def test_range_presets(preset: str, kwargs: dict[str, str], expected: tuple[dt.date, dt.date]) -> None:
    assert preset_range(preset, today=TODAY, **kwargs) == expected


def test_previous_month_beyond_retention_is_refused_not_cut() -> None:
    with pytest.raises(ExportWindowError, match="more than 60 days ago"):
        preset_range("previous_month", today=dt.date(2027, 1, 31))
