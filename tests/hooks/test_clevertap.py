"""CleverTapHook against the CleverTap simulator over real sockets: connection, paging, faults, limits."""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ct_airflow_provider.hooks.clevertap import (
    MAX_CONCURRENT_REQUESTS,
    CleverTapAuthError,
    CleverTapConfigError,
    CleverTapCursorExpiredError,
    CleverTapCursorStalledError,
    CleverTapError,
    CleverTapHook,
    CleverTapRequestError,
    CleverTapRetryDeadlineError,
    EventExportNotAllowedError,
    RequestBudget,
    account_budget,
)
from ct_airflow_provider.testing.simulator import Fault, SimulatorServer
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS

# Fault tests must take well under a second each: tiny backoff, short read timeout.
FAST = {
    "backoff_initial_seconds": 0.002,
    "backoff_max_seconds": 0.02,
    "max_retry_seconds": 15.0,
    "read_timeout": 2.0,
}

MakeHook = Callable[..., CleverTapHook]


@pytest.fixture
def make_hook(monkeypatch: pytest.MonkeyPatch, clevertap_simulator: SimulatorServer) -> Iterator[MakeHook]:
    """Hooks on the ``clevertap_default`` connection, given as an AIRFLOW_CONN_ JSON env var."""
    monkeypatch.setenv("AIRFLOW_CONN_CLEVERTAP_DEFAULT", clevertap_simulator.airflow_conn_env())
    made: list[CleverTapHook] = []

    def make(**options: Any) -> CleverTapHook:
        hook = CleverTapHook(**{**FAST, **options})
        made.append(hook)
        return hook

    yield make
    for hook in made:
        hook.close()


@pytest.fixture
def conn_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def set_connection(conn_id: str = "ct_test", **fields: Any) -> None:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "clevertap", **fields})
        )

    return set_connection


def yesterday(server: SimulatorServer) -> dt.date:
    return server.truth.today - dt.timedelta(days=1)


def truth_events(
    server: SimulatorServer, event: str, from_day: dt.date, to_day: dt.date
) -> list[dict[str, Any]]:
    days = [from_day + dt.timedelta(days=n) for n in range((to_day - from_day).days + 1)]
    return [record for day in days for record in server.truth.events(event, day)]


# -- the connection -------------------------------------------------------------------------------


def test_connection_from_env_json(make_hook: MakeHook, clevertap_simulator: SimulatorServer) -> None:
    hook = make_hook()
    assert hook.base_url == clevertap_simulator.url
    assert hook.account_id == clevertap_simulator.account_id
    assert hook.timezone == ZoneInfo(clevertap_simulator.timezone)
    ok, message = hook.test_connection()
    assert ok, message
    assert clevertap_simulator.account_id in message
    assert clevertap_simulator.passcode not in message


def test_connection_from_uri(monkeypatch: pytest.MonkeyPatch, clevertap_simulator: SimulatorServer) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CT_URI", clevertap_simulator.connection_uri(region="in1"))
    hook = CleverTapHook("ct_uri", **FAST)
    # The host override wins over the region.
    assert hook.base_url == clevertap_simulator.url
    assert hook.region == "in1"
    assert hook.timezone == ZoneInfo(clevertap_simulator.timezone)
    assert hook.test_connection()[0]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"region": "in1"}, "https://in1.api.clevertap.com"),
        ({"region": "US1"}, "https://us1.api.clevertap.com"),
        ({"region": "aps3"}, "https://aps3.api.clevertap.com"),
        ({"region": "mec1"}, "https://mec1.api.clevertap.com"),
        ({"region": "eu1"}, "https://eu1.api.clevertap.com"),
        ({"region": ""}, "https://api.clevertap.com"),
        ({}, "https://api.clevertap.com"),
    ],
)
def test_region_picks_the_api_host(
    conn_env: Callable[..., None], extra: dict[str, str], expected: str
) -> None:
    conn_env(login="ACC", password="PASS", extra=extra)
    hook = CleverTapHook("ct_test")
    assert hook.base_url == expected
    assert hook.timezone == ZoneInfo("UTC")  # the default when unset


