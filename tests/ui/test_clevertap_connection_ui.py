"""Registering a CleverTap account in Airflow's UI: Account ID, Passcode, region as a choice, time zone."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Locator, expect

from ct_airflow_provider.clevertap_api import REGIONS
from ct_airflow_provider.testing.simulator import SimulatorServer, run_simulator
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

HOOK_NAME = "CleverTap"
ACCOUNT_TIMEZONE = "Asia/Kolkata"


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with run_simulator(timezone=ACCOUNT_TIMEZONE) as server:
        yield server


def fill_account(ui: ConnectionsPage, dialog: Locator, account_id: str, passcode: str, api_url: str) -> None:
    standard = ui.open_section(dialog, "Standard Fields")
    standard.get_by_label("API base URL (optional override)").fill(api_url)
    standard.get_by_label("Account ID").fill(account_id)
    standard.get_by_label("Passcode").fill(passcode)


def register_account(
    ui: ConnectionsPage, connection_id: str, passcode: str, simulator: SimulatorServer
) -> None:
    dialog = ui.open_add_form()
    dialog.get_by_label("Connection ID").fill(connection_id)
    ui.choose_connection_type(dialog, HOOK_NAME)
    fill_account(ui, dialog, simulator.account_id, passcode, simulator.url)
    extra = ui.open_section(dialog, "Extra Fields")
    ui.choose(extra, "Region", "in1")
    ui.field(extra, "Account time zone").fill(ACCOUNT_TIMEZONE)
    ui.save(dialog)
    expect(ui.row(connection_id)).to_be_visible()


def test_register_an_account_and_test_it(
    ui: ConnectionsPage, simulator: SimulatorServer, api_server: AirflowApiServer
) -> None:
    ui.open_from_menu()  # Admin > Connections
    dialog = ui.open_add_form()
    dialog.get_by_label("Connection ID").fill("clevertap_default")
    ui.choose_connection_type(dialog, HOOK_NAME)

    standard = ui.open_section(dialog, "Standard Fields")
    assert ui.field_labels(standard) == [
        "Description",
        "API base URL (optional override)",
        "Account ID",
        "Passcode",
    ]
    expect(standard.get_by_label("Account ID")).to_have_attribute(
        "placeholder", re.compile("Settings > Project")
    )
    expect(standard.get_by_label("Passcode")).to_have_attribute("type", "password")
    fill_account(ui, dialog, simulator.account_id, simulator.passcode, simulator.url)
    ui.screenshot("clevertap-form.png", dialog)

    extra = ui.open_section(dialog, "Extra Fields")
    assert ui.field_labels(extra) == ["Region", "Account time zone"]
    expect(ui.help_text(extra, "Region")).to_contain_text("leave empty for Europe")
    expect(ui.help_text(extra, "Account time zone")).to_contain_text("IANA time zone")
    expect(ui.field(extra, "Account time zone")).to_have_value("UTC")
    extra.get_by_role("combobox", name="Region").click()
    offered = ui.page.get_by_role("option").all_inner_texts()
    assert [region for region in offered if region in REGIONS] == list(REGIONS)
    ui.screenshot("clevertap-region-choice.png", dialog)
    ui.page.get_by_role("option", name="in1", exact=True).click()
    ui.field(extra, "Account time zone").fill(ACCOUNT_TIMEZONE)
    ui.save(dialog)

    row = ui.row("clevertap_default")
    expect(row.get_by_role("cell", name="clevertap", exact=True)).to_be_visible()
    result = ui.test_connection("clevertap_default")

    assert result.title == TEST_SUCCEEDED_TITLE, result.message
    assert result.message.startswith(
        f"Connected to CleverTap account {simulator.account_id} at {simulator.url}:"
    )
    assert result.message.endswith(f"account time zone {ACCOUNT_TIMEZONE}.")
    ui.screenshot("clevertap-test-success.png")
    assert simulator.passcode not in ui.page.content()
    assert simulator.passcode not in api_server.log_text()


def test_wrong_passcode_names_credentials_and_region(
    ui: ConnectionsPage, simulator: SimulatorServer, api_server: AirflowApiServer
) -> None:
    wrong_passcode = "WRONG-" + simulator.passcode[::-1]
    register_account(ui, "clevertap_wrong_passcode", wrong_passcode, simulator)

    result = ui.test_connection("clevertap_wrong_passcode")

    assert result.title == TEST_FAILED_TITLE
    assert f"CleverTap rejected the credentials of account '{simulator.account_id}'" in result.message
    assert "Either the Account ID or the Passcode is wrong" in result.message
    assert "or the region is not the account's" in result.message
    ui.screenshot("clevertap-test-wrong-passcode.png")
    assert wrong_passcode not in result.message
    assert wrong_passcode not in api_server.log_text()


def test_edit_never_shows_the_passcode(ui: ConnectionsPage, simulator: SimulatorServer) -> None:
    register_account(ui, "clevertap_edited", simulator.passcode, simulator)
    ui.reload()

    dialog = ui.open_edit_form("clevertap_edited")
    standard = ui.open_section(dialog, "Standard Fields")
    expect(standard.get_by_label("Account ID")).to_have_value(simulator.account_id)
    expect(standard.get_by_label("Passcode")).to_have_value("***")
    extra = ui.open_section(dialog, "Extra Fields")
    expect(extra.get_by_role("group").filter(has_text="Region")).to_contain_text("in1")
    expect(ui.field(extra, "Account time zone")).to_have_value(ACCOUNT_TIMEZONE)
    assert simulator.passcode not in ui.page.content()

    # Saving without retyping the passcode keeps the stored one.
    standard = ui.open_section(dialog, "Standard Fields")
    standard.get_by_label("Description").fill("Production account")
    ui.save(dialog)
    result = ui.test_connection("clevertap_edited")
    assert result.title == TEST_SUCCEEDED_TITLE, result.message
