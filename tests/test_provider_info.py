"""The provider's self-description: valid for Airflow, and everything it names exists."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import airflow
import jsonschema

from ct_airflow_provider import get_provider_info


def test_provider_info_follows_airflows_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_every_module_and_hook_class_named_exists() -> None:
    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for connection in info["connection-types"]:
        module, _, name = connection["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == connection["connection-type"]
        assert hook.hook_name == connection["hook-name"]


def test_bucket_form_has_the_product_pages_three_fields() -> None:
    (bucket,) = [
        c for c in get_provider_info()["connection-types"] if c["connection-type"] == "clevertap_gcs"
    ]
    labels = [field["label"] for field in bucket["conn-fields"].values()]
    assert labels == ["Bucket nickname", "Service Account Key", "Bucket name"]
    assert bucket["conn-fields"]["service_account_key"]["schema"]["format"] == "password"
    assert set(bucket["ui-field-behaviour"]["hidden-fields"]) >= {
        "host",
        "login",
        "password",
        "port",
        "schema",
    }


def test_airflow_finds_both_connection_types_and_their_form_fields() -> None:
    """What the connection form is built from on every version: the hooks' widgets (read up to 3.1)
    and field behaviour; 3.2+ reads ``conn-fields`` (checked above) and still lists the hooks."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    hooks = manager.hooks
    for conn_type, hook_name in (("clevertap", "CleverTap"), ("clevertap_gcs", "CleverTap GCS bucket")):
        info = hooks[conn_type]
        assert info is not None and info.hook_name == hook_name and info.connection_testable
    widgets = manager.connection_form_widgets
    assert {
        "extra__clevertap__region",
        "extra__clevertap__timezone",
        "extra__clevertap_gcs__bucket_nickname",
        "extra__clevertap_gcs__service_account_key",
        "extra__clevertap_gcs__bucket_name",
    } <= set(widgets)
    behaviours = manager.field_behaviours
    assert behaviours["clevertap"]["relabeling"]["login"] == "Account ID"
    assert "password" in behaviours["clevertap_gcs"]["hidden_fields"]
