"""The one-time profile export waits for a real, running recurring export run, and then proceeds.

The one-time export DAG runs with ``dag.test()``: its tasks run through the real task runner, which
talks to the Execution API in process, against the test Airflow home's metadata DB. There a real
run of a small recurring DAG (stored as the DAG processor stores a parsed DAG, unpaused) is put in
state ``running`` first, as the scheduler would leave it while the recurring export works; the
sensor sees it only through the Task SDK. Deferred waits run their trigger in process, as
``dag.test()`` does.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.api.common.delete_dag import delete_dag
from airflow.models.dag import DagModel
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.models.taskreschedule import TaskReschedule
from airflow.providers.common.compat.sdk import DAG, AirflowFailException, AirflowSensorTimeout, task
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState, TaskInstanceState
from airflow.utils.types import DagRunType

from ct_airflow_provider.sensors import RecurringProfileExportSensor
from ct_airflow_provider.testing.dag_runs import dag_test, register_dag
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_2_PLUS

RECURRING_RUN_DATE = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
# The recurring DAG is unpaused, as one in use is; starting it in the far future keeps any scheduler
# that shares this metadata DB from creating runs of it.
RECURRING_START = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
SENSOR_TASK = "wait_for_recurring_profile_export"
#: Airflow 3.0's dag.test() cannot run these waits (a real deployment is not affected): its in-process task
#: runner hands a reschedule sensor its first reschedule date as a string, and it runs triggers inline
#: without the supervisor channel the Task SDK asks through. 3.1 fixed both.
_DAG_TEST_OF_3_0 = pytest.mark.xfail(
    AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS,
    reason="Airflow 3.0's dag.test() cannot run reschedule/deferred sensors (fixed in 3.1)",
    strict=False,
)
EXPORT_TASK = "export_profiles"


@dataclass
class RecurringExport:
    dag_id: str
    run_id: str
    finished_at: float | None = None

    def finish(self) -> None:
        """End the running recurring run, as its last task succeeding would."""
        with create_session() as session:
            run = session.query(DagRun).filter_by(dag_id=self.dag_id, run_id=self.run_id).one()
            run.set_state(DagRunState.SUCCESS)
        self.finished_at = time.time()


@dataclass
class OneTimeExport:
    dag: DAG
    failures: list[str] = field(default_factory=list)
    export_started_at: list[float] = field(default_factory=list)
    deferred: threading.Event = field(default_factory=threading.Event)

    def run(self) -> DagRun:
        _register(self.dag)
        self.failures.clear()
        self.export_started_at.clear()
        self.deferred.clear()
        return dag_test(self.dag, logical_date=dt.datetime.now(dt.timezone.utc))


def _register(dag: DAG) -> None:
    """Store the DAG in the metadata DB as the DAG processor does after parsing its file."""
    register_dag(dag)
    if not AIRFLOW_V_3_0_PLUS:
        from airflow.models.serialized_dag import SerializedDagModel

        SerializedDagModel.write_dag(dag)


def _one_time_dag(dag_id: str, recurring_dag_ids: list[str] | str, **sensor_kwargs: Any) -> OneTimeExport:
    with DAG(dag_id=dag_id, schedule=None, start_date=RECURRING_RUN_DATE, catchup=False) as dag:
        one_time = OneTimeExport(dag)

        class WatchedSensor(RecurringProfileExportSensor):
            """The real sensor; the test sees the message it fails with and when it defers.

            Failure callbacks would tell the message too, but ``dag.test()`` of Airflow 3.0 to 3.2 does
            not run them.
            """

            def execute(self, context: Any) -> Any:
                return self._watched(super().execute, context)

            def resume_execution(self, next_method: str, next_kwargs: Any, context: Any) -> Any:
                return self._watched(super().resume_execution, next_method, next_kwargs, context)

            def defer(self, **kwargs: Any) -> Any:
                one_time.deferred.set()
                return super().defer(**kwargs)

            def _watched(self, method: Any, *args: Any) -> Any:
                try:
                    return method(*args)
                except (AirflowSensorTimeout, AirflowFailException) as failed:
                    one_time.failures.append(str(failed))
                    raise

        wait = WatchedSensor(
            task_id=SENSOR_TASK,
            recurring_dag_ids=recurring_dag_ids,
            poke_interval=1,
            **sensor_kwargs,
        )

        @task(task_id=EXPORT_TASK)
        def export_profiles() -> None:
            one_time.export_started_at.append(time.time())

        wait >> export_profiles()
    return one_time


def _task_states(run: DagRun) -> dict[str, TaskInstanceState | None]:
    with create_session() as session:
        return {ti.task_id: ti.state for ti in run.get_task_instances(session=session)}


def _reschedules_of_sensor(run: DagRun) -> int:
    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=SENSOR_TASK)
            .one()
        )
        return _reschedules_of(session, ti)


def _reschedules_of(session: Any, ti: TaskInstance) -> int:
    if AIRFLOW_V_3_0_PLUS:
        return int(session.query(TaskReschedule).filter_by(ti_id=ti.id).count())
    return int(
        session.query(TaskReschedule)
        .filter_by(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=ti.try_number)
        .count()
    )


@pytest.fixture
def dag_ids() -> Iterator[tuple[str, str]]:
    """Fresh DAG ids per test, and every trace of them removed from the metadata DB afterwards."""
    suffix = uuid.uuid4().hex[:8]
    recurring, one_time = f"ct_test_recurring_profiles_{suffix}", f"ct_test_one_time_profiles_{suffix}"
    yield recurring, one_time
    with create_session() as session:
        for dag_id in (recurring, one_time):
            if session.query(DagModel).filter_by(dag_id=dag_id).count():
                delete_dag(dag_id, keep_records_in_log=False, session=session)


def _recurring_export(dag_id: str, state: DagRunState, *, paused: bool) -> RecurringExport:
    """A recurring profile export DAG with one scheduled run in ``state``."""
    with DAG(dag_id=dag_id, schedule=dt.timedelta(hours=4), start_date=RECURRING_START, catchup=False) as dag:

        @task(task_id=EXPORT_TASK)
        def export_profiles() -> None:
            """Stands in for the recurring export; never run here, its run is only held open."""

        export_profiles()
    _register(dag)
    with create_session() as session:
        session.query(DagModel).filter_by(dag_id=dag_id).update({DagModel.is_paused: paused})
    run_id = f"scheduled__{RECURRING_RUN_DATE.isoformat()}"
    data_interval = (RECURRING_RUN_DATE, RECURRING_RUN_DATE + dt.timedelta(hours=4))
    with create_session() as session:
        if AIRFLOW_V_3_0_PLUS:
            if AIRFLOW_V_3_2_PLUS:
                from airflow.serialization.serialized_objects import DagSerialization
            else:
                from airflow.serialization.serialized_objects import (  # type: ignore[attr-defined,no-redef]
                    SerializedDAG as DagSerialization,
                )
            from airflow.utils.types import DagRunTriggeredByType

            DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).create_dagrun(
                run_id=run_id,
                logical_date=RECURRING_RUN_DATE,
                data_interval=data_interval,
                run_after=RECURRING_RUN_DATE + dt.timedelta(hours=4),
                run_type=DagRunType.SCHEDULED,
                triggered_by=DagRunTriggeredByType.TIMETABLE,
                state=state,
                start_date=dt.datetime.now(dt.timezone.utc),
                session=session,
            )
        else:
            dag.create_dagrun(
                run_id=run_id,
                execution_date=RECURRING_RUN_DATE,
                data_interval=data_interval,
                run_type=DagRunType.SCHEDULED,
                state=state,
                start_date=dt.datetime.now(dt.timezone.utc),
                session=session,
            )
    return RecurringExport(dag_id, run_id)


@pytest.fixture
def recurring(dag_ids: tuple[str, str]) -> RecurringExport:
    """A recurring profile export DAG, unpaused, with one scheduled run in state ``running``."""
    return _recurring_export(dag_ids[0], DagRunState.RUNNING, paused=False)


def _assert_names_blocker_and_remedy(message: str, recurring: RecurringExport) -> None:
    assert f"recurring profile export DAG '{recurring.dag_id}' has 1 run queued or running" in message
    assert f"(run id {recurring.run_id})" in message
    assert f"airflow dags pause {recurring.dag_id}" in message
    assert "Stop Recurring Profile Export to do One Time Export" in message


@_DAG_TEST_OF_3_0
def test_running_recurring_export_holds_the_one_time_export_back_until_it_ends(
    recurring: RecurringExport, dag_ids: tuple[str, str]
) -> None:
    one_time = _one_time_dag(dag_ids[1], [recurring.dag_id], timeout=3)

    blocked = one_time.run()

    assert blocked.state == DagRunState.FAILED
    assert _task_states(blocked) == {
        SENSOR_TASK: TaskInstanceState.FAILED,
        EXPORT_TASK: TaskInstanceState.UPSTREAM_FAILED,
    }
    assert one_time.export_started_at == []
    assert _reschedules_of_sensor(blocked) >= 1  # it let go of its worker slot between checks
    [message] = one_time.failures
    _assert_names_blocker_and_remedy(message, recurring)

    recurring.finish()
    proceeded = one_time.run()

    assert proceeded.state == DagRunState.SUCCESS
    assert _task_states(proceeded) == {
        SENSOR_TASK: TaskInstanceState.SUCCESS,
        EXPORT_TASK: TaskInstanceState.SUCCESS,
    }
    assert len(one_time.export_started_at) == 1
    assert one_time.failures == []


@_DAG_TEST_OF_3_0
def test_a_paused_recurring_dag_with_a_queued_run_gets_advice_that_works(dag_ids: tuple[str, str]) -> None:
    # Pausing the recurring DAG, as a user does before a one-time export, leaves a queued run queued.
    recurring = _recurring_export(dag_ids[0], DagRunState.QUEUED, paused=True)
    one_time = _one_time_dag(dag_ids[1], [recurring.dag_id], timeout=3)

    assert one_time.run().state == DagRunState.FAILED
    [message] = one_time.failures
    assert f"recurring profile export DAG '{recurring.dag_id}' has 1 run queued or running" in message
    assert "those runs will never finish: mark them failed" in message
    assert "or unpause the DAG to let them finish" in message
    if AIRFLOW_V_3_2_PLUS or not AIRFLOW_V_3_0_PLUS:
        # Airflow 3.0 and 3.1 cannot tell a task whether another DAG is paused: the message covers both.
        assert "it is paused, so those runs will never finish" in message
        assert "let the running run finish" not in message

    # Following the advice: the run marked failed, as the UI's "Mark run as > Failed" does.
    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=recurring.dag_id, run_id=recurring.run_id).one()
        run.set_state(DagRunState.FAILED)
    assert one_time.run().state == DagRunState.SUCCESS
    assert len(one_time.export_started_at) == 1


def _sensor_has_let_go(one_time: OneTimeExport, one_time_dag_id: str) -> bool:
    """Whether the sensor has been rescheduled or deferred: held back, and holding no worker slot."""
    if one_time.deferred.is_set():
        return True
    with create_session() as session:
        sensor = (
            session.query(TaskInstance).filter_by(dag_id=one_time_dag_id, task_id=SENSOR_TASK).one_or_none()
        )
        if sensor is None:
            return False
        rescheduled = _reschedules_of(session, sensor)
        return bool(rescheduled) or sensor.next_method is not None


def _finish_once_the_sensor_waits(
    recurring: RecurringExport, one_time: OneTimeExport, one_time_dag_id: str, stop: threading.Event
) -> None:
    while not stop.wait(0.2):
        if _sensor_has_let_go(one_time, one_time_dag_id):
            recurring.finish()
            return


@pytest.mark.parametrize(
    "deferrable", [False, pytest.param(True, marks=_DAG_TEST_OF_3_0)], ids=["reschedule", "deferred"]
)
def test_one_time_export_starts_once_the_recurring_run_it_waits_for_ends(
    recurring: RecurringExport, dag_ids: tuple[str, str], deferrable: bool
) -> None:
    one_time = _one_time_dag(dag_ids[1], recurring.dag_id, timeout=60, deferrable=deferrable)
    stop = threading.Event()
    ender = threading.Thread(
        target=_finish_once_the_sensor_waits, args=(recurring, one_time, dag_ids[1], stop), daemon=True
    )
    ender.start()
    try:
        run = one_time.run()
    finally:
        stop.set()
        ender.join()

    assert run.state == DagRunState.SUCCESS, one_time.failures
    assert recurring.finished_at is not None, "the sensor never waited for the running recurring export"
    [export_started_at] = one_time.export_started_at
    assert export_started_at > recurring.finished_at


@_DAG_TEST_OF_3_0
def test_deferred_wait_times_out_naming_the_recurring_export(
    recurring: RecurringExport, dag_ids: tuple[str, str]
) -> None:
    one_time = _one_time_dag(dag_ids[1], [recurring.dag_id], timeout=2, deferrable=True)

    run = one_time.run()

    assert _task_states(run) == {
        SENSOR_TASK: TaskInstanceState.FAILED,
        EXPORT_TASK: TaskInstanceState.UPSTREAM_FAILED,
    }
    assert one_time.export_started_at == []
    [message] = one_time.failures
    _assert_names_blocker_and_remedy(message, recurring)


@pytest.mark.xfail(
    AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_2_PLUS,
    reason="The Task SDK of Airflow 3.0 and 3.1 cannot look a DAG up: an unknown id counts zero runs there",
    strict=True,
)
def test_unknown_recurring_dag_id_fails_at_once_instead_of_waving_the_export_through(
    dag_ids: tuple[str, str],
) -> None:
    one_time = _one_time_dag(dag_ids[1], ["clevertap_recurring_profles"], timeout=60)

    run = one_time.run()

    assert _task_states(run)[SENSOR_TASK] == TaskInstanceState.FAILED
    assert one_time.export_started_at == []
    [message] = one_time.failures
    assert "'clevertap_recurring_profles'" in message and "airflow dags list" in message


def test_sensor_in_the_recurring_dag_itself_is_refused_when_the_dag_is_parsed() -> None:
    with DAG(dag_id="clevertap_recurring_profiles", schedule=None), pytest.raises(ValueError) as refused:
        RecurringProfileExportSensor(task_id=SENSOR_TASK, recurring_dag_ids=["clevertap_recurring_profiles"])
    assert "own DAG 'clevertap_recurring_profiles'" in str(refused.value)
    assert "list only the recurring profile export DAG" in str(refused.value)


@pytest.mark.parametrize("bad", [[], "", " , ", ["ok", ""], [None]])
def test_empty_or_malformed_dag_ids_are_refused_with_the_remedy(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"recurring_dag_ids .*recurring profile export"):
        RecurringProfileExportSensor(task_id=SENSOR_TASK, recurring_dag_ids=bad)


def test_dag_ids_given_as_one_string_or_a_template_are_accepted() -> None:
    with DAG(dag_id="clevertap_one_time_profiles", schedule=None):
        listed = RecurringProfileExportSensor(task_id="a", recurring_dag_ids="recurring_a, recurring_b")
        templated = RecurringProfileExportSensor(task_id="b", recurring_dag_ids="{{ var.value.recurring }}")
    assert listed.mode == "reschedule" and listed.poke_interval == 60 and listed.timeout == 6 * 3600
    assert "recurring_dag_ids" in templated.template_fields


@pytest.mark.parametrize("default_deferrable", ["True", "False"])
def test_deferrable_follows_airflow_s_default_deferrable(default_deferrable: str) -> None:
    # Read when the module is imported, as official sensors do: a fresh interpreter sees the setting.
    code = (
        "from ct_airflow_provider.sensors import RecurringProfileExportSensor\n"
        "print(RecurringProfileExportSensor(task_id='wait', recurring_dag_ids='recurring').deferrable)"
    )
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": default_deferrable}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == default_deferrable
    explicit = RecurringProfileExportSensor(task_id="wait", recurring_dag_ids="recurring", deferrable=True)
    assert explicit.deferrable is True
