"""Object names of export files, as CleverTap names them.

``<request id>-<run timestamp>-<event name>-<yyyymmdd>-<file index>-<database id>.<ext>``, with the
event name sanitized the way CleverTap does: white space (space, tab, line breaks, other Unicode
spaces), ``/`` and NUL become ``-``; any other control character becomes ``?``. Profile files put
``profiles`` where the event name goes. The manifest is ``<request id>-<run timestamp>-manifest.json``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date

from ct_airflow_provider.export.errors import ExportConfigError

#: Stands in for the event name in the names of profile files.
PROFILES_NAME = "profiles"

#: The folder, under the prefix, of the schemas exports keep from run to run (see export.schemas).
SCHEMAS_FOLDER = "_schemas"

#: Google Cloud Storage refuses object names longer than this many UTF-8 bytes.
MAX_OBJECT_NAME_BYTES = 1024

_EXTENSIONS = frozenset({"json", "csv", "xml", "parquet", "json.gz", "csv.gz", "xml.gz"})
_sanitized_cache: dict[str, str] = {}


def _sanitize_char(char: str) -> str:
    if char == "\x00" or char == "/" or char.isspace():
        return "-"
    if unicodedata.category(char) == "Cc":
        return "?"
    return char


def sanitize_event_name(name: str) -> str:
    """Return ``name`` as it appears in file names: white space, tab, ``/`` and NUL as ``-``, control characters as ``?``.

    :param name: the event name as CleverTap reports it.
    :raises ExportConfigError: if ``name`` is not a non-empty string.
    """
    if not isinstance(name, str) or not name:
        raise ExportConfigError(f"An event name must be a non-empty string, got {name!r}.")
    cached = _sanitized_cache.get(name)
    if cached is None:
        cached = "".join(map(_sanitize_char, name))
        if len(_sanitized_cache) < 4096:
            _sanitized_cache[name] = cached
    return cached


def _check_extension(extension: str) -> None:
    if extension not in _EXTENSIONS:
        raise ExportConfigError(
            f"Unknown file extension {extension!r}; expected one of {', '.join(sorted(_EXTENSIONS))}."
        )


def event_object_name(
    request_id: str | int,
    run_timestamp: int,
    event_name: str,
    day: date,
    file_index: int,
    database_id: int,
    extension: str,
) -> str:
    """Return the file name CleverTap gives one chunk of one event on one day.

    :param request_id: the export request id.
    :param run_timestamp: the time of the export run, epoch seconds.
    :param event_name: the event name, raw (it is sanitized here) or :data:`PROFILES_NAME`.
    :param day: the day of the records in the file (the day of their ``ts``).
    :param file_index: the chunk number, from 0, per event and day.
    :param database_id: the CleverTap database (instance) id.
    :param extension: ``json``, ``csv``, ``xml``, ``parquet``, or one of the first three with ``.gz``.
    """
    _check_extension(extension)
    if file_index < 0:
        raise ExportConfigError(f"A file index counts from 0, got {file_index}.")
    return (
        f"{request_id}-{run_timestamp}-{sanitize_event_name(event_name)}-{day:%Y%m%d}-"
        f"{file_index}-{database_id}.{extension}"
    )


def _check_request_id(request_id: str | int) -> str:
    text = str(request_id)
    if isinstance(request_id, bool) or not text:
        raise ExportConfigError(f"The request id must be a non-empty string or integer, got {request_id!r}.")
    if any(char == "/" or char.isspace() or unicodedata.category(char) == "Cc" for char in text):
        raise ExportConfigError(
            f"The request id {text!r} contains '/', white space or a control character; "
            "it is part of every object name: use letters, digits, '-' or '_'."
        )
    return text


def check_prefix(prefix: str | None) -> str:
    """Return ``prefix`` as every object name starts with it: empty, or a folder ending in ``/``."""
    if prefix is None:
        return ""
    if not isinstance(prefix, str):
        raise ExportConfigError(f"The object name prefix must be a string, got {prefix!r}.")
    if not prefix:
        return ""
    if prefix.startswith("/") or any(char in "\r\n" for char in prefix):
        raise ExportConfigError(
            f"The object name prefix {prefix!r} starts with '/' or holds a line break; "
            "give a folder inside the bucket such as 'clevertap/exports'."
        )
    return prefix if prefix.endswith("/") else prefix + "/"


@dataclass(frozen=True)
class ExportNaming:
    """What every object name of one export run shares.

    :param request_id: the export request id (epoch seconds in CleverTap's own exports).
    :param run_timestamp: the time of this export run, epoch seconds.
    :param database_id: the CleverTap database (instance) id, 0 to 23 for CleverTap's own accounts.
    :param prefix: optional folder inside the bucket, such as ``clevertap/exports``; a trailing ``/``
        is added. ``None`` means none.
    """

    request_id: str
    run_timestamp: int
    database_id: int
    prefix: str = ""

    def __post_init__(self) -> None:
        # Integers are welcome (CleverTap's request ids are epoch seconds); names use the text.
        object.__setattr__(self, "request_id", _check_request_id(self.request_id))
        for label, value in (("run timestamp", self.run_timestamp), ("database id", self.database_id)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ExportConfigError(f"The {label} must be a non-negative integer, got {value!r}.")
        object.__setattr__(self, "prefix", check_prefix(self.prefix))

    def _checked(self, name: str, what: str) -> str:
        full = self.prefix + name
        if len(full.encode("utf-8")) > MAX_OBJECT_NAME_BYTES:
            raise ExportConfigError(
                f"The object name for {what} would be {len(full.encode('utf-8'))} bytes, over the "
                f"{MAX_OBJECT_NAME_BYTES}-byte limit of Google Cloud Storage; shorten the prefix {self.prefix!r}."
            )
        return full

    def event_object_name(self, event_name: str, day: date, file_index: int, extension: str) -> str:
        """Return the full object name (prefix included) of one chunk of an event's day.

        :param event_name: the raw event name.
        :param day: the day of the records' ``ts``.
        :param file_index: the chunk number from 0.
        :param extension: file extension, see :func:`event_object_name`.
        """
        name = event_object_name(
            self.request_id, self.run_timestamp, event_name, day, file_index, self.database_id, extension
        )
        return self._checked(name, f"event {event_name!r}")

    def profile_object_name(self, day: date, file_index: int, extension: str) -> str:
        """Return the full object name of one chunk of a profile export (``profiles`` for the event name).

        :param day: the day the export names (see :func:`~ct_airflow_provider.export.writer.export_profiles`).
        :param file_index: the chunk number from 0.
        :param extension: file extension, see :func:`event_object_name`.
        """
        return self.event_object_name(PROFILES_NAME, day, file_index, extension)

    def run_prefix(self) -> str:
        """Return ``<prefix><request id>-<run timestamp>-``, which every object of this run starts with."""
        return f"{self.prefix}{self.request_id}-{self.run_timestamp}-"

    def manifest_object_name(self) -> str:
        """Return ``<prefix><request id>-<run timestamp>-manifest.json``."""
        return self._checked(f"{self.request_id}-{self.run_timestamp}-manifest.json", "the manifest")

    def claim_object_name(self, slice_key: str | None = None) -> str:
        """Return ``<prefix><request id>-<run timestamp>.claim``, present while an attempt writes this run
        (``<request id>-<run timestamp>.<slice key>.claim`` for one slice of a sliced export).

        It lies outside :meth:`run_prefix`, so an attempt's clean-up of earlier objects never touches it.

        :param slice_key: the slice's key (see :class:`~ct_airflow_provider.export.job.ExportRun`).
        """
        if slice_key is None:
            return self._checked(f"{self.request_id}-{self.run_timestamp}.claim", "the claim")
        key = sanitize_event_name(slice_key)
        return self._checked(
            f"{self.request_id}-{self.run_timestamp}.{key}.claim", f"the claim of slice {key}"
        )

    def schema_object_name(self, event_name: str) -> str:
        """Return ``<prefix>_schemas/<event name>.json``: the columns every export of the event wrote.

        Shared by every run and request under the prefix, outside any :meth:`run_prefix`.

        :param event_name: the raw event name, or :data:`PROFILES_NAME`.
        """
        return self._checked(
            f"{SCHEMAS_FOLDER}/{sanitize_event_name(event_name)}.json", f"the schema of {event_name!r}"
        )


def manifest_object_name(naming: ExportNaming) -> str:
    """Return the manifest's object name of an export run: ``<prefix><request id>-<run timestamp>-manifest.json``.

    :param naming: the run's naming.
    """
    return naming.manifest_object_name()
