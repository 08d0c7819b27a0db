"""OpenLineage output facets name every file an export wrote."""

from __future__ import annotations

import datetime as dt

from airflow.providers.common.compat.sdk import DAG

from ct_airflow_provider.export.files import ExportedFile
from ct_airflow_provider.export.job import ExportResult
from ct_airflow_provider.operators import CleverTapEventsToGCSOperator


def _file(name: str) -> ExportedFile:
    return ExportedFile(
        object_name=name,
        event_name="Charged",
        day=dt.date(2026, 11, 28),
        file_index=0,
        records=3,
        bytes=100,
        crc32c="AAAAAA==",
        content_type="application/json",
    )


def test_lineage_lists_clevertap_as_input_and_each_file_as_output() -> None:
    with DAG(dag_id="lineage", schedule=None):
        operator = CleverTapEventsToGCSOperator(
            task_id="export", from_date="2026-11-28", to_date="2026-11-28"
        )
    assert operator.get_openlineage_facets_on_complete(None).outputs == []
    names = ["1-2-Charged-20261128-0-0.json", "1-2-Charged-20261128-1-0.json"]
    operator._result = ExportResult("1", 2, "bucket-a", "json", files=[_file(n) for n in names])
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("gs://bucket-a", n) for n in names]
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("clevertap", "clevertap_default")]
