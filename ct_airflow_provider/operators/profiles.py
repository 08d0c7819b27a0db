"""Export CleverTap user profiles ("All user properties") to a GCS bucket."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ct_airflow_provider.export.job import ExportResult
from ct_airflow_provider.hooks.clevertap import EventExportNotAllowedError
from ct_airflow_provider.operators._base import _CleverTapToGCSBase

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class CleverTapProfilesToGCSOperator(_CleverTapToGCSBase):
    """
    Export every user profile active in the window, each exactly once, into a GCS bucket.

    CleverTap has no "all profiles" call: the export sweeps the profiles of every exportable event
    over the window's days and keeps each profile once (by ``identity``, else ``objectId``), in a
    disk-backed set, so memory stays bounded however many profiles there are. Files are named like
    event files with ``profiles`` in place of the event name and the window's last day as date.

    Only one recurring profile export should run at a time, and a one-time profile export must wait
    for it: put :class:`~ct_airflow_provider.sensors.RecurringProfileExportSensor` before it. Its
    parameters are those of the base, :class:`~ct_airflow_provider.operators._base._CleverTapToGCSBase`
    (the window, here the days whose active profiles are exported; the format; the files' size and names).
    """

    def _export(self, context: Context) -> ExportResult:
        run, clevertap = self._run(context)
        names = clevertap.list_event_names()
        result = run.profiles(clevertap, names, skippable=(EventExportNotAllowedError,))
        self._note_refused_events(result)
        return result
