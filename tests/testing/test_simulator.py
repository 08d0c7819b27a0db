"""The CleverTap simulator over real sockets, driven by a bare HTTP client (no hook in between).

What users rely on: it answers as the reference describes (headers, cursors, page shapes, error
bodies, the 3-concurrent limit), its data is deterministic and awkward in the ways real data is,
its faults really happen, and its ground truth matches what it serves.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import urllib3

from ct_airflow_provider.testing.seed_data import EVENT_SPECS, SeedData
from ct_airflow_provider.testing.simulator import Fault, SimulatorServer, run_simulator


def _ymd(day: dt.date) -> int:
    return int(day.strftime("%Y%m%d"))


class Api:
    """A bare client: exactly the requests the reference documents, nothing clever."""

    def __init__(self, server: SimulatorServer, passcode: str | None = None) -> None:
        self.server = server
        self.http = urllib3.PoolManager(maxsize=8, retries=False)
        self.headers = {
            "X-CleverTap-Account-Id": server.account_id,
            "X-CleverTap-Passcode": passcode or server.passcode,
        }

    def get(self, path: str) -> urllib3.BaseHTTPResponse:
        return self.http.request("GET", self.server.url + path, headers=self.headers)

    def post(self, path: str, body: dict[str, Any]) -> urllib3.BaseHTTPResponse:
        return self.http.request(
            "POST",
            self.server.url + path,
            body=orjson.dumps(body),
            headers={**self.headers, "Content-Type": "application/json"},
        )

    def start(self, kind: str, event: str, from_day: dt.date, to_day: dt.date, batch: int = 100) -> str:
        answer = self.post(
            f"/1/{kind}.json?batch_size={batch}",
            {"event_name": event, "from": _ymd(from_day), "to": _ymd(to_day)},
        )
        assert answer.status == 200, answer.data
        cursor: str = orjson.loads(answer.data)["cursor"]
        return cursor

    def drain(
        self, kind: str, event: str, from_day: dt.date, to_day: dt.date, batch: int = 100
    ) -> list[dict[str, Any]]:
        cursor: str | None = self.start(kind, event, from_day, to_day, batch)
        records: list[dict[str, Any]] = []
        while cursor:
            answer = self.get(f"/1/{kind}.json?cursor={cursor}")
            assert answer.status == 200, answer.data
            page = orjson.loads(answer.data)
            assert len(page["records"]) <= batch
            records += page["records"]
            cursor = page.get("next_cursor") or (page.get("cursor") if page["status"] == "partial" else None)
        return records


@pytest.fixture
def api(clevertap_simulator: SimulatorServer) -> Api:
    return Api(clevertap_simulator)


def _yesterday(server: SimulatorServer) -> dt.date:
    return server.truth.today - dt.timedelta(days=1)


# -- the API's shape ------------------------------------------------------------------------------


def test_schema_lists_every_event_including_awkward_names(api: Api) -> None:
    answer = api.get("/getSchema?type=events")
    assert answer.status == 200
    payload = orjson.loads(answer.data)
    names = [event["name"] for event in payload["events"]]
    assert payload["status"] == "success"
    assert names == api.server.truth.event_names()
    assert 5 <= len(names) <= 8
    assert {
        "App Launched",
        "Charged",
        "Product Viewed",
        "Added To Cart/Wishlist",
        "Notification Viewed",
    } <= set(names)
    assert any("\t" in name or "  " in name for name in names)
    assert "Notification Viewed" not in api.server.truth.exportable_event_names()


def test_extra_events_are_listed_and_export_like_the_others() -> None:
    with run_simulator(events_per_day=50, extra_events=2) as server:
        api = Api(server)
        names = [event["name"] for event in orjson.loads(api.get("/getSchema?type=events").data)["events"]]
        assert names == [spec.name for spec in EVENT_SPECS] + ["Custom Event 1", "Custom Event 2"]
        assert server.truth.exportable_event_names()[-2:] == ["Custom Event 1", "Custom Event 2"]
        day = _yesterday(server)
        records = api.drain("events", "Custom Event 2", day, day, batch=10)
        assert records == list(server.truth.events("Custom Event 2", day))
        assert len(records) == server.truth.event_count("Custom Event 2", day) > 10
        assert records != list(server.truth.events("Custom Event 1", day))
        profiles = api.drain("profiles", "Custom Event 2", day, day, batch=10)
        assert profiles == list(server.truth.profiles("Custom Event 2", day, day))
        assert sum(profile["events"]["Custom Event 2"]["count"] for profile in profiles) == len(records)
    assert SeedData().event_names() == [spec.name for spec in EVENT_SPECS]


def test_events_paging_returns_the_ground_truth_in_order(api: Api) -> None:
    day = _yesterday(api.server)
    records = api.drain("events", "Charged", day - dt.timedelta(days=1), day, batch=37)
    expected = list(api.server.truth.events("Charged", day - dt.timedelta(days=1))) + list(
        api.server.truth.events("Charged", day)
    )
    assert records == expected
    assert len(records) > 37  # several pages were needed


def test_records_have_the_reference_shape(api: Api) -> None:
    day = _yesterday(api.server)
    records = api.drain("events", "Charged", day, day, batch=5000)
    for record in records:
        assert set(record) == {"profile", "ts", "event_props", "session_props"}
        assert isinstance(record["ts"], int) and len(str(record["ts"])) == 14
        assert str(record["ts"]).startswith(day.strftime("%Y%m%d"))
        assert "objectId" in record["profile"]
        assert "eventName" not in record and "event_name" not in record
    # Some profiles have no identity: exports must fall back to objectId.
    assert any("identity" not in record["profile"] for record in records)
    assert any("identity" in record["profile"] for record in records)


def test_data_is_awkward_like_real_data(clevertap_simulator: SimulatorServer) -> None:
    truth = clevertap_simulator.truth
    day = _yesterday(clevertap_simulator)
    records = [record for name in truth.exportable_event_names() for record in truth.events(name, day)]
    text = orjson.dumps(records).decode()
    for awkward in ("\\n", "\\t", '\\"', ", ", "é", "北京", "🎉"):
        assert awkward in text, awkward
    values = [value for record in records for value in record["event_props"].values()]
    assert any(isinstance(value, bool) for value in values)
    assert any(isinstance(value, int) and not isinstance(value, bool) for value in values)
    assert any(isinstance(value, float) for value in values)
    assert any(isinstance(value, list) for value in values)
    assert any(isinstance(value, dict) for value in values)
    key_sets = {frozenset(record["event_props"]) for record in truth.events("App Launched", day)}
    assert len(key_sets) > 1  # keys differ from record to record
    wifi_types = {
        type(record["event_props"]["ct_connected_to_wifi"]) for record in truth.events("App Launched", day)
    }
    assert wifi_types == {bool, str}  # one key, two types
    price_types = {type(r["event_props"]["Price"]) for r in truth.events("Product Viewed", day)}
    assert price_types == {float, str}


def test_profiles_paging_returns_each_profile_once(api: Api) -> None:
    server = api.server
    day = _yesterday(server)
    profiles = api.drain("profiles", "App Launched", day - dt.timedelta(days=6), day, batch=250)
    assert profiles == list(server.truth.profiles("App Launched", day - dt.timedelta(days=6), day))
    keys = [profile.get("identity") or profile["platformInfo"][0]["objectId"] for profile in profiles]
    assert len(keys) == len(set(keys))
    assert any("identity" not in profile for profile in profiles)
    for profile in profiles:
        stats = profile["events"]["App Launched"]
        assert stats["count"] >= 1 and stats["first_seen"] <= stats["last_seen"]
        assert {"platform", "os_version", "app_version", "make", "model", "objectId"} <= set(
            profile["platformInfo"][0]
        )
    # The same users come back day after day: the population is bounded.
    users_by_day = [
        {
            p.get("identity") or p["platformInfo"][0]["objectId"]
            for p in server.truth.profiles("App Launched", d, d)
        }
        for d in (day - dt.timedelta(days=1), day)
    ]
    assert users_by_day[0] & users_by_day[1]
    total_events = sum(profile["events"]["App Launched"]["count"] for profile in profiles)
    assert total_events == sum(
        server.truth.event_count("App Launched", day - dt.timedelta(days=n)) for n in range(7)
    )


def test_data_covers_the_last_60_days_and_today_up_to_now(clevertap_simulator: SimulatorServer) -> None:
    truth = clevertap_simulator.truth
    days = truth.days()
    assert days[-1] == truth.today == dt.datetime.now(truth.as_of.tzinfo).date()
    assert days[0] == truth.today - dt.timedelta(days=60)
    assert all(truth.event_count("App Launched", day) > 0 for day in days[:-1])
    assert truth.event_count("App Launched", truth.today - dt.timedelta(days=61)) == 0
    now_ts = int(truth.as_of.strftime("%Y%m%d%H%M%S"))
    assert all(record["ts"] <= now_ts for record in truth.events("App Launched", truth.today))


def test_ts_is_local_time_in_the_account_zone_across_dst() -> None:
    # America/New_York falls back on 2023-11-05: 01:00-02:00 happens twice, the day has 25 hours.
    data = SeedData(
        timezone="America/New_York",
        events_per_day=4000,
        as_of=dt.datetime(2023, 11, 20, tzinfo=dt.timezone.utc),
    )
    stamps = [record["ts"] for record in data.events("App Launched", dt.date(2023, 11, 5))]
    assert all(20231105000000 <= ts <= 20231105235959 for ts in stamps)
    assert stamps != sorted(stamps)  # wall-clock time goes back once, records stay in real-time order
    # Springs forward on 2024-03-10: no record at 02:xx, which did not exist.
    data = SeedData(
        timezone="America/New_York",
        events_per_day=4000,
        as_of=dt.datetime(2024, 3, 20, tzinfo=dt.timezone.utc),
    )
    stamps = [record["ts"] for record in data.events("App Launched", dt.date(2024, 3, 10))]
    assert stamps == sorted(stamps)
    assert not any(20240310020000 <= ts < 20240310030000 for ts in stamps)
    assert any(20240310030000 <= ts < 20240310040000 for ts in stamps)


def test_same_seed_same_data_other_seed_other_data() -> None:
    as_of = dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone.utc)
    day = dt.date(2024, 5, 20)
    first = list(SeedData(seed=7, as_of=as_of).events("Charged", day))
    again = list(SeedData(seed=7, as_of=as_of).events("Charged", day))
    other = list(SeedData(seed=8, as_of=as_of).events("Charged", day))
    assert first == again
    assert first != other


def test_millions_of_events_are_generated_on_demand() -> None:
    data = SeedData(events_per_day=5_000_000, as_of=dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone.utc))
    day = dt.date(2024, 5, 20)
    count = data.event_count("App Launched", day)
    assert count > 3_000_000
    tracemalloc.start()
    started = time.perf_counter()
    page = data.event_record_bytes("App Launched", day, count - 5000, count)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(page) == 5000
    assert peak < 20 << 20  # one page, not the day
    assert elapsed < 5  # a generous bound; it takes milliseconds, a day would take minutes
    last = orjson.loads(page[-1])
    assert str(last["ts"]).startswith("20240520")


# -- protocol rules -------------------------------------------------------------------------------


def test_wrong_passcode_or_account_answers_401(clevertap_simulator: SimulatorServer) -> None:
    answer = Api(clevertap_simulator, passcode="WRONG").get("/getSchema?type=events")
    assert answer.status == 401
    assert orjson.loads(answer.data) == {"status": "fail", "error": "Invalid Credentials"}


def test_cursor_encoded_twice_is_refused(api: Api) -> None:
    day = _yesterday(api.server)
    cursor = api.start("events", "Charged", day, day)
    assert "%" in cursor  # cursors arrive percent-encoded
    assert api.get(f"/1/events.json?cursor={quote(cursor, safe='')}").status == 400
    assert api.get(f"/1/events.json?cursor={cursor}").status == 200


def test_post_needs_json_content_type_and_get_sends_none(api: Api) -> None:
    day = _yesterday(api.server)
    body = orjson.dumps({"event_name": "Charged", "from": _ymd(day), "to": _ymd(day)})
    answer = api.http.request("POST", api.server.url + "/1/events.json", body=body, headers=api.headers)
    assert answer.status == 400
    answer = api.http.request(
        "GET",
        api.server.url + "/getSchema?type=events",
        headers={**api.headers, "Content-Type": "application/json"},
    )
    assert answer.status == 400


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("?batch_size=5001", {"event_name": "Charged", "from": 20240101, "to": 20240102}),
        ("?batch_size=0", {"event_name": "Charged", "from": 20240101, "to": 20240102}),
        ("", {"event_name": "Charged", "from": 20240103, "to": 20240102}),
        ("", {"event_name": "Charged", "from": "20240101", "to": 20240102}),
        ("", {"event_name": "Charged", "from": 20241301, "to": 20241302}),
        ("", {"from": 20240101, "to": 20240102}),
    ],
)
def test_bad_parameters_answer_incorrect_usage(api: Api, query: str, body: dict[str, Any]) -> None:
    answer = api.post("/1/events.json" + query, body)
    assert answer.status == 400
    payload = orjson.loads(answer.data)
    assert payload["status"] == "fail" and payload["code"] == 3


def test_notification_event_refuses_export(api: Api) -> None:
    day = _yesterday(api.server)
    answer = api.post(
        "/1/events.json", {"event_name": "Notification Viewed", "from": _ymd(day), "to": _ymd(day)}
    )
    assert orjson.loads(answer.data) == {
        "status": "fail",
        "code": 400,
        "error": "Export not allowed for this event",
    }


def test_partial_page_shape(api: Api) -> None:
    api.server.faults.page_shape = "partial"
    day = _yesterday(api.server)
    cursor = api.start("events", "Charged", day, day, batch=10)
    first = orjson.loads(api.get(f"/1/events.json?cursor={cursor}").data)
    assert first["status"] == "partial" and "cursor" in first and "next_cursor" not in first
    records = api.drain("events", "Charged", day, day, batch=10)
    assert records == list(api.server.truth.events("Charged", day))


def test_counts_are_polled_until_ready(api: Api) -> None:
    day = _yesterday(api.server)
    started = orjson.loads(
        api.post("/1/counts/events.json", {"event_name": "Charged", "from": _ymd(day), "to": _ymd(day)}).data
    )
    request_id = started["req_id"]
    polls = [orjson.loads(api.get(f"/1/counts/events.json?req_id={request_id}").data) for _ in range(2)]
    assert polls[0]["status"] == "partial"
    assert polls[1] == {"status": "success", "count": api.server.truth.event_count("Charged", day)}


def test_more_than_three_concurrent_reads_answer_429(api: Api) -> None:
    server = api.server
    server.faults.response_delay_seconds = 1.5
    day = _yesterday(server)
    statuses: list[int] = []
    lock = threading.Lock()
    all_ready = threading.Barrier(5)

    def one_request() -> None:
        all_ready.wait()  # five requests leave together, well within the first three's 1.5 s
        answer = api.post("/1/events.json", {"event_name": "Charged", "from": _ymd(day), "to": _ymd(day)})
        with lock:
            statuses.append(answer.status)

    threads = [threading.Thread(target=one_request) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 200, 429, 429]
    assert server.stats.max_concurrent_observed == 3
    assert server.stats.concurrency_rejections == 2


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "body_code"),
    [
        (Fault.NOT_READY, 202, 2),
        (Fault.NOT_READY_IN_BODY, 200, 2),
        (Fault.TOO_MANY_REQUESTS, 429, 429),
        (Fault.TOO_MANY_REQUESTS_IN_BODY, 200, 429),
        (Fault.SERVICE_UNAVAILABLE, 503, 503),
    ],
)
def test_queued_fault_hits_the_next_request_once(api: Api, fault: Fault, status: int, body_code: int) -> None:
    api.server.faults.queue(fault)
    answer = api.get("/getSchema?type=events")
    assert answer.status == status
    assert orjson.loads(answer.data)["code"] == body_code
    assert api.get("/getSchema?type=events").status == 200
    assert api.server.faults.injected[fault.value] == 1


def test_server_error_answers_html(api: Api) -> None:
    api.server.faults.queue(Fault.SERVER_ERROR)
    answer = api.get("/getSchema?type=events")
    assert answer.status == 500
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(answer.data)


def test_truncated_body_and_reset_break_the_connection(api: Api) -> None:
    api.server.faults.queue(Fault.TRUNCATED_BODY, Fault.CONNECTION_RESET)
    with pytest.raises(urllib3.exceptions.ProtocolError, match="IncompleteRead"):
        api.get("/getSchema?type=events")
    with pytest.raises(urllib3.exceptions.ProtocolError):
        api.get("/getSchema?type=events")
    assert api.get("/getSchema?type=events").status == 200


def test_slow_answer_waits(api: Api) -> None:
    api.server.faults.slow_seconds = 0.4
    api.server.faults.queue(Fault.SLOW)
    started = time.perf_counter()
    assert api.get("/getSchema?type=events").status == 200
    assert time.perf_counter() - started >= 0.4


def test_invalid_credentials_switch(api: Api) -> None:
    api.server.faults.invalid_credentials = True
    assert api.get("/getSchema?type=events").status == 401
    api.server.faults.invalid_credentials = False
    assert api.get("/getSchema?type=events").status == 200


def test_stalled_cursor_repeats_itself(api: Api) -> None:
    api.server.faults.stall_cursor = True
    day = _yesterday(api.server)
    cursor = api.start("events", "Charged", day, day, batch=10)
    page = orjson.loads(api.get(f"/1/events.json?cursor={cursor}").data)
    assert page["next_cursor"] == cursor


def test_cursors_expire(api: Api) -> None:
    day = _yesterday(api.server)
    cursor = api.start("events", "Charged", day, day, batch=10)
    api.server.faults.cursor_ttl_seconds = 0.2
    time.sleep(0.3)
    answer = api.get(f"/1/events.json?cursor={cursor}")
    assert answer.status == 400
    assert "expired" in orjson.loads(answer.data)["error"].lower()


def test_faults_can_be_switched_from_another_process(api: Api) -> None:
    control = urllib3.PoolManager()
    answer = control.request(
        "POST",
        api.server.url + "/_simulator/faults",
        body=json.dumps({"queue": ["too_many_requests"], "stall_cursor": True}),
    )
    assert answer.status == 200
    assert api.server.faults.stall_cursor is True
    assert api.get("/getSchema?type=events").status == 429
    stats = orjson.loads(control.request("GET", api.server.url + "/_simulator/stats").data)
    assert stats["faults_injected"] == {"too_many_requests": 1}
    assert stats["requests_served"] == 1
    bad = control.request("POST", api.server.url + "/_simulator/faults", body=b'{"no_such_fault": 1}')
    assert bad.status == 400
    assert control.request("DELETE", api.server.url + "/_simulator/stats").status == 200
    stats = orjson.loads(control.request("GET", api.server.url + "/_simulator/stats").data)
    assert (stats["requests_served"], stats["max_concurrent_observed"]) == (0, 0)


# -- running it -----------------------------------------------------------------------------------


def test_run_simulator_stops_cleanly_and_frees_the_port() -> None:
    with run_simulator(events_per_day=10) as server:
        url = server.url
        client = Api(server)
        assert client.get("/getSchema?type=events").status == 200
    with pytest.raises(urllib3.exceptions.HTTPError):
        urllib3.PoolManager(retries=False).request("GET", url + "/getSchema?type=events", timeout=2)
    assert server.passcode not in repr(server)


def test_connection_settings_point_at_the_simulator(clevertap_simulator: SimulatorServer) -> None:
    conn = json.loads(clevertap_simulator.airflow_conn_env())
    assert conn["conn_type"] == "clevertap"
    assert conn["host"] == clevertap_simulator.url
    assert (conn["login"], conn["password"]) == (clevertap_simulator.account_id, clevertap_simulator.passcode)
    assert conn["extra"]["timezone"] == clevertap_simulator.timezone
    assert clevertap_simulator.connection_uri().startswith("clevertap://http://")


@pytest.fixture
def simulator_process() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ct_airflow_provider.testing.simulator",
            "--port",
            "0",
            "--events-per-day",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    printed: dict[str, str] = {}
    for line in process.stdout:
        if "listening on" in line:
            printed["url"] = line.rsplit(" ", 1)[1].strip()
        elif ":" in line and line.startswith("  "):
            label, value = line.strip().split(":", 1)
            printed[label] = value.strip()
        if line.startswith("Press Ctrl-C"):
            break
    try:
        yield process, printed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_command_line_prints_url_and_credentials_and_stops_on_sigterm(
    simulator_process: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    process, printed = simulator_process
    account, passcode = printed["account id (login)"], printed["passcode (password)"]
    http = urllib3.PoolManager(retries=False)
    answer = http.request(
        "GET",
        printed["url"] + "/getSchema?type=events",
        headers={"X-CleverTap-Account-Id": account, "X-CleverTap-Passcode": passcode},
    )
    assert answer.status == 200
    assert "AIRFLOW_CONN_CLEVERTAP_DEFAULT=" in printed["connection"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


def test_command_line_explains_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "ct_airflow_provider.testing.simulator", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr and "--port 0" in result.stderr


def test_unknown_time_zone_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown time zone 'Mars/Base'.*Asia/Kolkata"):
        SeedData(timezone="Mars/Base")
