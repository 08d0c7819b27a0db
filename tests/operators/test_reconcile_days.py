"""A day of six 4-hour windows, checked against CleverTap's counts by the daily reconciliation (real DAG runs)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from airflow.providers.common.compat.sdk import DAG
from airflow.timetables.interval import DeltaDataIntervalTimetable

from ct_airflow_provider.operators import CleverTapEventsToGCSOperator, CleverTapReconcileOperator
from ct_airflow_provider.testing.dag_runs import run_dag
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from ct_airflow_provider.testing.pytest_plugin import connect_default_connections
from ct_airflow_provider.testing.simulator import SimulatorServer, run_simulator

BUCKET = "ct-reconcile"
EVENTS = ["Charged", "App Launched"]
PREFIX = "clevertap/events/"


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with run_simulator(events_per_day=40, population=200) as server:
        yield server


@pytest.fixture
def stack(
    gcs_stack: GCSTestStack, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> GCSTestStack:
    connect_default_connections(monkeypatch, simulator, gcs_stack, BUCKET)
    return gcs_stack


def _export_day(simulator: SimulatorServer, day: dt.date) -> None:
    """The recurring export's six windows of ``day`` (account time zone), as the scheduler runs them."""
    midnight = dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(simulator.timezone)).astimezone(
        dt.timezone.utc
    )
    with DAG(
        dag_id="e2e_recurring_reconciled",
        schedule=DeltaDataIntervalTimetable(dt.timedelta(hours=4)),
        start_date=midnight,
        catchup=False,
    ) as dag:
        CleverTapEventsToGCSOperator(task_id="export", events=EVENTS, object_prefix=PREFIX)
    for window in range(6):
        assert run_dag(dag, logical_date=midnight + dt.timedelta(hours=4 * (window + 1))).state == "success"


def _reconcile(day: dt.date, **kwargs: Any) -> str:
    with DAG(dag_id="e2e_daily_reconciliation", schedule=None) as dag:
        CleverTapReconcileOperator(
            task_id="reconcile",
            export_dag_id="e2e_recurring_reconciled",
            export_task_id="export",
            object_prefix=PREFIX,
            day=day.isoformat(),
            **kwargs,
        )
    return str(run_dag(dag).state)


def _reconciliation(stack: GCSTestStack, day: dt.date) -> dict[str, Any]:
    (name,) = [n for n in stack.list_objects(BUCKET) if n.endswith(f"-reconciliation-{day:%Y%m%d}.json")]
    return orjson.loads(stack.read_object(BUCKET, name))  # type: ignore[no-any-return]


def test_a_day_of_windows_matches_clevertaps_counts(stack: GCSTestStack, simulator: SimulatorServer) -> None:
    day = simulator.truth.today - dt.timedelta(days=2)
    _export_day(simulator, day)
    assert _reconcile(day, events=EVENTS) == "success"
    found = _reconciliation(stack, day)
    assert found["reconciled"] is True and len(found["windows"]) == 6
    assert found["reconciliation"] == {
        event: {f"{day:%Y%m%d}": {"exported": n, "clevertap": n}}
        for event in EVENTS
        for n in [simulator.truth.event_count(event, day)]
    }


def test_late_events_show_as_short_by_k_until_the_day_is_exported_again(
    stack: GCSTestStack, simulator: SimulatorServer, task_log: Callable[[], str]
) -> None:
    day = simulator.truth.today - dt.timedelta(days=3)
    total = simulator.truth.event_count("Charged", day)
    simulator.faults.late_events[("Charged", f"{day:%Y%m%d}")] = 2  # two events not uploaded yet
    try:
        _export_day(simulator, day)
    finally:
        simulator.faults.late_events.clear()  # ... and now they have arrived

    assert _reconcile(day, events=EVENTS) == "failed"
    assert (
        f"'Charged' on {day:%Y%m%d}: exported {total - 2}, CleverTap counts {total} (short by 2)"
        in task_log()
    )
    assert _reconciliation(stack, day)["reconciled"] is False

    _export_day(simulator, day)  # the backfill of the day's windows replaces their files
    assert _reconcile(day, events=EVENTS) == "success"
    assert _reconciliation(stack, day)["reconciled"] is True


def test_a_day_whose_windows_are_not_all_exported_is_not_reconciled(
    stack: GCSTestStack, simulator: SimulatorServer, task_log: Callable[[], str]
) -> None:
    day = simulator.truth.today - dt.timedelta(days=4)
    assert _reconcile(day, events=EVENTS, retries=0) == "failed"
    assert "a window of the day is missing or not finished" in task_log()
    assert not [n for n in stack.list_objects(BUCKET) if "-reconciliation-" in n]


def test_the_reconcile_operator_needs_to_know_the_export() -> None:
    with (
        pytest.raises(ValueError, match="name the recurring export"),
        DAG(dag_id="e2e_bad_reconcile", schedule=None),
    ):
        CleverTapReconcileOperator(task_id="reconcile")
