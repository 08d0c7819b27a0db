"""The example DAGs users copy: they import cleanly and run green against the simulator and the bucket."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ct_airflow_provider.testing.dag_runs import dag_bag, dag_test, run_dag
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from ct_airflow_provider.testing.pytest_plugin import connect_default_connections
from ct_airflow_provider.testing.simulator import SimulatorServer, run_simulator

DAGS = Path(__file__).resolve().parents[2] / "dags"
BUCKET = "ct-examples"


def _dagbag() -> Any:
    return dag_bag(str(DAGS))


def test_every_example_dag_imports_without_errors_or_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bag = _dagbag()
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "clevertap_once_only_events",
        "clevertap_recurring_events",
        "clevertap_daily_reconciliation",
        "clevertap_recurring_profiles",
        "clevertap_one_time_profiles",
    }
    for dag in bag.dags.values():
        assert dag.doc_md, f"{dag.dag_id} has no documentation"


def _outside_code_blocks(markdown: str) -> list[str]:
    """The lines of ``markdown`` that a Markdown renderer shows as text (not in a fenced code block)."""
    text, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            text.append(line)
    assert not fenced, "a code block is never closed"
    return text


def test_example_dag_docs_show_commands_as_code_with_their_line_continuations() -> None:
    """The UI renders ``doc_md`` as Markdown: commands must sit in code blocks, ``\\`` line ends intact."""
    for dag in _dagbag().dags.values():
        commands = [line for line in dag.doc_md.splitlines() if line.lstrip().startswith("airflow ")]
        text = _outside_code_blocks(dag.doc_md)
        assert not any(line.lstrip().startswith("airflow ") for line in text), dag.dag_id
        # A continuation eaten by Python (a docstring that is not raw) joins the command into one line.
        assert all(len(line) < 100 for line in commands), (dag.dag_id, commands)
        continued = [line for line in dag.doc_md.splitlines() if line.endswith(" \\")]
        assert all(line not in text for line in continued), dag.dag_id
    recurring = _dagbag().get_dag("clevertap_recurring_events").doc_md
    assert "airflow backfill create --dag-id clevertap_recurring_events \\\n" in recurring


def test_example_dags_write_under_one_prefix_per_export_kind() -> None:
    prefixes = {
        dag.dag_id: {task.object_prefix for task in dag.tasks if hasattr(task, "object_prefix")}
        for dag in _dagbag().dags.values()
    }
    assert prefixes == {
        "clevertap_once_only_events": {"clevertap/events/"},
        "clevertap_recurring_events": {"clevertap/events/"},
        "clevertap_daily_reconciliation": {"clevertap/events/"},
        "clevertap_recurring_profiles": {"clevertap/profiles/"},
        "clevertap_one_time_profiles": {"clevertap/profiles/"},
    }


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with run_simulator(events_per_day=30, population=200) as server:
        yield server


@pytest.fixture
def stack(
    gcs_stack: GCSTestStack, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GCSTestStack]:
    connect_default_connections(monkeypatch, simulator, gcs_stack, BUCKET)
    yield gcs_stack


def _manifests(stack: GCSTestStack) -> list[dict[str, Any]]:
    return [
        orjson.loads(stack.read_object(BUCKET, name))
        for name in stack.list_objects(BUCKET)
        if name.endswith("-manifest.json")
    ]


def test_once_only_events_dag_with_selected_events_and_a_date_range(
    stack: GCSTestStack, simulator: SimulatorServer
) -> None:
    day = simulator.truth.today - dt.timedelta(days=2)
    dag = _dagbag().get_dag("clevertap_once_only_events")
    conf = {
        "event_type": "selected",
        "events": ["Charged", "Added To Cart/Wishlist"],
        "range": "date_range",
        "from_date": day.isoformat(),
        "to_date": day.isoformat(),
        "export_format": "csv",
    }
    assert dag_test(dag, run_conf=conf).state == "success"
    (manifest,) = _manifests(stack)
    assert manifest["format"] == "csv"
    assert {f["event_name"] for f in manifest["files"]} == {"Charged", "Added To Cart/Wishlist"}
    for event in ("Charged", "Added To Cart/Wishlist"):
        assert manifest["events"][event]["records"] == simulator.truth.event_count(event, day)


def test_recurring_events_dag_exports_its_window(stack: GCSTestStack, simulator: SimulatorServer) -> None:
    dag = _dagbag().get_dag("clevertap_recurring_events")
    end = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=8)
    assert dag_test(dag, logical_date=end).state == "success"
    (manifest,) = _manifests(stack)
    assert manifest["format"] == "parquet" and manifest["totals"]["records"] > 0
    assert all(f["object_name"].startswith("clevertap/events/") for f in manifest["files"])


def test_profile_dags_run_when_no_recurring_export_is_running(stack: GCSTestStack) -> None:
    bag = _dagbag()
    end = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    assert run_dag(bag.get_dag("clevertap_recurring_profiles"), logical_date=end).state == "success"
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    one_time = bag.get_dag("clevertap_one_time_profiles")
    assert run_dag(one_time, run_conf={"from_date": yesterday, "to_date": yesterday}).state == "success"
    manifests = _manifests(stack)
    assert len(manifests) == 2
    assert all(f["event_name"] == "profiles" for m in manifests for f in m["files"])
