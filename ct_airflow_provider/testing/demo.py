"""``make demo``: the once-only export DAG in every format, against a local CleverTap and a local bucket.

Starts the CleverTap simulator and the local GCS stack, registers the connections (as
``AIRFLOW_CONN_*`` variables), tests a good and a broken bucket connection, runs
``dags/clevertap_once_only_events.py`` once per format with ``dag.test()``, prints what landed in
the bucket, and stops what it started.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from ct_airflow_provider.testing.gcs_emulator import run_gcs_stack
from ct_airflow_provider.testing.simulator import run_simulator

BUCKET = "clevertap-demo-exports"
FORMATS = ("json", "csv", "xml", "parquet")
DAGS = Path(__file__).resolve().parents[2] / "dags"


def _load_dag(path: Path, dag_id: str) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 72 - len(text)), flush=True)


def main() -> int:
    from ct_airflow_provider.hooks.gcs import CleverTapGCSHook

    with run_simulator(events_per_day=150) as simulator, run_gcs_stack() as gcs:
        _banner("Local stack")
        print(
            f"CleverTap simulator: {simulator.url} (account {simulator.account_id}, zone {simulator.timezone})"
        )
        print(
            f"GCS emulator:        {gcs.emulator_url} (STORAGE_EMULATOR_HOST), token endpoint {gcs.token_uri}"
        )
        gcs.create_bucket(BUCKET)
        key = gcs.new_service_account_key()
        os.environ["AIRFLOW_CONN_CLEVERTAP_DEFAULT"] = simulator.airflow_conn_env()
        os.environ["AIRFLOW_CONN_CLEVERTAP_GCS_DEFAULT"] = gcs.connection_env(BUCKET, key, "Demo exports")
        os.environ["AIRFLOW_CONN_CLEVERTAP_GCS_TYPO"] = gcs.connection_env(BUCKET.upper(), key, "Typo")

        _banner("Bucket connections: Test")
        for conn_id in ("clevertap_gcs_default", "clevertap_gcs_typo"):
            ok, message = CleverTapGCSHook(gcs_conn_id=conn_id).test_connection()
            print(f"{conn_id}: {'OK' if ok else 'FAILED'} - {message}")

        dag = _load_dag(DAGS / "clevertap_once_only_events.py", "clevertap_once_only_events")
        failed = []
        for export_format in FORMATS:
            _banner(f"Once-only export of yesterday, all user events, as {export_format}")
            dag_run = dag.test(
                run_conf={"range": "yesterday", "event_type": "all", "export_format": export_format}
            )
            print(f"DAG run {dag_run.run_id}: {dag_run.state}")
            if dag_run.state != "success":
                failed.append(export_format)

        _banner(f"What landed in gs://{BUCKET}")
        objects = gcs.list_objects(BUCKET)
        for name, size in sorted(objects.items()):
            print(f"{size:>12,d}  gs://{BUCKET}/{name}")
        for name in sorted(n for n in objects if n.endswith("-manifest.json")):
            manifest = orjson.loads(gcs.read_object(BUCKET, name))
            per_event: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            for file in manifest["files"]:
                per_event[file["event_name"]][file["day"]] += file["records"]
            _banner(f"{name} ({manifest['format']}, {manifest['status']})")
            for event, days in sorted(per_event.items()):
                for day, count in sorted(days.items()):
                    print(f"  {event:<28} {day}  {count:>7,d} records")
            if manifest.get("skipped_events"):
                print(f"  skipped: {', '.join(manifest['skipped_events'])}")
            print(
                f"  reconciled with CleverTap's own counts: {'yes' if manifest.get('reconciled') else 'no'}"
            )
        _banner("Where to look next")
        print(
            "README.md (connections, operators, DAGs), dags/ (the example DAGs), docs/ (formats, simulator),"
        )
        print("`make airflow` for the UI on the example DAGs, `make test` for the whole suite.")
        if failed:
            print(f"\nThe export failed for: {', '.join(failed)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
