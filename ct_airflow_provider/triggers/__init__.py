"""Triggers that let this provider's sensors wait in the triggerer, holding no worker slot."""

from __future__ import annotations

from ct_airflow_provider.triggers.profile_export import RecurringProfileExportTrigger

__all__ = ["RecurringProfileExportTrigger"]
