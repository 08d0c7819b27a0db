"""Real DAG runs (``dag.test()``): simulator -> operators -> local GCS stack, read back and compared with the truth."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow.parquet as pq
import pytest
from airflow.providers.common.compat.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable
from lxml import etree

from ct_airflow_provider.export.profiles import profile_key
from ct_airflow_provider.export.windows import ts_of
from ct_airflow_provider.operators import CleverTapEventsToGCSOperator, CleverTapProfilesToGCSOperator
from ct_airflow_provider.task_groups import CleverTapExportTaskGroup, plan_slices
from ct_airflow_provider.testing.dag_runs import run_dag
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from ct_airflow_provider.testing.pytest_plugin import connect_default_connections
from ct_airflow_provider.testing.simulator import SimulatorServer, run_simulator
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS

BUCKET = "ct-e2e"


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with run_simulator(events_per_day=40, population=300) as server:
        yield server


@pytest.fixture
def stack(
    gcs_stack: GCSTestStack, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GCSTestStack]:
    connect_default_connections(monkeypatch, simulator, gcs_stack, BUCKET)
    yield gcs_stack


def _yesterday(simulator: SimulatorServer) -> dt.date:
    return simulator.truth.today - dt.timedelta(days=1)


def _run(operator_cls: type, dag_id: str, **kwargs: Any) -> tuple[str, Any]:
    with DAG(dag_id=dag_id, schedule=None, catchup=False) as dag:
        operator_cls(task_id="export", **kwargs)
    dag_run = run_dag(dag)
    return dag_run.state, dag_run


def _manifest(stack: GCSTestStack) -> dict[str, Any]:
    names = [n for n in stack.list_objects(BUCKET) if n.endswith("-manifest.json")]
    assert len(names) == 1, names
    return orjson.loads(stack.read_object(BUCKET, names[0]))  # type: ignore[no-any-return]


def _read_records(stack: GCSTestStack, name: str) -> list[dict[str, Any]]:
    """Read one export file back with an independent reader for its format."""
    data = stack.read_object(BUCKET, name)
    if name.endswith(".gz"):
        data = gzip.decompress(data)
        name = name[:-3]
    if name.endswith(".json"):
        lines = data.decode().splitlines()
        return [orjson.loads(line) for line in lines[1:]]
    if name.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    if name.endswith(".xml"):
        root = etree.fromstring(data)
        return [{child.tag: child.text for child in event} for event in root.iter("Event")]
    if name.endswith(".parquet"):
        return pq.read_table(io.BytesIO(data)).to_pylist()  # type: ignore[no-any-return]
    raise AssertionError(name)


def _truth_ts(simulator: SimulatorServer, event: str, day: dt.date) -> Counter[int]:
    return Counter(int(r["ts"]) for r in simulator.truth.events(event, day))


def test_all_user_events_json_match_the_truth_and_skip_the_refusing_event(
    stack: GCSTestStack,
    simulator: SimulatorServer,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    day = _yesterday(simulator)
    state, _ = _run(
        CleverTapEventsToGCSOperator, "e2e_all_events", from_date=day.isoformat(), to_date=day.isoformat()
    )
    assert state == "success"
    manifest = _manifest(stack)
    assert manifest["status"] == "complete"
    refusing = set(simulator.truth.event_names()) - set(simulator.truth.exportable_event_names())
    assert refusing and set(manifest["skipped_events"]) == refusing
    # Reconciled with CleverTap's own counts, event by event.
    assert manifest["reconciled"] is True
    assert manifest["reconciliation"] == {
        event: {f"{day:%Y%m%d}": {"exported": n, "clevertap": n}}
        for event in simulator.truth.exportable_event_names()
        for n in [simulator.truth.event_count(event, day)]
    }
    # Expected with all user events: one INFO line with the reason, no warning to act on. Airflow 2.11
    # and 3.0 hand task logs to Python's logging (2.11 also prints them twice); later versions print them.
    what = "events that CleverTap does not export"
    records = [r for r in caplog.records if what in r.getMessage()]
    printed = [line for line in capfd.readouterr().out.splitlines() if what in line]
    if records:
        assert [r.levelno for r in records] == [logging.INFO], records
        noted = [records[0].getMessage()]
    else:
        assert len(printed) == 1 and "[info" in printed[0], printed
        noted = printed
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "Notification" in r.getMessage()
    ]
    assert not warnings and not [line for line in printed if "warning" in line.lower()]
    assert all(repr(name) in noted[0] for name in refusing)
    assert "Export not allowed for this event" in noted[0]
    objects = stack.list_objects(BUCKET)
    assert {f["object_name"] for f in manifest["files"]} | {
        n for n in objects if n.endswith("manifest.json")
    } == set(objects)
    for event in simulator.truth.exportable_event_names():
        files = [f for f in manifest["files"] if f["event_name"] == event]
        assert files, event
        records = [r for f in files for r in _read_records(stack, f["object_name"])]
        assert Counter(int(r["ts"]) for r in records) == _truth_ts(simulator, event, day)
        # As in the product page's sample, JSON lines carry no event name: the file's first line does;
        # the device fields CleverTap's own files carry are asked for and kept as deviceInfo.
        assert all("deviceInfo" in r for r in records if r["profile"].get("platform") != "Web"), event
        assert any("deviceInfo" in r for r in records), event
        first_line = stack.read_object(BUCKET, files[0]["object_name"]).split(b"\n", 1)[0]
        assert first_line.decode() == event


@pytest.mark.parametrize("export_format", ["json", "csv", "xml", "parquet"])
def test_selected_events_in_each_format(
    stack: GCSTestStack, simulator: SimulatorServer, export_format: str
) -> None:
    first = _yesterday(simulator) - dt.timedelta(days=1)
    last = _yesterday(simulator)
    events = ["Charged", "Added To Cart/Wishlist"]
    simulator.stats.reset()
    state, _ = _run(
        CleverTapEventsToGCSOperator,
        f"e2e_selected_{export_format}",
        events=events,
        from_date=first.isoformat(),
        to_date=last.isoformat(),
        export_format=export_format,
        max_file_bytes=64 * 1024,
    )
    assert state == "success"
    manifest = _manifest(stack)
    assert {f["event_name"] for f in manifest["files"]} == set(events)
    for event in events:
        for day in (first, last):
            files = sorted(
                (
                    f
                    for f in manifest["files"]
                    if f["event_name"] == event and f["day"] == day.strftime("%Y%m%d")
                ),
                key=lambda f: f["file_index"],
            )
            assert [f["file_index"] for f in files] == list(range(len(files)))
            records = [r for f in files for r in _read_records(stack, f["object_name"])]
            got = Counter(_ts_value(r["ts"]) for r in records)
            assert got == _truth_ts(simulator, event, day), (event, day)
            for file in files:
                assert file["bytes"] <= 64 * 1024
                assert "Added-To-Cart-Wishlist" in file["object_name"] or event == "Charged"
    # CSV and Parquet keep each event's schema beside the files, for the next runs.
    schemas = sorted(name for name in stack.list_objects(BUCKET) if name.split("/")[-2:-1] == ["_schemas"])
    if export_format in ("json", "xml"):
        assert schemas == []
    else:
        assert [name.split("/")[-1] for name in schemas] == ["Added-To-Cart-Wishlist.json", "Charged.json"]
        for event, name in zip(sorted(events), schemas, strict=True):
            stored = orjson.loads(stack.read_object(BUCKET, name))
            file = next(f for f in manifest["files"] if f["event_name"] == event)
            if export_format == "csv":
                header = stack.read_object(BUCKET, file["object_name"]).decode().split("\r\n", 1)[0]
                assert header.split(",")[2:] == [".".join(path) for path in stored["csv"]["columns"]]
            else:
                schema = pq.read_schema(io.BytesIO(stack.read_object(BUCKET, file["object_name"])))
                assert schema.names[2:] == [key for key, _column in stored["parquet"]["columns"]]
    stats = simulator.stats.snapshot()
    assert stats["max_concurrent_observed"] <= 3  # the defaults use CleverTap's whole budget, no more
    assert stats["concurrency_rejections"] == 0


def test_days_read_side_by_side_export_every_event_once(
    stack: GCSTestStack, simulator: SimulatorServer
) -> None:
    last = _yesterday(simulator)
    first = last - dt.timedelta(days=2)
    simulator.stats.reset()
    simulator.faults.response_delay_seconds = 0.05  # CleverTap takes a while to answer each page
    try:
        state, _ = _run(
            CleverTapEventsToGCSOperator,
            "e2e_two_streams",
            events=["Charged"],
            from_date=first.isoformat(),
            to_date=last.isoformat(),
            concurrent_requests=2,
            max_file_bytes=64 * 1024,
        )
    finally:
        simulator.faults.response_delay_seconds = 0.0
    assert state == "success"
    stats = simulator.stats.snapshot()
    assert stats["max_concurrent_observed"] == 2  # two days were read at once...
    assert stats["concurrency_rejections"] == 0
    manifest = _manifest(stack)
    for offset in range(3):
        day = first + dt.timedelta(days=offset)
        files = [f for f in manifest["files"] if f["day"] == day.strftime("%Y%m%d")]
        records = [r for f in files for r in _read_records(stack, f["object_name"])]
        # ...and each day's events are in its files exactly once.
        assert Counter(int(r["ts"]) for r in records) == _truth_ts(simulator, "Charged", day), day


def _ts_value(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.strftime("%Y%m%d%H%M%S"))
    return int(value)


def test_profiles_are_exported_once_each(stack: GCSTestStack, simulator: SimulatorServer) -> None:
    day = _yesterday(simulator)
    state, _ = _run(
        CleverTapProfilesToGCSOperator, "e2e_profiles", from_date=day.isoformat(), to_date=day.isoformat()
    )
    assert state == "success"
    expected = set()
    for event in simulator.truth.exportable_event_names():
        for profile in simulator.truth.profiles(event, day, day):
            expected.add(profile_key(profile))
    manifest = _manifest(stack)
    assert all(f["event_name"] == "profiles" for f in manifest["files"])
    exported = [profile_key(r) for f in manifest["files"] for r in _read_records(stack, f["object_name"])]
    assert len(exported) == len(set(exported))
    assert set(exported) == expected


def test_a_day_cut_into_six_4_hour_windows_exports_every_event_once(
    stack: GCSTestStack, simulator: SimulatorServer
) -> None:
    day = _yesterday(simulator) - dt.timedelta(days=1)
    midnight = _account_midnight(simulator, day)
    with DAG(
        dag_id="e2e_recurring_4h",
        schedule=DeltaDataIntervalTimetable(dt.timedelta(hours=4)),
        start_date=midnight,
        catchup=False,
    ) as dag:
        CleverTapEventsToGCSOperator(task_id="export", events=["App Launched"], export_format="csv")
    seen: Counter[int] = Counter()
    for window in range(6):
        # A manual run's data interval ends at its logical date: [date - 4 h, date).
        dag_run = run_dag(dag, logical_date=midnight + dt.timedelta(hours=4 * (window + 1)))
        assert dag_run.state == "success"
    for name in stack.list_objects(BUCKET):
        if name.endswith(".csv"):
            seen.update(int(r["ts"]) for r in _read_records(stack, name))
    manifests = [n for n in stack.list_objects(BUCKET) if n.endswith("manifest.json")]
    assert len(manifests) == 6
    assert seen == _truth_ts(simulator, "App Launched", day)
    assert min(seen) >= ts_of(midnight, ZoneInfo(simulator.timezone))


def test_refused_inputs_fail_before_any_api_call(stack: GCSTestStack, simulator: SimulatorServer) -> None:
    before = simulator.stats.snapshot()["requests_served"]
    today = simulator.truth.today
    for from_date, to_date in [
        (today - dt.timedelta(days=61), today - dt.timedelta(days=50)),
        (today - dt.timedelta(days=2), today - dt.timedelta(days=3)),
        (today, today + dt.timedelta(days=1)),
    ]:
        state, _ = _run(
            CleverTapEventsToGCSOperator,
            "e2e_refused",
            events=["Charged"],
            from_date=from_date.isoformat(),
            to_date=to_date.isoformat(),
            # A retry cannot mend a refused range: the task must fail at once, not spend these.
            retries=3,
            retry_delay=dt.timedelta(hours=1),
        )
        assert state == "failed"
    assert simulator.stats.snapshot()["requests_served"] == before
    assert stack.list_objects(BUCKET) == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"export_format": "xlsx"}, "xlsx"),
        ({"from_date": "2026-01-01"}, "both from_date and to_date"),
        ({"max_file_bytes": 10}, "too small"),
        ({"concurrent_requests": 4}, "from 1 to 3, CleverTap's limit"),
        ({"concurrent_requests": 0}, "from 1 to 3"),
        ({"concurrent_requests": "three"}, "concurrent_requests='three': give an integer from 1 to 3"),
        ({"reconcile": "maybe"}, "reconcile='maybe': choose one of 'fail', 'warn', 'off'"),
    ],
)
def test_bad_arguments_are_refused_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message), DAG(dag_id="e2e_bad_args", schedule=None):
        CleverTapEventsToGCSOperator(task_id="export", **kwargs)


def test_each_request_in_flight_takes_a_pool_slot() -> None:
    with DAG(dag_id="e2e_pool_slots", schedule=None):
        default = CleverTapEventsToGCSOperator(task_id="default")
        two = CleverTapEventsToGCSOperator(task_id="two", concurrent_requests=2)
        chosen = CleverTapEventsToGCSOperator(task_id="chosen", concurrent_requests=3, pool_slots=1)
        profiles = CleverTapProfilesToGCSOperator(task_id="profiles")
    # CleverTap's limit per account by default, for events and profiles alike.
    assert (default.concurrent_requests, default.pool_slots) == (3, 3)
    assert (profiles.concurrent_requests, profiles.pool_slots) == (3, 3)
    assert (two.concurrent_requests, two.pool_slots) == (2, 2)
    assert chosen.pool_slots == 1  # a user's own choice stands


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (DeltaDataIntervalTimetable(dt.timedelta(hours=2)), "every 4 to 24 hours"),
        # Airflow 3 makes a plain cron a trigger timetable, whose runs have empty data intervals;
        # Airflow 2 makes it a data-interval timetable, so only a too-short one is refused there.
        ("0 */6 * * *", "empty data interval")
        if AIRFLOW_V_3_0_PLUS
        else ("0 */2 * * *", "every 4 to 24 hours"),
        (dt.timedelta(hours=6), "empty data interval")
        if AIRFLOW_V_3_0_PLUS
        else (dt.timedelta(hours=3), "every 4 to 24 hours"),
    ],
)
def test_recurring_schedules_outside_4_to_24_hours_are_refused_at_parse_time(
    schedule: Any, message: str
) -> None:
    with (
        pytest.raises(ValueError, match=message),
        DAG(
            dag_id="e2e_bad_schedule",
            schedule=schedule,
            start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        ),
    ):
        CleverTapEventsToGCSOperator(task_id="export")


@pytest.mark.skipif(
    AIRFLOW_V_3_0_PLUS, reason="Airflow 3's plain schedules have no data interval (see above)"
)
@pytest.mark.parametrize("schedule", ["0 */6 * * *", dt.timedelta(hours=4), "@daily"])
def test_plain_schedules_of_4_to_24_hours_serve_recurring_exports_on_airflow_2(schedule: Any) -> None:
    with DAG(
        dag_id="e2e_plain_schedule",
        schedule=schedule,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    ):
        export = CleverTapEventsToGCSOperator(task_id="export")
    assert export.from_date is None and export.has_dag()


def test_retry_after_a_failed_upload_leaves_exactly_the_right_objects(
    stack: GCSTestStack, simulator: SimulatorServer
) -> None:
    day = _yesterday(simulator)
    logical_date = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)

    def dag_with(max_file_bytes: int) -> Any:
        with DAG(dag_id="e2e_retry", schedule=None, catchup=False) as dag:
            CleverTapEventsToGCSOperator(
                task_id="export",
                events=["Charged", "App Launched"],
                from_date=day.isoformat(),
                to_date=day.isoformat(),
                max_file_bytes=max_file_bytes,
            )
        return dag

    # First attempt: small chunks, and the bucket starts refusing uploads half-way through.
    with stack.uploads_fail_after(3):
        assert run_dag(dag_with(8 * 1024), logical_date=logical_date).state == "failed"
    leftovers = stack.list_objects(BUCKET)
    assert leftovers and not any(n.endswith("manifest.json") for n in leftovers)

    # The retry writes bigger chunks under the same names: what the first left must not survive.
    assert run_dag(dag_with(1024 * 1024), logical_date=logical_date).state == "success"
    manifest = _manifest(stack)
    listed = {f["object_name"] for f in manifest["files"]}
    objects = set(stack.list_objects(BUCKET))
    assert objects == listed | {n for n in objects if n.endswith("manifest.json")}
    for event in ("Charged", "App Launched"):
        records = [
            r
            for f in manifest["files"]
            if f["event_name"] == event
            for r in _read_records(stack, f["object_name"])
        ]
        assert Counter(int(r["ts"]) for r in records) == _truth_ts(simulator, event, day)


def test_an_export_sliced_by_event_and_day_has_one_request_id_and_one_manifest(
    stack: GCSTestStack, simulator: SimulatorServer
) -> None:
    last = _yesterday(simulator)
    first = last - dt.timedelta(days=1)
    events = ["Charged", "Product Viewed", "App Launched"]
    with DAG(dag_id="e2e_sliced", schedule=None, catchup=False) as dag:
        group = CleverTapExportTaskGroup(
            "big_export", events=events, from_date=first.isoformat(), to_date=last.isoformat(),
            export_format="json", max_file_bytes=8 * 1024,
        )  # fmt: skip
    assert len(group.slices) == 6
    dag_run = run_dag(dag)
    assert dag_run.state == "success"
    tis = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    assert tis == {("big_export.export", i): "success" for i in range(6)} | {
        ("big_export.manifest", -1): "success"
    }
    # One manifest, listing every object of the export: a search by the request id finds them all.
    manifest = _manifest(stack)
    assert manifest["request_id"] == group.request_id and manifest["reconciled"] is True
    objects = set(stack.list_objects(BUCKET))
    by_request = {
        name for name in objects if name.startswith(f"{group.request_id}-{manifest['run_timestamp']}-")
    }
    assert {f["object_name"] for f in manifest["files"]} == by_request - {
        n for n in objects if n.endswith("manifest.json")
    }
    for event in events:
        for day in (first, last):
            files = [f for f in manifest["files"] if f["event_name"] == event and f["day"] == f"{day:%Y%m%d}"]
            assert [f["file_index"] for f in sorted(files, key=lambda f: f["file_index"])] == list(
                range(len(files))
            )
            records = [r for f in files for r in _read_records(stack, f["object_name"])]
            assert Counter(int(r["ts"]) for r in records) == _truth_ts(simulator, event, day)


def test_a_failed_slice_leaves_the_export_without_a_manifest(
    stack: GCSTestStack, simulator: SimulatorServer
) -> None:
    day = _yesterday(simulator)
    refusing = sorted(set(simulator.truth.event_names()) - set(simulator.truth.exportable_event_names()))[0]
    with DAG(dag_id="e2e_sliced_failing", schedule=None, catchup=False) as dag:
        CleverTapExportTaskGroup(
            "export", events=["Charged", refusing], from_date=day.isoformat(), to_date=day.isoformat()
        )
    dag_run = run_dag(dag)
    assert dag_run.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    assert states[("export.export", 0)] == "success" and states[("export.export", 1)] == "failed"
    assert states[("export.manifest", -1)] == "upstream_failed"
    assert not [name for name in stack.list_objects(BUCKET) if name.endswith("manifest.json")]
    # Made to run anyway (another trigger rule), the manifest step sees a slice missing and refuses.
    manifest_task = dag.get_task("export.manifest")
    manifest_task.trigger_rule = "all_done"
    dag_run = run_dag(dag)
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    assert states[("export.manifest", -1)] == "failed"
    assert not [name for name in stack.list_objects(BUCKET) if name.endswith("manifest.json")]


def test_a_recurring_export_sliced_by_event_writes_each_window_once(
    stack: GCSTestStack, simulator: SimulatorServer
) -> None:
    day = _yesterday(simulator) - dt.timedelta(days=1)
    midnight = _account_midnight(simulator, day)
    events = ["App Launched", "Charged"]
    with DAG(
        dag_id="e2e_sliced_recurring",
        schedule=DeltaDataIntervalTimetable(dt.timedelta(hours=12)),
        start_date=midnight,
        catchup=False,
    ) as dag:
        CleverTapExportTaskGroup("windows", slice_by="event", events=events, export_format="csv")
    for window in range(2):
        # A manual run's data interval ends at its logical date: [date - 12 h, date).
        assert run_dag(dag, logical_date=midnight + dt.timedelta(hours=12 * (window + 1))).state == "success"
    manifests = [
        orjson.loads(stack.read_object(BUCKET, n))
        for n in stack.list_objects(BUCKET)
        if n.endswith("manifest.json")
    ]
    assert len(manifests) == 2 and len({m["request_id"] for m in manifests}) == 1
    for event in events:
        records = [
            r for m in manifests for f in m["files"] if f["event_name"] == event
            for r in _read_records(stack, f["object_name"])
        ]  # fmt: skip
        assert Counter(int(r["ts"]) for r in records) == _truth_ts(simulator, event, day)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"export": "profiles", "from_date": "2026-11-01", "to_date": "2026-11-01"},
            "would be exported twice",
        ),
        ({"events": [], "from_date": "2026-11-01", "to_date": "2026-11-02"}, "needs the events listed"),
        ({"events": ["Charged"], "from_date": "2026-11-02", "to_date": "2026-11-01"}, "no day to slice"),
        ({"events": ["Charged"], "slice_by": "day"}, "needs a once-only range"),
        (
            {"events": ["Charged"], "slice_by": "week", "from_date": "2026-11-01", "to_date": "2026-11-01"},
            "choose one of",
        ),
        (
            {"events": ["Charged"], "from_date": "2026-11-31", "to_date": "2026-12-01"},
            "from_date=.* is not a date",
        ),
    ],
)
def test_slice_plans_that_cannot_work_are_refused_when_the_dag_is_parsed(
    kwargs: dict[str, Any], message: str
) -> None:
    with (
        DAG(dag_id="e2e_sliced_refused", schedule=None, catchup=False),
        pytest.raises(ValueError, match=message),
    ):
        CleverTapExportTaskGroup("export", **kwargs)


def _account_midnight(simulator: SimulatorServer, day: dt.date) -> dt.datetime:
    """The start of ``day`` in the account's time zone, in UTC (where recurring test DAGs start)."""
    tz = ZoneInfo(simulator.timezone)
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.timezone.utc)


