"""The windows of a recurring DAG's schedule: what a run exports, however it was started."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from airflow.sdk import CronTriggerTimetable as SdkCronTriggerTimetable
from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable
from airflow.timetables.trigger import CronTriggerTimetable

from ct_airflow_provider.operators._schedule import latest_window, schedule_interval

UTC = dt.timezone.utc
H = dt.timedelta(hours=1)
START = dt.datetime(2026, 11, 27, tzinfo=UTC)


def _at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def _window(timetable: Any, until: dt.datetime, start_date: dt.datetime | None = START) -> tuple[Any, Any]:
    found = latest_window(timetable, start_date, until)
    assert found is not None
    return found.start, found.end


@pytest.mark.parametrize(
    "timetable",
    [
        DeltaDataIntervalTimetable(4 * H),
        CronDataIntervalTimetable("0 */4 * * *", timezone="UTC"),
        CronTriggerTimetable("0 */4 * * *", timezone="UTC", interval=4 * H),
        SdkCronTriggerTimetable("0 */4 * * *", timezone="UTC", interval=4 * H),
    ],
    ids=["delta", "cron-interval", "cron-trigger", "sdk-cron-trigger"],
)
def test_a_window_of_the_schedule_is_its_own_latest_window(timetable: Any) -> None:
    assert _window(timetable, _at(6, 16)) == (_at(6, 12), _at(6, 16))
    # A hand-triggered run at 14:40 exports the window that had ended by then, not [10:40, 14:40).
    assert _window(timetable, _at(6, 14, 40)) == (_at(6, 8), _at(6, 12))


def test_a_timedelta_schedule_is_anchored_at_the_start_date() -> None:
    every_4h = DeltaDataIntervalTimetable(4 * H)
    start = dt.datetime(2026, 11, 27, 1, 30, tzinfo=UTC)
    assert _window(every_4h, _at(6, 16), start) == (_at(6, 9, 30), _at(6, 13, 30))
    # A start date in the future still fixes the grid (backfills of a DAG not yet scheduled).
    assert _window(every_4h, _at(6, 16), dt.datetime(2100, 1, 1, tzinfo=UTC)) == (_at(6, 12), _at(6, 16))
    # Local midnight of an account in India: windows at 18:30, 22:30, ... UTC.
    kolkata_midnight = dt.datetime(2026, 11, 26, 18, 30, tzinfo=UTC)
    assert _window(every_4h, _at(6, 16), kolkata_midnight) == (_at(6, 10, 30), _at(6, 14, 30))


def test_cron_windows_of_unequal_length() -> None:
    twice_a_day = CronDataIntervalTimetable("0 0,4 * * *", timezone="UTC")
    assert _window(twice_a_day, _at(6, 16)) == (_at(6, 0), _at(6, 4))
    assert _window(twice_a_day, _at(6, 3)) == (_at(5, 4), _at(6, 0))
    assert schedule_interval(twice_a_day) == 20 * H


def test_schedule_interval_of_each_kind() -> None:
    assert schedule_interval(DeltaDataIntervalTimetable(4 * H)) == 4 * H
    assert schedule_interval(CronDataIntervalTimetable("0 */6 * * *", timezone="UTC")) == 6 * H
    assert schedule_interval(CronTriggerTimetable("0 */8 * * *", timezone="UTC", interval=8 * H)) == 8 * H
    # A plain cron in Airflow 3 triggers runs with empty data intervals.
    assert schedule_interval(SdkCronTriggerTimetable("0 */8 * * *", timezone="UTC")) == dt.timedelta(0)


def test_windows_before_the_start_date_are_on_its_grid_too() -> None:
    # An hour after the start date no window has ended since it: the one before it is the latest.
    every_4h = DeltaDataIntervalTimetable(4 * H)
    assert _window(every_4h, _at(1, 1), _at(1, 0)) == (_at(1, 0) - 4 * H, _at(1, 0))


def test_a_dag_without_a_schedule_has_no_window() -> None:
    from airflow.providers.common.compat.sdk import DAG

    dag = DAG(dag_id="ct_test_no_schedule", schedule=None, start_date=START)
    assert latest_window(dag.timetable, START, _at(6, 16)) is None
    assert schedule_interval(dag.timetable) is None
