"""CSV: one record per row under a header of flattened dot paths, the same header in every file.

Rows are spilled to per-day files, already formatted, until every column is known, then written
through the rotation layer of every text format (:class:`~ct_airflow_provider.export.chunking.DayFiles`).
Columns are ordered as the days' records show them, day after day, whatever order the days' pages
arrive in (streams are read side by side): days formatted in another order are reordered at the end.
They are formatted here rather than by ``csv.writer``, whose ``writerow`` was half of this writer's
time, byte for byte as ``csv.writer`` writes them (minimal quoting, CRLF); the rare rows it treats
specially are handed to it. Columns, cells and quoting: docs/export-formats.md, "CSV".
"""

from __future__ import annotations

import csv
import io
import marshal
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from ct_airflow_provider.export.chunking import DayFiles, Delivery
from ct_airflow_provider.export.errors import ExportConfigError
from ct_airflow_provider.export.formats.json import json_text
from ct_airflow_provider.export.records import API_LAYOUT_SOURCES, DEVICE_FIELDS, day_of, shape_event
from ct_airflow_provider.export.schemas import SchemaSettler

_TOP = 0
_CONST = 1
_SECTION = 2
_PLAIN = frozenset({str, int, float, type(None)})
# A dictionary key that no record holds (records parsed from JSON have text keys only).
_NO_KEY = object()

#: Formatted rows (all days together) kept in memory before they are appended to the spill files.
#: A total rather than a per-day limit, so that an export over many days holds no more than one
#: over a few.
_FLUSH_BYTES = 1 << 20

#: Each spilled batch is its size, then ``marshal.dumps((columns, rows))``.
_BATCH_SIZE = struct.Struct("<Q")

#: marshal format 2: no back-references, which batches of distinct rows never use; writing them
#: costs a third of format 4's (which looks every object up in a table of those already written).
_MARSHAL_VERSION = 2


