"""CleverTap to Google Cloud Storage provider for Apache Airflow."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: The oldest Airflow this provider works with (the oldest that common-compat and the Google provider 22.x support).
MIN_AIRFLOW_VERSION = "2.11.0"


def _check_airflow_version() -> None:
    """Refuse to load on an Airflow older than :data:`MIN_AIRFLOW_VERSION`, naming both versions."""
    from airflow import __version__ as airflow_version
    from packaging.version import Version

    if Version(Version(airflow_version).base_version) < Version(MIN_AIRFLOW_VERSION):
        raise RuntimeError(
            f"ct-airflow-provider {__version__} needs Apache Airflow {MIN_AIRFLOW_VERSION} or newer, but "
            f"apache-airflow {airflow_version} is installed. Upgrade Airflow (to 2.11 or any 3.x), "
            "or uninstall ct-airflow-provider."
        )


_check_airflow_version()

#: Help texts of the bucket form, shared by the form of every Airflow version.
SERVICE_ACCOUNT_KEY_HELP = (
    "Enter the contents of the downloaded Service Account Key JSON file. Leave it empty to "
    "authenticate with a Google Cloud connection, or with neither to use the worker's own identity "
    "(Application Default Credentials: workload identity on Cloud Composer and GKE)."
)
GCP_CONN_ID_HELP = (
    "Optional: the id of a Google Cloud connection whose credentials reach the bucket, e.g. "
    "google_cloud_default. Leave empty when a key is given."
)
IMPERSONATION_CHAIN_HELP = (
    "Optional: a service account email to write as (or several, comma-separated: the last one writes). "
    "The identity above needs the Service Account Token Creator role on it."
)

REGIONS = ["in1", "sg1", "us1", "aps3", "mec1", "eu1"]


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "ct-airflow-provider",
        "name": "CleverTap to Google Cloud Storage",
        "description": "Export CleverTap events and user profiles to your own Google Cloud Storage buckets.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "CleverTap",
                "external-doc-url": "https://developer.clevertap.com/docs/api-overview",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": "CleverTap", "python-modules": ["ct_airflow_provider.hooks.clevertap"]},
            {
                "integration-name": "Google Cloud Storage (GCS)",
                "python-modules": ["ct_airflow_provider.hooks.gcs"],
            },
        ],
        "operators": [
            {
                "integration-name": "CleverTap",
                "python-modules": [
                    "ct_airflow_provider.operators.events",
                    "ct_airflow_provider.operators.profiles",
                    "ct_airflow_provider.operators.reconcile",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "CleverTap",
                "python-modules": ["ct_airflow_provider.sensors.profile_export"],
            }
        ],
        "triggers": [
            {
                "integration-name": "CleverTap",
                "python-modules": ["ct_airflow_provider.triggers.profile_export"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "clevertap_gcs",
                "hook-class-name": "ct_airflow_provider.hooks.gcs.CleverTapGCSHook",
                "hook-name": "CleverTap GCS bucket",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "login", "password", "port", "extra"],
                    "relabeling": {},
                    "placeholders": {},
                },
                "conn-fields": {
                    "bucket_nickname": {
                        "label": "Bucket nickname",
                        "description": "Enter the nickname for your bucket.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "service_account_key": {
                        "label": "Service Account Key",
                        "description": SERVICE_ACCOUNT_KEY_HELP,
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "bucket_name": {
                        "label": "Bucket name",
                        "description": "Add the name of the bucket as given in the project (an exact match).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "gcp_conn_id": {
                        "label": "Google Cloud connection (instead of a key)",
                        "description": GCP_CONN_ID_HELP,
                        "schema": {"type": ["string", "null"]},
                    },
                    "impersonation_chain": {
                        "label": "Impersonate service account",
                        "description": IMPERSONATION_CHAIN_HELP,
                        "schema": {"type": ["string", "null"]},
                    },
                },
            },
            {
                "connection-type": "clevertap",
                "hook-class-name": "ct_airflow_provider.hooks.clevertap.CleverTapHook",
                "hook-name": "CleverTap",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {
                        "login": "Account ID",
                        "password": "Passcode",
                        "host": "API base URL (optional override)",
                    },
                    "placeholders": {
                        "login": "The Account ID from Settings > Project in the CleverTap dashboard",
                        "password": "The Passcode from Settings > Project",
                        "host": "Leave empty to use the region's host, e.g. https://in1.api.clevertap.com",
                    },
                },
                "conn-fields": {
                    "region": {
                        "label": "Region",
                        "description": "The region of your CleverTap account; leave empty for Europe (api.clevertap.com).",
                        "schema": {"type": ["string", "null"], "enum": [None, *REGIONS]},
                    },
                    "timezone": {
                        "label": "Account time zone",
                        "description": "The IANA time zone of the CleverTap account (Settings > Project), e.g. Asia/Kolkata.",
                        "schema": {"type": ["string", "null"], "default": "UTC"},
                    },
                },
            },
        ],
    }
