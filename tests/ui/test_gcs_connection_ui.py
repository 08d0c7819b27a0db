"""Registering a bucket in Airflow's UI, as CleverTap's "Configure CleverTap Dashboard" steps do in theirs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, expect

from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS
from tests.ui.airflow_server import AirflowApiServer
from tests.ui.connections_page import TEST_FAILED_TITLE, TEST_SUCCEEDED_TITLE, ConnectionsPage

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not AIRFLOW_V_3_0_PLUS,
        reason="Airflow 3's UI; Airflow 2.11's is covered by test_connections_ui_airflow2.py",
    ),
]

BUCKET = "ct-exports-ui"
HOOK_NAME = "CleverTap GCS bucket"
#: Labels and the start of each help text, word for word from the product page's bucket form.
PRODUCT_FIELDS = {
    "Bucket nickname": "Enter the nickname for your bucket.",
    "Service Account Key": "Enter the contents of the downloaded Service Account Key JSON file",
    "Bucket name": "Add the name of the bucket as given in the project",
}
#: The ways to authenticate without a key, after the product page's fields.
KEYLESS_FIELDS = {
    "Google Cloud connection (instead of a key)": "Optional: the id of a Google Cloud connection",
    "Impersonate service account": "Optional: a service account email to write as",
}


@pytest.fixture(scope="module")
def bucket(gcs_stack: GCSTestStack) -> str:
    gcs_stack.create_bucket(BUCKET)
    return BUCKET


def downloaded_key_file(key: dict[str, Any]) -> str:
    """The key as Google's console downloads it (indented JSON), for pasting."""
    return json.dumps(key, indent=2)


def secret_parts(key: dict[str, Any]) -> list[str]:
    """Pieces of a key that must never appear on a page or in a log."""
    pem_lines = [line for line in key["private_key"].splitlines() if line and not line.startswith("-----")]
    return [key["private_key_id"], pem_lines[0], pem_lines[-1]]


def register_bucket(
    ui: ConnectionsPage, connection_id: str, nickname: str, key_text: str, bucket_name: str
) -> None:
    """Add Connection, type "CleverTap GCS bucket", the three fields, Save."""
    dialog = ui.open_add_form()
    dialog.get_by_label("Connection ID").fill(connection_id)
    ui.choose_connection_type(dialog, HOOK_NAME)
    fields = ui.open_section(dialog, "Extra Fields")
    ui.field(fields, "Bucket nickname").fill(nickname)
    ui.field(fields, "Service Account Key").fill(key_text)
    ui.field(fields, "Bucket name").fill(bucket_name)
    ui.save(dialog)
    expect(ui.row(connection_id)).to_be_visible()


def test_register_a_bucket_and_test_it(
    ui: ConnectionsPage, gcs_stack: GCSTestStack, bucket: str, api_server: AirflowApiServer
) -> None:
    key = gcs_stack.new_service_account_key()
    ui.open_from_menu()  # Admin > Connections
    dialog = ui.open_add_form()
    dialog.get_by_label("Connection ID").fill("analytics_bucket")
    ui.choose_connection_type(dialog, HOOK_NAME)

    # Exactly the product page's three fields; of Airflow's standard fields only its own
    # Description remains (the form always has it).
    standard = ui.open_section(dialog, "Standard Fields")
    assert ui.field_labels(standard) == ["Description"]
    fields = ui.open_section(dialog, "Extra Fields")
    assert ui.field_labels(fields) == [*PRODUCT_FIELDS, *KEYLESS_FIELDS]
    for label, help_start in {**PRODUCT_FIELDS, **KEYLESS_FIELDS}.items():
        expect(ui.help_text(fields, label)).to_have_text(re.compile("^" + re.escape(help_start)))
    expect(ui.field(fields, "Service Account Key")).to_have_attribute("type", "password")

    ui.field(fields, "Bucket nickname").fill("Analytics exports")
    ui.field(fields, "Service Account Key").fill(downloaded_key_file(key))
    ui.field(fields, "Bucket name").fill(bucket)
    ui.screenshot("gcs-form.png", dialog)
    ui.save(dialog)

    row = ui.row("analytics_bucket")
    expect(row).to_be_visible()
    expect(row.get_by_role("cell", name="clevertap_gcs", exact=True)).to_be_visible()
    ui.screenshot("gcs-list.png")

    result = ui.test_connection("analytics_bucket")
    assert result.title == TEST_SUCCEEDED_TITLE, result.message
    assert result.message == (
        f"Connected to bucket '{bucket}' (Analytics exports) as {key['client_email']} with the Service "
        "Account Key: the credentials are valid and may write export files there."
    )
    ui.screenshot("gcs-test-success.png")
    # The probe object the Test wrote was removed again.
    assert gcs_stack.list_objects(bucket) == {}

    page_text = ui.page.content()
    log_text = api_server.log_text()
    for secret in secret_parts(key):
        assert secret not in page_text
        assert secret not in log_text


