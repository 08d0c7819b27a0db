"""The bucket connection against the real local stack: fake-gcs-server, token endpoint, IAM gate."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ct_airflow_provider.hooks.gcs import CleverTapGCSHook, get_bucket_hook
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack

BUCKET = "ct-exports"

TestConn = Callable[..., tuple[bool, str]]


@pytest.fixture(scope="module")
def bucket(gcs_stack: GCSTestStack) -> str:
    gcs_stack.create_bucket(BUCKET)
    return BUCKET


@pytest.fixture(scope="module")
def admin_key(gcs_stack: GCSTestStack) -> dict[str, Any]:
    return gcs_stack.new_service_account_key("storage_admin")


@pytest.fixture
def test_conn(monkeypatch: pytest.MonkeyPatch, gcs_stack: GCSTestStack, bucket: str) -> TestConn:
    def run(key: dict[str, Any] | str, bucket_name: str = bucket) -> tuple[bool, str]:
        monkeypatch.setenv("AIRFLOW_CONN_CT_BUCKET", gcs_stack.connection_env(bucket_name, key, "Exports"))
        return CleverTapGCSHook(gcs_conn_id="ct_bucket").test_connection()

    return run


def test_valid_key_and_bucket_pass_and_leave_no_probe_behind(
    test_conn: TestConn, admin_key: dict[str, Any], gcs_stack: GCSTestStack, bucket: str
) -> None:
    ok, message = test_conn(admin_key)
    assert ok, message
    assert f"'{bucket}'" in message and admin_key["client_email"] in message
    assert gcs_stack.list_objects(bucket) == {}


def test_key_given_as_json_object_in_extra_works(
    monkeypatch: pytest.MonkeyPatch, gcs_stack: GCSTestStack, bucket: str, admin_key: dict[str, Any]
) -> None:
    conn = {"conn_type": "clevertap_gcs", "extra": {"bucket_name": bucket, "service_account_key": admin_key}}
    monkeypatch.setenv("AIRFLOW_CONN_CT_OBJ", orjson.dumps(conn).decode())
    hook = CleverTapGCSHook(gcs_conn_id="ct_obj")
    assert hook.test_connection()[0]
    assert hook.bucket_nickname == bucket  # no nickname given: the bucket name stands in


@pytest.mark.parametrize(
    ("make_key", "expected"),
    [
        (lambda key: "", "uses the worker's own identity, but this worker has no Application Default"),
        (lambda key: "{not json", "is not valid JSON"),
        (lambda key: {"installed": {"client_id": "1.apps.googleusercontent.com"}}, "OAuth client ID file"),
        (lambda key: {**key, "type": "authorized_user"}, "of type 'authorized_user'"),
        (
            lambda key: {k: v for k, v in key.items() if k != "client_email"},
            "lacks the field(s) client_email",
        ),
        (
            lambda key: {**key, "private_key": key["private_key"][:400]},
            "private key inside the Service Account Key is malformed",
        ),
        # What Airflow 2's Edit form sends for a saved key (it never sends the key itself).
        (lambda key: "RATHER_LONG_SENSITIVE_FIELD_PLACEHOLDER", "Paste the key again to test the connection"),
    ],
    ids=[
        "empty",
        "not-json",
        "oauth-client",
        "wrong-type",
        "missing-field",
        "truncated-private-key",
        "airflow2-edit-form",
    ],
)
def test_broken_keys_fail_with_the_cause_and_remedy(
    test_conn: TestConn, admin_key: dict[str, Any], make_key: Callable[[dict[str, Any]], Any], expected: str
) -> None:
    ok, message = test_conn(make_key(admin_key))
    assert not ok
    assert expected in message
    assert "PRIVATE KEY" not in message and admin_key["private_key_id"] not in message


def test_key_google_refuses_asks_for_a_new_key(test_conn: TestConn, gcs_stack: GCSTestStack) -> None:
    ok, message = test_conn(gcs_stack.new_service_account_key(registered=False))
    assert not ok
    assert (
        "Google refused the Service Account Key" in message
        and "Generate the service account key again" in message
    )


def test_bucket_name_in_wrong_case_names_the_exact_bucket(
    test_conn: TestConn, admin_key: dict[str, Any]
) -> None:
    ok, message = test_conn(admin_key, bucket_name="CT-Exports")
    assert not ok
    assert "'CT-Exports' does not exist" in message and "A bucket named 'ct-exports' exists" in message


def test_missing_bucket(test_conn: TestConn, admin_key: dict[str, Any]) -> None:
    ok, message = test_conn(admin_key, bucket_name="no-such-bucket")
    assert not ok
    assert "'no-such-bucket' does not exist" in message and "Storage > Buckets" in message


@pytest.mark.parametrize(
    ("role", "expected"), [("object_viewer", "not write"), ("no_access", "may not read")]
)
def test_missing_permission_names_the_roles(
    test_conn: TestConn, gcs_stack: GCSTestStack, role: Any, expected: str
) -> None:
    ok, message = test_conn(gcs_stack.new_service_account_key(role))
    assert not ok
    assert expected in message and "roles/storage.admin" in message and "roles/storage.objectAdmin" in message


def test_token_endpoint_down_fails_within_seconds(
    test_conn: TestConn, gcs_stack: GCSTestStack, admin_key: dict[str, Any]
) -> None:
    started = time.monotonic()
    with gcs_stack.token_endpoint_down():
        ok, message = test_conn(admin_key)
    assert not ok and "Could not reach Google's token endpoint" in message
    assert time.monotonic() - started < 15


def test_token_endpoint_unreachable_fails_within_seconds(
    test_conn: TestConn, admin_key: dict[str, Any]
) -> None:
    started = time.monotonic()
    ok, message = test_conn({**admin_key, "token_uri": "http://127.0.0.1:9/token"})
    assert not ok and "Could not reach Google's token endpoint" in message
    assert time.monotonic() - started < 15


def test_storage_endpoint_down_fails_within_seconds(
    test_conn: TestConn, admin_key: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    started = time.monotonic()
    ok, message = test_conn(admin_key)
    assert not ok and "Could not reach Google Cloud Storage at http://127.0.0.1:9" in message
    assert time.monotonic() - started < 15


def test_upload_list_read_delete_in_the_configured_bucket(
    monkeypatch: pytest.MonkeyPatch,
    gcs_stack: GCSTestStack,
    bucket: str,
    admin_key: dict[str, Any],
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CT_BUCKET", gcs_stack.connection_env(bucket, admin_key))
    hook = get_bucket_hook("ct_bucket")
    upload = hook.start_file_upload(io.BytesIO(b"Charged\n{}\n"), "exports/part.json", "application/json")
    upload.send_chunk()
    assert upload.finished
    hook.upload_bytes(b"{}", "exports/manifest.json", "application/json")
    assert sorted(hook.list_objects("exports/")) == ["exports/manifest.json", "exports/part.json"]
    assert hook.read_object("exports/part.json") == b"Charged\n{}\n"
    assert hook.uri("exports/part.json") == f"gs://{bucket}/exports/part.json"
    hook.delete_object("exports/part.json")
    hook.delete_object("exports/part.json")  # already gone: not an error
    hook.delete_object("exports/manifest.json")
    assert gcs_stack.list_objects(bucket, "exports/") == {}


def test_a_connection_of_another_type_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_PLAIN_GCP", orjson.dumps({"conn_type": "google_cloud_platform"}).decode()
    )
    with pytest.raises(ValueError, match="exports need a 'clevertap_gcs' connection"):
        get_bucket_hook("plain_gcp")


def test_key_is_never_in_the_hook_repr_or_errors(
    monkeypatch: pytest.MonkeyPatch, gcs_stack: GCSTestStack, admin_key: dict[str, Any]
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CT_BUCKET", gcs_stack.connection_env("", admin_key))
    hook = CleverTapGCSHook(gcs_conn_id="ct_bucket")
    with pytest.raises(ValueError, match="has no Bucket name") as error:
        _ = hook.bucket_name
    for text in (repr(hook), str(error.value)):
        assert admin_key["private_key"][40:80] not in text


@pytest.fixture
def airflow_cli_env(
    gcs_stack: GCSTestStack, bucket: str, admin_key: dict[str, Any]
) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env["AIRFLOW_CONN_CT_BUCKET"] = gcs_stack.connection_env(bucket, admin_key, "Exports")
    env["AIRFLOW_CONN_CT_WRONG_CASE"] = gcs_stack.connection_env(bucket.upper(), admin_key)
    env["STORAGE_EMULATOR_HOST"] = gcs_stack.emulator_url
    # Only the commands' output on stdout (Airflow 3.0 logs its start-up there at INFO).
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    yield env


def _airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    return subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=180)


def test_airflow_cli_connections_test(airflow_cli_env: dict[str, str], admin_key: dict[str, Any]) -> None:
    good = _airflow(airflow_cli_env, "connections", "test", "ct_bucket")
    assert "Connection success!" in good.stdout, good.stdout + good.stderr
    bad = _airflow(airflow_cli_env, "connections", "test", "ct_wrong_case")
    assert "A bucket named 'ct-exports' exists" in bad.stdout + bad.stderr
    for output in (good.stdout + good.stderr, bad.stdout + bad.stderr):
        assert admin_key["private_key"][40:80] not in output


def test_airflow_lists_the_provider_and_its_connection_types(airflow_cli_env: dict[str, str]) -> None:
    providers = _airflow(airflow_cli_env, "providers", "list", "--output", "json")
    assert "ct-airflow-provider" in providers.stdout, providers.stderr
    hooks = _airflow(airflow_cli_env, "providers", "hooks", "--output", "json")
    listed = {row["connection_type"]: row for row in orjson.loads(hooks.stdout)}
    assert listed["clevertap_gcs"]["class"] == "ct_airflow_provider.hooks.gcs.CleverTapGCSHook"
    assert listed["clevertap"]["class"] == "ct_airflow_provider.hooks.clevertap.CleverTapHook"


def test_a_file_upload_reads_each_chunk_from_the_growing_file_and_creates_the_object_at_its_end(
    monkeypatch: pytest.MonkeyPatch,
    gcs_stack: GCSTestStack,
    bucket: str,
    admin_key: dict[str, Any],
    tmp_path: Path,
) -> None:
    # The private Google client method behind start_file_upload is checked here, on every version leg.
    monkeypatch.setenv("AIRFLOW_CONN_CT_BUCKET", gcs_stack.connection_env(bucket, admin_key))
    hook = get_bucket_hook("ct_bucket")
    chunk = hook.upload_chunk_bytes
    data = os.urandom(chunk) + b"tail"
    growing = tmp_path / "streamed.json"
    growing.write_bytes(data[:chunk])  # one whole chunk on disk, the rest not written yet
    with growing.open("rb") as source:
        upload = hook.start_file_upload(source, "exports/streamed.json", "application/x-ndjson")
        upload.send_chunk()  # the whole chunk leaves...
        assert source.tell() == chunk and not upload.finished
        assert gcs_stack.list_objects(bucket, "exports/") == {}  # ...but no object before the end
        with growing.open("ab") as writer:
            writer.write(data[chunk:])
        upload.send_chunk()  # the short last chunk: the object is made
        assert upload.finished
    assert hook.read_object("exports/streamed.json") == data
    # A file of exactly one chunk: the chunk leaves, then an empty last chunk ends the upload.
    exact = tmp_path / "exact.json"
    exact.write_bytes(data[:chunk])
    with exact.open("rb") as source:
        upload = hook.start_file_upload(source, "exports/exact.json", "application/x-ndjson")
        upload.send_chunk()
        assert not upload.finished
        upload.send_chunk()
        assert upload.finished
    assert hook.read_object("exports/exact.json") == data[:chunk]
    # A cancelled upload creates no object, even after a chunk was sent.
    with exact.open("rb") as source:
        abandoned = hook.start_file_upload(source, "exports/abandoned.json", "application/x-ndjson")
        abandoned.send_chunk()
        abandoned.cancel()
    assert gcs_stack.list_objects(bucket, "exports/") == {
        "exports/streamed.json": len(data),
        "exports/exact.json": chunk,
    }
