"""JSON: the first line names the event, then one compact JSON object per line.

Each line is the file record (``profile``, ``ts``, ``deviceInfo``, ``eventProps``, ``sessionProps``,
in that order, as on the product page; ``eventName`` is not repeated since the first line holds it).
Profile files start with the line ``profiles``. Text is UTF-8, not ASCII-escaped. Integers beyond
64 bits (which the fast serializer refuses) are written exactly by the standard library instead.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from ct_airflow_provider.export.errors import ExportConfigError, ExportDataError
from ct_airflow_provider.export.records import shape_event

_OPTIONS = orjson.OPT_APPEND_NEWLINE


def title_line(title: str) -> bytes:
    """Return the first line of a JSON file: the event name (or ``profiles``) and a line feed.

    :param title: the event name.
    :raises ExportConfigError: if the name holds a line break, which would make it two lines.
    """
    if "\n" in title or "\r" in title:
        raise ExportConfigError(
            f"The event name {title!r} holds a line break, so it cannot be the first line of a JSON "
            "export file; export this event as CSV, XML or Parquet instead."
        )
    return title.encode("utf-8") + b"\n"


def encode_line(record: dict[str, Any]) -> bytes:
    """Return one record as a compact JSON line.

    :param record: a file record.
    :raises ExportDataError: if the record holds something JSON cannot represent.
    """
    try:
        return orjson.dumps(record, option=_OPTIONS)
    except TypeError:
        return _careful_line(record)


def encode_event(record: dict[str, Any]) -> bytes:
    """Return the JSON line of an API event record: :func:`encode_line` of its shaped record.

    :param record: an API event record (see :func:`~ct_airflow_provider.export.records.shape_event`).
    :raises ExportDataError: if the record cannot be shaped or holds something JSON cannot represent.
    """
    shaped = shape_event(record)
    # encode_line written out: this runs once per record, and the call would cost ~2% of it.
    try:
        return orjson.dumps(shaped, option=_OPTIONS)
    except TypeError:
        return _careful_line(shaped)


def _careful_line(record: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8") + b"\n"
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise ExportDataError(f"A record cannot be written as JSON: {exc}.") from exc


def decode_line(line: bytes, careful: bool = False) -> Any:
    """Read back a line written by :func:`encode_line` (``careful`` keeps integers beyond 64 bits exact).

    :param line: one JSON line.
    :param careful: parse with the standard library, which keeps big integers exact.
    """
    return json.loads(line) if careful else orjson.loads(line)