def _truth_in(simulator: SimulatorServer, event: str, start: dt.datetime, end: dt.datetime) -> Counter[int]:
    """``ts`` of every record of ``event`` in ``[start, end)``, as the account holds them."""
    tz = ZoneInfo(simulator.timezone)
    first, last = ts_of(start, tz), ts_of(end, tz)
    day, truth = start.astimezone(tz).date(), Counter[int]()
    while day <= end.astimezone(tz).date():
        truth.update(ts for ts in _truth_ts(simulator, event, day).elements() if first <= ts < last)
        day += dt.timedelta(days=1)
    return truth


@pytest.mark.parametrize(
    "schedule",
    [
        DeltaDataIntervalTimetable(dt.timedelta(hours=4)),
        CronDataIntervalTimetable("0 */4 * * *", timezone="UTC"),
    ],
    ids=["delta", "cron"],
)
def test_a_hand_triggered_run_replaces_the_window_it_overlaps(
    stack: GCSTestStack, simulator: SimulatorServer, schedule: Any
) -> None:
    """Three windows exported, then a run triggered by hand at 18:40 as the UI does: no record twice."""
    # Two days back in UTC: the windows have ended whatever the account's time zone.
    midnight = dt.datetime.combine(
        dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=2), dt.time(), tzinfo=dt.timezone.utc
    )
    with DAG(dag_id="e2e_hand_triggered", schedule=schedule, start_date=midnight, catchup=False) as dag:
        CleverTapEventsToGCSOperator(task_id="export", events=["App Launched"], export_format="csv")
    for hour in (12, 16, 20):
        # A run whose logical date is a window's end covers [end - 4 h, end): the scheduled windows.
        assert run_dag(dag, logical_date=midnight + dt.timedelta(hours=hour)).state == "success"
    before = stack.object_generations(BUCKET)
    manifests = sorted(n for n in before if n.endswith("-manifest.json"))
    assert len(manifests) == 3

    hand_run = run_dag(dag, logical_date=midnight + dt.timedelta(hours=18, minutes=40))
    assert hand_run.state == "success"

    after = stack.object_generations(BUCKET)
    # The same objects: the window that had ended by 18:40, [12:00, 16:00), was written again in place.
    assert set(after) == set(before)
    window_start = int((midnight + dt.timedelta(hours=12)).timestamp())
    rewritten = {n for n in after if f"-{window_start}-" in n}
    assert rewritten and all(after[n] != before[n] for n in rewritten)
    assert all(after[n] == before[n] for n in set(after) - rewritten)
    exported = Counter(int(r["ts"]) for n in after if n.endswith(".csv") for r in _read_records(stack, n))
    truth = _truth_in(
        simulator, "App Launched", midnight + dt.timedelta(hours=8), midnight + dt.timedelta(hours=20)
    )
    assert sum(truth.values()) > 0
    assert exported == truth