def test_host_without_scheme_uses_schema_and_port(conn_env: Callable[..., None]) -> None:
    conn_env(login="ACC", password="PASS", host="proxy.internal", port=8443, schema="http")
    assert CleverTapHook("ct_test").base_url == "http://proxy.internal:8443"
    conn_env(login="ACC", password="PASS", host="proxy.internal")
    assert CleverTapHook("ct_test").base_url == "https://proxy.internal"


@pytest.mark.parametrize(
    ("fields", "cause", "remedy"),
    [
        ({"password": "PASS"}, "no Account ID", "Settings > Project"),
        ({"login": "ACC"}, "no Passcode", "Settings > Project"),
        (
            {"login": "ACC", "password": "PASS", "extra": {"region": "eu2"}},
            "'eu2'",
            "in1, sg1, us1, aps3, mec1, eu1",
        ),
        (
            {"login": "ACC", "password": "PASS", "extra": {"timezone": "India"}},
            "not an IANA time zone",
            "Asia/Kolkata",
        ),
        (
            {"login": "ACC", "password": "PASS", "host": "ftp://x"},
            "not an http(s) base URL",
            "Leave the host empty",
        ),
    ],
)
def test_bad_connection_names_cause_and_remedy(
    conn_env: Callable[..., None], fields: dict[str, Any], cause: str, remedy: str
) -> None:
    conn_env(**fields)
    with pytest.raises(CleverTapConfigError) as raised:
        CleverTapHook("ct_test").base_url  # noqa: B018  (the property reads the connection)
    assert cause in str(raised.value) and remedy in str(raised.value)
    ok, message = CleverTapHook("ct_test").test_connection()
    assert not ok and cause in message
    assert "PASS" not in message.replace("Passcode", "")


def test_wrong_passcode_names_both_causes_and_hides_the_passcode(
    monkeypatch: pytest.MonkeyPatch, clevertap_simulator: SimulatorServer
) -> None:
    conn = json.loads(clevertap_simulator.airflow_conn_env())
    conn["password"] = "WRONG-PASSCODE-123"
    monkeypatch.setenv("AIRFLOW_CONN_CT_WRONG", json.dumps(conn))
    hook = CleverTapHook("ct_wrong", **FAST)
    ok, message = hook.test_connection()
    assert not ok
    assert "Passcode is wrong" in message and "region is not the account's" in message
    assert "WRONG-PASSCODE-123" not in message
    with pytest.raises(CleverTapAuthError):
        hook.list_event_names()
    assert clevertap_simulator.stats.requests_served == 2  # one per call: a 401 is not retried


def test_ui_field_behaviour_relabels_standard_fields() -> None:
    behaviour = CleverTapHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {
        "login": "Account ID",
        "password": "Passcode",
        "host": "API base URL (optional override)",
    }
    assert "port" in behaviour["hidden_fields"]
    # Airflow 2's Test button does nothing on a form without the Extra field: shown there only.
    assert ("extra" in behaviour["hidden_fields"]) == AIRFLOW_V_3_0_PLUS


@pytest.mark.parametrize("batch_size", [0, 5001, -1, True])
def test_batch_size_is_checked(batch_size: int) -> None:
    with pytest.raises(CleverTapConfigError, match="1 to 5000"):
        CleverTapHook(batch_size=batch_size)


def test_dates_are_checked_before_any_request(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer
) -> None:
    day = yesterday(clevertap_simulator)
    with pytest.raises(CleverTapConfigError, match="after"):
        list(make_hook().iter_events("Charged", day, day - dt.timedelta(days=1)))
    with pytest.raises(CleverTapConfigError, match=r"datetime\.date"):
        list(make_hook().iter_events("Charged", dt.datetime.now(), day))  # type: ignore[arg-type]
    assert clevertap_simulator.stats.requests_served == 0


# -- reading --------------------------------------------------------------------------------------


def test_list_event_names(make_hook: MakeHook, clevertap_simulator: SimulatorServer) -> None:
    assert make_hook().list_event_names() == clevertap_simulator.truth.event_names()


def test_iter_events_yields_the_ground_truth(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer
) -> None:
    day = yesterday(clevertap_simulator)
    from_day = day - dt.timedelta(days=2)
    for event in clevertap_simulator.truth.exportable_event_names():
        records = list(make_hook(batch_size=150).iter_events(event, from_day, day))
        assert records == truth_events(clevertap_simulator, event, from_day, day), event


