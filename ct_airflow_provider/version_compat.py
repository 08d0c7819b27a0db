"""What differs between the Airflow versions this provider supports (2.11 and 3.0 to 3.3), in one place.

Imports that only moved between versions (base classes, exceptions, the context, secret masking) come
from ``airflow.providers.common.compat.sdk`` instead; this module holds only what *behaves* differently:

* the version flags (as official providers keep them in their ``version_compat.py``);
* how a task asks about another DAG and its runs: through the Task SDK on Airflow 3 (tasks there have
  no metadata database access), through the metadata database on Airflow 2.11;
* ``mask_secret``, which common-compat's ``sdk`` exports from 1.22 on (1.21 is the last release
  installable on Python 3.10);
* the ``next_method`` and the exception with which Airflow resumes a deferred task whose deferral
  timed out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from airflow import __version__ as _airflow_version
from airflow.providers.common.compat.sdk import AirflowSensorTimeout
from packaging.version import Version


def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    """The installed Airflow's version as ``(major, minor, micro)``, pre-release and local parts dropped."""
    version = Version(_airflow_version)
    return version.major, version.minor, version.micro


AIRFLOW_V_3_0_PLUS: bool = get_base_airflow_version_tuple() >= (3, 0, 0)
AIRFLOW_V_3_1_PLUS: bool = get_base_airflow_version_tuple() >= (3, 1, 0)
AIRFLOW_V_3_2_PLUS: bool = get_base_airflow_version_tuple() >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS: bool = get_base_airflow_version_tuple() >= (3, 3, 0)

try:
    from airflow.providers.common.compat.sdk import mask_secret as mask_secret
except ImportError:  # common-compat < 1.22; the same homes that 1.22 looks in
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.log import mask_secret as mask_secret
    else:
        from airflow.utils.log.secrets_masker import mask_secret as mask_secret  # type: ignore[no-redef]

#: The ``next_method`` with which Airflow resumes a deferred task to fail it (its deferral timed out).
TRIGGER_FAIL_REPR = "__fail__"

if AIRFLOW_V_3_0_PLUS:
    #: What resuming with :data:`TRIGGER_FAIL_REPR` raises in a sensor.
    DEFERRAL_TIMED_OUT: tuple[type[Exception], ...] = (AirflowSensorTimeout,)
else:
    from airflow.exceptions import TaskDeferralError

    DEFERRAL_TIMED_OUT = (AirflowSensorTimeout, TaskDeferralError)


class UnknownDagError(LookupError):
    """Airflow knows no DAG of that id."""


def dag_is_paused(ti: Any, dag_id: str) -> bool | None:
    """Whether DAG ``dag_id`` is paused, asked from a running task ``ti``; ``None`` if Airflow cannot say.

    :raises UnknownDagError: Airflow knows no such DAG (on Airflow 3.0 and 3.1, whose Task SDK
        cannot look a DAG up, this is not checked and ``None`` is returned).
    """
    if not AIRFLOW_V_3_0_PLUS:
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session

        with create_session() as session:
            model = session.query(DagModel).filter(DagModel.dag_id == dag_id).one_or_none()
            if model is None:
                raise UnknownDagError(f"no DAG with id {dag_id!r} in the metadata database")
            return bool(model.is_paused)
    get_dag = getattr(ti, "get_dag", None)
    if get_dag is None:
        return None
    try:
        return bool(get_dag(dag_id).is_paused)
    except Exception as not_found:
        raise UnknownDagError(str(not_found)) from not_found


def count_dag_runs(dag_id: str, states: Sequence[str]) -> int:
    """How many runs of ``dag_id`` are in one of ``states``; from a task or from the triggerer."""
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        return RuntimeTaskInstance.get_dr_count(dag_id=dag_id, states=list(states))
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return int(
            session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.state.in_(list(states))).count()
        )


def dag_run_ids(dag_id: str, states: Sequence[str], *, limit: int) -> list[str]:
    """Up to ``limit`` ids of runs of ``dag_id`` in one of ``states``, newest first; empty if Airflow cannot say."""
    if not AIRFLOW_V_3_0_PLUS:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = (
                session.query(DagRun.run_id)
                .filter(DagRun.dag_id == dag_id, DagRun.state.in_(list(states)))
                .order_by(DagRun.execution_date.desc())
                .limit(limit)
                .all()
            )
            return [row.run_id for row in rows]
    # The Task SDK has no public call that lists runs, so this asks the same supervisor channel as
    # ``TaskInstance.get_previous_dagrun``, for another DAG.
    try:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import GetPreviousDagRun, PreviousDagRunResult
    except ImportError:
        return []
    run_ids: list[str] = []
    for state in states:
        before = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=366 * 100)
        while len(run_ids) < limit:
            try:
                response = task_runner.SUPERVISOR_COMMS.send(
                    GetPreviousDagRun(dag_id=dag_id, logical_date=before, state=state)
                )
            except Exception:
                # Naming the run is a courtesy; the DAG id and count already tell the user what blocks.
                return run_ids
            if not isinstance(response, PreviousDagRunResult) or response.dag_run is None:
                break
            run = response.dag_run
            run_ids.append(run.run_id)
            if run.logical_date is None:
                break
            before = run.logical_date
    return run_ids
