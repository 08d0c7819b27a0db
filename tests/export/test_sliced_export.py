"""An export split into slices writes what one export writes, under one request id and one manifest.

Against the simulator and the local GCS stack: slices of events and days run one by one (as tasks
on different workers would), then the manifest step; a retried slice rewrites only its own objects.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from ct_airflow_provider.export import ExportNaming
from ct_airflow_provider.export.errors import ExportConfigError, ExportSinkError
from ct_airflow_provider.export.job import ExportRun, ExportSpec
from ct_airflow_provider.export.windows import ExportWindow
from ct_airflow_provider.hooks.clevertap import CleverTapHook
from ct_airflow_provider.hooks.gcs import CleverTapGCSHook
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from ct_airflow_provider.testing.simulator import SimulatorServer, run_simulator
from tests.export.conftest import empty_bucket_hook

BUCKET = "ct-slices"
LOG = logging.getLogger("test_sliced_export")
EVENTS = ["App Launched", "Charged", "Product Viewed"]
NAMING = ExportNaming(request_id="1700000000", run_timestamp=1700000000, database_id=0, prefix="exports")


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with run_simulator(events_per_day=80, population=300) as server:
        yield server


@pytest.fixture
def bucket(gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch) -> CleverTapGCSHook:
    return empty_bucket_hook(gcs_stack, monkeypatch, BUCKET)


@pytest.fixture
def hook(simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[CleverTapHook]:
    monkeypatch.setenv("AIRFLOW_CONN_CLEVERTAP_DEFAULT", simulator.airflow_conn_env())
    hook = CleverTapHook(batch_size=50)
    yield hook
    hook.close()


def _days(simulator: SimulatorServer) -> list[dt.date]:
    last = simulator.truth.today - dt.timedelta(days=1)
    return [last - dt.timedelta(days=1), last]


def _run(
    bucket: CleverTapGCSHook, days: list[dt.date], slice_key: str | None, max_file_bytes: int
) -> ExportRun:
    spec = ExportSpec(NAMING, ExportWindow(days[0], days[-1]), "json", None, max_file_bytes)
    return ExportRun(spec, bucket, LOG, slice_key=slice_key, holder=f"slice {slice_key}")


def _slices(
    bucket: CleverTapGCSHook, hook: CleverTapHook, days: list[dt.date], max_file_bytes: int = 8 * 1024
) -> dict[str, dict[str, Any]]:
    """Every event and day exported as its own slice; their reports by slice key."""
    reports = {}
    for event in EVENTS:
        for day in days:
            key = f"{event}-{day:%Y%m%d}"
            result = _run(bucket, [day], key, max_file_bytes).events(hook, [event], reconcile_mode="fail")
            reports[key] = result.slice_report()
    return reports


def _objects(stack: GCSTestStack) -> dict[str, bytes]:
    return {
        name: stack.read_object(BUCKET, name)
        for name in stack.list_objects(BUCKET)
        if "/_schemas/" not in name
    }


def test_slices_write_what_one_export_writes(
    bucket: CleverTapGCSHook, hook: CleverTapHook, simulator: SimulatorServer, gcs_stack: GCSTestStack
) -> None:
    days = _days(simulator)
    _run(bucket, days, None, 8 * 1024).events(hook, EVENTS, reconcile_mode="fail")
    whole = _objects(gcs_stack)
    gcs_stack.delete_all_objects(BUCKET)

    reports = _slices(bucket, hook, days)
    assert not [name for name in gcs_stack.list_objects(BUCKET) if name.endswith("manifest.json")]
    result = _run(bucket, days, None, 8 * 1024).complete_slices(list(reports.values()))
    sliced = _objects(gcs_stack)

    # The same objects, byte for byte, the manifest included (it lists every file, reconciled).
    assert len(whole) > len(EVENTS) * len(days) + 1  # several chunks per event and day, and the manifest
    assert sorted(sliced) == sorted(whole)
    assert [name for name in whole if sliced[name] != whole[name]] == []
    manifest = orjson.loads(sliced[NAMING.manifest_object_name()])
    assert manifest["reconciled"] is True
    assert {f["object_name"] for f in manifest["files"]} == set(whole) - {NAMING.manifest_object_name()}
    assert result.records == sum(simulator.truth.event_count(event, day) for event in EVENTS for day in days)
    # The slices' claims are gone once each slice is done.
    assert not [name for name in gcs_stack.list_objects(BUCKET) if name.endswith(".claim")]


def test_a_retried_slice_rewrites_only_its_own_objects(
    bucket: CleverTapGCSHook, hook: CleverTapHook, simulator: SimulatorServer, gcs_stack: GCSTestStack
) -> None:
    days = _days(simulator)
    reports = _slices(bucket, hook, days, max_file_bytes=4 * 1024)
    _run(bucket, days, None, 4 * 1024).complete_slices(list(reports.values()))
    before = gcs_stack.object_generations(BUCKET, "exports/")

    # A retry of one slice, with larger files: fewer chunks than its first attempt wrote.
    key = f"Charged-{days[0]:%Y%m%d}"
    retried = _run(bucket, [days[0]], key, 64 * 1024).events(hook, ["Charged"])
    own = {name for name in before if f"-Charged-{days[0]:%Y%m%d}-" in name}
    assert len(retried.files) < len(own)
    assert sorted(retried.removed_stale_objects) == sorted(own - {f.object_name for f in retried.files})
    # Until the manifest step runs again, the export has no manifest: visibly incomplete.
    after = gcs_stack.object_generations(BUCKET, "exports/")
    assert NAMING.manifest_object_name() not in after
    untouched = {name: generation for name, generation in before.items() if name not in own}
    untouched.pop(NAMING.manifest_object_name())
    assert {name: after[name] for name in untouched} == untouched  # other slices' objects not rewritten

    reports[key] = retried.slice_report()
    result = _run(bucket, days, None, 4 * 1024).complete_slices(list(reports.values()))
    manifest = orjson.loads(gcs_stack.read_object(BUCKET, NAMING.manifest_object_name()))
    listed = {f["object_name"] for f in manifest["files"]}
    assert listed == set(gcs_stack.list_objects(BUCKET, "exports/1700000000-")) - {
        NAMING.manifest_object_name()
    }
    assert result.records == sum(simulator.truth.event_count(event, day) for event in EVENTS for day in days)


def test_the_manifest_is_not_written_when_a_reported_file_is_missing(
    bucket: CleverTapGCSHook, hook: CleverTapHook, simulator: SimulatorServer, gcs_stack: GCSTestStack
) -> None:
    days = _days(simulator)[:1]
    reports = _slices(bucket, hook, days)
    lost = reports[f"Charged-{days[0]:%Y%m%d}"]["files"][0]["object_name"]
    bucket.delete_object(lost)
    with pytest.raises(
        ExportSinkError, match=rf"1 files that slices reported are not in the bucket \({lost}\)"
    ):
        _run(bucket, days, None, 8 * 1024).complete_slices(list(reports.values()))
    assert NAMING.manifest_object_name() not in gcs_stack.list_objects(BUCKET)
    with pytest.raises(ExportConfigError, match="the slices overlap"):
        _run(bucket, days, None, 8 * 1024).complete_slices(
            [*reports.values(), reports[f"Charged-{days[0]:%Y%m%d}"]]
        )
    with pytest.raises(ExportConfigError, match="No slice of this export reported"):
        _run(bucket, days, None, 8 * 1024).complete_slices([])


def test_a_profile_export_is_not_sliced(
    bucket: CleverTapGCSHook, hook: CleverTapHook, simulator: SimulatorServer
) -> None:
    with pytest.raises(ExportConfigError, match="would be exported twice"):
        _run(bucket, _days(simulator), "Charged", 8 * 1024).profiles(hook, ["Charged"])
