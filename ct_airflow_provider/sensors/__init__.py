"""Sensors that order CleverTap exports the way CleverTap requires."""

from __future__ import annotations

from ct_airflow_provider.sensors.profile_export import RecurringProfileExportSensor

__all__ = ["RecurringProfileExportSensor"]
