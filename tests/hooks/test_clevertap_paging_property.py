"""Property: paging yields every record exactly once, in order, whatever the batch size and faults.

Hypothesis picks the event, the days, the batch size, the page shape and a sequence of transient
faults (each hitting the next request, starts and pages alike); the hook must drain exactly the
simulator's ground truth, and every fault must really have been served.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ct_airflow_provider.hooks.clevertap import CleverTapHook
from ct_airflow_provider.testing.simulator import Fault, SimulatorServer, run_simulator

CONN_ID = "ct_paging_property"


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    # Fewer events per day than the default keeps the small-batch examples quick.
    with (
        run_simulator(events_per_day=80, timezone="America/New_York") as running,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", running.airflow_conn_env())
        yield running


EVENTS = ["App Launched", "Charged", "Added To Cart/Wishlist", "Search  Performed", "Reward\tClaimed"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    event=st.sampled_from(EVENTS),
    days_back=st.integers(min_value=0, max_value=60),
    span=st.integers(min_value=0, max_value=2),
    batch_size=st.one_of(st.integers(min_value=1, max_value=300), st.sampled_from([4999, 5000])),
    page_shape=st.sampled_from(["documented", "partial"]),
    faults=st.lists(st.sampled_from([fault for fault in Fault if fault is not Fault.SLOW]), max_size=8),
    slow=st.booleans(),
)
def test_paging_yields_every_record_exactly_once(
    server: SimulatorServer,
    event: str,
    days_back: int,
    span: int,
    batch_size: int,
    page_shape: str,
    faults: list[Fault],
    slow: bool,
) -> None:
    if slow:
        faults = [*faults, Fault.SLOW]
    server.faults.clear()
    server.faults.page_shape = page_shape
    server.faults.slow_seconds = 0.6
    server.faults.queue(*faults)
    to_day = server.truth.today - dt.timedelta(days=days_back)
    from_day = to_day - dt.timedelta(days=span)
    expected = [
        record
        for day in (from_day + dt.timedelta(days=n) for n in range(span + 1))
        for record in server.truth.events(event, day)
    ]
    if batch_size < 20 and len(expected) > 600:
        batch_size = 20  # hundreds of one-record pages prove nothing more and cost seconds

    hook = CleverTapHook(
        CONN_ID,
        batch_size=batch_size,
        backoff_initial_seconds=0.001,
        backoff_max_seconds=0.01,
        max_retry_seconds=30,
        read_timeout=0.25,  # far above a normal answer here, even on a loaded machine
    )
    try:
        pages = list(hook.iter_event_pages(event, from_day, to_day))
    finally:
        hook.close()

    assert [record for page in pages for record in page] == expected
    assert all(0 < len(page) <= batch_size for page in pages)
    assert server.faults.pending() == []  # every fault was served and survived
