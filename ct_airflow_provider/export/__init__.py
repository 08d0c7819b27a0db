"""The Airflow-free core of the provider: CleverTap records in, export files out.

The way of the data: API pages -> :mod:`.records` (shaping) -> :mod:`.formats` (JSON, CSV, XML,
Parquet) -> :mod:`.chunking` (per day, at most ``max_file_bytes`` per file) -> :mod:`.sinks`
(local folder, or uploads while the next file is written) -> :mod:`.manifest`, written last.
Nothing here imports Airflow or the provider's hooks.
"""

from __future__ import annotations

from ct_airflow_provider.export.chunking import DEFAULT_MAX_FILE_BYTES
from ct_airflow_provider.export.errors import ExportConfigError, ExportDataError, ExportError, ExportSinkError
from ct_airflow_provider.export.files import ExportedFile
from ct_airflow_provider.export.formats import EXPORT_FORMATS, validate_format
from ct_airflow_provider.export.manifest import build_manifest, manifest_document
from ct_airflow_provider.export.naming import (
    PROFILES_NAME,
    ExportNaming,
    event_object_name,
    manifest_object_name,
    sanitize_event_name,
)
from ct_airflow_provider.export.sinks import LocalFolderSink, Sink, Uploader, UploadingSink
from ct_airflow_provider.export.writer import ExportedFiles, export_event, export_profiles

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "EXPORT_FORMATS",
    "PROFILES_NAME",
    "ExportConfigError",
    "ExportDataError",
    "ExportError",
    "ExportNaming",
    "ExportSinkError",
    "ExportedFile",
    "ExportedFiles",
    "LocalFolderSink",
    "Sink",
    "Uploader",
    "UploadingSink",
    "build_manifest",
    "event_object_name",
    "export_event",
    "export_profiles",
    "manifest_document",
    "manifest_object_name",
    "sanitize_event_name",
    "validate_format",
]
