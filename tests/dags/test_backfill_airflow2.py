"""``airflow dags backfill`` over the recurring DAG on Airflow 2.11, as the README documents it.

Airflow 2's backfill runs the DAG's tasks itself (no scheduler), each in its own ``airflow tasks run``
process, against the CleverTap simulator and the local GCS stack: one complete manifest per 4-hour
window, every record of the range exported exactly once. Airflow 3's ``airflow backfill create`` is
covered by ``test_backfill.py`` with a full deployment.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow.parquet as pq
import pytest

from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from ct_airflow_provider.testing.pytest_plugin import connect_default_connections
from ct_airflow_provider.testing.simulator import run_simulator
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS
from tests.dags.test_backfill import BACKFILL_DAG, BUCKET, DAG_FILE, EVENTS, WINDOW, _record_key

pytestmark = pytest.mark.skipif(
    AIRFLOW_V_3_0_PLUS, reason="Airflow 3 backfills with `airflow backfill create` (test_backfill.py)"
)


def _airflow(*args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = os.path.dirname(sys.executable)
    airflow = os.path.join(bin_dir, "airflow")
    env = dict(os.environ)
    # The backfill's executor starts each task as `airflow tasks run ...`, found on the PATH.
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(DAG_FILE).parent)
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    return subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=600, check=False)


def test_dags_backfill_exports_each_window_once(
    gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    with run_simulator(events_per_day=60, population=200) as simulator:
        connect_default_connections(monkeypatch, simulator, gcs_stack, BUCKET)
        pool = _airflow("pools", "set", "clevertap_api", "3", "CleverTap: 3 concurrent requests")
        assert pool.returncode == 0, pool.stderr
        day = dt.datetime.combine(simulator.truth.today - dt.timedelta(days=2), dt.time(), dt.timezone.utc)
        start, end = day, day + 2 * WINDOW  # three windows: 00:00, 04:00 and 08:00
        backfill = _airflow(
            "dags", "backfill", "-s", start.isoformat(), "-e", end.isoformat(), "--reset-dagruns", "-y",
            BACKFILL_DAG,
        )  # fmt: skip
        assert backfill.returncode == 0, backfill.stdout[-3000:] + backfill.stderr[-3000:]

        tz = ZoneInfo(simulator.timezone)
        windows = [start + i * WINDOW for i in range(3)]
        manifests: dict[int, list[dict[str, Any]]] = {}
        for name in gcs_stack.list_objects(BUCKET, f"{BACKFILL_DAG}/"):
            if name.endswith("-manifest.json"):
                manifest = orjson.loads(gcs_stack.read_object(BUCKET, name))
                manifests.setdefault(int(manifest["run_timestamp"]), []).append(manifest)
        assert sorted(manifests) == [int(w.timestamp()) for w in windows]
        exported: Counter[tuple[str, int, str, Any]] = Counter()
        for window in windows:
            (manifest,) = manifests[int(window.timestamp())]
            assert manifest["status"] == "complete"
            records: Counter[tuple[str, int, str, Any]] = Counter()
            for file in manifest["files"]:
                rows = pq.read_table(
                    io.BytesIO(gcs_stack.read_object(BUCKET, file["object_name"]))
                ).to_pylist()
                records.update(_record_key(file["event_name"], row) for row in rows)
            truth: Counter[tuple[str, int, str, Any]] = Counter()
            first_ts, end_ts = (
                int(m.astimezone(tz).strftime("%Y%m%d%H%M%S")) for m in (window, window + WINDOW)
            )
            for local_day in {window.astimezone(tz).date(), (window + WINDOW).astimezone(tz).date()}:
                for event in EVENTS:
                    truth.update(
                        _record_key(event, r)
                        for r in simulator.truth.events(event, local_day)
                        if first_ts <= int(r["ts"]) < end_ts
                    )
            assert records == truth, window
            exported.update(records)
        assert sum(exported.values()) > 10
