"""Backfills, scheduled and hand-triggered runs of the recurring DAG, through a real scheduler.

One deployment (Airflow 3: api-server, scheduler, dag-processor on SQLite; Airflow 2: webserver and
scheduler on PostgreSQL; LocalExecutor on both) runs the thin
variant of ``dags/clevertap_recurring_events.py`` in ``dag_files/``, against the CleverTap simulator
and the local GCS stack, with the ``clevertap_api`` pool of 3 slots. The tests run the commands the
README documents and read the bucket back:

* (Airflow 3's ``airflow backfill create``; Airflow 2's ``airflow dags backfill`` has its own test in
  ``test_backfill_airflow2.py``) a 3-day backfill: one complete manifest per 4-hour window, every record of the range exported
  exactly once, never more than 3 requests to CleverTap at a time although 6 runs were active;
* re-running one window rewrites the same objects and adds none;
* a backfill across CleverTap's 60-day edge: the window out of range fails with a message saying so,
  the one in range succeeds;
* scheduled, hand-triggered (two at once, off the schedule's grid, as the UI's Trigger button does) and
  backfilled runs of one DAG: every record in the bucket exactly once, one manifest per window
  (on every Airflow version the full suite runs on).
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow.parquet as pq
import pytest

from ct_airflow_provider.export.windows import RETENTION_DAYS, ts_of
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack, run_gcs_stack
from ct_airflow_provider.testing.simulator import SimulatorServer, run_simulator
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS
from tests.dags.airflow_deployment import AirflowDeployment, DeploymentError, run_airflow_deployment

pytestmark = pytest.mark.slow
#: ``airflow backfill create`` and its REST API are Airflow 3's.
backfill_create = pytest.mark.skipif(
    not AIRFLOW_V_3_0_PLUS,
    reason="Airflow 2 backfills with `airflow dags backfill`, tested in test_backfill_airflow2.py",
)

DAG_FILE = Path(__file__).parent / "dag_files" / "clevertap_backfill_events.py"
BACKFILL_DAG = "clevertap_backfill_events"
EDGE_DAG = "clevertap_backfill_edge"
MIXED_DAG = "clevertap_recurring_mixed"
TASK_ID = "export_events"
EVENTS = ("Charged", "App Launched")
BUCKET = "ct-backfill"
POOL_SLOTS = 3
WINDOW = dt.timedelta(hours=4)
#: More runs may be active than the pool has slots, so that the pool, not the backfill, caps requests.
BACKFILL_MAX_ACTIVE_RUNS = 6
BACKFILL_DEADLINE_S = 420.0
REFUSAL = "reaches back past CleverTap's 60 days"


@dataclass
class Deployment:
    airflow: AirflowDeployment
    simulator: SimulatorServer
    gcs: GCSTestStack
    tz: ZoneInfo


@dataclass
class Backfill:
    id: int
    from_date: str
    runs: list[dict[str, Any]]
    windows: list[dt.datetime]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    # Every CleverTap answer waits a little, so requests of concurrent tasks really overlap.
    with run_simulator(events_per_day=120, population=300) as simulator, run_gcs_stack(set_env=False) as gcs:
        simulator.faults.response_delay_seconds = 0.3
        gcs.create_bucket(BUCKET)
        connections = {
            "AIRFLOW_CONN_CLEVERTAP_DEFAULT": simulator.airflow_conn_env(),
            "AIRFLOW_CONN_CLEVERTAP_GCS_DEFAULT": gcs.connection_env(BUCKET, gcs.new_service_account_key()),
            "STORAGE_EMULATOR_HOST": gcs.emulator_url,
        }
        home = tmp_path_factory.mktemp("airflow-backfill-home")
        with run_airflow_deployment(
            home, [DAG_FILE], extra_env=connections, pools={"clevertap_api": POOL_SLOTS}
        ) as airflow:
            for dag_id in (BACKFILL_DAG, EDGE_DAG, MIXED_DAG):
                airflow.wait_for_dag(dag_id)
            yield Deployment(airflow, simulator, gcs, ZoneInfo(simulator.timezone))


def _backfill(airflow: AirflowDeployment, dag_id: str, from_date: str, to_date: str, *extra: str) -> Backfill:
    """Run ``airflow backfill create`` as the README shows it and wait until its runs have finished."""
    airflow.wait_for_backfills_complete(dag_id)
    known = {b["id"] for b in airflow.backfills(dag_id)}
    with airflow.scheduler_stopped():
        airflow.cli(
            "backfill", "create", "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date,
            "--reprocess-behavior", "completed", *extra,
        )  # fmt: skip
    # A try refused by SQLite's lock removed its own backfill; the command's backfill is the newest.
    created = max((b for b in airflow.backfills(dag_id) if b["id"] not in known), key=lambda b: b["id"])
    runs = airflow.wait_for_backfill_runs(dag_id, created["id"], BACKFILL_DEADLINE_S)
    windows = sorted(_time(run["data_interval_start"]) for run in runs)
    return Backfill(created["id"], from_date, runs, windows)


def _rerun_window(airflow: AirflowDeployment, dag_id: str, window: dt.datetime) -> None:
    """Backfill one window again, as the README shows it for the running Airflow version."""
    if AIRFLOW_V_3_0_PLUS:
        _backfill(airflow, dag_id, window.isoformat(), window.isoformat())
    else:
        # Airflow 2's backfill runs the tasks itself (with the deployment's executor), then returns.
        airflow.cli(
            "dags", "backfill", "-s", window.isoformat(), "-e", window.isoformat(), "--reset-dagruns", "-y",
            dag_id, timeout_s=BACKFILL_DEADLINE_S,
        )  # fmt: skip


@pytest.fixture(scope="module")
def three_days(deployment: Deployment) -> Backfill:
    """The 4-hour windows of the three days before yesterday's end: 13 runs from one backfill."""
    today = dt.datetime.now(dt.timezone.utc).date()
    return _backfill(
        deployment.airflow,
        BACKFILL_DAG,
        (today - dt.timedelta(days=3)).isoformat(),
        (today - dt.timedelta(days=1)).isoformat(),
        "--max-active-runs", str(BACKFILL_MAX_ACTIVE_RUNS),
    )  # fmt: skip