def cell_text(value: Any) -> Any:
    """Return how a value that csv cannot write as is appears in a cell (booleans, lists, objects).

    :param value: a property value.
    """
    kind = type(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is dict or kind is list:
        return json_text(value)
    if kind in _PLAIN:
        return value
    return str(value)


def quoted_cell(text: str) -> str:
    """Return ``text`` as a CSV field: quoted, quotes doubled, when it holds a comma, quote or line break.

    :param text: the cell's text.
    """
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if "," in text or "\n" in text or "\r" in text:
        return '"' + text + '"'
    return text


def _json_cell(value: Any) -> str:
    try:  # orjson inline rather than through json_text: a third of the cells of a typical row
        text = orjson.dumps(value).decode()
    except TypeError:
        text = json_text(value)
    # Compact JSON never holds a raw line break (JSON escapes them), so only quotes and commas matter.
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if "," in text:
        return '"' + text + '"'
    return text


#: The field text of a value that is not plain text needing no quotes, by exact type. Numbers are
#: written as ``str()`` writes them, which is what csv.writer does. C-level callables where one
#: exists: ``"".format`` ignores its argument and returns ``""`` (for null).
_FIELD_OF_TYPE: dict[type, Callable[[Any], str]] = {
    str: quoted_cell,
    int: int.__repr__,
    float: float.__repr__,
    type(None): "".format,
    bool: {True: "true", False: "false"}.__getitem__,
    dict: _json_cell,
    list: _json_cell,
}


class _Collector:
    """A file-like object for csv.writer that keeps each formatted row in a list."""

    __slots__ = ("rows", "write")

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.write = self.rows.append


def csv_module_row(values: Sequence[Any]) -> str:
    """Return one row as ``csv.writer`` formats it, without its CRLF (the reference for every row).

    :param values: the row's values, one per column.
    """
    collector = _Collector()
    csv.writer(collector, lineterminator="\r\n").writerow([cell_text(value) for value in values])
    return collector.rows[-1][:-2]


def format_row(values: Sequence[Any]) -> str:
    """Return one row of at least two values as CSV text without its CRLF, as ``csv.writer`` would.

    :param values: the row's values, one per column.
    """
    field_of_type = _FIELD_OF_TYPE
    try:
        line = ",".join(
            [
                value
                if type(value) is str and "," not in value and '"' not in value
                else field_of_type[type(value)](value)
                for value in values
            ]
        )
    except KeyError:  # a type records parsed from JSON do not hold: let csv.writer decide
        return csv_module_row(values)
    if "\n" in line or "\r" in line:
        # A line break in a text cell, which the fast test let through unquoted (a few rows in a
        # hundred): format the row again, looking at every text cell (quoted_cell quotes line breaks).
        return ",".join([field_of_type[type(value)](value) for value in values])
    return line


# A column: its kind (_TOP, _CONST or _SECTION), the object key it is under ("" for top-level
# keys and the constant) and its key.
_Column = tuple[int, str, str]


def _new_columns(
    record: dict[str, Any], top_keys: set[str], section_keys: dict[str, set[str]]
) -> list[_Column]:
    """The columns of ``record`` not among the known ones, in the record's order; they become known.

    :param record: a file record.
    :param top_keys: the known top-level columns (updated).
    :param section_keys: the known keys under each object-valued key (updated; every key that held
        an object has an entry, even an empty one).
    """
    new: list[_Column] = []
    for key, value in record.items():
        if type(value) is dict:
            known = section_keys.setdefault(key, set())
            for sub in value:
                if sub not in known:
                    known.add(sub)
                    new.append((_SECTION, key, sub))
        elif key not in top_keys:
            top_keys.add(key)
            new.append((_TOP, "", key))
    return new


def _append_columns(blocks: list[tuple[int, str, list[str]]], columns: Iterable[_Column]) -> None:
    """Add columns at the end, a key under the same object as the last block's joining that block."""
    for kind, name, key in columns:
        last = blocks[-1] if blocks else None
        if last is not None and last[0] == kind and last[1] == name:
            last[2].append(key)
        else:
            blocks.append((kind, name, [key]))


def _column_list(blocks: list[tuple[int, str, list[str]]]) -> list[_Column]:
    return [(kind, name, key) for kind, name, keys in blocks for key in (keys if kind != _CONST else [""])]


def _has_columns(record: dict[str, Any], top_keys: set[str], section_keys: dict[str, set[str]]) -> bool:
    """Whether every key of a file record is among the known columns."""
    for key, value in record.items():
        if type(value) is dict:
            known = section_keys.get(key)
            if known is None or not known.issuperset(value):
                return False
        elif key not in top_keys:
            return False
    return True


class _Day:
    """One day's rows waiting to be spilled, and the columns its records use in the order they showed them."""

    __slots__ = (
        "api_event_keys",
        "api_profile_keys",
        "api_session_keys",
        "columns",
        "rows",
        "section_keys",
        "top_keys",
    )

    def __init__(self) -> None:
        self.rows: list[bytes] = []
        self.top_keys: set[str] = set()
        self.section_keys: dict[str, set[str]] = {}
        self.columns: list[_Column] = []
        # The same columns as an API record of the API's own layout holds them (see _GatherPlan.api_row).
        self.api_profile_keys: frozenset[str] = frozenset()
        self.api_event_keys: frozenset[str] = frozenset()
        self.api_session_keys: frozenset[str] = frozenset()

    def knows(self, record: dict[str, Any]) -> bool:
        """Whether every key of a file record has a column in this day."""
        return _has_columns(record, self.top_keys, self.section_keys)

    def learn(self, record: dict[str, Any]) -> None:
        """Add the columns of a file record this day has not shown yet."""
        self.columns += _new_columns(record, self.top_keys, self.section_keys)
        sections = self.section_keys
        self.api_profile_keys = frozenset(sections.get("profile", ())) | _DEVICE_FIELDS.intersection(
            sections.get("deviceInfo", ())
        )
        self.api_event_keys = frozenset(sections.get("eventProps", ()))
        self.api_session_keys = frozenset(sections.get("sessionProps", ()))


_DEVICE_FIELDS = frozenset(DEVICE_FIELDS)


class CsvWriter:
    """Spills rows per day while learning the columns, then writes each day's files through DayFiles.

    A :class:`~ct_airflow_provider.export.formats.FormatWriter` that is its own RecordEncoder.

    :param delivery: where finished files go.
    :param spill_dir: a private directory for the spill files.
    :param event_name: the event name for the ``eventName`` column, ``None`` for profile exports.
    :param schema: the event's stored schema, settled before the first file (see
        :mod:`~ct_airflow_provider.export.schemas`): columns of earlier exports come first, in their
        order, new ones after them; without one, the columns are those of this export's records.
    """

    footer = b""

    def __init__(
        self, delivery: Delivery, spill_dir: Path, event_name: str | None, schema: SchemaSettler | None = None
    ) -> None:
        self.delivery = delivery
        self.schema = schema
        self.spill_dir = spill_dir
        self._event_name = event_name
        # Each block: (kind, name, keys). Columns are the blocks' keys in order (the order in which
        # records arrived until finish() puts them in the days' order).
        self._blocks = self._first_blocks()
        self._top_keys: set[str] = {"ts"} if event_name is not None else set()
        self._section_keys: dict[str, set[str]] = {}
        self._columns = len(_column_list(self._blocks))
        self._plan = _GatherPlan(self._blocks, event_name, self._section_keys)
        self._format_line = _line_formatter(self._columns)
        # Per day: formatted rows (UTF-8, CRLF included) waiting to be spilled, all of _columns cells.
        self._days: dict[int, _Day] = {}
        self._pending_bytes = 0

    def _first_blocks(self) -> list[tuple[int, str, list[str]]]:
        """The columns every event file starts with: ``ts``, then ``eventName``; none for profiles."""
        if self._event_name is None:
            return []
        return [(_TOP, "", ["ts"]), (_CONST, self._event_name, [])]

    def _grow(self, record: dict[str, Any]) -> None:
        """Add the columns of ``record`` not seen before (rare: only when the key set grows)."""
        objects = len(self._section_keys)
        new = _new_columns(record, self._top_keys, self._section_keys)
        if not new and len(self._section_keys) == objects:
            return
        # Rows formatted so far have fewer cells: spill them with their count before it changes.
        self._flush_all()
        _append_columns(self._blocks, new)
        self._columns += len(new)
        self._plan = _GatherPlan(self._blocks, self._event_name, self._section_keys)
        self._format_line = _line_formatter(self._columns)

    def encode(self, record: dict[str, Any]) -> bytes:
        """Return one file record as a row of the columns known so far (adding its new ones first).

        :param record: a file record.
        """
        if not _has_columns(record, self._top_keys, self._section_keys):
            self._grow(record)
        return (self._format_line(self._plan.row(record)) + "\r\n").encode()

    def add(self, records: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Format and spill one page of records.

        :param records: ``(yyyymmdd, record)`` pairs: file records, or for an event export API
            records in the API's own layout as :func:`~ct_airflow_provider.export.records.shape_for_columns`
            passes them.
        """
        days = self._days
        events = self._event_name is not None
        for day_number, record in records:
            day = days.get(day_number)
            if day is None:
                day_of(day_number)  # fail early on a ts that is not a calendar day
                day = days[day_number] = _Day()
            if events and "event_props" in record:
                # The API's own layout, its file fields read where the API keeps them: a shaped copy
                # (a new profile, deviceInfo and record per event) would cost a tenth of this writer's time.
                if not (
                    day.api_profile_keys.issuperset(record["profile"])
                    and day.api_event_keys.issuperset(record["event_props"])
                    and day.api_session_keys.issuperset(record["session_props"])
                ):
                    shaped = shape_event(record)  # a key new to this day (rare)
                    day.learn(shaped)
                    self._grow(shaped)
                data = (self._format_line(self._plan.api_row(record)) + "\r\n").encode()
            else:
                if not day.knows(record):
                    day.learn(record)
                    self._grow(record)
                data = (self._format_line(self._plan.row(record)) + "\r\n").encode()
            day.rows.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes >= _FLUSH_BYTES:
                self._flush_all()

    def _spill_path(self, day_number: int) -> Path:
        return self.spill_dir / f"{day_number}.csv-rows"

    def _flush_all(self) -> None:
        """Append every day's pending rows, with their column count, to that day's spill file."""
        for day_number, day in self._days.items():
            if day.rows:
                batch = marshal.dumps((self._columns, day.rows), _MARSHAL_VERSION)
                with open(self._spill_path(day_number), "ab") as handle:
                    handle.write(_BATCH_SIZE.pack(len(batch)))
                    handle.write(batch)
                day.rows = []
        self._pending_bytes = 0

    @property
    def header(self) -> bytes:
        """The header row: the column names, in order."""
        names: list[str] = []
        for kind, name, keys in self._blocks:
            if kind == _SECTION:
                names.extend(f"{name}.{key}" for key in keys)
            elif kind == _TOP:
                names.extend(keys)
            else:
                names.append("eventName")
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerow(names)
        return buffer.getvalue().encode("utf-8")

    def _days_order(self) -> list[tuple[int, str, list[str]]]:
        """The columns as records showing them day after day would have added them."""
        blocks = self._first_blocks()
        top_keys = {"ts"} if self._event_name is not None else set()
        section_keys: dict[str, set[str]] = {}
        for day_number in sorted(self._days):
            for kind, name, key in self._days[day_number].columns:
                known = top_keys if kind == _TOP else section_keys.setdefault(name, set())
                if key not in known:
                    known.add(key)
                    _append_columns(blocks, [(kind, name, key)])
        return blocks

    def finish(self) -> None:
        """Write every day's files, in day order, from the spilled rows."""
        self._flush_all()
        arrived = _column_list(self._blocks)
        self._blocks = self._settled(self._days_order())
        in_order = _column_list(self._blocks)
        known = set(arrived)
        arrived += [column for column in in_order if column not in known]  # only earlier exports had them
        total = len(arrived)
        reorder = None
        if in_order != arrived:
            position = {column: index for index, column in enumerate(arrived)}
            reorder = itemgetter(*[position[column] for column in in_order])
        files = DayFiles(self.delivery, self, max_open=1)
        try:
            for day_number in sorted(self._days):
                chunks = files.day(day_number, day_of(day_number))
                add = chunks.add
                for columns, rows in self._batches(day_number):
                    for row in padded_rows(rows, columns, total):
                        add(row if reorder is None else _reordered_row(row, reorder))
                chunks.finish_file()
                self._spill_path(day_number).unlink(missing_ok=True)
        except BaseException:
            files.abort()
            raise

    def _settled(self, blocks: list[tuple[int, str, list[str]]]) -> list[tuple[int, str, list[str]]]:
        """The columns of the files: the stored schema's, then the new ones of ``blocks`` (stored too)."""
        if self.schema is None:
            return blocks
        first = len(_column_list(self._first_blocks()))
        own = [[key] if kind == _TOP else [name, key] for kind, name, key in _column_list(blocks)[first:]]

        def extend(stored: dict[str, Any] | None) -> dict[str, Any]:
            return extend_csv_columns(stored, own)

        settled = self._first_blocks()
        stored = self.schema.settle("csv", extend)["columns"]
        _append_columns(
            settled, [(_TOP, "", path[0]) if len(path) == 1 else (_SECTION, *path) for path in stored]
        )
        return settled

    def _batches(self, day_number: int) -> Iterator[tuple[int, list[bytes]]]:
        path = self._spill_path(day_number)
        if not path.exists():
            return
        with open(path, "rb") as handle:
            # One read per batch: marshal.load on a file reads object by object, several times slower.
            while size := handle.read(_BATCH_SIZE.size):
                yield marshal.loads(handle.read(_BATCH_SIZE.unpack(size)[0]))

    def abort(self) -> None:
        """Nothing to delete beyond the spill directory, which the driver removes."""


def extend_csv_columns(stored: dict[str, Any] | None, own: list[list[str]]) -> dict[str, Any]:
    """The ``csv`` section of a stored schema extended with an export's columns, new ones at the end.

    :param stored: the section as stored: ``{"columns": [[key] or [object key, key], ...]}`` (after
        ``ts`` and ``eventName`` for events), ``None`` if none.
    :param own: the export's columns, in the same form and order.
    """
    columns = (stored or {}).get("columns", [])
    if not isinstance(columns, list) or not all(
        isinstance(path, list) and len(path) in (1, 2) and all(isinstance(key, str) for key in path)
        for path in columns
    ):
        raise ExportConfigError(
            'The stored CSV schema is not {"columns": [[key] or [object key, key], ...]}; fix the schema '
            "object, or delete it to start afresh."
        )
    known = {tuple(path) for path in columns}
    return {"columns": columns + [path for path in own if tuple(path) not in known]}


def _reordered_row(row: bytes, reorder: Callable[[list[Any]], Sequence[Any]]) -> bytes:
    """A formatted row (CRLF included) with its cells in another order, byte for byte as formatted so.

    :param row: the row, of at least two cells.
    :param reorder: picks the cells in their new order.
    """
    if b'"' not in row:  # no quoted cell, so every comma separates two cells
        return b",".join(reorder(row[:-2].split(b","))) + b"\r\n"
    cells = next(csv.reader(io.StringIO(row.decode("utf-8"), newline="")))
    return (format_row(reorder(cells)) + "\r\n").encode()


class _GatherPlan:
    """How to take one record's values in column order, rebuilt whenever columns are added.

    Values are taken field by field -- the top-level keys with one ``map(record.get, ...)``, each
    object-valued field with one ``map(section.get, ...)`` over all of its columns -- which costs a
    few C-level calls per record rather than one Python step per block of columns; when columns of
    one field are not next to each other (a key first seen late gets its column at the end), one
    ``itemgetter`` puts the values in column order.

    :param blocks: the writer's column blocks ``(kind, name, keys)``, in column order.
    :param event_name: the value of the ``eventName`` column, ``None`` when there is none.
    :param object_keys: every top-level key that held an object (also those without columns: ``{}``).
    """

    __slots__ = (
        "api_event_keys",
        "api_profile_keys",
        "api_sections",
        "api_session_keys",
        "arrange",
        "const",
        "sections",
        "top_keys",
        "top_may_hold_objects",
    )

    def __init__(
        self, blocks: list[tuple[int, str, list[str]]], event_name: str | None, object_keys: Iterable[str]
    ) -> None:
        top_keys: list[str] = []
        section_keys: dict[str, list[str]] = {}
        for kind, name, keys in blocks:
            if kind == _TOP:
                top_keys += keys
            elif kind == _SECTION:
                section_keys.setdefault(name, []).extend(keys)
        self.top_keys = tuple(top_keys)
        self.const = event_name
        self.sections = [(name, tuple(keys), (None,) * len(keys)) for name, keys in section_keys.items()]
        # The same columns read from an API record in the API's own layout (see api_row).
        device_fields = frozenset(DEVICE_FIELDS)
        device_keys = section_keys.get("deviceInfo", [])
        self.api_profile_keys = frozenset(section_keys.get("profile", [])) | device_fields.intersection(
            device_keys
        )
        self.api_event_keys = frozenset(section_keys.get("eventProps", []))
        self.api_session_keys = frozenset(section_keys.get("sessionProps", []))
        self.api_sections: list[tuple[str | None, tuple[Any, ...], tuple[None, ...]]] = []
        for name, section_columns, nones in self.sections:
            columns: tuple[Any, ...] = section_columns
            if name == "deviceInfo":
                # Only the profile's device fields are there; other deviceInfo keys (from a top-level
                # deviceInfo, which this layout has not) stay empty: a key no dict holds.
                columns = tuple(key if key in device_fields else _NO_KEY for key in section_columns)
            self.api_sections.append((API_LAYOUT_SOURCES.get(name), columns, nones))
        # A key that holds an object in some records and a scalar in others has both a section
        # and a top-level column; its top-level cell is empty in the records where it is an object.
        self.top_may_hold_objects = not set(object_keys).isdisjoint(top_keys)
        # Where each column's value is in the gathered list: top keys, the constant, the sections.
        gathered: dict[tuple[int, str, str], int] = {}
        for key in top_keys:
            gathered[_TOP, "", key] = len(gathered)
        if event_name is not None:
            gathered[_CONST, "", ""] = len(gathered)
        for name, keys in section_keys.items():
            for key in keys:
                gathered[_SECTION, name, key] = len(gathered)
        order: list[int] = []
        for kind, name, keys in blocks:
            if kind == _CONST:
                order.append(gathered[_CONST, "", ""])
            else:
                order += (gathered[kind, "" if kind == _TOP else name, key] for key in keys)
        self.arrange: Callable[[list[Any]], Sequence[Any]] | None = (
            None if order == sorted(order) else itemgetter(*order)
        )

    def row(self, record: dict[str, Any]) -> Sequence[Any]:
        """Return the values of ``record``, one per column in column order (``None`` when absent).

        :param record: a file record whose keys all have columns.
        """
        return self._gather(record, self.sections)

    def api_row(self, record: dict[str, Any]) -> Sequence[Any]:
        """:meth:`row` of the file record an API record becomes, read from the API record itself.

        :param record: an API event record of exactly ``profile``, ``ts``, ``event_props`` and
            ``session_props``, the three of them objects, whose keys all have columns (checked
            against :attr:`api_profile_keys` and the like).
        """
        return self._gather(record, self.api_sections)

    def _gather(
        self, record: dict[str, Any], sections: Sequence[tuple[Any, tuple[Any, ...], tuple[None, ...]]]
    ) -> Sequence[Any]:
        values = list(map(record.get, self.top_keys))
        if self.top_may_hold_objects:
            values = [None if type(value) is dict else value for value in values]
        if self.const is not None:
            values.append(self.const)
        for name, keys, nones in sections:
            section = record.get(name)
            if type(section) is dict:
                values += map(section.get, keys)
            else:
                values += nones
        return values if self.arrange is None else self.arrange(values)


def padded_rows(rows: list[bytes], columns: int, total: int) -> list[bytes]:
    """Rows formatted when ``columns`` columns were known, with an empty cell for each later column.

    :param rows: encoded rows, CRLF included.
    :param columns: the columns known when the rows were formatted.
    :param total: the columns of the export.
    """
    if columns == total:
        return rows
    if columns == 0:
        # Records without any field, before any column was known: ``total`` empty cells each;
        # alone on its row an empty cell is quoted, as csv.writer does, or it would read as no cell.
        return [b'""\r\n' if total == 1 else b"," * (total - 1) + b"\r\n"] * len(rows)
    end = b"," * (total - columns) + b"\r\n"
    if columns == 1:
        # The quoted empty cell of a one-column row is a plain empty cell beside others.
        return [(b"" if row == b'""\r\n' else row[:-2]) + end for row in rows]
    return [row[:-2] + end for row in rows]


def _line_formatter(columns: int) -> Callable[[Sequence[Any]], str]:
    """How rows of ``columns`` cells are formatted: csv.writer quotes the one empty cell of a
    one-column row, which format_row would leave empty."""
    return format_row if columns > 1 else csv_module_row
