"""Which days to ask CleverTap for, and which records to keep: once-only ranges and recurring windows.

CleverTap's API takes whole days (``yyyymmdd``, inclusive) in the account's time zone and keeps data
for 60 days. A once-only export asks for a range of days; a recurring export covers a window of
4 to 24 hours, so it asks for the days that cover the window and keeps exactly the records whose
``ts`` falls in ``[start, end)``: consecutive windows then export every event exactly once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

#: How far back CleverTap keeps data: a range may start at most this many days before today.
RETENTION_DAYS = 60
MIN_RECURRING_INTERVAL = dt.timedelta(hours=4)
MAX_RECURRING_INTERVAL = dt.timedelta(hours=24)


class ExportWindowError(ValueError):
    """A date range or schedule that CleverTap cannot export; the message says which limit and why."""


def ts_of(moment: dt.datetime, tz: ZoneInfo) -> int:
    """``moment`` as CleverTap's ``ts``: the wall-clock time in the account's zone as yyyyMMddHHmmss."""
    local = moment.astimezone(tz)
    return int(local.strftime("%Y%m%d%H%M%S"))


def day_of_ts(ts: int) -> dt.date:
    """The calendar day of a CleverTap ``ts`` (yyyyMMddHHmmss)."""
    day = ts // 1_000_000
    return dt.date(day // 10_000, day // 100 % 100, day % 100)


@dataclass(frozen=True)
class ExportWindow:
    """The days to request (inclusive) and, for recurring exports, the ``ts`` range to keep.

    :param first_day: first day asked of the API, in the account's time zone.
    :param last_day: last day asked of the API (inclusive).
    :param start_ts: keep records with ``ts >= start_ts`` (``None``: keep all).
    :param end_ts: keep records with ``ts < end_ts`` (``None``: keep all).
    """

    first_day: dt.date
    last_day: dt.date
    start_ts: int | None = None
    end_ts: int | None = None

    @property
    def days(self) -> list[dt.date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + dt.timedelta(days=i) for i in range(count)]

    @property
    def is_recurring(self) -> bool:
        return self.start_ts is not None

    def ts_bounds(self) -> tuple[int, int] | None:
        """``(start_ts, end_ts)`` of a recurring window; ``None`` for whole days."""
        if self.start_ts is None or self.end_ts is None:
            return None
        return self.start_ts, self.end_ts

    def keep(self) -> Callable[[int], bool] | None:
        """The record filter on ``ts`` for a recurring window; ``None`` for whole days."""
        if self.start_ts is None or self.end_ts is None:
            return None
        start, end = self.start_ts, self.end_ts
        return lambda ts: start <= ts < end

    def describe(self) -> str:
        if self.start_ts is not None:
            return f"records with ts in [{self.start_ts}, {self.end_ts}) (days {self.first_day}..{self.last_day})"
        return f"days {self.first_day}..{self.last_day}"


def parse_date(value: dt.date | dt.datetime | str, name: str) -> dt.date:
    """A day given as a date, a datetime (its date), ``YYYY-MM-DD`` or ``YYYYMMDD``.

    :param value: the day.
    :param name: the parameter's name, for the error.
    :raises ExportWindowError: naming the parameter and the formats it takes.
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ExportWindowError(
        f"{name}={value!r} is not a date: write it as YYYY-MM-DD (e.g. 2024-01-31) or YYYYMMDD."
    )


def once_only_window(
    from_date: dt.date | dt.datetime | str, to_date: dt.date | dt.datetime | str, *, today: dt.date
) -> ExportWindow:
    """Check a once-only range against CleverTap's limits before any API call.

    :param from_date: first day to export (inclusive).
    :param to_date: last day to export (inclusive).
    :param today: today in the account's time zone.
    """
    first, last = parse_date(from_date, "from_date"), parse_date(to_date, "to_date")
    earliest = today - dt.timedelta(days=RETENTION_DAYS)
    if first > last:
        raise ExportWindowError(
            f"from_date {first} is after to_date {last}: the range must run forward in time."
        )
    if last > today:
        raise ExportWindowError(
            f"to_date {last} is in the future (today is {today} in the account's time zone): "
            "a once-only export can only cover days that have begun."
        )
    if first < earliest:
        raise ExportWindowError(
            f"from_date {first} is more than {RETENTION_DAYS} days ago: CleverTap keeps {RETENTION_DAYS} days of "
            f"data, so the earliest day that can be exported today ({today}) is {earliest}."
        )
    return ExportWindow(first, last)


