"""Drive Airflow 3's Admin > Connections page the way a person does: by labels, roles and visible text."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Locator, Page, Route, expect

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
#: ``make screenshots`` sets this to write the pictures into docs/screenshots; other runs take the
#: same pictures into a temporary folder, so the committed ones change only when asked to.
REFRESH_VARIABLE = "CT_REFRESH_SCREENSHOTS"

#: Every picture the browser tests take, and what docs/connections.md shows with it.
SCREENSHOTS: dict[str, str] = {
    "gcs-form.png": "The CleverTap GCS bucket form: the three fields of CleverTap's own bucket form",
    "gcs-list.png": "The saved bucket connection in the list, with its Test button",
    "gcs-test-success.png": "Test of a bucket connection that works",
    "gcs-test-wrong-bucket.png": "Test with a bucket name that differs in case from the real bucket",
    "gcs-test-broken-key.png": "Test with a Service Account Key that was cut short when pasted",
    "gcs-edit.png": "Editing a bucket connection: the key is never shown back",
    "gcs-form-worker-identity.png": "A bucket connection without a key: the worker's own identity",
    "gcs-test-worker-identity.png": "Test of a bucket connection that uses the worker's identity",
    "clevertap-form.png": "The CleverTap account form: Account ID, Passcode, region and time zone",
    "clevertap-region-choice.png": "The region is a choice among CleverTap's regions",
    "clevertap-test-success.png": "Test of a CleverTap connection that works",
    "clevertap-test-wrong-passcode.png": "Test with a wrong passcode: credentials or region",
    # Taken on Airflow 2.11 (tests/ui/test_connections_ui_airflow2.py); `make screenshots` keeps them.
    "airflow2-gcs-form.png": "Airflow 2.11's form for a CleverTap GCS bucket, filled in",
    "airflow2-gcs-test-success.png": "Airflow 2.11: Test of a bucket connection that works",
}

TEST_SUCCEEDED_TITLE = "Test Connection Successful"
TEST_FAILED_TITLE = "Test Connection Failed"


def screenshot_dir(temporary: Path) -> Path:
    """docs/screenshots when refreshing them, else ``temporary``."""
    if os.environ.get(REFRESH_VARIABLE) == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS
    return temporary


@dataclass(frozen=True)
class TestResult:
    """What the Test button told the person: the toast's title and message."""

    __test__ = False  # not a pytest test class

    title: str
    message: str

    @property
    def succeeded(self) -> bool:
        return self.title == TEST_SUCCEEDED_TITLE


