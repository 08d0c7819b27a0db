"""The manifest: the JSON document an export run writes last, listing every file it delivered.

A reader who finds it knows the export is complete and can check each file's size and CRC32C
against what the bucket reports. Its layout: docs/export-formats.md, "The manifest".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ct_airflow_provider.export.files import ExportedFile
from ct_airflow_provider.export.naming import ExportNaming
from ct_airflow_provider.export.reconcile import Reconciliation, summary

MANIFEST_CONTENT_TYPE = "application/json"


def manifest_document(
    *,
    naming: ExportNaming,
    files: Iterable[ExportedFile],
    export_format: str,
    window: object = None,
    compression: str | None = None,
    skipped_events: Mapping[str, str] | None = None,
    reconciliation: Reconciliation | None = None,
    window_ts: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Return the manifest of an export run as a JSON-able dict.

    :param naming: the run's naming (request id, run timestamp, database id).
    :param files: every file the run delivered.
    :param export_format: the format of the files.
    :param window: what was exported, as text (for example the export window's description);
        dates and other objects are written with ``str()``.
    :param compression: ``"gzip"`` or ``None``.
    :param skipped_events: events that were not exported, with the reason.
    :param reconciliation: the records exported against CleverTap's counts, if they were compared.
    :param window_ts: a recurring window's ``ts`` bounds ``(start, end)``.
    """
    listed = sorted(files, key=lambda file: (file.event_name, file.day, file.file_index))
    events: dict[str, dict[str, int]] = {}
    for file in listed:
        totals = events.setdefault(file.event_name, {"files": 0, "records": 0, "bytes": 0})
        totals["files"] += 1
        totals["records"] += file.records
        totals["bytes"] += file.bytes
    return {
        "status": "complete",
        "request_id": str(naming.request_id),
        "run_timestamp": naming.run_timestamp,
        "database_id": naming.database_id,
        "format": export_format,
        "compression": compression,
        "window": None if window is None else str(window),
        "window_ts": None if window_ts is None else {"start": window_ts[0], "end": window_ts[1]},
        "events": events,
        "skipped_events": dict(skipped_events or {}),
        "files": [file.as_dict() for file in listed],
        "totals": {
            "files": len(listed),
            "records": sum(file.records for file in listed),
            "bytes": sum(file.bytes for file in listed),
        },
        **summary(reconciliation),
    }


def build_manifest(
    *,
    naming: ExportNaming,
    files: Iterable[ExportedFile],
    export_format: str,
    window: object = None,
    compression: str | None = None,
    skipped_events: Mapping[str, str] | None = None,
    reconciliation: Reconciliation | None = None,
    window_ts: tuple[int, int] | None = None,
) -> bytes:
    """Return the manifest of an export run as indented UTF-8 JSON, ready to upload last.

    Parameters as for :func:`manifest_document`.

    :param naming: the run's naming.
    :param files: every file the run delivered.
    :param export_format: the format of the files.
    :param window: what was exported, as text.
    :param compression: ``"gzip"`` or ``None``.
    :param skipped_events: events that were not exported, with the reason.
    :param reconciliation: the records exported against CleverTap's counts, if they were compared.
    :param window_ts: a recurring window's ``ts`` bounds ``(start, end)``.
    """
    document = manifest_document(
        naming=naming,
        files=files,
        export_format=export_format,
        window=window,
        compression=compression,
        skipped_events=skipped_events,
        reconciliation=reconciliation,
        window_ts=window_ts,
    )
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