# -- reading the bucket back ---------------------------------------------------------------------
def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _objects(gcs: GCSTestStack, prefix: str) -> dict[str, int]:
    """Object name -> generation (a rewrite gets a new generation) of the runs' objects: the event
    schemas every run shares (``_schemas/``) are left out."""
    generations = gcs.object_generations(BUCKET, prefix)
    return {name: generation for name, generation in generations.items() if "/_schemas/" not in name}


def _manifests(gcs: GCSTestStack, prefix: str) -> dict[int, list[dict[str, Any]]]:
    """Manifests under ``prefix`` by run timestamp (a list, so a duplicate shows)."""
    by_run: dict[int, list[dict[str, Any]]] = {}
    for name in _objects(gcs, prefix):
        if name.endswith("-manifest.json"):
            manifest = orjson.loads(gcs.read_object(BUCKET, name))
            by_run.setdefault(int(manifest["run_timestamp"]), []).append(manifest)
    return by_run


def _ts(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.strftime("%Y%m%d%H%M%S"))
    return int(value)


def _record_key(event: str, record: dict[str, Any]) -> tuple[str, int, str, Any]:
    """What tells two records apart: the event, ``ts``, the user and the session."""
    profile, session = record.get("profile") or {}, record.get("sessionProps") or record.get("session_props")
    if isinstance(profile, str):
        profile = orjson.loads(profile)
    if isinstance(session, str):
        session = orjson.loads(session)
    return event, _ts(record["ts"]), str(profile.get("objectId")), (session or {}).get("session_id")


