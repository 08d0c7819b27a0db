"""Helpers: an export of one event into a folder, and a bucket hook on the real GCS stack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ct_airflow_provider.export import ExportedFiles, LocalFolderSink, export_event
from ct_airflow_provider.hooks.gcs import CleverTapGCSHook, get_bucket_hook
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from tests.export.sample_records import NAMING, pages_of

Exporter = Callable[..., tuple[ExportedFiles, Path]]


@pytest.fixture
def run_export(tmp_path: Path) -> Exporter:
    """Export records of one event into ``tmp_path/out``; returns the files and that folder."""

    def run(
        records: list[dict[str, Any]], export_format: str, *, event_name: str = "Charged", **options: Any
    ) -> tuple[ExportedFiles, Path]:
        out = tmp_path / f"out-{export_format}-{options.get('compression')}"
        sink = LocalFolderSink(out)
        files = export_event(
            pages_of(records),
            event_name=event_name,
            naming=options.pop("naming", NAMING),
            export_format=export_format,
            sink=sink,
            work_dir=tmp_path / "work",
            **options,
        )
        sink.close()
        return files, out

    return run


def empty_bucket_hook(
    gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch, bucket: str
) -> CleverTapGCSHook:
    """A bucket hook on an empty bucket of the GCS stack, through a connection of its own."""
    gcs_stack.create_bucket(bucket)
    gcs_stack.delete_all_objects(bucket)
    conn_id = bucket.replace("-", "_")
    key = gcs_stack.new_service_account_key()
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", gcs_stack.connection_env(bucket, key))
    return get_bucket_hook(conn_id)
