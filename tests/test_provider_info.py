"""The provider's self-description: valid for Airflow, and everything it names exists."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import airflow
import jsonschema

from ct_airflow_provider import get_provider_info
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS


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
    # The product page's three fields first, then the two ways to authenticate without a key.
    assert labels == [
        "Bucket nickname",
        "Service Account Key",
        "Bucket name",
        "Google Cloud connection (instead of a key)",
        "Impersonate service account",
    ]
    assert bucket["conn-fields"]["service_account_key"]["schema"]["format"] == "password"
    assert set(bucket["ui-field-behaviour"]["hidden-fields"]) >= {
        "host",
        "login",
        "password",
        "port",
        "schema",
    }


#: Prints the connection forms of both types as Airflow 3's UI receives them.
_UI_FORMS = """
import json
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
forms = {}
for hook in HookMetaService.hook_meta_data():
    if hook.connection_type in ("clevertap", "clevertap_gcs"):
        fields = hook.standard_fields
        forms[hook.connection_type] = {
            "extra": sorted(hook.extra_fields or {}),
            "login": fields.login.title if fields and not fields.login.hidden else None,
            "password_hidden": bool(fields and fields.password.hidden),
        }
print(json.dumps(forms))
"""


def test_airflow_finds_both_connection_types_and_their_form_fields() -> None:
    """The connection form as each Airflow builds it: Airflow 2's webserver from the hooks' widgets and
    field behaviour; Airflow 3's UI from its hook metadata (``conn-fields`` from 3.2 on, the widgets
    read with FAB's Flask stack before)."""
    from airflow.providers_manager import ProvidersManager

    hooks = ProvidersManager().hooks
    for conn_type, hook_name in (("clevertap", "CleverTap"), ("clevertap_gcs", "CleverTap GCS bucket")):
        info = hooks[conn_type]
        assert info is not None and info.hook_name == hook_name and info.connection_testable
    if AIRFLOW_V_3_0_PLUS:
        # In a fresh process, as the API server builds it: once this process has loaded the hooks' widgets
        # unmocked, Airflow 3.0/3.1 would not read them again.
        shown = subprocess.run([sys.executable, "-c", _UI_FORMS], capture_output=True, text=True, check=True)
        forms = json.loads(shown.stdout.strip().splitlines()[-1])  # after any start-up log lines
        assert forms["clevertap"] == {
            "extra": ["region", "timezone"],
            "login": "Account ID",
            "password_hidden": False,
        }
        assert forms["clevertap_gcs"] == {
            "extra": [
                "bucket_name",
                "bucket_nickname",
                "gcp_conn_id",
                "impersonation_chain",
                "service_account_key",
            ],
            "login": None,
            "password_hidden": True,
        }
        return
    manager = ProvidersManager()
    assert {
        "extra__clevertap__region",
        "extra__clevertap__timezone",
        "extra__clevertap_gcs__bucket_nickname",
        "extra__clevertap_gcs__service_account_key",
        "extra__clevertap_gcs__bucket_name",
        "extra__clevertap_gcs__gcp_conn_id",
        "extra__clevertap_gcs__impersonation_chain",
    } <= set(manager.connection_form_widgets)
    assert manager.field_behaviours["clevertap"]["relabeling"]["login"] == "Account ID"
    assert "password" in manager.field_behaviours["clevertap_gcs"]["hidden_fields"]
