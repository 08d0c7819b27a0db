"""Hold a one-time profile export back while a recurring profile export is queued or running."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    conf,
)

from ct_airflow_provider.triggers.profile_export import BLOCKING_RUN_STATES, RecurringProfileExportTrigger
from ct_airflow_provider.version_compat import (
    DEFERRAL_TIMED_OUT,
    TRIGGER_FAIL_REPR,
    UnknownDagError,
    count_dag_runs,
    dag_is_paused,
    dag_run_ids,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

# How many blocking run ids per DAG the timeout message lists; the count is always exact.
_MAX_RUN_IDS_NAMED = 3

_DAG_ID_SEPARATORS = re.compile(r"[,\s]+")


@dataclass
class BlockingRecurringExport:
    """A recurring profile export DAG that has runs queued or running."""

    dag_id: str
    active_runs: int
    #: ``None`` where Airflow cannot say (the Task SDK of Airflow 3.0 and 3.1).
    is_paused: bool | None
    run_ids: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line naming the DAG, its blocking runs and how to stop it."""
        runs = f"{self.active_runs} run{'s' if self.active_runs != 1 else ''} queued or running"
        if self.run_ids:
            more = (
                f" and {self.active_runs - len(self.run_ids)} more"
                if self.active_runs > len(self.run_ids)
                else ""
            )
            runs += f" (run id {', '.join(self.run_ids)}{more})"
        # A paused DAG schedules no task: its queued or running runs never finish by themselves.
        paused_remedy = (
            "those runs will never finish: mark them failed in the UI (Dag run > Mark run as > Failed), "
            "or unpause the DAG to let them finish and pause it again afterwards"
        )
        unpaused_remedy = (
            f"pause it (`airflow dags pause {self.dag_id}` or the toggle in the UI) so no new run starts, "
            "then let the running run finish or mark it failed in the UI (Dag run > Mark run as > Failed)"
        )
        if self.is_paused is None:
            remedy = f"{unpaused_remedy}; if it is paused already, {paused_remedy}"
        elif self.is_paused:
            remedy = f"it is paused, so {paused_remedy}"
        else:
            remedy = unpaused_remedy
        return f"recurring profile export DAG '{self.dag_id}' has {runs}: {remedy}"


class RecurringProfileExportSensor(BaseSensorOperator):
    """
    Wait until no recurring profile export is queued or running, then let the one-time export start.

    CleverTap requires it: "Stop Recurring Profile Export to do One Time Export". Put this sensor
    right before the one-time :class:`~ct_airflow_provider.operators.CleverTapProfilesToGCSOperator`
    and name the DAG(s) that run the recurring profile export. It succeeds as soon as none of them
    has a run in state ``queued`` or ``running``; when ``timeout`` elapses first it fails, naming
    each blocking DAG, its run ids and how to stop it.

    It asks Airflow through the Task SDK on Airflow 3 (no metadata database access; on Airflow 2.11,
    which has no such calls, it reads the metadata database), and by default runs in
    ``reschedule`` mode, so it frees its worker slot between checks. With ``deferrable=True`` it
    waits in the triggerer instead.

    :param recurring_dag_ids: The DAG id(s) of the recurring profile export, as a list or as one
        string (several ids separated by commas). Must not include the DAG of this sensor. (templated)
    :param poke_interval: Seconds (or a ``timedelta``) between checks. Default 60 seconds.
    :param timeout: Seconds (or a ``timedelta``) to wait in all before failing. Default 6 hours.
    :param mode: ``reschedule`` (default: no worker slot held while waiting) or ``poke``.
    :param deferrable: Wait in the triggerer instead of being rescheduled. Default: Airflow's
        ``[operators] default_deferrable`` (False unless set there).
    :param kwargs: Passed to :class:`airflow.sdk.BaseSensorOperator`.
    """

    template_fields: Sequence[str] = ("recurring_dag_ids",)
    ui_color = "#f4e3c1"

    def __init__(
        self,
        *,
        recurring_dag_ids: list[str] | str,
        poke_interval: dt.timedelta | float = 60,
        timeout: dt.timedelta | float = 6 * 3600,
        mode: str = "reschedule",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, mode=mode, **kwargs)
        self.recurring_dag_ids = recurring_dag_ids
        self.deferrable = deferrable
        self._blocking: list[BlockingRecurringExport] = []
        # Templates are rendered only at run time; check now what can be checked, so a wrong DAG
        # shows up as an import error rather than as a failed run hours later.
        if not _is_templated(recurring_dag_ids):
            dag_ids = _parse_dag_ids(recurring_dag_ids, task_id=self.task_id)
            if self.has_dag():  # type: ignore[no-untyped-call]
                _refuse_own_dag(dag_ids, own_dag_id=self.dag_id, task_id=self.task_id, error=ValueError)

    def execute(self, context: Context) -> Any:
        dag_ids = self._checked_dag_ids(context)
        if self.deferrable:
            return self._defer_while_blocked(context, dag_ids)
        try:
            return super().execute(context)
        except AirflowSensorTimeout as timed_out:
            raise AirflowSensorTimeout(self._timeout_message(context)) from timed_out
        except AirflowSkipException as skipped:
            # soft_fail turns the timeout into a skip; say why it was skipped all the same.
            if self._blocking:
                raise AirflowSkipException(self._timeout_message(context)) from skipped
            raise

    def poke(self, context: Context) -> bool:
        ti = context["ti"]
        self._blocking = [
            blocking
            for dag_id in self._checked_dag_ids(context)
            if (blocking := _blocking_export(ti, dag_id)) is not None
        ]
        if not self._blocking:
            self.log.info("No recurring profile export is queued or running; the one-time export may start.")
            return True
        for blocking in self._blocking:
            self.log.info("Waiting: %s", blocking.describe())
        return False

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, deadline: str | None = None
    ) -> None:
        """Resume from the trigger: go on if no recurring export is active now, else wait or time out."""
        # The event carries the deadline too: not every runner (dag.test() for one) keeps next_kwargs.
        deadline = (event or {}).get("deadline") or deadline
        # Check again whatever the trigger saw: a new recurring run may have been queued since.
        self._defer_while_blocked(
            context,
            self._checked_dag_ids(context),
            deadline=dt.datetime.fromisoformat(deadline) if deadline else None,
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except DEFERRAL_TIMED_OUT as timed_out:
            if next_method != TRIGGER_FAIL_REPR:
                raise
            # Airflow's own deferral timeout (the trigger never reported, e.g. no triggerer was running):
            # look once more, from the worker, to name who blocks.
            if self.poke(context):
                raise AirflowSensorTimeout(
                    f"The wait for the recurring profile export to stop timed out after {self.timeout:.0f} s "
                    "without word from the triggerer, but none is queued or running now: clear this task "
                    "to run the one-time export."
                ) from timed_out
            raise AirflowSensorTimeout(self._timeout_message(context)) from timed_out

    def _defer_while_blocked(
        self, context: Context, dag_ids: list[str], *, deadline: dt.datetime | None = None
    ) -> None:
        if self.poke(context):
            return
        now = dt.datetime.now(dt.timezone.utc)
        deadline = deadline or now + dt.timedelta(seconds=self.timeout)
        if deadline <= now:
            raise AirflowSensorTimeout(self._timeout_message(context))
        self.defer(
            trigger=RecurringProfileExportTrigger(
                recurring_dag_ids=dag_ids, poke_interval=self.poke_interval, deadline=deadline
            ),
            method_name="execute_complete",
            kwargs={"deadline": deadline.isoformat()},
            # The trigger reports at the deadline itself; Airflow's timeout is the backstop should it not.
            timeout=deadline - now + dt.timedelta(seconds=max(60.0, 2 * self.poke_interval)),
        )

    def _checked_dag_ids(self, context: Context) -> list[str]:
        dag_ids = _parse_dag_ids(self.recurring_dag_ids, task_id=self.task_id)
        _refuse_own_dag(
            dag_ids, own_dag_id=context["ti"].dag_id, task_id=self.task_id, error=AirflowFailException
        )
        return dag_ids

    def _timeout_message(self, context: Context) -> str:
        ti = context["ti"]
        for blocking in self._blocking:
            blocking.run_ids = _active_run_ids(
                blocking.dag_id, limit=min(blocking.active_runs, _MAX_RUN_IDS_NAMED)
            )
        details = "; ".join(blocking.describe() for blocking in self._blocking)
        return (
            f"The one-time profile export in DAG '{ti.dag_id}' waited {self.timeout:.0f} s for the recurring "
            f"profile export to stop, as CleverTap requires (Stop Recurring Profile Export to do One Time "
            f"Export), but {details}. Then clear this task to run the one-time export."
        )


def _is_templated(value: object) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, (list, tuple)):
        return any(_is_templated(item) for item in value)
    return False


