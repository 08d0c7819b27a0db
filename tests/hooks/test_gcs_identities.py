"""Bucket connections without a downloaded key: the worker's identity, a Google Cloud connection, impersonation.

The worker's identity runs google-auth's real Application Default Credentials flow against the test
stack's metadata server, in processes started with ``GCE_METADATA_HOST`` set (google-auth reads it
at import): ``airflow connections test`` and a real DAG run. A Google Cloud connection holds a key
file's path, exchanged at the stack's token endpoint. Impersonation is real up to the IAM request,
which goes to the stack's stand-in for ``generateAccessToken``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.auth import impersonated_credentials

from ct_airflow_provider.hooks.gcs import CleverTapGCSHook, get_bucket_hook
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from ct_airflow_provider.testing.simulator import SimulatorServer

BUCKET = "ct-identities"


@pytest.fixture(autouse=True)
def bucket(gcs_stack: GCSTestStack) -> str:
    gcs_stack.create_bucket(BUCKET)
    gcs_stack.delete_all_objects(BUCKET)
    return BUCKET


def _env(**connections: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({f"AIRFLOW_CONN_{conn_id.upper()}": value for conn_id, value in connections.items()})
    return env


def _connections_test(env: dict[str, str], conn_id: str) -> str:
    """The connection's Test (what the UI and the REST API show), run in a worker-like process."""
    script = (
        "from ct_airflow_provider.hooks.gcs import get_bucket_hook\n"
        f"ok, message = get_bucket_hook({conn_id!r}).test_connection()\n"
        "print('Connection success!' if ok else 'Connection failed!', message)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return result.stdout + result.stderr


def test_worker_identity_passes_the_test_naming_the_account(gcs_stack: GCSTestStack) -> None:
    with gcs_stack.metadata_server() as metadata:
        env = _env(ct_worker_bucket=gcs_stack.connection_env(BUCKET, None, "Worker bucket"))
        env.update(
            GCE_METADATA_HOST=metadata["GCE_METADATA_HOST"], GCE_METADATA_IP=metadata["GCE_METADATA_IP"]
        )
        output = _connections_test(env, "ct_worker_bucket")
    assert "Connection success!" in output, output[-2000:]
    assert f"as {metadata['email']} through the worker's identity (Application Default Credentials)" in output
    assert "ya29." not in output  # no token in the output
    assert gcs_stack.list_objects(BUCKET) == {}  # the probe was deleted


def test_worker_identity_without_write_access_names_the_roles(gcs_stack: GCSTestStack) -> None:
    with gcs_stack.metadata_server("object_viewer") as metadata:
        env = _env(ct_worker_bucket=gcs_stack.connection_env(BUCKET, None))
        env.update(
            GCE_METADATA_HOST=metadata["GCE_METADATA_HOST"], GCE_METADATA_IP=metadata["GCE_METADATA_IP"]
        )
        output = _connections_test(env, "ct_worker_bucket")
    assert "Connection failed!" in output
    assert f"{metadata['email']} may read bucket '{BUCKET}' but not write" in output
    assert "roles/storage.objectAdmin" in output


def test_no_application_default_credentials_says_how_to_provide_them(
    gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The tests point google-auth at a closed loopback port for its metadata server: none is there.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no `gcloud auth application-default login`
    monkeypatch.setenv("AIRFLOW_CONN_CT_NO_ADC", gcs_stack.connection_env(BUCKET, None))
    ok, message = CleverTapGCSHook("ct_no_adc").test_connection()
    assert not ok
    assert "uses the worker's own identity, but this worker has no Application Default Credentials" in message
    assert "gcloud auth application-default login" in message and "GOOGLE_APPLICATION_CREDENTIALS" in message


def test_an_export_dag_writes_with_the_worker_identity(
    gcs_stack: GCSTestStack, clevertap_simulator: SimulatorServer, tmp_path: Path
) -> None:
    day = (clevertap_simulator.truth.today - dt.timedelta(days=1)).isoformat()
    script = f"""
from airflow.providers.common.compat.sdk import DAG
from ct_airflow_provider.operators import CleverTapEventsToGCSOperator
from ct_airflow_provider.testing.dag_runs import run_dag
with DAG(dag_id="e2e_worker_identity", schedule=None) as dag:
    CleverTapEventsToGCSOperator(
        task_id="export", gcs_conn_id="ct_worker_bucket", events=["App Launched"], from_date="{day}", to_date="{day}"
    )
print("STATE", run_dag(dag).state)
"""
    with gcs_stack.metadata_server() as metadata:
        env = _env(
            ct_worker_bucket=gcs_stack.connection_env(BUCKET, None),
            clevertap_default=clevertap_simulator.airflow_conn_env(),
        )
        env.update(
            GCE_METADATA_HOST=metadata["GCE_METADATA_HOST"], GCE_METADATA_IP=metadata["GCE_METADATA_IP"]
        )
        dag_file = tmp_path / "export_with_worker_identity.py"  # Airflow 2 stores the DAG file's code
        dag_file.write_text(script)
        result = subprocess.run(
            [sys.executable, str(dag_file)], env=env, capture_output=True, text=True, timeout=300, check=False
        )
    assert "STATE success" in result.stdout, (result.stdout + result.stderr)[-3000:]
    assert "ya29." not in result.stdout + result.stderr  # no token in the task's log or XCom
    (manifest_name,) = [n for n in gcs_stack.list_objects(BUCKET) if n.endswith("-manifest.json")]
    manifest = orjson.loads(gcs_stack.read_object(BUCKET, manifest_name))
    assert manifest["status"] == "complete"
    assert manifest["totals"]["records"] == clevertap_simulator.truth.event_count(
        "App Launched", dt.date.fromisoformat(day)
    )


def _gcp_connection(key_file: Path, **extra: Any) -> str:
    return json.dumps({"conn_type": "google_cloud_platform", "extra": {"key_path": str(key_file), **extra}})


@pytest.fixture
def key_file(gcs_stack: GCSTestStack, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    key = gcs_stack.new_service_account_key(name="ct-gcp-conn")
    path = tmp_path / "key.json"
    path.write_bytes(orjson.dumps(key))
    return path, key


def test_a_google_cloud_connection_supplies_the_credentials(
    gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch, key_file: tuple[Path, dict[str, Any]]
) -> None:
    path, key = key_file
    monkeypatch.setenv("AIRFLOW_CONN_CT_GCP", _gcp_connection(path))
    monkeypatch.setenv(
        "AIRFLOW_CONN_CT_VIA_GCP", gcs_stack.connection_env(BUCKET, None, gcp_conn_id="ct_gcp")
    )
    hook = get_bucket_hook("ct_via_gcp")
    ok, message = hook.test_connection()
    assert ok, message
    assert f"as {key['client_email']} from the Google Cloud connection 'ct_gcp'" in message
    hook.upload_bytes(b"{}", "written-through-ct-gcp.json", "application/json")
    assert "written-through-ct-gcp.json" in gcs_stack.list_objects(BUCKET)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            {"gcp_conn_id": "no_such_conn"},
            "names the Google Cloud connection 'no_such_conn', which does not exist",
        ),
        ({"gcp_conn_id": "clevertap_default"}, "that connection is of type 'clevertap'"),
        (
            {"gcp_conn_id": "ct_gcp", "key": True},
            "has both a Service Account Key and a Google Cloud connection",
        ),
        ({"impersonation_chain": "not-an-email"}, "is not a service account email"),
    ],
    ids=["missing-connection", "wrong-type", "key-and-connection", "bad-chain"],
)
def test_bad_authentication_settings_name_cause_and_remedy(
    gcs_stack: GCSTestStack,
    monkeypatch: pytest.MonkeyPatch,
    key_file: tuple[Path, dict[str, Any]],
    clevertap_simulator: SimulatorServer,
    setup: dict[str, Any],
    expected: str,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CT_GCP", _gcp_connection(key_file[0]))
    monkeypatch.setenv("AIRFLOW_CONN_CLEVERTAP_DEFAULT", clevertap_simulator.airflow_conn_env())
    key = key_file[1] if setup.pop("key", False) else None
    monkeypatch.setenv("AIRFLOW_CONN_CT_BAD", gcs_stack.connection_env(BUCKET, key, **setup))
    ok, message = CleverTapGCSHook("ct_bad").test_connection()
    assert not ok
    assert expected in message
    assert "PRIVATE KEY" not in message


def _impersonating_hook(gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch, target: str) -> Any:
    caller = gcs_stack.new_service_account_key(name="ct-caller")
    monkeypatch.setenv(
        "AIRFLOW_CONN_CT_IMPERSONATING", gcs_stack.connection_env(BUCKET, caller, impersonation_chain=target)
    )
    hook = CleverTapGCSHook("ct_impersonating")
    credentials = hook.get_credentials()
    # What the Google provider builds: impersonated credentials of the target, from the key's account.
    assert isinstance(credentials, impersonated_credentials.Credentials)
    assert credentials.service_account_email == target
    assert credentials._source_credentials.service_account_email == caller["client_email"]
    # IAM's generateAccessToken is not reachable here: the request goes to the stack's stand-in.
    credentials._iam_endpoint_override = gcs_stack.iam_endpoint(target)
    return hook, caller


def test_impersonation_writes_as_the_target_account(
    gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = gcs_stack.new_impersonation_target()
    hook, caller = _impersonating_hook(gcs_stack, monkeypatch, target)
    gcs_stack.grant_token_creator(target, caller["client_email"])
    ok, message = hook.test_connection()
    assert ok, message
    assert f"impersonating {target} from the Service Account Key" in message


def test_impersonation_refused_names_the_token_creator_role(
    gcs_stack: GCSTestStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = gcs_stack.new_impersonation_target()
    hook, _ = _impersonating_hook(gcs_stack, monkeypatch, target)
    ok, message = hook.test_connection()
    assert not ok
    assert f"Google refused to let the connection impersonate {target}" in message
    assert "roles/iam.serviceAccountTokenCreator" in message
