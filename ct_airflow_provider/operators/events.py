"""Export CleverTap events to a GCS bucket: all user events, or selected events."""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ct_airflow_provider.export.chunking import DEFAULT_MAX_FILE_BYTES
from ct_airflow_provider.export.errors import ExportConfigError
from ct_airflow_provider.export.job import (
    ExportResult,
)
from ct_airflow_provider.export.reconcile import check_reconcile_mode
from ct_airflow_provider.hooks.clevertap import EventExportNotAllowedError
from ct_airflow_provider.operators._base import _CleverTapToGCSBase

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class CleverTapEventsToGCSOperator(_CleverTapToGCSBase):
    """
    Export CleverTap events into a GCS bucket, one set of files per event and day.

    Files are named ``<request id>-<run timestamp>-<event name>-<yyyymmdd>-<file index>-<database id>.<ext>``
    as CleverTap names them, hold at most ``max_file_bytes`` each, and a manifest
    ``<request id>-<run timestamp>-manifest.json`` written last marks the export complete. A retry
    or a cleared task rewrites the same names and removes what an earlier attempt left behind.

    Its parameters are these, plus those of the base (the window, the format, the files' size and
    names: :class:`~ct_airflow_provider.operators._base._CleverTapToGCSBase`, which also describes
    once-only and recurring windows):

    :param events: ``None`` for all user events (every event CleverTap lists, minus those that refuse
        export, named once in the log and in the manifest), or the names of the events to export. (templated)
    :param reconcile: once-only exports compare the records written per event and day with
        CleverTap's own counts before writing the manifest: ``"fail"`` (default) fails the task on a
        difference, naming each event, day and both numbers; ``"warn"`` writes the manifest with
        ``"reconciled": false``; ``"off"`` skips the check. Recurring windows cut days into parts:
        :class:`~ct_airflow_provider.operators.CleverTapReconcileOperator` checks their days.
    """

    template_fields: Sequence[str] = (*_CleverTapToGCSBase.template_fields, "events")

    def __init__(
        self,
        *,
        events: list[str] | str | None = None,
        from_date: str | dt.date | None = None,
        to_date: str | dt.date | None = None,
        export_format: str = "json",
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        reconcile: str = "fail",
        **kwargs: Any,
    ) -> None:
        self.events = events
        self.reconcile = check_reconcile_mode(reconcile)
        super().__init__(
            from_date=from_date,
            to_date=to_date,
            export_format=export_format,
            max_file_bytes=max_file_bytes,
            **kwargs,
        )

    @staticmethod
    def slices(events: list[str], from_date: str | dt.date, to_date: str | dt.date) -> list[dict[str, Any]]:
        """Split a once-only export into one slice per event and day, for ``.expand_kwargs()``.

        Each slice runs as its own mapped task instance (on any executor, in parallel, retried on its
        own) and is a complete export with its own request id and manifest. Give the mapped task
        ``pool="clevertap_api"`` (3 slots) so the whole deployment stays within CleverTap's limit of 3
        concurrent requests::

            CleverTapEventsToGCSOperator.partial(task_id="export", pool="clevertap_api").expand_kwargs(
                CleverTapEventsToGCSOperator.slices(["Charged", "App Launched"], "2024-01-01", "2024-01-07")
            )

        :param events: the event names.
        :param from_date: first day (inclusive).
        :param to_date: last day (inclusive).
        """
        first, last = _as_date(from_date), _as_date(to_date)
        if first > last:
            raise ValueError(f"from_date {first} is after to_date {last}.")
        days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        return [
            {"events": [event], "from_date": day.isoformat(), "to_date": day.isoformat()}
            for event in _event_list(events)
            for day in days
        ]

    def _export(self, context: Context) -> ExportResult:
        run, clevertap = self._run(context)
        selected = _event_list(self.events)
        skippable: tuple[type[Exception], ...]
        if selected:
            # Selected events: one that refuses export is an error the user must see, and a name
            # CleverTap does not know is refused before any export query (CleverTap's own answer,
            # HTTP 400 "Incorrect Usage", would not say which name is wrong).
            _check_known(selected, clevertap.list_event_names())
            names, skippable = selected, ()
        else:
            names = clevertap.list_event_names()
            skippable = (EventExportNotAllowedError,)
            self.log.info("All user events: %d event names listed by CleverTap", len(names))
        result = run.events(clevertap, names, skippable=skippable, reconcile_mode=self.reconcile)
        self._note_refused_events(result)
        return result


def _as_date(value: str | dt.date) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def _check_known(selected: list[str], known: list[str]) -> None:
    unknown = [name for name in selected if name not in known]
    if not unknown:
        return
    described = []
    for name in unknown:
        nearest = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" (nearest: {', '.join(repr(n) for n in nearest)})" if nearest else ""
        described.append(f"{name!r}{hint}")
    raise ExportConfigError(
        f"CleverTap knows no event named {', '.join(described)}: give the names exactly as CleverTap lists "
        "them (case and spaces count), or events=None for all user events."
    )


def _event_list(events: list[str] | str | None) -> list[str]:
    if events is None or events == "" or events == []:
        return []
    if isinstance(events, str):
        # A templated list arrives as text: accept "A, B" as well as one name.
        names = [name.strip() for name in events.split(",")] if "," in events else [events]
    else:
        names = [str(name) for name in events]
    if any(not name for name in names):
        raise ValueError(
            f"events={events!r} holds an empty event name: list the names as CleverTap shows them."
        )
    return list(dict.fromkeys(names))