def test_pages_are_streamed_one_at_a_time(make_hook: MakeHook, clevertap_simulator: SimulatorServer) -> None:
    day = yesterday(clevertap_simulator)
    pages = make_hook(batch_size=20).iter_event_pages("App Launched", day, day)
    first = next(pages)
    assert len(first) == 20
    # Only the first page has been asked for: nothing is read ahead or held.
    assert clevertap_simulator.stats.pages_served == 1
    rest = list(pages)
    assert all(len(page) <= 20 for page in rest)
    assert clevertap_simulator.stats.pages_served == 1 + len(rest)


def test_iter_profiles_yields_the_ground_truth(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer
) -> None:
    day = yesterday(clevertap_simulator)
    from_day = day - dt.timedelta(days=3)
    profiles = list(make_hook(batch_size=300).iter_profiles("Charged", from_day, day))
    assert profiles == list(clevertap_simulator.truth.profiles("Charged", from_day, day))
    assert len(profiles) > 300


def test_count_events_matches_the_ground_truth(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer
) -> None:
    day = yesterday(clevertap_simulator)
    expected = sum(
        clevertap_simulator.truth.event_count("Charged", day - dt.timedelta(days=n)) for n in range(3)
    )
    assert make_hook().count_events("Charged", day - dt.timedelta(days=2), day) == expected


def test_app_fields_add_device_fields_to_the_profile(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer
) -> None:
    day = yesterday(clevertap_simulator)
    plain = next(make_hook().iter_events("Charged", day, day))
    with_app = next(make_hook().iter_events("Charged", day, day, app_fields=True))
    assert {"make", "model", "os_version", "app_version"} <= set(with_app["profile"]) - set(plain["profile"])


@pytest.mark.parametrize("kind", ["events", "profiles"])
def test_event_refusing_export_is_reported_distinctly(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer, kind: str
) -> None:
    hook = make_hook()
    day = yesterday(clevertap_simulator)
    iterate = hook.iter_events if kind == "events" else hook.iter_profiles
    with pytest.raises(EventExportNotAllowedError) as raised:
        list(iterate("Notification Viewed", day, day))
    assert raised.value.event_name == "Notification Viewed"
    assert "Remove it from the list" in str(raised.value)
    assert clevertap_simulator.stats.requests_served == 1  # not retried


def test_connections_are_kept_alive(make_hook: MakeHook, clevertap_simulator: SimulatorServer) -> None:
    day = yesterday(clevertap_simulator)
    hook = make_hook(batch_size=10)
    records = list(hook.iter_events("App Launched", day, day))
    assert clevertap_simulator.stats.pages_served == -(-len(records) // 10) > 10
    assert clevertap_simulator.stats.connections_opened == 1


# -- faults: one test each, retried where a retry can succeed --------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault.NOT_READY,
        Fault.NOT_READY_IN_BODY,
        Fault.TOO_MANY_REQUESTS,
        Fault.TOO_MANY_REQUESTS_IN_BODY,
        Fault.SERVER_ERROR,
        Fault.SERVICE_UNAVAILABLE,
        Fault.TRUNCATED_BODY,
        Fault.CONNECTION_RESET,
        Fault.SLOW,
    ],
)
def test_transient_fault_is_retried_without_loss_or_duplicate(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer, fault: Fault
) -> None:
    clevertap_simulator.faults.slow_seconds = 0.8
    hook = make_hook(batch_size=40, read_timeout=0.3)
    day = yesterday(clevertap_simulator)
    clevertap_simulator.faults.queue(fault)  # hits the POST that starts the export
    pages = hook.iter_event_pages("Product Viewed", day, day)
    records = list(next(pages))
    clevertap_simulator.faults.queue(fault, fault)  # hit the next cursor twice in a row
    records += [record for page in pages for record in page]
    assert records == list(clevertap_simulator.truth.events("Product Viewed", day))
    assert clevertap_simulator.faults.injected[fault.value] == 3


def test_burst_of_429_is_ridden_out(make_hook: MakeHook, clevertap_simulator: SimulatorServer) -> None:
    clevertap_simulator.faults.queue(*[Fault.TOO_MANY_REQUESTS, Fault.TOO_MANY_REQUESTS_IN_BODY] * 5)
    day = yesterday(clevertap_simulator)
    assert list(make_hook().iter_events("Charged", day, day)) == list(
        clevertap_simulator.truth.events("Charged", day)
    )
    assert not clevertap_simulator.faults.pending()


