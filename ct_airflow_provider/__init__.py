"""CleverTap to Google Cloud Storage provider for Apache Airflow."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: The oldest Airflow this provider works with (the oldest that common-compat and the Google provider 22.x support).
MIN_AIRFLOW_VERSION = "2.11.0"


def _check_airflow_version() -> None:
    """Refuse to load on an Airflow older than :data:`MIN_AIRFLOW_VERSION`, naming both versions.

    The version comes from the installed distribution's metadata, so that importing the Airflow-free
    export core does not load Airflow.
    """
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        airflow_version = version("apache-airflow")
    except PackageNotFoundError:  # Airflow run from a source tree, without installed metadata
        from airflow import __version__ as airflow_version

    if Version(Version(airflow_version).base_version) < Version(MIN_AIRFLOW_VERSION):
        raise RuntimeError(
            f"ct-airflow-provider {__version__} needs Apache Airflow {MIN_AIRFLOW_VERSION} or newer, but "
            f"apache-airflow {airflow_version} is installed. Upgrade Airflow (to 2.11 or any 3.x), "
            "or uninstall ct-airflow-provider."
        )


_check_airflow_version()


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    from ct_airflow_provider.config import config_section
    from ct_airflow_provider.connection_forms import BUCKET_FORM, CLEVERTAP_FORM

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
                    "ct_airflow_provider.operators.manifest",
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
        "config": config_section(),
        "connection-types": [
            {
                "connection-type": "clevertap_gcs",
                "hook-class-name": "ct_airflow_provider.hooks.gcs.CleverTapGCSHook",
                "hook-name": "CleverTap GCS bucket",
                **BUCKET_FORM.provider_info(),
            },
            {
                "connection-type": "clevertap",
                "hook-class-name": "ct_airflow_provider.hooks.clevertap.CleverTapHook",
                "hook-name": "CleverTap",
                **CLEVERTAP_FORM.provider_info(),
            },
        ],
    }
