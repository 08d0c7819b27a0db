"""The last step of an export split across tasks: its one manifest, once every slice succeeded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ct_airflow_provider.export.errors import ExportConfigError
from ct_airflow_provider.export.job import ExportResult
from ct_airflow_provider.operators._base import _CleverTapToGCSBase

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class CleverTapExportManifestOperator(_CleverTapToGCSBase):
    """
    Write the one manifest of an export whose slices ran as separate tasks.

    Runs after every slice succeeded (Airflow's default trigger rule): it reads the files each
    slice reported, checks that every one of them is in the bucket, removes objects of the export
    that no slice reported, and writes ``<request id>-<run timestamp>-manifest.json``, which lists
    every file of every slice. Its window, format and names are those of the slices (the same
    parameters as :class:`~ct_airflow_provider.operators.CleverTapEventsToGCSOperator`, whose base
    describes them); it makes no CleverTap request, so it takes one slot of its pool.
    :class:`~ct_airflow_provider.task_groups.CleverTapExportTaskGroup` builds it.

    :param slice_results: what the slices returned (the mapped export task's ``output``). (templated)
    :param slices: how many slices the export has: fewer results (a slice failed, and this task was
        made to run anyway with another trigger rule) fail the task, without a manifest.
    """

    template_fields: Sequence[str] = (*_CleverTapToGCSBase.template_fields, "slice_results")

    def __init__(self, *, slice_results: Any, slices: int, **kwargs: Any) -> None:
        kwargs.setdefault("pool_slots", 1)
        super().__init__(**kwargs)
        self.slice_results = slice_results
        self.slices = slices

    def _export(self, context: Context) -> ExportResult:
        reports = _reports(self.slice_results)
        if len(reports) != self.slices:
            raise ExportConfigError(
                f"{len(reports)} of the export's {self.slices} slices reported their files: a slice failed or did "
                "not run, so the export is not complete and gets no manifest. Clear the failed slices to run "
                "them again, then this task."
            )
        run, _clevertap = self._run(context)
        self.log.info("Writing the manifest of %d slices", len(reports))
        return run.complete_slices(reports)


def _reports(results: Iterable[Any] | None) -> list[dict[str, Any]]:
    """The slices' reports, from what the slice tasks returned."""
    reports = []
    for result in results or ():
        if not isinstance(result, dict) or not isinstance(result.get("slice"), dict):
            raise ExportConfigError(
                "slice_results must be what the export's slices returned (the mapped "
                "CleverTapEventsToGCSOperator's output, each run with a slice_key); got "
                f"{type(result).__name__}. Build the export with CleverTapExportTaskGroup."
            )
        reports.append(result["slice"])
    return reports