def test_register_a_bucket_without_a_key_using_the_workers_identity(
    ui: ConnectionsPage, gcs_stack: GCSTestStack, bucket: str, api_server: AirflowApiServer
) -> None:
    dialog = ui.open_add_form()
    dialog.get_by_label("Connection ID").fill("composer_bucket")
    ui.choose_connection_type(dialog, HOOK_NAME)
    fields = ui.open_section(dialog, "Extra Fields")
    expect(ui.help_text(fields, "Service Account Key")).to_contain_text(
        "with neither to use the worker's own identity"
    )
    ui.field(fields, "Bucket nickname").fill("Composer exports")
    ui.field(fields, "Bucket name").fill(bucket)
    ui.screenshot("gcs-form-worker-identity.png", dialog)
    ui.save(dialog)
    expect(ui.row("composer_bucket")).to_be_visible()

    result = ui.test_connection("composer_bucket")

    assert result.title == TEST_SUCCEEDED_TITLE, result.message
    assert result.message == (
        f"Connected to bucket '{bucket}' (Composer exports) as {api_server.worker_identity} through the "
        "worker's identity (Application Default Credentials): the credentials are valid and may write "
        "export files there."
    )
    ui.screenshot("gcs-test-worker-identity.png")
    assert "ya29." not in ui.page.content() and "ya29." not in api_server.log_text()


def test_wrong_bucket_name_is_named_with_the_right_one(
    ui: ConnectionsPage, gcs_stack: GCSTestStack, bucket: str
) -> None:
    key = gcs_stack.new_service_account_key()
    register_bucket(ui, "wrong_case_bucket", "Typo", downloaded_key_file(key), bucket.upper())

    result = ui.test_connection("wrong_case_bucket")

    assert result.title == TEST_FAILED_TITLE
    assert f"Bucket '{bucket.upper()}' does not exist, or the name is not an exact match." in result.message
    assert (
        f"A bucket named '{bucket}' exists: bucket names must match exactly, including case."
        in result.message
    )
    ui.screenshot("gcs-test-wrong-bucket.png")


def test_key_cut_short_when_pasted_says_to_paste_the_whole_file(
    ui: ConnectionsPage, gcs_stack: GCSTestStack, bucket: str, api_server: AirflowApiServer
) -> None:
    key = gcs_stack.new_service_account_key()
    key_file = downloaded_key_file(key)
    cut_key = key_file[: key_file.index("-----BEGIN") + 405]
    register_bucket(ui, "broken_key_bucket", "Broken key", cut_key, bucket)

    result = ui.test_connection("broken_key_bucket")

    assert result.title == TEST_FAILED_TITLE
    assert result.message == (
        "The Service Account Key is not valid JSON: paste the complete content of the downloaded "
        ".json key file, from the opening '{' to the closing '}'."
    )
    ui.screenshot("gcs-test-broken-key.png")
    log_text = api_server.log_text()
    for secret in secret_parts(key)[:2]:  # the part of the key that was pasted
        assert secret not in result.message
        assert secret not in log_text


def test_edit_never_shows_the_key_and_keeps_it(
    ui: ConnectionsPage, gcs_stack: GCSTestStack, bucket: str
) -> None:
    key = gcs_stack.new_service_account_key()
    register_bucket(ui, "edited_bucket", "Before", downloaded_key_file(key), bucket)
    ui.reload()

    dialog = ui.open_edit_form("edited_bucket")
    fields = ui.open_section(dialog, "Extra Fields")
    key_input = ui.field(fields, "Service Account Key")
    expect(key_input).to_have_value("***")
    dialog.get_by_role("button", name="Show value").click()
    expect(key_input).to_have_attribute("type", "text")
    expect(key_input).to_have_value("***")
    expect(ui.field(fields, "Bucket name")).to_have_value(bucket)
    ui.screenshot("gcs-edit.png", dialog)
    as_json = ui.open_section(dialog, "Extra Fields JSON")
    expect(as_json).to_contain_text('"service_account_key": "***"')
    page_text = ui.page.content()
    for secret in [*secret_parts(key), key["client_email"]]:
        assert secret not in page_text

    # Saving the edit without touching the masked key keeps the stored key.
    fields = ui.open_section(dialog, "Extra Fields")
    ui.field(fields, "Bucket nickname").fill("After")
    ui.save(dialog)
    result = ui.test_connection("edited_bucket")
    assert result.title == TEST_SUCCEEDED_TITLE, result.message
    assert f"Connected to bucket '{bucket}' (After) as {key['client_email']}" in result.message


def test_airflow_test_button_sends_port_zero(
    browser: BrowserContext,
    api_server: AirflowApiServer,
    gcs_stack: GCSTestStack,
    bucket: str,
    ui: ConnectionsPage,
) -> None:
    """Airflow 3.3.2's Test button fails for every connection without a port: watch for the fix.

    The other tests correct the request (see ``send_empty_port_as_null``). When this test fails,
    Airflow's button works unaided: remove that correction, this test, and the known-issue note in
    docs/connections.md.
    """
    key = gcs_stack.new_service_account_key()
    register_bucket(ui, "unaided_bucket", "Unaided", downloaded_key_file(key), bucket)
    page = browser.new_page()  # no correction on this tab
    try:
        unaided = ConnectionsPage(page, api_server.url, ui.screenshots)
        unaided.reload()
        result = unaided.test_connection("unaided_bucket")
    finally:
        page.close()
    assert (result.title, result.message) == (TEST_FAILED_TITLE, "Bad Request")
