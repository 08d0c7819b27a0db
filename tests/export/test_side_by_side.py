"""An export reading its streams side by side writes exactly what a sequential one writes.

Against the simulator and the local GCS stack: the same window, exported with one and with three
requests in flight, gives the same objects byte for byte and the same manifest apart from its
timestamps, for every format, for events and for profiles.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pytest

from ct_airflow_provider.export import ExportNaming
from ct_airflow_provider.export.job import ExportRun, ExportSpec
from ct_airflow_provider.export.windows import ExportWindow
from ct_airflow_provider.hooks.clevertap import CleverTapHook, EventExportNotAllowedError
from ct_airflow_provider.hooks.gcs import get_bucket_hook
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from ct_airflow_provider.testing.simulator import SimulatorServer, run_simulator

BUCKET = "ct-side-by-side"
LOG = logging.getLogger("test_side_by_side")
EVENTS = ["App Launched", "Charged", "Product Viewed"]


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with run_simulator(events_per_day=120, population=400) as server:
        server.faults.response_delay_seconds = 0.02  # so that streams really overlap
        yield server


@pytest.fixture
def bucket(gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch) -> None:
    gcs_stack.create_bucket(BUCKET)
    monkeypatch.setenv(
        "AIRFLOW_CONN_CT_SIDE", gcs_stack.connection_env(BUCKET, gcs_stack.new_service_account_key())
    )


@pytest.fixture
def hook(simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[CleverTapHook]:
    monkeypatch.setenv("AIRFLOW_CONN_CLEVERTAP_DEFAULT", simulator.airflow_conn_env())
    hook = CleverTapHook(batch_size=50)  # many pages per stream
    yield hook
    hook.close()


def _export(
    stack: GCSTestStack,
    hook: CleverTapHook,
    simulator: SimulatorServer,
    export_format: str,
    what: str,
    requests: int,
) -> tuple[dict[str, bytes], int]:
    """The export's objects (manifest included) and the most requests the simulator saw in flight."""
    stack.delete_all_objects(BUCKET)
    last = simulator.truth.today - dt.timedelta(days=1)
    window = ExportWindow(last - dt.timedelta(days=2), last)
    naming = ExportNaming(request_id="1700000000", run_timestamp=1700000000, database_id=0)
    # Small files: each day of each event is split into several chunks.
    spec = ExportSpec(naming, window, export_format, None, 16 * 1024)
    simulator.stats.reset()
    run = ExportRun(spec, get_bucket_hook("ct_side"), LOG, concurrent_requests=requests)
    if what == "events":
        run.events(hook, EVENTS)
    else:
        run.profiles(hook, hook.list_event_names(), skippable=(EventExportNotAllowedError,))
    objects = {name: stack.read_object(BUCKET, name) for name in stack.list_objects(BUCKET)}
    return objects, simulator.stats.snapshot()["max_concurrent_observed"]


@pytest.mark.parametrize("what", ["events", "profiles"])
@pytest.mark.parametrize("export_format", ["json", "csv", "xml", "parquet"])
def test_three_requests_in_flight_write_what_one_writes(
    bucket: None,
    hook: CleverTapHook,
    simulator: SimulatorServer,
    gcs_stack: GCSTestStack,
    export_format: str,
    what: str,
) -> None:
    one, one_most = _export(gcs_stack, hook, simulator, export_format, what, 1)
    three, three_most = _export(gcs_stack, hook, simulator, export_format, what, 3)
    assert (
        len(one) > len(EVENTS) + 1 if what == "events" else len(one) > 2
    )  # several chunks, and the manifest
    assert sorted(three) == sorted(one)
    assert [name for name in one if three[name] != one[name]] == []  # the manifest too: it holds no time
    assert (one_most, three_most) == (1, 3)