def test_partial_page_shape_is_followed(make_hook: MakeHook, clevertap_simulator: SimulatorServer) -> None:
    clevertap_simulator.faults.page_shape = "partial"
    day = yesterday(clevertap_simulator)
    records = list(make_hook(batch_size=25).iter_events("Charged", day, day))
    assert records == list(clevertap_simulator.truth.events("Charged", day))
    assert clevertap_simulator.stats.pages_served > 2


def test_stalled_cursor_fails_instead_of_looping(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer
) -> None:
    clevertap_simulator.faults.stall_cursor = True
    day = yesterday(clevertap_simulator)
    pages = make_hook(batch_size=10).iter_event_pages("Charged", day, day)
    assert len(next(pages)) == 10
    with pytest.raises(CleverTapCursorStalledError, match="does not advance"):
        next(pages)
    assert clevertap_simulator.stats.pages_served == 1  # the repeated cursor was never fetched


def test_invalid_credentials_fail_at_once(make_hook: MakeHook, clevertap_simulator: SimulatorServer) -> None:
    day = yesterday(clevertap_simulator)
    pages = make_hook(batch_size=10).iter_event_pages("Charged", day, day)
    next(pages)
    clevertap_simulator.faults.invalid_credentials = True
    served = clevertap_simulator.stats.requests_served
    with pytest.raises(CleverTapAuthError, match="region"):
        next(pages)
    assert clevertap_simulator.stats.requests_served == served + 1


def test_expired_cursor_fails_the_export(make_hook: MakeHook, clevertap_simulator: SimulatorServer) -> None:
    day = yesterday(clevertap_simulator)
    pages = make_hook(batch_size=10).iter_event_pages("Charged", day, day)
    next(pages)
    clevertap_simulator.faults.expire_cursors = True
    served = clevertap_simulator.stats.requests_served
    with pytest.raises(CleverTapCursorExpiredError, match="Run the export again"):
        next(pages)
    assert clevertap_simulator.stats.requests_served == served + 1


def test_retries_stop_at_the_deadline(make_hook: MakeHook, clevertap_simulator: SimulatorServer) -> None:
    clevertap_simulator.faults.queue(*[Fault.TOO_MANY_REQUESTS] * 1000)
    day = yesterday(clevertap_simulator)
    started = time.monotonic()
    with pytest.raises(CleverTapRetryDeadlineError) as raised:
        list(make_hook(max_retry_seconds=0.3).iter_events("Charged", day, day))
    assert time.monotonic() - started < 2
    assert "429" in raised.value.last_failure
    assert "concurrent" in str(raised.value) and "max_retry_seconds" in str(raised.value)
    assert clevertap_simulator.stats.requests_served > 2  # it did retry before giving up


