"""One export across many workers: a task group of slices and the export's one manifest.

:class:`CleverTapExportTaskGroup` splits an event export into slices (by event, by day, or both),
maps them as task instances that any worker may run, in parallel and retried one by one, and adds
the step that writes the export's one manifest once every slice succeeded. Every slice writes under
the export's request id and run timestamp, so the bucket holds the files a single task would have
written, found by one request id.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.common.compat.sdk import TaskGroup

from ct_airflow_provider.export.windows import parse_date
from ct_airflow_provider.operators._base import CLEVERTAP_POOL, derived_request_id
from ct_airflow_provider.operators.events import CleverTapEventsToGCSOperator, _event_list
from ct_airflow_provider.operators.manifest import CleverTapExportManifestOperator

#: How an export may be sliced: one slice per event, per day, or per event and day.
SLICE_BY = ("event", "day", "event_day")

#: Parameters of the export that the manifest step shares (it names and describes the same files).
_SHARED = (
    "clevertap_conn_id",
    "gcs_conn_id",
    "export_format",
    "compression",
    "max_file_bytes",
    "database_id",
    "object_prefix",
    "work_dir",
)


def plan_slices(
    slice_by: str,
    events: list[str] | str | None,
    from_date: str | dt.date | None,
    to_date: str | dt.date | None,
) -> list[dict[str, Any]]:
    """The keyword arguments of each slice's export task (``events``, ``from_date``, ``to_date``, ``slice_key``).

    :param slice_by: ``event``, ``day`` or ``event_day``.
    :param events: the events to export (``None``: all user events, only when slicing by day).
    :param from_date: first day of a once-only export; ``None`` for a recurring one (sliced by event).
    :param to_date: its last day, inclusive.
    :raises ValueError: for a plan that cannot work, saying why (no slices, slices CleverTap's event
        list would decide, days of a recurring window).
    """
    if slice_by not in SLICE_BY:
        raise ValueError(f"slice_by={slice_by!r}: choose one of {', '.join(map(repr, SLICE_BY))}.")
    names = _event_list(events)
    if (from_date is None) != (to_date is None):
        raise ValueError(
            "Give both from_date and to_date for a once-only export, or neither for a recurring one."
        )
    if slice_by in ("event", "event_day") and not names:
        raise ValueError(
            f"slice_by={slice_by!r} needs the events listed: with events=None the slices would depend on "
            "CleverTap's event list at run time. List the events, or slice by day."
        )
    windows: list[tuple[str | None, str | None]] = [(None, None)]  # a recurring export: each run's window
    if from_date is not None and to_date is not None:
        first, last = parse_date(from_date, "from_date"), parse_date(to_date, "to_date")
        if first > last:
            raise ValueError(f"from_date {first} is after to_date {last}: the export has no day to slice.")
        days = [(first + dt.timedelta(days=offset)).isoformat() for offset in range((last - first).days + 1)]
        windows = (
            [(first.isoformat(), last.isoformat())] if slice_by == "event" else [(day, day) for day in days]
        )
    elif slice_by != "event":
        raise ValueError(
            f"slice_by={slice_by!r} needs a once-only range (from_date and to_date): a recurring export's "
            "days come from each run's window, so slice it by event."
        )
    event_parts: list[list[str] | None] = [[name] for name in names] if slice_by != "day" else [names or None]
    slices = []
    for event in event_parts:
        for start, end in windows:
            key = [event[0]] if slice_by != "day" and event else []
            key += [start.replace("-", "")] if slice_by != "event" and start else []
            slices.append({"events": event, "from_date": start, "to_date": end, "slice_key": "-".join(key)})
    return slices


class CleverTapExportTaskGroup(TaskGroup):
    """
    An event export split into slices that run as mapped tasks, and the step writing its one manifest.

    The slices share one request id (by default derived from the DAG and the group, stable across
    runs) and the run's timestamp, so their files carry the names a single export task would give
    them and a bucket search by the request id finds every one. Each slice writes and replaces only
    its own events and days (a retried slice rewrites its own objects); the group's ``manifest`` task
    runs once every slice succeeded and writes the manifest listing every file of every slice (a
    failed slice leaves the export without a manifest, visibly incomplete). The slices take the
    ``clevertap_api`` pool by default, each one slot per request it keeps in flight (1 by default),
    so a 3-slot pool runs 3 slices at once across all workers, within CleverTap's limit.

    Profile exports are not sliced: a profile active in two slices (two events or days) would be
    exported twice, so ``export="profiles"`` is refused; export profiles with one
    :class:`~ct_airflow_provider.operators.CleverTapProfilesToGCSOperator`.

    :param group_id: the group's id (the slices are ``<group_id>.export``, the last step
        ``<group_id>.manifest``).
    :param slice_by: ``"event_day"`` (default: one slice per event and day), ``"event"`` (one per
        event, over the whole range; the only way for a recurring export) or ``"day"`` (one per day,
        every event; ``events=None`` allowed).
    :param export: ``"events"``; ``"profiles"`` is refused (see above).
    :param events: the events to export.
    :param from_date: first day of a once-only export (``None`` for a recurring export).
    :param to_date: last day of a once-only export, inclusive.
    :param pool: the pool of the slices (default ``clevertap_api``).
    :param request_id: the export's request id (default: derived from the DAG and the group).
    :param concurrent_requests: CleverTap requests each slice keeps in flight (default 1: the pool
        spreads CleverTap's budget over slices).
    :param operator_kwargs: every other parameter of
        :class:`~ct_airflow_provider.operators.CleverTapEventsToGCSOperator` (``gcs_conn_id``,
        ``export_format``, ``object_prefix``, ``retries``...).
    """

    def __init__(
        self,
        group_id: str,
        *,
        slice_by: str = "event_day",
        export: str = "events",
        events: list[str] | str | None = None,
        from_date: str | dt.date | None = None,
        to_date: str | dt.date | None = None,
        pool: str = CLEVERTAP_POOL,
        request_id: str | None = None,
        concurrent_requests: int = 1,
        **operator_kwargs: Any,
    ) -> None:
        if export == "profiles":
            raise ValueError(
                "Profile exports are not sliced: a profile active in two slices (two events or two days) would "
                "be exported twice. Export profiles with one CleverTapProfilesToGCSOperator."
            )
        if export != "events":
            raise ValueError(f"export={export!r}: only 'events' exports are sliced.")
        slices = plan_slices(slice_by, events, from_date, to_date)
        super().__init__(group_id=group_id)
        dag = self.dag if self.has_dag() else None
        if dag is None:
            raise ValueError(f"Create CleverTapExportTaskGroup {group_id!r} inside a DAG (`with DAG(...)`).")
        request_id = request_id or derived_request_id(dag.dag_id, self.group_id or group_id, None)
        shared = {name: operator_kwargs[name] for name in _SHARED if name in operator_kwargs}
        with self:
            exports = CleverTapEventsToGCSOperator.partial(
                task_id="export",
                pool=pool,
                request_id=request_id,
                concurrent_requests=concurrent_requests,
                **operator_kwargs,
            ).expand_kwargs(slices)
            manifest = CleverTapExportManifestOperator(
                task_id="manifest",
                request_id=request_id,
                from_date=from_date,
                to_date=to_date,
                slice_results=exports.output,
                slices=len(slices),
                **shared,
            )
            exports >> manifest
        self.slices = slices
        self.request_id = request_id
