"""Operators that export CleverTap data to Google Cloud Storage."""

from __future__ import annotations

from ct_airflow_provider.operators.events import CleverTapEventsToGCSOperator
from ct_airflow_provider.operators.manifest import CleverTapExportManifestOperator
from ct_airflow_provider.operators.profiles import CleverTapProfilesToGCSOperator
from ct_airflow_provider.operators.reconcile import CleverTapReconcileOperator

__all__ = [
    "CleverTapEventsToGCSOperator",
    "CleverTapExportManifestOperator",
    "CleverTapProfilesToGCSOperator",
    "CleverTapReconcileOperator",
]
