"""Record shaping: an API event record becomes the record the export files hold.

The API sends ``{"profile", "ts", "event_props", "session_props"}`` (and device fields when asked
with ``app=true``); files carry the camelCase keys ``profile``, ``ts``, ``deviceInfo`` (when
present), ``eventProps`` and ``sessionProps`` (when present), in that order, which is the order of
the JSON sample of the product page. ``eventName`` is not repeated in JSON lines (the first line of a
JSON file names the event); CSV, XML and Parquet add it as the second field after ``ts``.

A key absent from the API record stays absent from the file record. Either spelling of a renamed
key is accepted (``event_props`` or ``eventProps``). Device fields come from a top-level
``deviceInfo`` (or ``device_info``) object, or -- as the API sends them with ``app=true`` -- from the
profile: the profile keys in :data:`DEVICE_FIELDS` move from ``profile`` to ``deviceInfo`` (in the
order of :data:`DEVICE_FIELDS`, whatever the profile's; a top-level ``deviceInfo`` wins for a key
found in both). Any other top-level key is kept under its own name, after the known ones, so that
no field is dropped. Profile records keep their own shape: they are written as the API sends them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from itertools import compress
from typing import Any

from ct_airflow_provider.export.errors import ExportDataError

#: The file keys of an event record, in the order CSV, XML and Parquet put them.
EVENT_FILE_KEYS = ("ts", "eventName", "profile", "deviceInfo", "eventProps", "sessionProps")

#: API spelling -> file key, for the keys that are renamed or have two spellings.
_ALIASES: dict[str, str] = {
    "deviceInfo": "deviceInfo",
    "device_info": "deviceInfo",
    "eventProps": "eventProps",
    "event_props": "eventProps",
    "sessionProps": "sessionProps",
    "session_props": "sessionProps",
}
#: Profile keys that describe the device rather than the user; they go to ``deviceInfo``, in this order.
DEVICE_FIELDS = (
    "make",
    "model",
    "os_version",
    "app_version",
    "sdk_version",
    "browser",
    "browser_version",
    "device_type",
)

#: Where each object field of a file record is in an API record of the API's own layout (exactly
#: ``profile``, ``ts``, ``event_props`` and ``session_props``, three objects): the device fields
#: of ``deviceInfo`` are the profile's keys in :data:`DEVICE_FIELDS`; fields not listed are absent.
API_LAYOUT_SOURCES = {
    "profile": "profile",
    "deviceInfo": "profile",
    "eventProps": "event_props",
    "sessionProps": "session_props",
}

_KNOWN = frozenset({"profile", "ts", *_ALIASES})
_RESERVED_EXTRAS = frozenset({"eventName", "event_name"})
_ABSENT: Any = object()

# 14-digit yyyyMMddHHmmss.
_TS_MIN = 10000101000000
_TS_MAX = 99991231235959
_ONLY_INTEGERS = frozenset({int})


def shape_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return the file record of one API event record (see the module documentation for the rules).

    :param record: one element of the ``records`` list of an events page.
    :raises ExportDataError: if the record has no ``ts``, names a key twice (``event_props`` and
        ``eventProps``), or carries its own ``eventName``.
    """
    # Nearly every record has exactly the API's four keys: build it in one go. This runs once per
    # record and costs about as much as serializing it, so it is kept to the fewest operations.
    if len(record) == 4:
        try:
            profile = record["profile"]
            ts = record["ts"]
            event_props = record["event_props"]
            session_props = record["session_props"]
        except KeyError:
            return _shape_any(record)
        if type(profile) is dict:
            device, profile = split_device_fields(profile)
            if device:
                return {
                    "profile": profile,
                    "ts": ts,
                    "deviceInfo": device,
                    "eventProps": event_props,
                    "sessionProps": session_props,
                }
        return {"profile": profile, "ts": ts, "eventProps": event_props, "sessionProps": session_props}
    return _shape_any(record)