def send_empty_port_as_null(page: Page) -> None:
    """Correct the one field Airflow 3.3.2's Test button gets wrong, so the test reaches the hook.

    The button posts ``"port": Number(connection.port)``, which is ``0`` for a connection without a
    port, and the api-server then refuses the test with 400 "The host or port to test differs from
    the stored connection" (the person sees only "Bad Request"). Neither connection type of this
    provider has a port, so every Test would fail that way. The request is otherwise sent as the UI
    built it. ``test_airflow_test_button_sends_port_zero`` watches for the upstream fix.
    """

    def rewrite(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        if body.get("port") == 0:
            body["port"] = None
        route.continue_(post_data=json.dumps(body))

    page.route("**/api/v2/connections/test", rewrite)


class ConnectionsPage:
    """Admin > Connections of a running api-server, in one browser page.

    :param page: a Playwright page of a fresh browser context.
    :param base_url: the api-server's root URL.
    :param screenshots: where :meth:`screenshot` writes.
    """

    def __init__(self, page: Page, base_url: str, screenshots: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.screenshots = screenshots

    # -- navigation ---------------------------------------------------------------------------------
    def open_from_menu(self) -> None:
        """Home, then Admin > Connections in the side bar, as a person finds it."""
        self.page.goto(self.base_url + "/")
        self.page.get_by_role("button", name="Admin", exact=True).click()
        self.page.get_by_role("menuitem", name="Connections", exact=True).click()
        expect(self.page.get_by_role("button", name="Add Connection")).to_be_visible()

    def reload(self) -> None:
        """Reload the list (also clears the toasts of earlier tests)."""
        self.page.goto(self.base_url + "/connections")
        expect(self.page.get_by_role("button", name="Add Connection")).to_be_visible()

    # -- the add / edit dialog ----------------------------------------------------------------------
    def open_add_form(self) -> Locator:
        self.page.get_by_role("button", name="Add Connection").click()
        return self._dialog("Add Connection")

    def open_edit_form(self, connection_id: str) -> Locator:
        self.row(connection_id).get_by_role("button", name="Edit Connection").click()
        return self._dialog("Edit Connection")

    def _dialog(self, heading: str) -> Locator:
        # The dialog has no accessible name in Airflow 3.3: it is found by its heading.
        dialog = self.page.get_by_role("dialog").filter(has=self.page.get_by_role("heading", name=heading))
        expect(dialog).to_be_visible()
        return dialog

    def choose_connection_type(self, dialog: Locator, hook_name: str) -> None:
        """Pick a connection type by the name people see in the list (the hook name)."""
        dialog.get_by_role("combobox", name="Connection Type").fill(hook_name)
        self.page.get_by_role("option", name=hook_name, exact=True).click()
        expect(self.section_trigger(dialog, "Extra Fields")).to_be_visible()

    def section_trigger(self, dialog: Locator, title: str) -> Locator:
        return dialog.get_by_role("button", name=title, exact=True)

    def open_section(self, dialog: Locator, title: str) -> Locator:
        """Expand one of the form's sections ("Standard Fields", "Extra Fields", "Extra Fields JSON")."""
        trigger = self.section_trigger(dialog, title)
        if trigger.get_attribute("aria-expanded") != "true":
            trigger.click()
        # The region's aria-labelledby holds an id with a space, so it has no accessible name:
        # it is found through the id its trigger controls.
        section = dialog.locator(f'[id="{trigger.get_attribute("aria-controls")}"]')
        expect(section).to_be_visible()
        return section

    @staticmethod
    def field_labels(section: Locator) -> list[str]:
        """The labels of the fields in a section, in order, without the required-field star."""
        return [
            " ".join(text.replace("*", "").split()) for text in section.locator("label").all_text_contents()
        ]

    @staticmethod
    def field(section: Locator, label: str) -> Locator:
        """The input of the field with this label.

        Airflow 3.3's extra fields render ``<label for=…>`` pointing at another id than the input's,
        so ``get_by_label`` finds nothing there: the field is found through its group instead.
        """
        group = section.get_by_role("group").filter(
            has=section.page.locator("label").get_by_text(label, exact=True)
        )
        return group.locator("input:not([type=hidden]), textarea").first

    @staticmethod
    def help_text(section: Locator, label: str) -> Locator:
        group = section.get_by_role("group").filter(
            has=section.page.locator("label").get_by_text(label, exact=True)
        )
        return group.locator("[data-part=helper-text]")

    def choose(self, section: Locator, label: str, option: str) -> None:
        """Pick ``option`` in the drop-down field ``label``."""
        section.get_by_role("combobox", name=label).click()
        self.page.get_by_role("option", name=option, exact=True).click()

    def save(self, dialog: Locator) -> None:
        dialog.get_by_role("button", name="Save").click()
        expect(dialog).to_be_hidden()

    # -- the list -----------------------------------------------------------------------------------
    def row(self, connection_id: str) -> Locator:
        return self.page.get_by_role("row").filter(
            has=self.page.get_by_role("cell", name=connection_id, exact=True)
        )

    def test_connection(self, connection_id: str) -> TestResult:
        """Press the row's Test button and read the toast that answers.

        The page is reloaded first so that no earlier toast stands beside the answer. The toast
        disappears after two seconds; hovering it keeps it open for the screenshot.
        """
        self.reload()
        with self.page.expect_response("**/api/v2/connections/test"):
            self.row(connection_id).get_by_role("button", name="Test Connection").click()
        toast = self.page.get_by_role("status").filter(
            has=self.page.get_by_text(TEST_SUCCEEDED_TITLE).or_(self.page.get_by_text(TEST_FAILED_TITLE))
        )
        expect(toast).to_be_visible()
        toast.hover()
        title = toast.locator("[data-part=title]").inner_text()
        message = toast.locator("[data-part=description]").inner_text()
        return TestResult(title=title.strip(), message=" ".join(message.split()))

    # -- pictures -----------------------------------------------------------------------------------
    def screenshot(self, name: str, target: Locator | None = None) -> Path:
        """Take one of :data:`SCREENSHOTS`: the whole window, or just ``target``."""
        if name not in SCREENSHOTS:
            raise KeyError(
                f"{name!r} is not listed in SCREENSHOTS (so docs/connections.md would not show it)"
            )
        path = self.screenshots / name
        if target is None:
            self.page.screenshot(path=path, animations="disabled", caret="hide")
        else:
            target.screenshot(path=path, animations="disabled", caret="hide")
        return path