def test_a_manual_run_without_a_logical_date_exports_the_latest_window(
    stack: GCSTestStack, simulator: SimulatorServer
) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    with DAG(
        dag_id="e2e_no_logical_date",
        schedule=DeltaDataIntervalTimetable(dt.timedelta(hours=4)),
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
    ) as dag:
        CleverTapEventsToGCSOperator(task_id="export", events=["App Launched"], export_format="json")
    assert run_dag(dag, logical_date=None).state == "success"
    manifest = _manifest(stack)
    # The latest 4-hour window of the grid (00:00, 04:00, ... UTC) that had ended when the run began.
    end = now.replace(hour=now.hour // 4 * 4, minute=0, second=0, microsecond=0)
    assert manifest["run_timestamp"] == int((end - dt.timedelta(hours=4)).timestamp())


def test_a_hand_triggered_run_more_than_60_days_back_is_refused(
    stack: GCSTestStack, simulator: SimulatorServer
) -> None:
    before = simulator.stats.snapshot()["requests_served"]
    long_ago = dt.datetime.combine(
        simulator.truth.today - dt.timedelta(days=61), dt.time(), tzinfo=dt.timezone.utc
    )
    with DAG(
        dag_id="e2e_too_old",
        schedule=DeltaDataIntervalTimetable(dt.timedelta(hours=4)),
        start_date=long_ago,
        catchup=False,
    ) as dag:
        CleverTapEventsToGCSOperator(task_id="export", events=["App Launched"], retries=2)
    assert run_dag(dag, logical_date=long_ago + dt.timedelta(hours=6, minutes=10)).state == "failed"
    assert simulator.stats.snapshot()["requests_served"] == before
    assert stack.list_objects(BUCKET) == {}


@pytest.fixture
def counts_one_more(simulator: SimulatorServer) -> Iterator[None]:
    """CleverTap counts one event more than its events API serves (a page lost on the way, say)."""
    simulator.faults.count_offset = 1
    yield
    simulator.faults.count_offset = 0


def test_an_export_that_disagrees_with_clevertaps_counts_fails_naming_event_day_and_numbers(
    stack: GCSTestStack, simulator: SimulatorServer, counts_one_more: None, task_log: Callable[[], str]
) -> None:
    day = _yesterday(simulator)
    served = simulator.truth.event_count("Charged", day)
    state, _ = _run(
        CleverTapEventsToGCSOperator, "e2e_reconcile_fail", events=["Charged"],
        from_date=day.isoformat(), to_date=day.isoformat(),
    )  # fmt: skip
    assert state == "failed"
    # Airflow 3.0's dag.test() logs no task failure anywhere; every other version shows the message.
    if AIRFLOW_V_3_1_PLUS or not AIRFLOW_V_3_0_PLUS:
        message = f"'Charged' on {day:%Y%m%d}: exported {served}, CleverTap counts {served + 1} (short by 1)"
        assert message in task_log()
    # No manifest: the export is not complete.
    assert not [n for n in stack.list_objects(BUCKET) if n.endswith("-manifest.json")]


def test_reconcile_warn_writes_a_manifest_that_says_not_reconciled(
    stack: GCSTestStack, simulator: SimulatorServer, counts_one_more: None
) -> None:
    day = _yesterday(simulator)
    served = simulator.truth.event_count("Charged", day)
    state, _ = _run(
        CleverTapEventsToGCSOperator, "e2e_reconcile_warn", events=["Charged"], reconcile="warn",
        from_date=day.isoformat(), to_date=day.isoformat(),
    )  # fmt: skip
    assert state == "success"
    manifest = _manifest(stack)
    assert manifest["status"] == "complete" and manifest["reconciled"] is False
    assert manifest["reconciliation"] == {
        "Charged": {f"{day:%Y%m%d}": {"exported": served, "clevertap": served + 1}}
    }


def test_reconcile_off_asks_no_counts(
    stack: GCSTestStack, simulator: SimulatorServer, counts_one_more: None
) -> None:
    day = _yesterday(simulator)
    state, _ = _run(
        CleverTapEventsToGCSOperator, "e2e_reconcile_off", events=["Charged"], reconcile="off",
        from_date=day.isoformat(), to_date=day.isoformat(),
    )  # fmt: skip
    assert state == "success"
    manifest = _manifest(stack)
    assert manifest["reconciled"] is None and manifest["reconciliation"] is None


def test_a_selected_event_clevertap_does_not_know_is_refused_naming_it_and_the_nearest_names(
    stack: GCSTestStack, simulator: SimulatorServer, task_log: Callable[[], str]
) -> None:
    day = _yesterday(simulator)
    before = simulator.stats.snapshot()["requests_served"]
    state, _ = _run(
        CleverTapEventsToGCSOperator, "e2e_unknown_event", events=["Charged", "Charge"],
        from_date=day.isoformat(), to_date=day.isoformat(), retries=3, retry_delay=dt.timedelta(hours=1),
    )  # fmt: skip
    assert state == "failed"
    # One request (the event list), no export query, nothing written.
    assert simulator.stats.snapshot()["requests_served"] == before + 1
    assert stack.list_objects(BUCKET) == {}
    if AIRFLOW_V_3_1_PLUS or not AIRFLOW_V_3_0_PLUS:
        assert "CleverTap knows no event named 'Charge' (nearest: 'Charged')" in task_log()


def test_a_slice_plan_takes_its_days_as_the_export_operators_do() -> None:
    # Dates, datetimes, YYYY-MM-DD and YYYYMMDD name the same days, and the same slices.
    as_text = plan_slices("event_day", ["Charged"], "2026-11-01", "2026-11-02")
    assert [s["slice_key"] for s in as_text] == ["Charged-20261101", "Charged-20261102"]
    assert [s["from_date"] for s in as_text] == ["2026-11-01", "2026-11-02"]
    for first, last in [
        ("20261101", "20261102"),
        (dt.date(2026, 11, 1), dt.date(2026, 11, 2)),
        (dt.datetime(2026, 11, 1, 6), dt.datetime(2026, 11, 2, 23)),
    ]:
        assert plan_slices("event_day", ["Charged"], first, last) == as_text