def check_recurring_interval(interval: dt.timedelta) -> None:
    """Refuse a schedule interval outside CleverTap's recurring frequencies (4 to 24 hours)."""
    if interval <= dt.timedelta(0):
        raise ExportWindowError(
            "The DAG run has an empty data interval (start == end), so there is no window to export. "
            "Airflow 3's plain cron and timedelta schedules make trigger timetables without intervals: schedule "
            "recurring exports with CronDataIntervalTimetable, DeltaDataIntervalTimetable or "
            "CronTriggerTimetable(..., interval=...) so each run covers a real window, or give from_date and to_date."
        )
    if not MIN_RECURRING_INTERVAL <= interval <= MAX_RECURRING_INTERVAL:
        hours = interval.total_seconds() / 3600
        raise ExportWindowError(
            f"The schedule's interval is {hours:g} hours: CleverTap's recurring exports run every 4 to 24 hours. "
            "Choose an interval between 4 and 24 hours."
        )


def recurring_window(start: dt.datetime, end: dt.datetime, tz: ZoneInfo, *, now: dt.datetime) -> ExportWindow:
    """The days covering ``[start, end)`` in the account's zone, and the ``ts`` filter for that window.

    :param start: the DAG run's data interval start (timezone-aware).
    :param end: the data interval end (timezone-aware).
    :param tz: the account's time zone, in which ``ts`` is written.
    :param now: the current time, to refuse windows outside CleverTap's 60 days.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ExportWindowError("The window's start and end must be timezone-aware datetimes.")
    check_recurring_interval(end - start)
    if end > now + dt.timedelta(minutes=5):
        raise ExportWindowError(
            f"The window ends at {end.isoformat()}, in the future: it cannot be exported yet."
        )
    today = now.astimezone(tz).date()
    earliest = today - dt.timedelta(days=RETENTION_DAYS)
    first = start.astimezone(tz).date()
    # The last instant inside the window decides the last day; an end at midnight needs no extra day.
    last = (end - dt.timedelta(microseconds=1)).astimezone(tz).date()
    if first < earliest:
        raise ExportWindowError(
            f"The window starting {start.isoformat()} reaches back past CleverTap's {RETENTION_DAYS} days of data "
            f"(the earliest exportable day today is {earliest}): leave this window out of the backfill."
        )
    return ExportWindow(first, last, ts_of(start, tz), ts_of(end, tz))


#: The once-only ranges CleverTap's export dialog offers, by the names the example DAGs use.
RANGE_PRESETS = ("specific_day", "date_range", "yesterday", "previous_month", "current_month")


def preset_range(
    preset: str,
    *,
    today: dt.date,
    day: str | None = None,
    from_date: str | None = None,
    to_date: str | None = None,
) -> tuple[dt.date, dt.date]:
    """Turn a once-only range choice into (from_date, to_date), checked against the 60-day limit.

    :param preset: one of :data:`RANGE_PRESETS`.
    :param today: today in the account's time zone.
    :param day: the day, for ``specific_day``.
    :param from_date: first day, for ``date_range``.
    :param to_date: last day, for ``date_range``.
    """
    if preset == "specific_day":
        first = last = parse_date(day or "", "day")
    elif preset == "date_range":
        first, last = parse_date(from_date or "", "from_date"), parse_date(to_date or "", "to_date")
    elif preset == "yesterday":
        first = last = today - dt.timedelta(days=1)
    elif preset == "current_month":
        first, last = today.replace(day=1), today
    elif preset == "previous_month":
        last = today.replace(day=1) - dt.timedelta(days=1)
        first = last.replace(day=1)
    else:
        raise ExportWindowError(f"Unknown range {preset!r}: choose one of {', '.join(RANGE_PRESETS)}.")
    window = once_only_window(first, last, today=today)
    return window.first_day, window.last_day
