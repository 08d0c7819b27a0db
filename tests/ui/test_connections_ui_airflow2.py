"""Registering buckets and accounts in Airflow 2.11's UI (the Flask webserver), and testing them there.

Airflow 2.11's connection form is one page per connection, with a Test button beside Save that tests
what the form holds, so each test here fills the form, presses Test, and reads the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Locator, expect

from ct_airflow_provider.clevertap_api import REGIONS
from ct_airflow_provider.connection_forms import AIRFLOW2_SECRET_PLACEHOLDER
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from ct_airflow_provider.testing.simulator import SimulatorServer, run_simulator
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS
from tests.ui.airflow_server import AirflowApiServer
from tests.ui.connections_page_airflow2 import ConnectionsPageAirflow2
from tests.ui.test_clevertap_connection_ui import ACCOUNT_TIMEZONE
from tests.ui.test_clevertap_connection_ui import HOOK_NAME as ACCOUNT_HOOK_NAME
from tests.ui.test_gcs_connection_ui import (
    BUCKET,
    KEYLESS_FIELDS,
    PRODUCT_FIELDS,
    downloaded_key_file,
    secret_parts,
)
from tests.ui.test_gcs_connection_ui import HOOK_NAME as BUCKET_HOOK_NAME

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        AIRFLOW_V_3_0_PLUS,
        reason="Airflow 2.11's UI; the 3.x UI is covered by test_gcs_connection_ui.py / test_clevertap_connection_ui.py",
    ),
]

#: The fields of Airflow's form that come first on both connection types.
AIRFLOW_FIELDS = ["Connection Id", "Connection Type", "Description"]


@pytest.fixture(scope="module")
def bucket(gcs_stack: GCSTestStack) -> str:
    gcs_stack.create_bucket(BUCKET)
    return BUCKET


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with run_simulator(timezone=ACCOUNT_TIMEZONE) as server:
        yield server


def bucket_form(
    ui: ConnectionsPageAirflow2, connection_id: str, nickname: str, key_text: str, bucket_name: str
) -> Locator:
    """Add Connection, type "CleverTap GCS bucket", the three fields of the product page."""
    form = ui.open_add_form()
    ui.field(form, "Connection Id").fill(connection_id)
    ui.choose_connection_type(form, BUCKET_HOOK_NAME)
    ui.field(form, "Bucket nickname").fill(nickname)
    if key_text:
        ui.field(form, "Service Account Key").fill(key_text)
    ui.field(form, "Bucket name").fill(bucket_name)
    return form


# -- a bucket ----------------------------------------------------------------------------------------
def test_add_a_bucket_test_it_and_save_it(
    airflow2_ui: ConnectionsPageAirflow2, gcs_stack: GCSTestStack, bucket: str, api_server: AirflowApiServer
) -> None:
    ui = airflow2_ui
    key = gcs_stack.new_service_account_key()
    ui.open_from_menu()  # Admin > Connections
    form = ui.open_add_form()
    ui.field(form, "Connection Id").fill("analytics_bucket")
    ui.choose_connection_type(form, BUCKET_HOOK_NAME)

    # Of Airflow's own fields the id, the type, the Description and the Extra JSON remain (Airflow 2's
    # Test needs Extra on the page), then the product page's three fields and the keyless ways.
    assert ui.visible_field_labels(form) == [*AIRFLOW_FIELDS, "Extra", *PRODUCT_FIELDS, *KEYLESS_FIELDS]
    for label, help_start in KEYLESS_FIELDS.items():
        expect(ui.help_text(form, label)).to_have_text(re.compile("^" + re.escape(help_start)))
    expect(ui.field(form, "Service Account Key")).to_have_attribute("type", "password")

    ui.field(form, "Bucket nickname").fill("Analytics exports")
    ui.field(form, "Service Account Key").fill(downloaded_key_file(key))
    ui.field(form, "Bucket name").fill(bucket)
    ui.screenshot("airflow2-gcs-form.png", form)

    answer = ui.test(form)

    assert answer.succeeded, answer.message
    assert answer.message == (
        f"Connected to bucket '{bucket}' (Analytics exports) as {key['client_email']} with the Service "
        "Account Key: the credentials are valid and may write export files there."
    )
    ui.screenshot("airflow2-gcs-test-success.png")
    # The probe object the Test wrote was removed again.
    assert gcs_stack.list_objects(bucket) == {}

    ui.save(form)
    row = ui.row("analytics_bucket")
    expect(row.get_by_role("cell", name="clevertap_gcs", exact=True)).to_be_visible()
    assert api_server.stored_extra("analytics_bucket")["service_account_key"] == "***"

    page_text = ui.page.content()
    log_text = api_server.log_text()
    for secret in secret_parts(key):
        assert secret not in page_text
        assert secret not in log_text


def test_bucket_form_gives_the_product_pages_help_texts(airflow2_ui: ConnectionsPageAirflow2) -> None:
    ui = airflow2_ui
    form = ui.open_add_form()
    ui.choose_connection_type(form, BUCKET_HOOK_NAME)
    for label, help_start in PRODUCT_FIELDS.items():
        expect(ui.help_text(form, label)).to_have_text(re.compile("^" + re.escape(help_start)))


def test_key_cut_short_when_pasted_says_to_paste_the_whole_file(
    airflow2_ui: ConnectionsPageAirflow2, gcs_stack: GCSTestStack, bucket: str, api_server: AirflowApiServer
) -> None:
    ui = airflow2_ui
    key = gcs_stack.new_service_account_key()
    key_file = downloaded_key_file(key)
    cut_key = key_file[: key_file.index("-----BEGIN") + 405]
    form = bucket_form(ui, "broken_key_bucket", "Broken key", cut_key, bucket)

    answer = ui.test(form)

    assert not answer.succeeded
    assert answer.message == (
        "The Service Account Key is not valid JSON: paste the complete content of the downloaded "
        ".json key file, from the opening '{' to the closing '}'."
    )
    page_text = ui.page.content()
    log_text = api_server.log_text()
    for secret in secret_parts(key)[:2]:  # the part of the key that was pasted
        assert secret not in page_text
        assert secret not in log_text


def test_a_bucket_without_a_key_uses_the_workers_identity(
    airflow2_ui: ConnectionsPageAirflow2, bucket: str, api_server: AirflowApiServer
) -> None:
    ui = airflow2_ui
    form = bucket_form(ui, "composer_bucket", "Composer exports", "", bucket)
    expect(ui.help_text(form, "Service Account Key")).to_contain_text(
        "with neither to use the worker's own identity"
    )

    answer = ui.test(form)

    assert answer.succeeded, answer.message
    assert answer.message == (
        f"Connected to bucket '{bucket}' (Composer exports) as {api_server.worker_identity} through the "
        "worker's identity (Application Default Credentials): the credentials are valid and may write "
        "export files there."
    )
    assert "ya29." not in ui.page.content() and "ya29." not in api_server.log_text()


# -- an account ---------------------------------------------------------------------------------------
def account_form(
    ui: ConnectionsPageAirflow2, connection_id: str, passcode: str, simulator: SimulatorServer
) -> Locator:
    """Add Connection, type "CleverTap", the account of the simulator with ``passcode``."""
    form = ui.open_add_form()
    ui.field(form, "Connection Id").fill(connection_id)
    ui.choose_connection_type(form, ACCOUNT_HOOK_NAME)
    ui.field(form, "API base URL (optional override)").fill(simulator.url)
    ui.field(form, "Account ID").fill(simulator.account_id)
    ui.field(form, "Passcode").fill(passcode)
    ui.choose(form, "Region", "in1")
    ui.field(form, "Account time zone").fill(ACCOUNT_TIMEZONE)
    return form


def test_add_an_account_test_it_and_save_it(
    airflow2_ui: ConnectionsPageAirflow2, simulator: SimulatorServer, api_server: AirflowApiServer
) -> None:
    ui = airflow2_ui
    ui.open_from_menu()  # Admin > Connections
    form = account_form(ui, "clevertap_default", simulator.passcode, simulator)

    # Airflow's Host, Login and Password named as CleverTap names them; Schema and Port hidden, the
    # Extra JSON shown (Airflow 2's Test needs it on the page).
    assert ui.visible_field_labels(form) == [
        *AIRFLOW_FIELDS,
        "API base URL (optional override)",
        "Account ID",
        "Passcode",
        "Extra",
        "Region",
        "Account time zone",
    ]
    expect(ui.field(form, "Account ID")).to_have_attribute("placeholder", re.compile("Settings > Project"))
    expect(ui.field(form, "Passcode")).to_have_attribute("type", "password")
    expect(ui.help_text(form, "Region")).to_contain_text("empty for Europe")
    expect(ui.help_text(form, "Account time zone")).to_contain_text("IANA time zone")

    answer = ui.test(form)

    assert answer.succeeded, answer.message
    assert answer.message.startswith(
        f"Connected to CleverTap account {simulator.account_id} at {simulator.url}:"
    )
    assert answer.message.endswith(f"account time zone {ACCOUNT_TIMEZONE}.")
    ui.save(form)
    expect(ui.row("clevertap_default").get_by_role("cell", name="clevertap", exact=True)).to_be_visible()
    assert api_server.stored_extra("clevertap_default") == {"region": "in1", "timezone": ACCOUNT_TIMEZONE}
    assert simulator.passcode not in ui.page.content()
    assert simulator.passcode not in api_server.log_text()


def test_region_is_a_choice_among_clevertaps_regions(
    airflow2_ui: ConnectionsPageAirflow2, simulator: SimulatorServer, api_server: AirflowApiServer
) -> None:
    ui = airflow2_ui
    form = ui.open_add_form()
    ui.field(form, "Connection Id").fill("clevertap_singapore")
    ui.choose_connection_type(form, ACCOUNT_HOOK_NAME)
    ui.field(form, "Account ID").fill(simulator.account_id)
    ui.field(form, "Passcode").fill(simulator.passcode)

    # Empty at first (Europe, as the help text says); the list offers CleverTap's regions.
    expect(ui.field(form, "Region")).to_have_value("")
    offered = ui.open_choices(form, "Region").get_by_role("option").all_inner_texts()
    assert [text.strip() for text in offered] == list(REGIONS)
    ui.page.keyboard.press("Escape")
    ui.choose(form, "Region", "sg1")
    ui.save(form)

    assert api_server.stored_extra("clevertap_singapore")["region"] == "sg1"
    form = ui.open_edit_form("clevertap_singapore")
    expect(ui.field_row(form, "Region").get_by_role("combobox")).to_contain_text("sg1")


def test_wrong_passcode_names_credentials_and_region(
    airflow2_ui: ConnectionsPageAirflow2, simulator: SimulatorServer, api_server: AirflowApiServer
) -> None:
    ui = airflow2_ui
    wrong_passcode = "WRONG-" + simulator.passcode[::-1]
    form = account_form(ui, "clevertap_wrong_passcode", wrong_passcode, simulator)

    answer = ui.test(form)

    assert not answer.succeeded
    assert f"CleverTap rejected the credentials of account '{simulator.account_id}'" in answer.message
    assert "Either the Account ID or the Passcode is wrong" in answer.message
    assert "or the region is not the account's" in answer.message
    assert wrong_passcode not in answer.message
    assert wrong_passcode not in api_server.log_text()


# -- editing a saved connection ----------------------------------------------------------------------
def test_editing_a_bucket_keeps_the_key_not_pasted_again(
    airflow2_ui: ConnectionsPageAirflow2, gcs_stack: GCSTestStack, bucket: str, api_server: AirflowApiServer
) -> None:
    """The Edit form never holds the key; Test asks for it again, and Save without it keeps it."""
    ui = airflow2_ui
    key = gcs_stack.new_service_account_key()
    key_text = downloaded_key_file(key)
    ui.save(bucket_form(ui, "edited_bucket", "Before", key_text, bucket))

    form = ui.open_edit_form("edited_bucket")
    expect(ui.field(form, "Bucket name")).to_have_value(bucket)
    # Where the key was, the password field holds Airflow 2's placeholder for a stored secret.
    expect(ui.field(form, "Service Account Key")).to_have_value(AIRFLOW2_SECRET_PLACEHOLDER)
    page_text = ui.page.content()
    for secret in [*secret_parts(key), key["client_email"]]:
        assert secret not in page_text

    # Test sends what the form holds, the placeholder: the answer says to paste the key again.
    answer = ui.test(form)
    assert not answer.succeeded
    assert answer.message == (
        "The Service Account Key is not in the form: Airflow never sends a saved key back to the browser. "
        "Paste the key again to test the connection (saving without it keeps the saved key)."
    )

    ui.field(form, "Bucket nickname").fill("After")
    ui.save(form)
    assert api_server.stored_extra("edited_bucket")["bucket_nickname"] == "After"
    # The REST API masks the key: the CLI, in the server's environment, reads what is stored.
    # (The password input took the pasted file without its line breaks: the same JSON, the same key.)
    stored = api_server.stored_connection("edited_bucket")["extra_dejson"]
    assert isinstance(stored, dict)
    assert stored["bucket_nickname"] == "After"
    assert json.loads(stored["service_account_key"]) == key
    page_text = ui.page.content()
    log_text = api_server.log_text()
    for secret in secret_parts(key):
        assert secret not in page_text
        assert secret not in log_text


def test_editing_an_account_tests_with_the_passcode_typed_again_and_keeps_it(
    airflow2_ui: ConnectionsPageAirflow2, simulator: SimulatorServer, api_server: AirflowApiServer
) -> None:
    """Test works on the Edit form (it opens with Extra shown); Airflow's Passcode field starts empty."""
    ui = airflow2_ui
    ui.save(account_form(ui, "clevertap_edited", simulator.passcode, simulator))

    form = ui.open_edit_form("clevertap_edited")
    expect(ui.field(form, "Account ID")).to_have_value(simulator.account_id)
    expect(ui.field_row(form, "Region").get_by_role("combobox")).to_contain_text("in1")
    # Airflow never sends the stored password back: Test checks the form without a passcode.
    expect(ui.field(form, "Passcode")).to_have_value("")
    answer = ui.test(form)
    assert not answer.succeeded
    assert "has no Passcode: put it in the password field" in answer.message

    # Saving with the Passcode left empty keeps the stored one.
    ui.field(form, "Account time zone").fill("UTC")
    ui.save(form)
    stored = api_server.stored_connection("clevertap_edited")
    assert stored["password"] == simulator.passcode
    assert stored["extra_dejson"] == {"region": "in1", "timezone": "UTC"}

    # Typed again, the passcode passes the Test.
    form = ui.open_edit_form("clevertap_edited")
    ui.field(form, "Passcode").fill(simulator.passcode)
    answer = ui.test(form)
    assert answer.succeeded, answer.message
    assert answer.message.startswith(
        f"Connected to CleverTap account {simulator.account_id} at {simulator.url}:"
    )
    assert answer.message.endswith("account time zone UTC.")
    assert simulator.passcode not in ui.page.content()
    assert simulator.passcode not in api_server.log_text()
