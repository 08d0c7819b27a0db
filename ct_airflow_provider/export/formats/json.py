"""JSON: the first line names the event, then one compact JSON object per line.

Each line is the file record (``profile``, ``ts``, ``deviceInfo``, ``eventProps``, ``sessionProps``,
in that order, as on the product page; ``eventName`` is not repeated since the first line holds it).
Profile files start with the line ``profiles``. Text is UTF-8, not ASCII-escaped.

This module is also the export's one home of JSON text: every format writes and reads JSON through
it, with orjson, and with the standard library only where orjson cannot go (see below).
"""

from __future__ import annotations

# orjson refuses to write integers beyond 64 bits and reads them back as floats; the standard
# library writes and reads them exactly, so it is the fallback for those values, and only here.
import json
from collections.abc import Callable
from typing import Any

import orjson

from ct_airflow_provider.export.errors import ExportConfigError, ExportDataError

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
        return careful_line(record)


class JsonEncoder:
    """The :class:`~ct_airflow_provider.export.formats.RecordEncoder` of JSON: title line, one line a record.

    :param title: the event name, or ``profiles``.
    :raises ExportConfigError: if the name holds a line break.
    """

    footer = b""
    encode = staticmethod(encode_line)

    def __init__(self, title: str) -> None:
        self.header = title_line(title)


def json_text(value: Any) -> str:
    """Return a value as compact JSON text (non-ASCII kept as is), integers of any size exact.

    :param value: a value from a record.
    :raises ExportDataError: if it holds something JSON cannot express.
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ExportDataError(f"A value cannot be written as JSON: {exc}.") from exc


def careful_line(record: dict[str, Any]) -> bytes:
    """Return one record as a compact JSON line through the standard library (for what orjson refuses).

    :param record: a record.
    :raises ExportDataError: if the record holds something JSON cannot represent.
    """
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8") + b"\n"
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise ExportDataError(f"A record cannot be written as JSON: {exc}.") from exc


def decoder(careful: bool) -> Callable[[bytes | bytearray | str], Any]:
    """The parser of JSON text: orjson, or with ``careful`` the standard library (big integers exact).

    :param careful: whether the text may hold integers beyond 64 bits.
    """
    return json.loads if careful else orjson.loads
