"""Fire once no recurring profile export is queued or running (for the deferrable sensor)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async

from ct_airflow_provider.version_compat import count_dag_runs

#: Dag run states in which a recurring export holds the account's profile export "slot" (the sensor
#: reads them from here: the triggerer need not import the sensor's module).
BLOCKING_RUN_STATES: tuple[str, ...] = ("queued", "running")


class RecurringProfileExportTrigger(BaseTrigger):
    """
    Poll Airflow until none of ``recurring_dag_ids`` has a run queued or running.

    It emits one event: ``{"status": "clear", ...}``, or ``{"status": "timed_out", "active_runs":
    {...}, ...}`` once ``deadline`` passes; both carry ``"deadline"`` (ISO 8601) so the sensor can
    defer again for the time left. Either way the sensor checks again when it resumes, since a
    recurring run may have been queued or may have ended in between.

    :param recurring_dag_ids: The DAG ids of the recurring profile export.
    :param poke_interval: Seconds between checks.
    :param deadline: When to stop waiting (timezone-aware).
    """

    def __init__(self, recurring_dag_ids: list[str], poke_interval: float, deadline: dt.datetime) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if deadline.tzinfo is None:
            raise ValueError(
                f"deadline must be timezone-aware, got {deadline!r}; pass an aware datetime in UTC"
            )
        self.recurring_dag_ids = list(recurring_dag_ids)
        self.poke_interval = poke_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "recurring_dag_ids": self.recurring_dag_ids,
                "poke_interval": self.poke_interval,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Through the Task SDK on Airflow 3 (the triggerer sets up its supervisor channel before it
        # runs triggers), through the metadata database on Airflow 2.
        count_runs = sync_to_async(count_dag_runs)
        while True:
            active_runs = {
                dag_id: count
                for dag_id in self.recurring_dag_ids
                if (count := await count_runs(dag_id, BLOCKING_RUN_STATES))
            }
            if not active_runs:
                yield TriggerEvent({"status": "clear", "deadline": self.deadline.isoformat()})  # type: ignore[no-untyped-call]
                return
            remaining = (self.deadline - dt.datetime.now(dt.timezone.utc)).total_seconds()
            if remaining <= 0:
                timed_out = {
                    "status": "timed_out",
                    "active_runs": active_runs,
                    "deadline": self.deadline.isoformat(),
                }
                yield TriggerEvent(timed_out)  # type: ignore[no-untyped-call]
                return
            self.log.info("Recurring profile export runs queued or running: %s", active_runs)
            await asyncio.sleep(min(self.poke_interval, remaining))
