"""The two connection forms, described once.

Airflow 3.2 and later build a connection form from the provider info (``conn-fields`` and
``ui-field-behaviour``), earlier versions from the hook's ``get_connection_form_widgets`` and
``get_ui_field_behaviour``; both are made from the descriptions here, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ct_airflow_provider.clevertap_api import REGIONS


@dataclass(frozen=True)
class ExtraField:
    """A field of the form stored in the connection's extra.

    :param label: the field's label.
    :param description: the help text under it.
    :param placeholder: the text shown while it is empty.
    :param secret: masked like a password.
    :param choices: the values offered, besides empty.
    :param default: the value of a new connection.
    """

    label: str
    description: str = ""
    placeholder: str = ""
    secret: bool = False
    choices: tuple[str, ...] = ()
    default: str | None = None


@dataclass(frozen=True)
class ConnectionForm:
    """A connection type's form: the standard fields it hides or relabels, and its extra fields.

    :param hidden_fields: standard fields the form does not show.
    :param relabeling: labels of the standard fields it shows.
    :param placeholders: placeholders of the standard fields it shows.
    :param extras: the fields stored in the extra, in the order shown.
    """

    hidden_fields: tuple[str, ...]
    relabeling: dict[str, str] = field(default_factory=dict)
    placeholders: dict[str, str] = field(default_factory=dict)
    extras: dict[str, ExtraField] = field(default_factory=dict)

    def _all_placeholders(self) -> dict[str, str]:
        extras = {name: extra.placeholder for name, extra in self.extras.items() if extra.placeholder}
        return {**self.placeholders, **extras}

    def provider_info(self) -> dict[str, Any]:
        """The ``ui-field-behaviour`` and ``conn-fields`` of the provider info (Airflow 3.2 and later)."""
        conn_fields: dict[str, Any] = {}
        for name, extra in self.extras.items():
            schema: dict[str, Any] = {"type": ["string", "null"]}
            if extra.secret:
                schema["format"] = "password"
            if extra.choices:
                schema["enum"] = [None, *extra.choices]
            if extra.default is not None:
                schema["default"] = extra.default
            conn_fields[name] = {"label": extra.label, "description": extra.description, "schema": schema}
        return {
            "ui-field-behaviour": {
                "hidden-fields": list(self.hidden_fields),
                "relabeling": dict(self.relabeling),
                "placeholders": self._all_placeholders(),
            },
            "conn-fields": conn_fields,
        }

    def field_behaviour(self) -> dict[str, Any]:
        """What a hook's ``get_ui_field_behaviour`` returns (Airflow before 3.2)."""
        # Imported here: the provider info (read while Airflow configures itself) imports this module.
        from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS

        hidden = list(self.hidden_fields)
        if not AIRFLOW_V_3_0_PLUS and "extra" in hidden:
            # Airflow 2's Test button does nothing on a form that opened with Extra hidden (its script
            # saves the Extra editor, made only when Extra is shown), e.g. every edit form of this type.
            hidden.remove("extra")
        return {
            "hidden_fields": hidden,
            "relabeling": dict(self.relabeling),
            "placeholders": self._all_placeholders(),
        }

    def widgets(self) -> dict[str, Any]:
        """What a hook's ``get_connection_form_widgets`` returns (Airflow before 3.2).

        Airflow before 3.2 drops a connection type whose widgets are not all ``StringField``,
        ``PasswordField``, ``IntegerField`` or ``BooleanField``: a choice is a ``StringField`` shown
        as a select2 list (see :class:`_ChoiceWidget`).
        """
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import PasswordField, StringField

        widgets: dict[str, Any] = {}
        for name, extra in self.extras.items():
            label = lazy_gettext(extra.label)
            if extra.secret:
                widgets[name] = PasswordField(
                    label, description=extra.description, widget=_stored_secret_widget()
                )
            elif extra.choices:
                widgets[name] = StringField(
                    label,
                    description=extra.description,
                    default=extra.default,
                    widget=_ChoiceWidget(extra.choices),
                )
            else:
                widgets[name] = StringField(
                    label, description=extra.description, default=extra.default, widget=BS3TextFieldWidget()
                )
        return widgets