def shape_for_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The record itself if it is in the API's own layout (see :data:`API_LAYOUT_SOURCES`), else
    :func:`shape_event` of it: for a writer that reads file fields from that layout (CSV's columns),
    which saves a shaped copy per record. A record it returns holds ``event_props`` only if unshaped.

    :param record: one element of the ``records`` list of an events page.
    """
    if (
        len(record) == 4
        and type(record.get("profile")) is dict
        and type(record.get("event_props")) is dict
        and type(record.get("session_props")) is dict
        and "ts" in record
    ):
        return record
    return shape_event(record)


def _shape_any(record: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`shape_event` for any layout: other spellings, absent keys, a ``deviceInfo``, extras."""
    shaped: dict[str, Any] = {}
    found = 1
    device_from_profile = None
    value = record.get("profile", _ABSENT)
    if value is not _ABSENT:
        if type(value) is dict:
            device, value = split_device_fields(value)
            device_from_profile = device or None
        shaped["profile"] = value
        found += 1
    try:
        shaped["ts"] = record["ts"]
    except KeyError:
        raise ExportDataError(f"An event record has no 'ts' (keys: {sorted(record)}).") from None
    value = record.get("deviceInfo", _ABSENT)
    if value is _ABSENT:
        value = record.get("device_info", _ABSENT)
    if value is not _ABSENT:
        if device_from_profile is not None and type(value) is dict:
            device_from_profile.update(value)
            value = device_from_profile
        shaped["deviceInfo"] = value
        found += 1
    elif device_from_profile is not None:
        shaped["deviceInfo"] = device_from_profile
    value = record.get("event_props", _ABSENT)
    if value is _ABSENT:
        value = record.get("eventProps", _ABSENT)
    if value is not _ABSENT:
        shaped["eventProps"] = value
        found += 1
    value = record.get("session_props", _ABSENT)
    if value is _ABSENT:
        value = record.get("sessionProps", _ABSENT)
    if value is not _ABSENT:
        shaped["sessionProps"] = value
        found += 1
    if len(record) != found:
        _add_extras(record, shaped)
    return shaped


def split_device_fields(profile: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(device fields in the order of DEVICE_FIELDS, the rest in the profile's order)``.

    The profile itself (not a copy) is the rest when it holds no device field.

    :param profile: an API record's profile.
    """
    device: dict[str, Any] = {}
    rest = None  # (a test against None is cheaper than one against the profile)
    for key in DEVICE_FIELDS:
        if key in profile:
            if rest is None:
                rest = profile.copy()
            device[key] = rest.pop(key)
    return device, profile if rest is None else rest


def _add_extras(record: Mapping[str, Any], shaped: dict[str, Any]) -> None:
    seen_file_keys: set[str] = set()
    for key, value in record.items():
        if key in _KNOWN:
            file_key = _ALIASES.get(key, key)
            if file_key in seen_file_keys:
                raise ExportDataError(
                    f"An event record carries {file_key!r} under two spellings; keep only one of "
                    f"{sorted(k for k, v in _ALIASES.items() if v == file_key)}."
                )
            seen_file_keys.add(file_key)
        elif key in _RESERVED_EXTRAS:
            raise ExportDataError(
                f"An event record carries its own {key!r}; the export names the event itself, "
                "so records must not repeat it."
            )
        else:
            shaped[key] = value


def check_ts(ts: object) -> int:
    """Return ``ts`` if it is a 14-digit ``yyyyMMddHHmmss`` integer, else raise a clear error.

    :param ts: the ``ts`` of an API record.
    :raises ExportDataError: if ``ts`` is not such an integer.
    """
    if type(ts) is not int or not _TS_MIN <= ts <= _TS_MAX:
        raise ExportDataError(
            f"A record's ts must be a 14-digit integer yyyyMMddHHmmss (as the CleverTap API sends it), "
            f"got {ts!r}."
        )
    return ts


def days_of_page(
    page: list[dict[str, Any]], keep: Callable[[int], bool] | None
) -> tuple[list[int], list[dict[str, Any]]]:
    """``(yyyymmdd of each kept record, the kept records)`` of one events page, its ``ts`` checked.

    The checks are a few C-level passes over the page (the stamps, the set of their types, min and
    max) rather than a step per record; only a page that fails them is looked at record by record.

    :param page: API event records.
    :param keep: optional predicate on a record's ``ts``; records for which it is false are left out.
    :raises ExportDataError: for a record without a valid ``ts`` (the first such record).
    """
    try:
        stamps = [record["ts"] for record in page]
    except (KeyError, TypeError, IndexError):
        for record in page:
            if not isinstance(record, Mapping) or "ts" not in record:
                raise ExportDataError(
                    f"An events page holds a record without 'ts': {describe_record(record)}."
                ) from None
        raise
    if stamps and (
        set(map(type, stamps)) != _ONLY_INTEGERS or min(stamps) < _TS_MIN or max(stamps) > _TS_MAX
    ):
        for ts in stamps:
            check_ts(ts)
    if keep is not None:
        kept = list(map(keep, stamps))
        if not all(kept):
            page = list(compress(page, kept))
            stamps = list(compress(stamps, kept))
    return [ts // 1_000_000 for ts in stamps], page


def describe_record(record: object) -> str:
    """A short description of something found in a page, for error messages (keys, not values)."""
    if isinstance(record, Mapping):
        return f"an object with keys {sorted(map(str, record))[:10]}"
    return f"a {type(record).__name__}"


def day_of(day_number: int) -> date:
    """Return the date of a ``yyyymmdd`` integer (the ``ts`` divided by 1,000,000).

    :param day_number: ``yyyymmdd``.
    :raises ExportDataError: if it is not a calendar day.
    """
    try:
        return date(day_number // 10000, day_number // 100 % 100, day_number % 100)
    except ValueError:
        raise ExportDataError(
            f"A record's ts starts with {day_number}, which is not a calendar day yyyymmdd."
        ) from None
