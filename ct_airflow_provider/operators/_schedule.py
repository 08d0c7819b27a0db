"""The windows of a recurring DAG's schedule, asked of its timetable through Airflow's public API.

A recurring export covers exactly one window of its DAG's schedule, and names its files after that
window's start: the scheduled run, a backfill, a cleared task and a hand-triggered run of the same
window then write the same objects and replace each other. The windows are those catch-up gives:
for a timedelta schedule ``start_date + k * interval`` (``k`` any whole number, so a future
``start_date`` still fixes the grid), for a cron schedule its cron points.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, cast

from airflow.timetables.base import DataInterval, TimeRestriction

from ct_airflow_provider.export.windows import MAX_RECURRING_INTERVAL, MIN_RECURRING_INTERVAL

#: Where the grid of a timedelta schedule is anchored when the DAG has no ``start_date``.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
#: How far before a moment the search for its window starts: past two of the longest windows allowed.
_LOOK_BACK = 2 * MAX_RECURRING_INTERVAL + dt.timedelta(hours=1)


def _scheduling(timetable: Any) -> Any:
    """The timetable that computes runs: a Task SDK timetable only describes a schedule."""
    if hasattr(timetable, "next_dagrun_info"):
        return timetable
    # Airflow 3's DAG files may hold Task SDK timetables; the scheduler turns them into these.
    from airflow.serialization.encoders import coerce_to_core_timetable

    return coerce_to_core_timetable(timetable)


def _windows_from(timetable: Any, earliest: dt.datetime) -> Iterator[DataInterval]:
    """The windows catch-up would run, starting with the first one at or after ``earliest``."""
    timetable = _scheduling(timetable)
    # Timetables are typed for pendulum's datetimes and compute as well with the standard library's.
    restriction = TimeRestriction(earliest=cast(Any, earliest), latest=None, catchup=True)
    last: DataInterval | None = None
    while True:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        interval = None if info is None else info.data_interval
        if interval is None or (last is not None and interval.end <= last.end):
            return
        yield interval
        last = interval


def schedule_interval(timetable: Any) -> dt.timedelta | None:
    """The length of the schedule's windows: the shortest if any is under 4 hours, else the longest.

    A cron's windows can differ ("0 0,4 * * *"), so a day's worth of them is looked at. ``None`` for
    timetables that schedule no recurring windows (``schedule=None``, assets, ``@once``).
    """
    lengths = []
    for interval in _windows_from(timetable, dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)):
        lengths.append(interval.end - interval.start)
        if len(lengths) == 8:
            break
    if not lengths:
        return None
    shortest = min(lengths)
    return shortest if shortest < MIN_RECURRING_INTERVAL else max(lengths)


def latest_window(timetable: Any, start_date: dt.datetime | None, until: dt.datetime) -> DataInterval | None:
    """The schedule's latest window that has ended by ``until``; ``None`` if it has none.

    :param timetable: the DAG's timetable.
    :param start_date: the DAG's ``start_date``, which anchors the windows of a timedelta schedule.
    :param until: the moment the window must have ended by (a run's data interval end or run time).
    """
    anchor = start_date or _EPOCH
    probe = next(_windows_from(timetable, until), None)
    if probe is None:
        return None
    length = probe.end - probe.start
    earliest = until - _LOOK_BACK
    if length > dt.timedelta(0):
        # On the anchor's grid (for a cron schedule any moment will do: its windows align themselves).
        earliest = anchor + ((earliest - anchor) // length) * length
    found = None
    for interval in _windows_from(timetable, earliest):
        if interval.end > until:
            break
        found = interval
    return found
