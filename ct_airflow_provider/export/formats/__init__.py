"""The four file formats of the product page: JSON, CSV, XML and Parquet.

Each module documents exactly how records look in its files; :func:`validate_format` checks a
format and compression pair before anything runs.
"""

from __future__ import annotations

from ct_airflow_provider.export.errors import ExportConfigError

#: The formats of the product page.
EXPORT_FORMATS = ("json", "csv", "xml", "parquet")

#: Codecs a Parquet export may use inside its files.
PARQUET_CODECS = ("snappy", "zstd", "gzip", "brotli", "lz4", "none")
DEFAULT_PARQUET_CODEC = "snappy"


def validate_format(export_format: str, compression: str | None) -> tuple[str, str | None]:
    """Check a format and a compression, and return them normalized (lower case, ``None`` for none).

    :param export_format: ``json``, ``csv``, ``xml`` or ``parquet`` (any case).
    :param compression: ``"gzip"`` for JSON, CSV or XML, or ``None`` (``""`` and ``"none"`` mean
        none too); Parquet files are compressed inside, so they take no compression here.
    :raises ExportConfigError: naming the bad value and the accepted ones.
    """
    if not isinstance(export_format, str) or export_format.lower() not in EXPORT_FORMATS:
        raise ExportConfigError(
            f"Unknown export format {export_format!r}; choose one of {', '.join(EXPORT_FORMATS)}."
        )
    export_format = export_format.lower()
    if isinstance(compression, str) and compression.lower() in ("", "none"):
        compression = None
    if compression is not None and (not isinstance(compression, str) or compression.lower() != "gzip"):
        raise ExportConfigError(f"Unknown compression {compression!r}; use 'gzip' or None.")
    if compression is not None and export_format == "parquet":
        raise ExportConfigError(
            "gzip applies to JSON, CSV and XML files; Parquet files are compressed inside "
            "(snappy by default), so leave compression unset for Parquet."
        )
    return export_format, None if compression is None else "gzip"
