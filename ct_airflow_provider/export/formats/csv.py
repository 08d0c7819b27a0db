"""CSV: one record per row under a header of flattened dot paths, the same header in every file.

Columns: ``ts``, ``eventName``, then one column per key of each object-valued field of the record,
named ``<field>.<key>`` (``profile.identity``, ``deviceInfo.browser``, ``eventProps.Amount``,
``sessionProps.utm_source``). Other top-level fields (for profile exports: ``identity``, ``email``,
...) are columns under their own name. Columns are ordered by first appearance in the export, per
field, so columns that appear late in the export come last; every file of one event in one export
has the same header.

Cells: text as is; integers and floats as Python writes them (``59.99``, ``1e+100``); booleans as
``true``/``false``; lists and nested objects as compact JSON (``["a","b"]``, ``{"Age":30}``); null
and absent keys as an empty cell (so an empty cell is an absent key, null or the empty string).
Fields holding a comma, a quote or a line break are quoted and quotes doubled (RFC 4180), rows end
with CRLF, text is UTF-8 without a byte order mark.

Because the header must list every column before the first row of the first file, records are
first spilled, already formatted as rows, to per-day files in the work directory; rows formatted
before a late column appeared are padded with empty cells when the files are written.
"""

from __future__ import annotations

import csv
import json
import marshal
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from ct_airflow_provider.export.chunking import DayFiles, Delivery
from ct_airflow_provider.export.errors import ExportDataError
from ct_airflow_provider.export.records import day_of

_TOP = 0
_CONST = 1
_SECTION = 2
_PLAIN = frozenset({str, int, float, type(None)})
_FLUSH_CHARS = 1 << 18


