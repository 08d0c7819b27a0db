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
    :param slice_key: makes this task one slice of an export split across tasks, named by the key:
        it writes its events and days under the export's request id and run timestamp and reports
        its files (XCom ``slice``) for the export's one manifest, which a last task writes.
        :class:`~ct_airflow_provider.task_groups.CleverTapExportTaskGroup` sets it; leave it unset.
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
        slice_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.events = events
        self.reconcile = check_reconcile_mode(reconcile)
        self.slice_key = slice_key
        super().__init__(
            from_date=from_date,
            to_date=to_date,
            export_format=export_format,
            max_file_bytes=max_file_bytes,
            **kwargs,
        )

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
