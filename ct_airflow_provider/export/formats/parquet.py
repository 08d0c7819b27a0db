"""Parquet: one schema for every file of an event in one export, each file within ``max_file_bytes``.

Records are spilled to per-day files of JSON lines, in blocks that pyarrow's JSON reader reads in
helper threads, inferring their types; the blocks' types are merged into the export's schema, and
the files are made from the tables read, cast to it. Python decides only what the reader cannot: a
key whose values differ in kind (such values become JSON text) and integers a double or int64 does
not hold. Columns, type rules and how the size limit is kept: docs/export-formats.md, "Parquet".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from ct_airflow_provider.export.chunking import Delivery, too_small_error
from ct_airflow_provider.export.errors import ExportConfigError, ExportDataError
from ct_airflow_provider.export.files import digest_of_path
from ct_airflow_provider.export.formats import PARQUET_CODECS
from ct_airflow_provider.export.formats.json import careful_line, decoder, encode_line, json_text
from ct_airflow_provider.export.records import day_of

JSON_ENCODING_METADATA = {b"ct_airflow_provider.encoding": b"json"}

# The learned types are Arrow types, plus two that pyarrow's reader never infers: values kept as
# JSON text, and integers some of which a double does not hold exactly (they must not become doubles).
_JSON = pa.large_string()
_BIG_INT = pa.uint64()
_EXACT_DOUBLE = 2**53
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PYTHON_TYPES = {
    type(None): pa.null(),
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
}
_EVENT_ORDER = ("ts", "profile", "deviceInfo", "eventProps", "sessionProps")

# Each day's lines go to pyarrow in blocks of about this size: large enough that the reader's
# per-call cost vanishes, small enough to keep few in memory. A block makes one or more row groups.
_BLOCK_BYTES = 4 << 20
# Lines waiting in the days' buffers, all days together: beyond it the fullest days' blocks go early.
_MAX_BUFFERED_BYTES = 16 << 20
# Blocks handed to the reader and not yet learned from; the export waits for the oldest beyond this.
_MAX_PENDING_BLOCKS = 2
# Parquet bytes per byte of JSON assumed before a row group was measured, and the margin on it.
_INITIAL_RATIO = 1.0
_RATIO_MARGIN = 1.25


# Types -------------------------------------------------------------------------------------------


def _merge(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The learned type of values of types ``a`` and ``b``: JSON text when no column type holds both.

    Written out rather than ``pa.unify_schemas(promote_options="permissive")``, which raises on
    the conflicts that must become JSON text, and makes doubles of integers a double cannot hold.
    """
    if a == b or b == pa.null():
        return a
    if a == pa.null():
        return b
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields = {field.name: field.type for field in a}
        for field in b:
            known = fields.get(field.name)
            fields[field.name] = field.type if known is None else _merge(known, field.type)
        return pa.struct(list(fields.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_merge(a.value_type, b.value_type))
    if {a, b} == {pa.int64(), pa.float64()}:
        return pa.float64()
    if {a, b} == {pa.int64(), _BIG_INT}:
        return _BIG_INT
    return _JSON


def _inferred(arrow_type: pa.DataType, column: pa.ChunkedArray) -> pa.DataType | None:
    """The learned type of a column pyarrow's reader inferred, or ``None`` if the reader may have lost it.

    The reader reads integers beyond int64, and integers among floats, as doubles: a double of
    magnitude 2**53 or more may have been an integer a double does not hold, so Python decides.
    Text that looks like a time is inferred as a timestamp; it is text all the same.
    """
    if pa.types.is_struct(arrow_type):
        fields = []
        for index, field in enumerate(arrow_type):
            learned = _inferred(field.type, pc.struct_field(column, [index]))
            if learned is None:
                return None
            fields.append((field.name, learned))
        return pa.struct(fields)
    if pa.types.is_list(arrow_type):
        item = _inferred(arrow_type.value_type, pc.list_flatten(column))
        return None if item is None else pa.list_(item)
    if pa.types.is_timestamp(arrow_type):
        return pa.string()
    if arrow_type in (pa.int64(), pa.float64()):
        bounds = pc.min_max(column)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is None:  # nothing but nulls
            return arrow_type
        if arrow_type == pa.float64():
            return arrow_type if low > -_EXACT_DOUBLE and high < _EXACT_DOUBLE else None
        return arrow_type if low >= -_EXACT_DOUBLE and high <= _EXACT_DOUBLE else _BIG_INT
    return arrow_type if arrow_type in (pa.null(), pa.bool_(), pa.string()) else None


class _Kinds:
    """The kinds of values found at one place of records the reader could not tell, looked at in Python."""

    __slots__ = ("fields", "item", "kinds", "plans")

    def __init__(self) -> None:
        self.kinds: set[Any] = set()  # Python types, and the learned types of large integers
        self.fields: dict[str, _Kinds] = {}
        self.item: _Kinds | None = None
        # Records mostly repeat a few shapes (keys, and their values' types): for a shape seen
        # before, only the values whose kind depends on more than their type are looked at.
        self.plans: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def add(self, value: Any) -> None:
        kind = type(value)
        if kind is dict:
            self.add_object(value)
        elif kind is list:
            self.kinds.add(list)
            item = self.item = self.item or _Kinds()
            for each in value:
                item.add(each)
        elif kind is int and not -_EXACT_DOUBLE <= value <= _EXACT_DOUBLE:
            self.kinds.add(_BIG_INT if _INT64_MIN <= value <= _INT64_MAX else _JSON)
        else:
            self.kinds.add(kind)

    def add_object(self, obj: dict[str, Any]) -> None:
        self.kinds.add(dict)
        shape = (*obj, *map(type, obj.values()))
        plan = self.plans.get(shape)
        if plan is None:
            for key, value in obj.items():
                if key not in self.fields:
                    self.fields[key] = _Kinds()
                self.fields[key].add(value)
            self.plans[shape] = tuple(key for key, value in obj.items() if type(value) in (dict, list, int))
        else:
            for key in plan:
                self.fields[key].add(obj[key])

    def learned(self) -> pa.DataType:
        """The learned type of the values."""
        learned = pa.null()
        for kind in self.kinds:
            if kind is dict:
                kind = pa.struct([(key, field.learned()) for key, field in self.fields.items()])
            elif kind is list:
                kind = pa.list_(self.item.learned() if self.item else pa.null())
            learned = _merge(
                learned, kind if isinstance(kind, pa.DataType) else _PYTHON_TYPES.get(kind, _JSON)
            )
        return learned


def _python_type(records: Iterable[dict[str, Any]]) -> pa.DataType:
    """The learned type of records the reader could not tell."""
    root = _Kinds()
    root.kinds.add(dict)
    for record in records:
        root.add_object(record)
    return root.learned()


def _column_type(learned: pa.DataType, final: bool) -> pa.DataType | None:
    """The column type of a learned type, ``None`` for JSON text.

    :param learned: the learned type.
    :param final: whether every record was seen: a key holding only empty objects so far is
        JSON text only then (a later record may give it keys).
    """
    if learned == _JSON:
        return None
    if learned == _BIG_INT:
        return pa.int64()
    if learned == pa.null():
        return pa.string()
    if pa.types.is_struct(learned):
        if learned.num_fields == 0:
            return None if final else learned
        return pa.struct([_field(field.name, field.type, final) for field in learned])
    if pa.types.is_list(learned):
        item = _column_type(learned.value_type, final)
        # A list holding JSON text is JSON text itself: its items are never encoded one by one.
        return None if item is None or _json_paths(item) else pa.list_(item)
    return learned


def _field(name: str, learned: pa.DataType, final: bool) -> pa.Field:
    """The field of a key of a learned type, marked in its metadata when its values are JSON text."""
    arrow_type = _column_type(learned, final)
    if arrow_type is None:
        return pa.field(name, pa.string(), metadata=JSON_ENCODING_METADATA)
    return pa.field(name, arrow_type)


def _json_paths(arrow_type: pa.DataType) -> dict[str, Any]:
    """The keys of a column type's structs whose values are JSON text (``True``) or hold some (a dict)."""
    paths: dict[str, Any] = {}
    if pa.types.is_struct(arrow_type):
        for field in arrow_type:
            inner = _json_paths(field.type)
            if field.metadata == JSON_ENCODING_METADATA or inner:
                paths[field.name] = inner or True
    return paths


# JSON text ---------------------------------------------------------------------------------------

_Encoder = Callable[[dict[str, Any]], dict[str, Any]]


def json_text_encoder(paths: dict[str, Any]) -> _Encoder:
    """A function returning a record with the values at ``paths`` as JSON text (copied where changed).

    Built once per set of paths, one closure per key, because it runs for every record.

    :param paths: keys whose values become JSON text (``True``) or hold such keys (a dict).
    """
    steps = [(key, None if inner is True else json_text_encoder(inner)) for key, inner in paths.items()]

    def encode(obj: dict[str, Any]) -> dict[str, Any]:
        copy = None
        for key, inner in steps:
            value = obj.get(key)
            if value is None or (inner is not None and type(value) is not dict):
                continue
            new = json_text(value) if inner is None else inner(value)
            if new is not value:
                if copy is None:
                    copy = obj.copy()
                copy[key] = new
        return obj if copy is None else copy

    return encode


def _decoded(obj: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`json_text_encoder` (modifies ``obj``, a record read back from the spill)."""
    for key, inner in paths.items():
        value = obj.get(key)
        if value is not None and inner is True:
            obj[key] = decoder(True)(value)  # integers of any size exact; such values are rare
        elif type(value) is dict:
            _decoded(value, inner)
    return obj


# The spill ---------------------------------------------------------------------------------------


@dataclass
class _Block:
    """Whole lines of a day's spill, read by pyarrow in one go.

    :param start: offset of its first line in the day's spill file.
    :param end: offset just after its last line.
    :param paths: the JSON text paths its lines were spilled with.
    :param careful: whether a line holds an integer beyond 64 bits (never given to the reader).
    :param table_path: where the reader's table of the lines is kept (Arrow IPC), once read and valid.
    """

    start: int
    end: int
    paths: dict[str, Any]
    careful: bool
    table_path: Path | None = None


@dataclass
class _DaySpill:
    """One day's spilled lines: a file, the lines not yet in it (``careful`` as for a block), its blocks."""

    path: Path
    buffer: bytearray = field(default_factory=bytearray)
    careful: bool = False
    size: int = 0
    blocks: list[_Block] = field(default_factory=list)


def _read_block(data: bytearray, table_path: Path) -> pa.DataType | None:
    """Read a block of JSON lines with pyarrow (in a helper thread): its learned type, ``None`` if untold.

    The reader works in C++ without the GIL, beside the export thread. It refuses a key whose
    values differ in kind; :func:`_inferred` refuses what it may have misread. The table is kept at
    ``table_path`` to become row groups later, unless pyarrow made it invalid (pyarrow 26 drops the
    null that starts a list).
    """
    options = pa_json.ReadOptions(block_size=len(data) + 1, use_threads=False)
    try:
        table = pa_json.read_json(pa.BufferReader(data), read_options=options)
    except pa.ArrowInvalid:
        return None
    learned = _inferred(pa.struct(list(table.schema)), table.to_struct_array())
    if learned is None:
        return None
    try:
        table.validate(full=True)
    except pa.ArrowInvalid:
        return learned
    with pa.OSFile(str(table_path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as ipc:
        ipc.write_table(table)
    return learned


def _casts_exactly(source: pa.DataType, target: pa.DataType, in_list: bool = False) -> bool:
    """Whether a column read as ``source`` becomes by a cast what reading it as ``target`` gives.

    Nulls (but items of a list: pyarrow 26 casts a list of nulls into an invalid array), integers
    to doubles (chosen only where every integer is exact in one), structs and lists when their
    fields and items do. Anything else (text pyarrow took for timestamps) is read again.
    """
    if source == target:
        return True
    if pa.types.is_null(source):
        return not in_list
    if pa.types.is_int64(source):
        return bool(pa.types.is_float64(target))
    if pa.types.is_struct(source) and pa.types.is_struct(target):
        names = {field.name: field.type for field in target}
        return all(
            field.name in names and _casts_exactly(field.type, names[field.name], in_list) for field in source
        )
    if pa.types.is_list(source) and pa.types.is_list(target):
        return _casts_exactly(source.value_type, target.value_type, True)
    return False


def _block_table(table_path: Path, raw_schema: pa.Schema) -> pa.Table | None:
    """The table the reader read for a block, cast to the export's schema, if that gives the same values.

    :param table_path: where :func:`_read_block` kept it.
    :param raw_schema: the export's schema (``ts`` as an integer).
    """
    table = pa.ipc.open_file(pa.memory_map(str(table_path))).read_all()
    target = pa.struct(list(raw_schema))
    if not _casts_exactly(pa.struct(list(table.schema)), target):
        return None
    result = pa.Table.from_struct_array(table.to_struct_array().cast(target))
    try:
        result.validate()  # cheap; a cast gone wrong is read from the JSON instead
    except pa.ArrowInvalid:
        return None
    return result


# The writer --------------------------------------------------------------------------------------


class ParquetWriter:
    """Spills records per day while learning the schema, then writes each day's Parquet files.

    :param delivery: where finished files go.
    :param spill_dir: a private directory for the spill files.
    :param event_name: the event name for the ``eventName`` column, ``None`` for profile exports.
    :param codec: the compression codec inside the files.
    """

    #: Event records arrive shaped (see :func:`~ct_airflow_provider.export.records.shape_event`).
    shapes_records = False

    def __init__(self, delivery: Delivery, spill_dir: Path, event_name: str | None, codec: str) -> None:
        if codec not in PARQUET_CODECS:
            raise ExportConfigError(
                f"Unknown Parquet codec {codec!r}; choose one of {', '.join(PARQUET_CODECS)}."
            )
        self.delivery = delivery
        self.spill_dir = spill_dir
        self.event_name = event_name
        self.codec = codec
        self._days: dict[int, _DaySpill] = {}
        self._learned = pa.struct([])
        self._learned_blocks = 0
        self._paths: dict[str, Any] = {}  # JSON text paths the spill is written with
        self._encode: _Encoder | None = None
        self._pending: deque[tuple[_Block, bytearray, Future[pa.DataType | None] | None]] = deque()
        self._inference: ThreadPoolExecutor | None = None
        self._tables = 0
        #: Records read again from their JSON lines to write the files, since the table read while
        #: learning types could not serve (a key turned to JSON text later, ...). Mostly none.
        self.records_read_twice = 0

    def add(self, records: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Spill one page of records, and learn their types.

        :param records: ``(yyyymmdd, file record)`` pairs.
        """
        days = self._days
        dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        encode = self._encode
        for day_number, record in records:
            spill = days.get(day_number)
            if spill is None:
                day_of(day_number)  # refuses what is not a calendar day
                spill = days[day_number] = _DaySpill(self.spill_dir / f"{day_number}.jsonl")
            if encode is not None:
                record = encode(record)
            try:
                line = dumps(record, option=option)
            except TypeError:  # an integer beyond 64 bits
                line = careful_line(record)
                spill.careful = True
            spill.buffer += line
            if len(spill.buffer) >= _BLOCK_BYTES:
                self._spill(spill)
                encode = self._encode
        total = sum(len(spill.buffer) for spill in days.values())
        for spill in sorted(days.values(), key=lambda spill: len(spill.buffer), reverse=True):
            if total <= _MAX_BUFFERED_BYTES:
                break
            total -= len(spill.buffer)
            self._spill(spill)

    def _spill(self, spill: _DaySpill) -> None:
        """Hand a day's waiting lines to the reader; learn from finished blocks."""
        self._submit(spill)
        # The first block is waited for: it shows most keys of mixed kinds, which the blocks
        # after it then hold as JSON text, so that the reader can tell them.
        self._learn(keep=_MAX_PENDING_BLOCKS if self._learned_blocks else 0)
        paths = _json_paths(pa.struct([_field(f.name, f.type, final=False) for f in self._learned]))
        if paths != self._paths:
            for day in self._days.values():  # their waiting lines hold the values as they were
                self._submit(day)
            self._paths = paths
            self._encode = json_text_encoder(paths)

    def _submit(self, spill: _DaySpill) -> None:
        """Append a day's waiting lines to its spill file as a block, and hand it to the reader."""
        data = spill.buffer
        if not data:
            return
        with open(spill.path, "ab") as handle:
            handle.write(data)
        block = _Block(spill.size, spill.size + len(data), self._paths, spill.careful)
        spill.blocks.append(block)
        spill.size, spill.buffer, spill.careful = block.end, bytearray(), False
        future = None
        if not block.careful:  # the reader would take such integers for doubles
            if self._inference is None:
                self._inference = ThreadPoolExecutor(max_workers=2, thread_name_prefix="parquet-types")
            self._tables += 1
            block.table_path = self.spill_dir / f"block-{self._tables}.arrow"
            future = self._inference.submit(_read_block, data, block.table_path)
        self._pending.append((block, data, future))

    def _learn(self, keep: int) -> None:
        """Merge the types of finished blocks, oldest first (keys keep their order).

        :param keep: how many blocks may stay pending (the oldest are waited for beyond it).
        """
        while self._pending:
            block, data, future = self._pending[0]
            if future is not None and not future.done() and len(self._pending) <= keep:
                return
            self._pending.popleft()
            learned = future.result() if future is not None else None
            if learned is None:
                loads = decoder(block.careful)
                learned = _python_type(loads(line) for line in data.splitlines())
            if block.table_path is not None and not block.table_path.exists():
                block.table_path = None  # not read, or read invalid
            self._learned = _merge(self._learned, learned)
            self._learned_blocks += 1

    def finish(self) -> None:
        """Write every day's files, in day order, from the spilled records."""
        for spill in self._days.values():
            self._submit(spill)
        self._learn(keep=0)
        self.abort()
        if not self._days:
            return
        fields = {field.name: _field(field.name, field.type, final=True) for field in self._learned}
        if self.event_name is not None:
            fields["ts"] = pa.field("ts", pa.int64())
            fields = {key: fields[key] for key in _EVENT_ORDER if key in fields} | fields
        raw_schema = pa.schema(list(fields.values()))
        schema = raw_schema
        if self.event_name is not None:
            event_fields = [pa.field("ts", pa.timestamp("ms")), pa.field("eventName", pa.string())]
            schema = pa.schema(event_fields + [field for field in raw_schema if field.name != "ts"])
        files = _Files(self, raw_schema, schema)
        for day_number in sorted(self._days):
            spill = self._days[day_number]
            files.write_day(day_number, spill)
            spill.path.unlink(missing_ok=True)
            for block in spill.blocks:
                if block.table_path is not None:
                    block.table_path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Stop the reader's threads; the spill directory is the driver's to remove."""
        self._pending.clear()
        if self._inference is not None:
            self._inference.shutdown(wait=True, cancel_futures=True)
            self._inference = None


# A row group of a file: the index of its block, its first row in the block's table, its rows.
_Group = tuple[int, int, int]


class _Files:
    """Writes the files of each day from its spill, in row groups sized to keep each file within the limit.

    A row group is part of a block's table; its size in rows is estimated from the Parquet bytes
    per JSON byte of the row groups before it. A file is closed before the next row group would
    pass the limit; should a closed file still pass it, it is written again without its last row group.
    """

    def __init__(self, writer: ParquetWriter, raw_schema: pa.Schema, schema: pa.Schema) -> None:
        self.writer = writer
        self.raw_schema = raw_schema
        self.schema = schema
        self.paths = _json_paths(pa.struct(list(raw_schema)))
        self.encode = json_text_encoder(self.paths)
        self.limit = writer.delivery.max_file_bytes
        self.ratio = _INITIAL_RATIO  # Parquet bytes per byte of JSON
        # ParquetWriter rather than pq.write_table, which imports pandas (seconds, and memory).
        empty = pa.BufferOutputStream()
        pq.ParquetWriter(empty, schema, compression=writer.codec).close()
        self.footer_base = len(empty.getvalue())
        # Each row group adds its columns' statistics and offsets to the footer: about as much
        # as the schema takes, until measured.
        self.footer_per_group = float(self.footer_base)
        self.table: tuple[_Block, pa.Table] | None = None
        self.spill_path = Path()

    def footer(self, groups: int) -> int:
        return int(self.footer_base + self.footer_per_group * groups * 1.2) + 1024

    def write_day(self, day_number: int, spill: _DaySpill) -> None:
        """Write and deliver a day's files."""
        day, blocks = day_of(day_number), spill.blocks
        self.spill_path = spill.path
        cursor = (0, 0)  # the next row to write: block index, row
        file_index = 0
        while cursor[0] < len(blocks):
            path = self.writer.delivery.new_path()
            try:
                groups, cursor = self._fill(path, blocks, cursor)
                while path.stat().st_size > self.limit:
                    groups, cursor = self._shrink(path, blocks, groups)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            records = sum(rows for _block, _first, rows in groups)
            self.writer.delivery.deliver(path, digest_of_path(path), day, file_index, records)
            file_index += 1

    def _fill(
        self, path: Path, blocks: list[_Block], cursor: tuple[int, int]
    ) -> tuple[list[_Group], tuple[int, int]]:
        """Write one file from ``cursor`` on: its row groups, and the cursor after them."""
        groups: list[_Group] = []
        number, first = cursor
        with (
            pa.OSFile(str(path), "wb") as sink,
            pq.ParquetWriter(sink, self.schema, compression=self.writer.codec) as out,
        ):
            position = sink.tell()
            while number < len(blocks) and (not groups or position + self.footer(len(groups)) <= self.limit):
                table = self._table(blocks[number])
                json_per_row = (blocks[number].end - blocks[number].start) / table.num_rows
                room = self.limit - position - self.footer(len(groups) + 1)
                rows = min(table.num_rows - first, int(room / (self.ratio * _RATIO_MARGIN * json_per_row)))
                if rows <= 0 and groups:
                    break
                rows = max(rows, 1)
                out.write_table(table.slice(first, rows))
                groups.append((number, first, rows))
                ratio = (sink.tell() - position) / (rows * json_per_row)
                # Follow the data, but let a larger ratio take over at once: overshooting costs a rewrite.
                self.ratio = max(ratio, 0.8 * self.ratio + 0.2 * ratio)
                position = sink.tell()
                first += rows
                if first == table.num_rows:
                    number, first = number + 1, 0
        footer = path.stat().st_size - position
        self.footer_per_group = max((footer - self.footer_base) / len(groups), 0.5 * self.footer_per_group)
        return groups, (number, first)

    def _shrink(
        self, path: Path, blocks: list[_Block], groups: list[_Group]
    ) -> tuple[list[_Group], tuple[int, int]]:
        """Write an over-size file again without its last row group (or half of its only one)."""
        number, first, rows = groups[-1]
        if len(groups) > 1:
            groups, cursor = groups[:-1], (number, first)
        elif rows > 1:
            groups, cursor = [(number, first, rows // 2)], (number, first + rows // 2)
        else:
            record_bytes = path.stat().st_size - self.footer_base
            path.unlink()
            raise too_small_error(record_bytes, self.footer_base, self.limit, "Parquet")
        with (
            pa.OSFile(str(path), "wb") as sink,
            pq.ParquetWriter(sink, self.schema, compression=self.writer.codec) as out,
        ):
            for number, first, rows in groups:
                out.write_table(self._table(blocks[number]).slice(first, rows))
        return groups, cursor

    def _table(self, block: _Block) -> pa.Table:
        """A block's rows in the files' schema (the last one is kept: it is asked for again and again)."""
        if self.table is not None and self.table[0] is block:
            return self.table[1]
        self.table = None
        raw = None
        if block.table_path is not None and block.paths == self.paths:
            raw = _block_table(block.table_path, self.raw_schema)
        if raw is None:
            raw = self._read_again(block)
            self.writer.records_read_twice += raw.num_rows
        table = raw
        event_name = self.writer.event_name
        if event_name is not None:
            try:
                ts = pc.strptime(pc.cast(raw.column("ts"), pa.string()), format="%Y%m%d%H%M%S", unit="ms")
            except pa.ArrowInvalid as exc:
                raise ExportDataError(f"A record's ts is not a valid yyyyMMddHHmmss time: {exc}.") from exc
            columns = [ts, _repeated_text(event_name, raw.num_rows)]
            columns += [raw.column(field.name) for field in self.raw_schema if field.name != "ts"]
            table = pa.Table.from_arrays(columns, schema=self.schema)
        self.table = (block, table)
        return table

    def _read_again(self, block: _Block) -> pa.Table:
        """A block's lines read with the export's schema, their values made JSON text where it says so."""
        with open(self.spill_path, "rb") as handle:
            handle.seek(block.start)
            data = handle.read(block.end - block.start)
        if block.paths != self.paths or block.careful:
            loads, old = decoder(block.careful), block.paths
            data = b"".join(
                encode_line(self.encode(_decoded(loads(line), old))) for line in data.splitlines()
            )
        try:
            return pa_json.read_json(
                pa.BufferReader(data),
                read_options=pa_json.ReadOptions(block_size=len(data) + 1, use_threads=False),
                parse_options=pa_json.ParseOptions(
                    explicit_schema=self.raw_schema, unexpected_field_behavior="error"
                ),
            )
        except pa.ArrowInvalid as exc:  # the schema was learned from these very records
            raise ExportDataError(
                f"Records of {self.spill_path.stem} do not match the export's Parquet schema: {exc}."
            ) from exc


def _repeated_text(text: str, count: int) -> pa.Array:
    """A string array holding ``text`` ``count`` times.

    Built from buffers: ``pa.array`` on a Python list (and ``pa.scalar``) imports pandas to look
    for pandas objects, which costs seconds and tens of MB in a process that has no other use for it.
    """
    encoded = text.encode("utf-8")
    offsets = np.arange(count + 1, dtype=np.int64) * len(encoded)
    return pa.LargeStringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(encoded * count)).cast(
        pa.string()
    )