def cell_text(value: Any) -> Any:
    """Return how a value that csv cannot write as is appears in a cell (booleans, lists, objects).

    :param value: a property value.
    """
    kind = type(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is dict or kind is list:
        try:
            return orjson.dumps(value).decode()
        except TypeError:
            try:
                return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ExportDataError(f"A value cannot be written as JSON in a CSV cell: {exc}.") from exc
    if kind in _PLAIN:
        return value
    return str(value)


class _Collector:
    """A file-like object for csv.writer that keeps each formatted row in a list."""

    __slots__ = ("rows", "write")

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.write = self.rows.append


class CsvWriter:
    """Spills rows per day while learning the columns, then writes each day's files.

    :param delivery: where finished files go.
    :param spill_dir: a private directory for the spill files.
    :param event_name: the event name for the ``eventName`` column, ``None`` for profile exports.
    """

    def __init__(self, delivery: Delivery, spill_dir: Path, event_name: str | None) -> None:
        self.delivery = delivery
        self.spill_dir = spill_dir
        # Each block: (kind, name, keys). Columns are the blocks' keys in order.
        self._blocks: list[tuple[int, str, list[str]]] = []
        self._top_keys: set[str] = set()
        self._section_keys: dict[str, set[str]] = {}
        self._columns = 0
        if event_name is not None:
            self._blocks.append((_TOP, "", ["ts"]))
            self._top_keys.add("ts")
            self._blocks.append((_CONST, event_name, []))
            self._columns = 2
        self._collectors: dict[int, _Collector] = {}
        self._writers: dict[int, Any] = {}
        self._pending_chars: dict[int, int] = {}
        self._batch_columns = self._columns

    def _grow(self, record: dict[str, Any]) -> None:
        """Add the columns of ``record`` not seen before (rare: only when the key set grows)."""
        self._flush_all()
        for key, value in record.items():
            if type(value) is dict:
                known = self._section_keys.setdefault(key, set())
                new = [sub for sub in value if sub not in known]
                if not new:
                    continue
                known.update(new)
                last = self._blocks[-1] if self._blocks else None
                if last is not None and last[0] == _SECTION and last[1] == key:
                    last[2].extend(new)
                else:
                    self._blocks.append((_SECTION, key, new))
                self._columns += len(new)
            elif key not in self._top_keys:
                self._top_keys.add(key)
                last = self._blocks[-1] if self._blocks else None
                if last is not None and last[0] == _TOP:
                    last[2].append(key)
                else:
                    self._blocks.append((_TOP, "", [key]))
                self._columns += 1
        self._batch_columns = self._columns

    def add(self, records: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Format and spill one page of records.

        :param records: ``(yyyymmdd, file record)`` pairs.
        """
        section_keys = self._section_keys
        top_keys = self._top_keys
        writers = self._writers
        pending = self._pending_chars
        plain = _PLAIN
        for day_number, record in records:
            for key, value in record.items():
                if type(value) is dict:
                    known = section_keys.get(key)
                    if known is None or not value.keys() <= known:
                        self._grow(record)
                        break
                elif key not in top_keys:
                    self._grow(record)
                    break
            row: list[Any] = []
            for kind, name, keys in self._blocks:
                if kind == _SECTION:
                    section = record.get(name)
                    if type(section) is dict:
                        row += map(section.get, keys)
                    else:
                        row += [None] * len(keys)
                elif kind == _TOP:
                    for key in keys:
                        value = record.get(key)
                        row.append(None if type(value) is dict else value)
                else:
                    row.append(name)
            if not plain.issuperset(map(type, row)):
                row = [value if type(value) in plain else cell_text(value) for value in row]
            writer = writers.get(day_number)
            if writer is None:
                writer = self._new_day(day_number)
            written = writer.writerow(row)
            # csv returns what the collector's write returned (None), so measure the row itself.
            del written
            chars = pending[day_number] + len(self._collectors[day_number].rows[-1])
            if chars >= _FLUSH_CHARS:
                self._flush(day_number)
            else:
                pending[day_number] = chars

    def _new_day(self, day_number: int) -> Any:
        day_of(day_number)  # fail early on a ts that is not a calendar day
        collector = self._collectors[day_number] = _Collector()
        self._pending_chars[day_number] = 0
        writer = self._writers[day_number] = csv.writer(collector, lineterminator="\r\n")
        return writer

    def _spill_path(self, day_number: int) -> Path:
        return self.spill_dir / f"{day_number}.csv-rows"

    def _flush(self, day_number: int) -> None:
        rows = self._collectors[day_number].rows
        if rows:
            with open(self._spill_path(day_number), "ab") as handle:
                marshal.dump((self._batch_columns, rows), handle)
            rows.clear()
        self._pending_chars[day_number] = 0

    def _flush_all(self) -> None:
        for day_number in self._collectors:
            self._flush(day_number)

    def header(self) -> list[str]:
        """The column names, in order."""
        names: list[str] = []
        for kind, name, keys in self._blocks:
            if kind == _SECTION:
                names.extend(f"{name}.{key}" for key in keys)
            elif kind == _TOP:
                names.extend(keys)
            else:
                names.append("eventName")
        return names

    def finish(self) -> None:
        """Write every day's files, in day order, from the spilled rows."""
        self._flush_all()
        collector = _Collector()
        csv.writer(collector, lineterminator="\r\n").writerow(self.header())
        header = collector.rows[0].encode("utf-8")
        files = DayFiles(self.delivery, header, b"", max_open=1)
        total = self._columns
        try:
            for day_number in sorted(self._collectors):
                chunks = files.day(day_number, day_of(day_number))
                add = chunks.add
                for columns, rows in self._batches(day_number):
                    if columns == total:
                        for row in rows:
                            add(row.encode("utf-8"))
                    else:
                        padding = "," * (total - columns) + "\r\n"
                        for row in rows:
                            add((row[:-2] + padding).encode("utf-8"))
                chunks.finish_file()
                self._spill_path(day_number).unlink(missing_ok=True)
        except BaseException:
            files.abort()
            raise

    def _batches(self, day_number: int) -> Iterator[tuple[int, list[str]]]:
        path = self._spill_path(day_number)
        if not path.exists():
            return
        with open(path, "rb") as handle:
            while True:
                try:
                    yield marshal.load(handle)
                except EOFError:
                    return

    def abort(self) -> None:
        """Nothing to delete beyond the spill directory, which the driver removes."""
