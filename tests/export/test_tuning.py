"""The export's process-wide tuning is applied while an export runs, and only then.

Exports run against the simulator and the local GCS stack; afterwards, also after a failure, the
garbage collector, the environment and Arrow's allocator are as they were before.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import pyarrow as pa
import pytest

from ct_airflow_provider.config import config_section, default_export_tuning, export_tuning_from_config
from ct_airflow_provider.export import ExportConfigError, ExportNaming
from ct_airflow_provider.export.job import ExportRun, ExportSpec, Pages
from ct_airflow_provider.export.tuning import ExportTuning, export_tuning
from ct_airflow_provider.export.windows import ExportWindow
from ct_airflow_provider.hooks.clevertap import CleverTapHook
from ct_airflow_provider.hooks.gcs import CleverTapGCSHook
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from ct_airflow_provider.testing.simulator import SimulatorServer
from tests.export.conftest import empty_bucket_hook

BUCKET = "ct-tuning"
EVENT = "App Launched"
LOG = logging.getLogger("test_tuning")


class _Watched:
    """The CleverTap hook, noting the process's settings while pages are read; ``fail_after`` pages
    into each read, it fails instead."""

    def __init__(self, hook: CleverTapHook, fail_after: int | None = None) -> None:
        self.hook = hook
        self.fail_after = fail_after
        self.seen: list[tuple[tuple[int, int, int], str]] = []

    def _watch(self, pages: Pages) -> Pages:
        for number, page in enumerate(pages):
            if number == self.fail_after:
                raise RuntimeError("CleverTap went away")
            self.seen.append((gc.get_threshold(), pa.default_memory_pool().backend_name))
            yield page

    def iter_event_pages(
        self, event_name: str, from_date: dt.date, to_date: dt.date, *, app_fields: bool = False
    ) -> Pages:
        return self._watch(self.hook.iter_event_pages(event_name, from_date, to_date, app_fields=app_fields))

    def iter_profile_pages(self, event_name: str, from_date: dt.date, to_date: dt.date) -> Pages:
        return self._watch(self.hook.iter_profile_pages(event_name, from_date, to_date))

    def count_events(self, event_name: str, from_date: dt.date, to_date: dt.date) -> int:
        return self.hook.count_events(event_name, from_date, to_date)


@pytest.fixture
def bucket(gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch) -> CleverTapGCSHook:
    return empty_bucket_hook(gcs_stack, monkeypatch, BUCKET)


@pytest.fixture
def hook(clevertap_simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[CleverTapHook]:
    monkeypatch.setenv("AIRFLOW_CONN_CLEVERTAP_DEFAULT", clevertap_simulator.airflow_conn_env())
    hook = CleverTapHook(batch_size=200, pause_gc_while_parsing=True)
    yield hook
    hook.close()


def _process_state() -> dict[str, Any]:
    return {
        "gc enabled": gc.isenabled(),
        "gc threshold": gc.get_threshold(),
        "environment": dict(os.environ),
        "arrow pool": pa.default_memory_pool().backend_name,
    }


def _run(bucket: CleverTapGCSHook, export_format: str, tuning: ExportTuning) -> ExportRun:
    yesterday = dt.date.today() - dt.timedelta(days=1)
    naming = ExportNaming(request_id="1700000000", run_timestamp=1700000000, database_id=0)
    spec = ExportSpec(naming, ExportWindow(yesterday, yesterday), export_format, None, 1 << 20)
    return ExportRun(spec, bucket, LOG, tuning=tuning)


@pytest.mark.parametrize("export_format", ["json", "parquet"])
def test_an_export_applies_its_tuning_while_it_runs_and_undoes_it_after(
    bucket: CleverTapGCSHook, hook: CleverTapHook, export_format: str
) -> None:
    before = _process_state()
    tuning = ExportTuning(gc_threshold=before["gc threshold"][0] + 12_345, arrow_memory_pool="system")
    source = _Watched(hook)
    result = _run(bucket, export_format, tuning).events(source, [EVENT])
    assert result.records > 0 and source.seen
    pool = "system" if export_format == "parquet" else before["arrow pool"]
    assert set(source.seen) == {((tuning.gc_threshold, *before["gc threshold"][1:]), pool)}
    assert _process_state() == before


def test_a_failed_export_undoes_its_tuning_too(bucket: CleverTapGCSHook, hook: CleverTapHook) -> None:
    before = _process_state()
    source = _Watched(hook, fail_after=1)
    with pytest.raises(RuntimeError, match="went away"):
        _run(bucket, "parquet", ExportTuning(arrow_memory_pool="system")).events(source, [EVENT])
    assert source.seen
    assert _process_state() == before


def test_nested_and_parallel_exports_restore_the_settings_once_the_last_ends() -> None:
    before = gc.get_threshold()
    with export_tuning(ExportTuning(gc_threshold=before[0] + 1)):
        with export_tuning(ExportTuning(gc_threshold=before[0] + 2)):
            assert gc.get_threshold()[0] == before[0] + 1  # the first export's settings hold
        assert gc.get_threshold()[0] == before[0] + 1
    assert gc.get_threshold() == before


def test_nothing_is_changed_that_the_tuning_leaves_alone() -> None:
    before = _process_state()
    with export_tuning(ExportTuning(gc_threshold=None, arrow_memory_pool=None), "parquet"):
        assert _process_state() == before


@pytest.mark.parametrize(
    "field, value", [("gc_threshold", 0), ("malloc_mmap_threshold", True), ("arrow_memory_pool", "tcmalloc")]
)
def test_settings_that_cannot_work_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ExportTuning(**{field: value})


def test_airflow_s_configuration_sets_the_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    assert export_tuning_from_config() == ExportTuning(
        gc_threshold=20_000, pause_gc_while_parsing=True, arrow_memory_pool="jemalloc"
    )
    monkeypatch.setenv("AIRFLOW__CLEVERTAP__GC_THRESHOLD", "")
    monkeypatch.setenv("AIRFLOW__CLEVERTAP__PAUSE_GC_WHILE_PARSING", "False")
    monkeypatch.setenv("AIRFLOW__CLEVERTAP__ARROW_MEMORY_POOL", "mimalloc")
    monkeypatch.setenv("AIRFLOW__CLEVERTAP__MALLOC_MMAP_THRESHOLD", str(4 << 20))
    assert export_tuning_from_config() == ExportTuning(
        gc_threshold=None,
        pause_gc_while_parsing=False,
        arrow_memory_pool="mimalloc",
        malloc_mmap_threshold=4 << 20,
    )
    monkeypatch.setenv("AIRFLOW__CLEVERTAP__GC_THRESHOLD", "lots")
    with pytest.raises(ExportConfigError, match=r"\[clevertap\] gc_threshold = 'lots'.*integer.*'20000'"):
        export_tuning_from_config()
    monkeypatch.setenv("AIRFLOW__CLEVERTAP__GC_THRESHOLD", "")
    monkeypatch.setenv("AIRFLOW__CLEVERTAP__PAUSE_GC_WHILE_PARSING", "sometimes")
    with pytest.raises(ExportConfigError, match=r"pause_gc_while_parsing = 'sometimes'.*boolean.*'True'"):
        export_tuning_from_config()


def test_the_defaults_without_airflow_s_configuration_are_the_operators_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("GC_THRESHOLD", "PAUSE_GC_WHILE_PARSING", "ARROW_MEMORY_POOL", "MALLOC_MMAP_THRESHOLD"):
        monkeypatch.delenv(f"AIRFLOW__CLEVERTAP__{name}", raising=False)
    assert default_export_tuning() == export_tuning_from_config()


def test_the_provider_info_declares_every_setting() -> None:
    assert list(config_section()["clevertap"]["options"]) == [field.name for field in fields(ExportTuning)]


def test_by_default_the_core_changes_nothing() -> None:
    assert ExportTuning() == ExportTuning(None, False, None, None)


@pytest.mark.skipif(sys.platform != "linux", reason="Arrow's default allocator is chosen on Linux only")
def test_a_parquet_export_that_first_imports_pyarrow_chooses_arrow_s_default_and_leaves_the_environment() -> (
    None
):
    # Parquet's pages come from Arrow's C++ default pool, fixed at pyarrow's first import.
    code = (
        "import os\nfrom ct_airflow_provider.export.tuning import ExportTuning, export_tuning\n"
        "before = dict(os.environ)\n"
        "with export_tuning(ExportTuning(arrow_memory_pool='jemalloc'), 'parquet'):\n"
        "    import pyarrow\n"
        "print(pyarrow.default_memory_pool().backend_name, dict(os.environ) == before)"
    )
    env = {key: value for key, value in os.environ.items() if key != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == ["jemalloc", "True"]