class _ChoiceWidget:
    """A text field shown as a choice, as FAB's ``Select2Widget`` shows a ``SelectField``.

    Renders a ``<select>`` of empty and ``choices`` that the page's script makes a select2 list.
    A stored value that is not among the choices stays offered, selected, so that saving the form
    does not change it unnoticed.

    :param choices: the values offered besides empty.
    """

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def __call__(self, field: Any, **kwargs: Any) -> Any:
        from markupsafe import Markup, escape
        from wtforms.widgets import html_params

        current = field.data or ""
        values = ["", *self.choices]
        if current not in values:
            values.append(current)
        kwargs.setdefault("id", field.id)
        kwargs.update({"class": "my_select2 form-control", "data-placeholder": "Select Value"})
        options = "".join(
            f"<option {html_params(value=value, selected=value == current)}>{escape(value)}</option>"
            for value in values
        )
        return Markup(f"<select {html_params(name=field.name, **kwargs)}>{options}</select>")


#: What Airflow 2's connection form holds instead of a stored secret; sent back, it keeps the secret.
AIRFLOW2_SECRET_PLACEHOLDER = "RATHER_LONG_SENSITIVE_FIELD_PLACEHOLDER"


def _stored_secret_widget() -> Any:
    """A password input that sends Airflow 2's placeholder back for a stored secret.

    A password input renders empty, and Airflow 2 drops an extra field submitted empty: saving an
    edit form without pasting the key again would delete the key. The placeholder makes Airflow keep
    it, and the secret itself never reaches the page.
    """
    from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget

    class StoredSecretWidget(BS3PasswordFieldWidget):  # type: ignore[misc]
        def __call__(self, field: Any, **kwargs: Any) -> Any:
            # The placeholder stands for a stored secret only: a key pasted into a form that failed
            # validation comes back empty (to paste again), or the placeholder would be saved instead.
            stored = field.data and (not field.raw_data or field.raw_data == [AIRFLOW2_SECRET_PLACEHOLDER])
            kwargs["value"] = AIRFLOW2_SECRET_PLACEHOLDER if stored else ""
            return super().__call__(field, **kwargs)

    widget = StoredSecretWidget()
    # Set after construction, not passed to it: Airflow 3.0/3.1 read the widgets with FAB's widgets
    # replaced by stand-ins that take no arguments when FAB is not installed.
    widget.hide_value = False
    return widget


CLEVERTAP_FORM = ConnectionForm(
    hidden_fields=("schema", "port", "extra"),
    relabeling={"login": "Account ID", "password": "Passcode", "host": "API base URL (optional override)"},
    placeholders={
        "login": "The Account ID from Settings > Project in the CleverTap dashboard",
        "password": "The Passcode from Settings > Project",
        "host": "Leave empty to use the region's host, e.g. https://in1.api.clevertap.com",
    },
    extras={
        "region": ExtraField(
            "Region",
            "The region of your CleverTap account; leave empty for Europe (api.clevertap.com).",
            placeholder="in1",
            choices=REGIONS,
        ),
        "timezone": ExtraField(
            "Account time zone",
            "The IANA time zone of the CleverTap account (Settings > Project), e.g. Asia/Kolkata.",
            placeholder="Asia/Kolkata",
            default="UTC",
        ),
    },
)

BUCKET_FORM = ConnectionForm(
    hidden_fields=("host", "schema", "login", "password", "port", "extra"),
    extras={
        "bucket_nickname": ExtraField("Bucket nickname", "Enter the nickname for your bucket."),
        "service_account_key": ExtraField(
            "Service Account Key",
            "Enter the contents of the downloaded Service Account Key JSON file. Leave it empty to "
            "authenticate with a Google Cloud connection, or with neither to use the worker's own identity "
            "(Application Default Credentials: workload identity on Cloud Composer and GKE).",
            secret=True,
        ),
        "bucket_name": ExtraField(
            "Bucket name", "Add the name of the bucket as given in the project (an exact match)."
        ),
        "gcp_conn_id": ExtraField(
            "Google Cloud connection (instead of a key)",
            "Optional: the id of a Google Cloud connection whose credentials reach the bucket, e.g. "
            "google_cloud_default. Leave empty when a key is given.",
        ),
        "impersonation_chain": ExtraField(
            "Impersonate service account",
            "Optional: a service account email to write as (or several, comma-separated: the last one writes). "
            "The identity above needs the Service Account Token Creator role on it.",
        ),
    },
)
