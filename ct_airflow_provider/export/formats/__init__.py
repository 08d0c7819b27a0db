"""The four file formats of the product page, and the one contract every format's writer keeps.

Each module documents exactly how records look in its files. A file is :class:`RecordEncoder`'s
header, encoded records, footer; every format's writer is a :class:`FormatWriter`, whose files go
through one rotation layer (:mod:`~ct_airflow_provider.export.chunking`) or, for Parquet, keep its
size limit themselves. :func:`validate_format` checks a format and compression pair before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

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


class RecordEncoder(Protocol):
    """How a format starts a file (:attr:`header`; for CSV known once every column is), encodes one
    file record (:mod:`~ct_airflow_provider.export.records`), and ends a file (:attr:`footer`)."""

    @property
    def header(self) -> bytes: ...

    @property
    def footer(self) -> bytes: ...

    def encode(self, record: dict[str, Any]) -> bytes: ...


class FormatWriter(Protocol):
    """The writer of one export: pages of ``(yyyymmdd, record)`` in (:meth:`add`), every file handed
    to the delivery by :meth:`finish`, unfinished ones deleted by :meth:`abort` after a failure.

    Formats that know their layout up front (JSON, XML) stream records into files as they come;
    those that need every column before the first file (CSV, Parquet) spill records and write
    every file in :meth:`finish`.
    """

    def add(self, records: Iterable[tuple[int, dict[str, Any]]]) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...