def _exported_records(gcs: GCSTestStack, manifest: dict[str, Any]) -> Counter[tuple[str, int, str, Any]]:
    records: Counter[tuple[str, int, str, Any]] = Counter()
    for file in manifest["files"]:
        table = pq.read_table(io.BytesIO(gcs.read_object(BUCKET, file["object_name"])))
        rows = table.to_pylist()
        assert len(rows) == file["records"], file["object_name"]
        records.update(_record_key(file["event_name"], row) for row in rows)
    return records


def _truth(
    deployment: Deployment, start: dt.datetime, end: dt.datetime
) -> Counter[tuple[str, int, str, Any]]:
    """Every record the simulated account holds with ``ts`` in ``[start, end)``."""
    first_ts, end_ts = ts_of(start, deployment.tz), ts_of(end, deployment.tz)
    day, last_day = start.astimezone(deployment.tz).date(), end.astimezone(deployment.tz).date()
    records: Counter[tuple[str, int, str, Any]] = Counter()
    while day <= last_day:
        for event in EVENTS:
            records.update(
                _record_key(event, record)
                for record in deployment.simulator.truth.events(event, day)
                if first_ts <= int(record["ts"]) < end_ts
            )
        day += dt.timedelta(days=1)
    return records


def _peak_overlap(intervals: list[tuple[str, str]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant do not overlap)."""
    moments = sorted(
        [(_time(start), 1) for start, _ in intervals] + [(_time(end), -1) for _, end in intervals],
        key=lambda moment: (moment[0], moment[1]),
    )
    open_now = peak = 0
    for _, change in moments:
        open_now += change
        peak = max(peak, open_now)
    return peak


def _task_instance(
    airflow: AirflowDeployment, window: dt.datetime, dag_id: str = BACKFILL_DAG
) -> dict[str, Any]:
    """The task instance of the window's scheduled or backfilled run."""
    (run,) = [
        r
        for r in airflow.dag_runs(dag_id)
        if r["run_type"] != "manual" and _time(r["logical_date"]) == window
    ]
    (ti,) = [ti for ti in airflow.task_instances(dag_id) if ti["dag_run_id"] == run["dag_run_id"]]
    return ti


def _settled_task_instance(airflow: AirflowDeployment, window: dt.datetime, dag_id: str) -> dict[str, Any]:
    """The window's task instance once its state stopped changing: on Airflow 2 the scheduler may
    still queue and run the task once more after ``airflow dags backfill`` returned (see below)."""
    seen: list[str] = []

    def settled() -> bool:
        seen.append(_task_instance(airflow, window, dag_id)["state"])
        return len(seen) >= 4 and len(set(seen[-4:])) == 1 and seen[-1] in ("success", "failed")

    airflow.wait_until(f"the task of {window} settled", settled, BACKFILL_DEADLINE_S, poll_s=3.0)
    return _task_instance(airflow, window, dag_id)


def _try_number(airflow: AirflowDeployment, window: dt.datetime, dag_id: str = BACKFILL_DAG) -> int:
    return int(_task_instance(airflow, window, dag_id)["try_number"])


def _logs_of_tries(airflow: AirflowDeployment, dag_id: str, run_id: str, tries: range) -> str:
    """The task logs of ``tries`` of the run's task, one after the other."""
    logs: list[str] = []
    for try_number in tries:
        try:
            logs.append(airflow.task_log(dag_id, run_id, TASK_ID, try_number))
        except DeploymentError:  # a try Airflow counted but never started has no log
            continue
    return "".join(logs)


# -- the tests -----------------------------------------------------------------------------------
@backfill_create
def test_backfill_exports_each_window_once_within_the_pool(
    deployment: Deployment, three_days: Backfill
) -> None:
    first = dt.datetime.combine(dt.date.fromisoformat(three_days.from_date), dt.time(), dt.timezone.utc)
    # Airflow cut the three days into the DAG's 4-hour windows: 00:00 three days ago to 00:00 yesterday.
    assert three_days.windows == [first + i * WINDOW for i in range(13)]
    assert {run["state"] for run in three_days.runs} == {"success"}, three_days.runs

    manifests = _manifests(deployment.gcs, f"{BACKFILL_DAG}/")
    # One manifest per window, each complete, named by the window's logical date.
    assert sorted(manifests) == [int(w.timestamp()) for w in three_days.windows]
    assert all(len(found) == 1 for found in manifests.values()), manifests
    assert {m[0]["status"] for m in manifests.values()} == {"complete"}
    assert len({m[0]["request_id"] for m in manifests.values()}) == 1

    # Nothing in the bucket that no manifest lists.
    listed = {f["object_name"] for (m,) in manifests.values() for f in m["files"]}
    objects = set(_objects(deployment.gcs, f"{BACKFILL_DAG}/"))
    assert objects - listed == {n for n in objects if n.endswith("-manifest.json")}
    assert listed <= objects

    # Each window holds exactly its own records, and together they hold the whole range once.
    exported: Counter[tuple[str, int, str, Any]] = Counter()
    for window in three_days.windows:
        (manifest,) = manifests[int(window.timestamp())]
        records = _exported_records(deployment.gcs, manifest)
        assert records == _truth(deployment, window, window + WINDOW), window
        exported.update(records)
    truth = _truth(deployment, three_days.windows[0], three_days.windows[-1] + WINDOW)
    assert sum(truth.values()) > 100
    assert exported == truth

    # CleverTap's limit: never a 4th concurrent request (the simulator would have refused it with 429).
    stats = deployment.simulator.stats.snapshot()
    assert stats["concurrency_rejections"] == 0, stats
    assert stats["max_concurrent_observed"] <= POOL_SLOTS, stats
    # The pool is what held it there: each export takes one slot per request it keeps in flight
    # (3, CleverTap's whole budget), so one export ran at a time while more runs were active.
    tis = [ti for ti in deployment.airflow.task_instances(BACKFILL_DAG) if ti["start_date"]]
    assert len(tis) == len(three_days.windows)
    running_at_once = _peak_overlap([(ti["start_date"], ti["end_date"]) for ti in tis])
    runs_at_once = _peak_overlap([(run["start_date"], run["end_date"]) for run in three_days.runs])
    assert {ti["pool"] for ti in tis} == {"clevertap_api"}
    assert running_at_once == 1, running_at_once
    assert runs_at_once > 1, runs_at_once


@backfill_create
def test_rerunning_a_window_replaces_its_objects(deployment: Deployment, three_days: Backfill) -> None:
    window = three_days.windows[6]
    run_timestamp = int(window.timestamp())
    before = _objects(deployment.gcs, f"{BACKFILL_DAG}/")
    (manifest,) = _manifests(deployment.gcs, f"{BACKFILL_DAG}/")[run_timestamp]
    window_objects = {f["object_name"] for f in manifest["files"]} | {
        name for name in before if name.endswith(f"-{run_timestamp}-manifest.json")
    }

    tries_before = _try_number(deployment.airflow, window)

    rerun = _backfill(deployment.airflow, BACKFILL_DAG, window.isoformat(), window.isoformat())

    assert rerun.windows == [window]
    assert [run["state"] for run in rerun.runs] == ["success"]
    # The window's task really ran again (a try more than before, whatever the first backfill needed).
    assert _try_number(deployment.airflow, window) == tries_before + 1
    after = _objects(deployment.gcs, f"{BACKFILL_DAG}/")
    # The same object names, no more: the rerun replaced the window's files and manifest ...
    assert set(after) == set(before)
    assert all(after[name] != before[name] for name in window_objects), window_objects
    # ... and left every other window's objects alone.
    assert {n: g for n, g in after.items() if n not in window_objects} == {
        n: g for n, g in before.items() if n not in window_objects
    }
    (manifest,) = _manifests(deployment.gcs, f"{BACKFILL_DAG}/")[run_timestamp]
    assert manifest["status"] == "complete"
    assert _exported_records(deployment.gcs, manifest) == _truth(deployment, window, window + WINDOW)


@backfill_create
def test_windows_past_60_days_fail_with_a_clear_message(deployment: Deployment) -> None:
    # The 4-hour window that starts just before the earliest exportable day (in the account's time
    # zone) and the one right after it, on the DAG's grid of windows starting at 00:00 UTC.
    today = dt.datetime.now(deployment.tz).date()
    earliest = dt.datetime.combine(today - dt.timedelta(days=RETENTION_DAYS), dt.time(), deployment.tz)
    grid = earliest.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    while grid < earliest:
        grid += WINDOW
    in_range, out_of_range = grid, grid - WINDOW

    backfill = _backfill(deployment.airflow, EDGE_DAG, out_of_range.isoformat(), in_range.isoformat())

    assert backfill.windows == [out_of_range, in_range]
    states = {_time(run["data_interval_start"]): run["state"] for run in backfill.runs}
    assert states == {out_of_range: "failed", in_range: "success"}

    tis = {ti["dag_run_id"]: ti for ti in deployment.airflow.task_instances(EDGE_DAG)}
    (refused_run,) = [r for r in backfill.runs if r["state"] == "failed"]
    refused = tis[refused_run["dag_run_id"]]
    assert refused["state"] == "failed"
    log = deployment.airflow.task_log(EDGE_DAG, refused_run["dag_run_id"], TASK_ID, refused["try_number"])
    assert REFUSAL in log and "leave this window out of the backfill" in log, log[-3000:]
    assert out_of_range.isoformat() in log

    manifests = _manifests(deployment.gcs, f"{EDGE_DAG}/")
    assert sorted(manifests) == [int(in_range.timestamp())]
    (manifest,) = manifests[int(in_range.timestamp())]
    assert manifest["status"] == "complete"
    assert _exported_records(deployment.gcs, manifest) == _truth(deployment, in_range, in_range + WINDOW)


def test_scheduled_hand_triggered_and_backfilled_runs_leave_every_record_once(deployment: Deployment) -> None:
    airflow, gcs = deployment.airflow, deployment.gcs
    yesterday = dt.datetime.now(dt.timezone.utc).replace(
        hour=0, minute=0, second=0, microsecond=0
    ) - dt.timedelta(days=1)
    ended = int((dt.datetime.now(dt.timezone.utc) - yesterday) / WINDOW)

    def scheduled_runs() -> list[dict[str, Any]]:
        return [r for r in airflow.dag_runs(MIXED_DAG) if r["run_type"] == "scheduled"]

    # The scheduler catches up on every window since yesterday's midnight.
    airflow.cli("dags", "unpause", MIXED_DAG)
    airflow.wait_until(
        "the scheduled windows exported",
        lambda: len(runs := scheduled_runs()) >= ended and all(r["state"] == "success" for r in runs),
        BACKFILL_DEADLINE_S,
        poll_s=2.0,
    )
    windows = sorted(_time(r["data_interval_start"]) for r in scheduled_runs())
    assert windows == [yesterday + i * WINDOW for i in range(len(windows))]
    scheduled = _objects(gcs, f"{MIXED_DAG}/")

    # Two people press Trigger 10 minutes apart, 40 and 50 minutes past the end of yesterday's second
    # window: Airflow infers [08:40 - 4 h, 08:40) and [08:50 - 4 h, 08:50), neither a window of the
    # schedule; both export yesterday's [04:00, 08:00), at the same time. CleverTap answers slowly, so
    # the two exports overlap.
    target = windows[1]
    deployment.simulator.faults.response_delay_seconds = 1.5
    try:
        hand_runs = {
            airflow.trigger(MIXED_DAG, target + WINDOW + dt.timedelta(minutes=minutes))["dag_run_id"]
            for minutes in (40, 50)
        }
        finished = airflow.wait_for_runs(MIXED_DAG, hand_runs, BACKFILL_DEADLINE_S)
    finally:
        deployment.simulator.faults.response_delay_seconds = 0.3
    assert {run["state"] for run in finished} == {"success"}, finished
    logs = [airflow.task_log(MIXED_DAG, run_id, TASK_ID, 1) for run_id in sorted(hand_runs)]
    expected = "exporting the schedule's latest window that had ended by"
    assert all(expected in log and target.isoformat() in log for log in logs), logs[0][-3000:]
    # One waited for the other: they never wrote the same objects at once.
    assert sum("waiting for it to finish" in log for log in logs) == 1, [log[-2000:] for log in logs]

    # A backfill of the same window, as the README shows it.
    tries_before = _try_number(airflow, target, MIXED_DAG)
    before_backfill = _objects(gcs, f"{MIXED_DAG}/")
    _rerun_window(airflow, MIXED_DAG, target)
    ti = _settled_task_instance(airflow, target, MIXED_DAG)
    assert ti["state"] == "success", ti
    # The window's task ran again: a try more than before. On Airflow 2, `--reset-dagruns` queues the
    # window's scheduled run again before the backfill takes it over, and the running scheduler may
    # schedule its task meanwhile (a try); the backfill then resets that task and runs it itself (a
    # second try). The scheduler's worker then finds it running and leaves ("Task is not able to be
    # run"), or, once the backfill is done, queues and runs it once more (a third try, exporting the
    # window again, which replaces its objects). On Airflow 3 the scheduler alone runs a backfill's tasks.
    extra_tries = 0 if AIRFLOW_V_3_0_PLUS else 2
    tries = int(ti["try_number"])
    assert tries_before + 1 <= tries <= tries_before + 1 + extra_tries, (tries_before, tries)
    # Every export those tries started ran from start to manifest, one at a time (a try that died
    # halfway would leave an export without its end, and its successor would take the claim over).
    backfill_logs = _logs_of_tries(airflow, MIXED_DAG, ti["dag_run_id"], range(tries_before + 1, tries + 1))
    exports = backfill_logs.count(f"run timestamp {int(target.timestamp())}")
    assert exports == len(re.findall(r"Export \d+ complete: ", backfill_logs)), backfill_logs[-3000:]
    assert 1 <= exports <= (1 if AIRFLOW_V_3_0_PLUS else 2), backfill_logs[-3000:]
    assert "Task failed with exception" not in backfill_logs, backfill_logs[-3000:]
    assert "Took over the claim" not in backfill_logs, backfill_logs[-3000:]
    target_objects = {name for name in before_backfill if f"-{int(target.timestamp())}-" in name}

    after = _objects(gcs, f"{MIXED_DAG}/")
    # The backfill rewrote the window's objects (again, after the hand-triggered runs).
    assert target_objects and all(after.get(name) != before_backfill[name] for name in target_objects)
    # No object added by the hand-triggered runs or the backfill: they replaced the window's objects.
    assert set(scheduled) <= set(after)
    added = set(after) - set(scheduled)  # only a window that ended meanwhile may add objects
    assert not any(f"-{int(w.timestamp())}-" in name for name in added for w in windows), added
    rewritten = {name for name in after if f"-{int(target.timestamp())}-" in name}
    assert rewritten and all(after[name] != scheduled[name] for name in rewritten)
    assert not any(name.endswith(".claim") for name in after)

    # Every window the scheduler ran (one more may have ended meanwhile), one manifest each.
    windows = sorted(
        _time(r["data_interval_start"]) for r in airflow.dag_runs(MIXED_DAG) if r["run_type"] != "manual"
    )
    manifests = _manifests(gcs, f"{MIXED_DAG}/")
    assert sorted(manifests) == [int(w.timestamp()) for w in windows]
    exported: Counter[tuple[str, int, str, Any]] = Counter()
    for window in windows:
        (manifest,) = manifests[int(window.timestamp())]
        assert manifest["status"] == "complete"
        exported.update(_exported_records(gcs, manifest))
    truth = _truth(deployment, windows[0], windows[-1] + WINDOW)
    assert sum(truth.values()) > 100
    assert exported == truth
