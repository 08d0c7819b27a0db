"""Drive Airflow 2's Admin > Connections pages the way a person does: by labels, roles and visible text.

Airflow 2.11's UI is the Flask/FAB webserver: a list page (``/connection/list/``) and separate Add and
Edit pages, each one form with a Save and a Test button. The Test button posts what the form holds to
REST API v1 (``/api/v1/connections/test``) and shows the answer in the alert box above the form.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests.ui.connections_page import SCREENSHOTS

TEST_URL_PATTERN = "**/api/v1/connections/test"


def _label_text(label: str) -> re.Pattern[str]:
    """The text of the label ``label``, as FAB renders it: indented, a required field's with a star."""
    return re.compile(rf"^\s*{re.escape(label)}\s*\*?\s*$")


@dataclass(frozen=True)
class TestAnswer:
    """What the Test button answered: the message the page shows, and whether the test passed.

    Airflow 2.11 shows every answer the same way (the message alone, in the form's alert box);
    ``succeeded`` is the ``status`` of the answer the page received.
    """

    __test__ = False  # not a pytest test class

    succeeded: bool
    message: str


class ConnectionsPageAirflow2:
    """Admin > Connections of a running Airflow 2 webserver, in one browser page.

    :param page: a Playwright page.
    :param base_url: the webserver's root URL.
    :param screenshots: where :meth:`screenshot` writes.
    """

    def __init__(self, page: Page, base_url: str, screenshots: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.screenshots = screenshots

    # -- navigation ---------------------------------------------------------------------------------
    def open_from_menu(self) -> None:
        """Home, then Admin > Connections in the top menu, as a person finds it."""
        self.page.goto(self.base_url + "/home")
        self.page.get_by_role("link", name="Admin", exact=True).click()
        self.page.get_by_role("link", name="Connections", exact=True).click()
        expect(self.page.get_by_role("heading", name="List Connection")).to_be_visible()

    def reload(self) -> None:
        """Open the list (Save returns to the page the form was opened from)."""
        self.page.goto(self.base_url + "/connection/list/")
        expect(self.page.get_by_role("heading", name="List Connection")).to_be_visible()

    # -- the add / edit form ------------------------------------------------------------------------
    def open_add_form(self) -> Locator:
        """The list's "Add +" link."""
        self.page.get_by_role("link", name=re.compile(r"^Add\b")).click()
        return self._form("Add Connection")

    def open_edit_form(self, connection_id: str) -> Locator:
        """The row's Edit link."""
        self.row(connection_id).get_by_role("link", name=re.compile(r"^Edit\b")).click()
        return self._form("Edit Connection")

    def _form(self, heading: str) -> Locator:
        # The form has no accessible name: its panel is found by the panel's heading.
        panel = self.page.locator(".panel").filter(has=self.page.get_by_role("heading", name=heading))
        # The page's scripts add the Test button and turn Connection Type into a select2 widget
        # once the page has loaded; until then the form is plain HTML.
        expect(self.test_button(panel)).to_be_visible()
        self.page.wait_for_load_state("load")
        return panel

    def _label(self, label: str) -> Locator:
        return self.page.locator("label").filter(has_text=_label_text(label))

    def field_row(self, form: Locator, label: str) -> Locator:
        """The row of the field ``label``: its label, input and help text."""
        return form.get_by_role("row").filter(has=self._label(label))

    def choose_connection_type(self, form: Locator, hook_name: str) -> None:
        """Pick a connection type by the name people see in the list (the hook name).

        The list is long: type to filter it, then click the type.
        """
        self.choose(form, "Connection Type", hook_name, search=True)

    def open_choices(self, form: Locator, label: str) -> Locator:
        """Open the select2 widget of the field ``label``: the list of choices it shows."""
        self.field_row(form, label).get_by_role("combobox").click()
        choices = self.page.get_by_role("listbox")
        expect(choices).to_be_visible()
        return choices

    def choose(self, form: Locator, label: str, choice: str, *, search: bool = False) -> None:
        """Pick ``choice`` in the select2 widget of the field ``label``: open it, (type,) click.

        :param search: type ``choice`` into the widget's search box first, as one does in a long list.
        """
        choices = self.open_choices(form, label)
        if search:
            self.page.get_by_role("searchbox").fill(choice)
        choices.get_by_role("option", name=choice, exact=True).click()
        expect(self.field_row(form, label).get_by_role("combobox")).to_contain_text(choice)

    @staticmethod
    def visible_field_labels(form: Locator) -> list[str]:
        """The labels of the fields shown, in order, without the required-field star."""
        return [
            " ".join(text.replace("*", "").split())
            for text in form.locator("label:visible").all_inner_texts()
        ]

    @staticmethod
    def field(form: Locator, label: str) -> Locator:
        return form.get_by_label(_label_text(label))

    def help_text(self, form: Locator, label: str) -> Locator:
        return self.field_row(form, label).locator(".help-block")

    @staticmethod
    def test_button(form: Locator) -> Locator:
        return form.get_by_role("button", name=re.compile(r"^Test\b"))

    def test(self, form: Locator) -> TestAnswer:
        """Press the form's Test button and read the answer the page shows.

        The answer appears at the top of the page, above a form taller than the window: scrolled up
        to, as a person does to read it.
        """
        with self.page.expect_response(TEST_URL_PATTERN) as response_info:
            self.test_button(form).click()
        response = response_info.value
        if not response.ok:
            raise AssertionError(f"the test request answered {response.status}: {response.text()[:300]}")
        answer = response.json()
        alert = self.page.locator(".alert").first
        expect(alert).to_have_text(answer["message"])
        alert.evaluate("alert => alert.scrollIntoView({block: 'center'})")
        return TestAnswer(succeeded=answer["status"] is True, message=" ".join(alert.inner_text().split()))

    def save(self, form: Locator) -> None:
        """Save, back to the list."""
        form.get_by_role("button", name="Save").click()
        expect(self.page.get_by_role("heading", name="List Connection")).to_be_visible()

    # -- the list -----------------------------------------------------------------------------------
    def row(self, connection_id: str) -> Locator:
        return self.page.get_by_role("row").filter(
            has=self.page.get_by_role("cell", name=connection_id, exact=True)
        )

    # -- pictures -----------------------------------------------------------------------------------
    def screenshot(self, name: str, target: Locator | None = None) -> Path:
        """Take one of :data:`~tests.ui.connections_page.SCREENSHOTS`: the whole window, or ``target``.

        A ``target`` taller than the window is pictured in a window made tall enough for it, from the
        top of the page (else the page's fixed top menu would cover part of it).
        """
        if name not in SCREENSHOTS:
            raise KeyError(
                f"{name!r} is not listed in SCREENSHOTS (so docs/connections.md would not show it)"
            )
        path = self.screenshots / name
        if target is None:
            self.page.screenshot(path=path, animations="disabled", caret="hide")
            return path
        viewport = self.page.viewport_size
        self.page.evaluate("window.scrollTo(0, 0)")
        box = target.bounding_box()
        needed = math.ceil(box["y"] + box["height"]) + 16 if box else 0
        if viewport is not None and needed > viewport["height"]:
            self.page.set_viewport_size({"width": viewport["width"], "height": needed})
        try:
            target.screenshot(path=path, animations="disabled", caret="hide")
        finally:
            if viewport is not None:
                self.page.set_viewport_size(viewport)
        return path
