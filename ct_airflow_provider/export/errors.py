"""Errors of the export core, each naming what went wrong and what to do about it."""

from __future__ import annotations


class ExportError(Exception):
    """Base class of every error raised by :mod:`ct_airflow_provider.export`."""


class ExportConfigError(ExportError, ValueError):
    """An export was asked for with settings that cannot work (raised before any record is read)."""


class ExportDataError(ExportError, ValueError):
    """A record from the API cannot be exported as it is (raised while records are read)."""


class ExportSinkError(ExportError):
    """A finished file could not be delivered to its destination."""