def test_unreachable_api_is_retried_until_the_deadline(conn_env: Callable[..., None]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nobody listens there
    conn_env(login="ACC", password="PASS", host=f"http://127.0.0.1:{port}")
    hook = CleverTapHook("ct_test", **{**FAST, "max_retry_seconds": 0.3})
    started = time.monotonic()
    with pytest.raises(CleverTapRetryDeadlineError, match="cannot connect") as raised:
        hook.list_event_names()
    assert time.monotonic() - started < 2
    assert f"127.0.0.1:{port}" in str(raised.value)


def test_wrong_base_path_is_not_retried(
    monkeypatch: pytest.MonkeyPatch, clevertap_simulator: SimulatorServer
) -> None:
    conn = json.loads(clevertap_simulator.airflow_conn_env())
    conn["host"] = clevertap_simulator.url + "/api/v1"
    monkeypatch.setenv("AIRFLOW_CONN_CT_PATH", json.dumps(conn))
    with pytest.raises(CleverTapRequestError, match="host override") as raised:
        CleverTapHook("ct_path", **FAST).list_event_names()
    assert raised.value.http_status == 404
    assert clevertap_simulator.stats.requests_served == 1


def test_secrets_stay_out_of_logs_errors_and_reprs(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    passcode = clevertap_simulator.passcode
    hook = make_hook(batch_size=50, read_timeout=0.3)
    clevertap_simulator.faults.slow_seconds = 0.8
    clevertap_simulator.faults.queue(*Fault)
    day = yesterday(clevertap_simulator)
    list(hook.iter_events("Charged", day, day))
    clevertap_simulator.faults.invalid_credentials = True
    with pytest.raises(CleverTapError) as raised:
        hook.list_event_names()
    assert "retry" in caplog.text  # the retries were logged...
    assert passcode not in caplog.text  # ...without the passcode
    assert passcode not in str(raised.value)
    assert passcode not in repr(hook) and passcode not in repr(hook.get_conn())


# -- the 3-concurrent cap ----------------------------------------------------------------------


def test_never_more_than_three_requests_at_once_across_hooks_and_threads(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer
) -> None:
    # Each answer takes a while, so requests pile up unless the cap holds them back.
    clevertap_simulator.faults.response_delay_seconds = 0.05
    day = yesterday(clevertap_simulator)
    events = clevertap_simulator.truth.exportable_event_names()
    hooks = [make_hook(batch_size=60), make_hook(batch_size=60)]
    results: dict[str, list[dict[str, Any]]] = {}
    errors: list[BaseException] = []

    def drain(hook: CleverTapHook, event: str) -> None:
        try:
            results[event] = list(hook.iter_events(event, day, day))
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=drain, args=(hooks[n % 2], event)) for n, event in enumerate(events)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert clevertap_simulator.stats.max_concurrent_observed == MAX_CONCURRENT_REQUESTS
    assert clevertap_simulator.stats.concurrency_rejections == 0
    for event in events:
        assert results[event] == list(clevertap_simulator.truth.events(event, day))


def test_garbage_collector_state_is_restored_after_parsing_pages(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer
) -> None:
    # Asked to, the hook pauses the cyclic GC while parsing big pages; it must always switch it back,
    # including when pages are parsed in several threads at once, and leave it off if it was off.
    day = yesterday(clevertap_simulator)
    assert gc.isenabled()
    threads = [
        threading.Thread(
            target=lambda: list(
                make_hook(batch_size=5000, pause_gc_while_parsing=True).iter_events("App Launched", day, day)
            )
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gc.isenabled()
    gc.disable()
    try:
        assert list(
            make_hook(batch_size=5000, pause_gc_while_parsing=True).iter_events("App Launched", day, day)
        )
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_request_budget_yields_on_429_and_takes_its_share_back() -> None:
    budget = RequestBudget("acc")
    for _ in range(5):
        budget.crowded()
    assert budget.limit == 1  # never below one request
    for _ in range(19):
        budget.served()
    assert budget.limit == 1
    budget.served()
    assert budget.limit == 2
    for _ in range(100):
        budget.served()
    assert budget.limit == MAX_CONCURRENT_REQUESTS  # never above CleverTap's limit


def test_when_other_clients_use_the_account_the_hooks_keep_fewer_requests_in_flight_and_finish(
    make_hook: MakeHook, clevertap_simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Another client holds two of the account's three requests: CleverTap answers 429 beyond one.
    caplog.set_level(logging.INFO, logger="ct_airflow_provider.hooks.clevertap")
    clevertap_simulator.stats.concurrency_limit = 1
    clevertap_simulator.faults.response_delay_seconds = 0.02
    day = yesterday(clevertap_simulator)
    events = clevertap_simulator.truth.exportable_event_names()[:3]
    hook = make_hook(batch_size=40)
    results: dict[str, list[dict[str, Any]]] = {}

    def drain(event: str) -> None:
        results[event] = list(hook.iter_events(event, day, day))

    threads = [threading.Thread(target=drain, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for event in events:
        assert results[event] == list(clevertap_simulator.truth.events(event, day))
    budget = account_budget(clevertap_simulator.account_id)
    assert budget.limit < MAX_CONCURRENT_REQUESTS
    assert "this process now keeps at most 1 in flight" in caplog.text
    # Having yielded, it is refused only when it probes for its share back (one 429 per probe).
    served = clevertap_simulator.stats.snapshot()
    assert served["concurrency_rejections"] <= 2 + served["pages_served"] // 20 + 1