def _parse_dag_ids(value: object, *, task_id: str) -> list[str]:
    if isinstance(value, str):
        items: list[object] = [item for item in _DAG_ID_SEPARATORS.split(value) if item]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise TypeError(
            f"{task_id}: recurring_dag_ids must be a DAG id or a list of DAG ids, got {type(value).__name__}; "
            "pass the dag_id of the DAG that runs the recurring profile export, e.g. ['clevertap_recurring_profiles']"
        )
    dag_ids: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(
                f"{task_id}: recurring_dag_ids holds {item!r}, which is not a DAG id; "
                "pass the dag_id(s) of the recurring profile export as non-empty strings"
            )
        if item.strip() not in dag_ids:
            dag_ids.append(item.strip())
    if not dag_ids:
        raise ValueError(
            f"{task_id}: recurring_dag_ids is empty, so there is nothing to wait for; "
            "pass the dag_id(s) of the DAG(s) that run the recurring profile export"
        )
    return dag_ids


def _refuse_own_dag(dag_ids: list[str], *, own_dag_id: str, task_id: str, error: type[Exception]) -> None:
    if own_dag_id in dag_ids:
        raise error(
            f"{task_id}: recurring_dag_ids includes this sensor's own DAG '{own_dag_id}', whose current run "
            "is always running, so the sensor would wait for itself until it times out. Put the sensor in "
            "the one-time export DAG and list only the recurring profile export DAG(s)."
        )


def _blocking_export(ti: Any, dag_id: str) -> BlockingRecurringExport | None:
    try:
        is_paused = dag_is_paused(ti, dag_id)
    except UnknownDagError as not_found:
        # A mistyped id would otherwise count zero runs forever and wave every one-time export through.
        raise AirflowFailException(
            f"recurring_dag_ids names '{dag_id}', but Airflow knows no such DAG ({not_found}); "
            "fix the id (see `airflow dags list`) or wait until the recurring DAG's file has been parsed"
        ) from not_found
    active_runs = count_dag_runs(dag_id, BLOCKING_RUN_STATES)
    if not active_runs:
        return None
    return BlockingRecurringExport(dag_id=dag_id, active_runs=active_runs, is_paused=is_paused)


def _active_run_ids(dag_id: str, *, limit: int) -> list[str]:
    """Name up to ``limit`` queued or running runs of ``dag_id``, newest first; empty if Airflow cannot say.

    Only the timeout message uses it.
    """
    return dag_run_ids(dag_id, BLOCKING_RUN_STATES, limit=limit)
