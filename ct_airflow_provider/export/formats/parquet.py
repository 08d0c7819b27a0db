"""Parquet: one schema for every file of an event in one export, each file within ``max_file_bytes``.

Records are spilled to per-day files of JSON lines, in blocks that pyarrow's JSON reader reads in
helper threads, inferring their types; the blocks' types are merged, day after day, into the
export's schema, and the files are made from the tables read, cast to it. Each day's blocks and
types depend on that day's records alone, so the files are the same whatever order the days'
pages arrive in (streams are read side by side). Python decides only what the reader cannot: a
key whose values differ in kind (its values become JSON text) and integers a double or int64 does
not hold. Columns, type rules and how the size limit is kept: docs/export-formats.md, "Parquet".
"""

from __future__ import annotations

import itertools
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
from ct_airflow_provider.export.schemas import SchemaSettler

JSON_ENCODING_METADATA = {b"ct_airflow_provider.encoding": b"json"}

# Learned types are Arrow types, and two types the reader never infers: values kept as JSON text,
# and integers some of which a double does not hold exactly (so they must not become doubles).
_JSON, _BIG_INT = pa.large_string(), pa.uint64()
_EXACT_DOUBLE = 2**53
_INT64 = range(-(2**63), 2**63)
_PYTHON_TYPES = {
    type(None): pa.null(),
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
}
_EVENT_ORDER = ("ts", "profile", "deviceInfo", "eventProps", "sessionProps")

# Each day's lines go to the reader in blocks of about this size: large enough that its per-call
# cost vanishes, small enough to keep few in memory. A block's table makes one or more row groups.
# A day's first block is an eighth of it: the export waits while the reader reads it (see _end_block).
_BLOCK_BYTES = 4 << 20
# Lines waiting in the days' buffers, all days together: beyond it the fullest days' lines go to
# their spill files early (their blocks still end where they would have).
_MAX_BUFFERED_BYTES = 16 << 20
# Blocks handed to the reader and not learned from yet; the export waits for the oldest beyond this.
_MAX_PENDING_BLOCKS = 2
# Parquet bytes per byte of JSON assumed before a row group was measured, and the margin on it.
_INITIAL_RATIO, _RATIO_MARGIN = 1.0, 1.25


# Types -------------------------------------------------------------------------------------------


def _merge(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The learned type of values of types ``a`` and ``b``: JSON text when no column type holds both.

    Written out rather than ``pa.unify_schemas(promote_options="permissive")``, which raises on the
    conflicts that become JSON text here, and makes doubles of integers a double does not hold.
    """
    if a == b or b == pa.null():
        return a
    if a == pa.null():
        return b
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields = {field.name: field.type for field in a}
        for field in b:
            fields[field.name] = _merge(fields.get(field.name, pa.null()), field.type)
        return pa.struct(list(fields.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_merge(a.value_type, b.value_type))
    if {a, b} == {pa.int64(), pa.float64()}:
        return pa.float64()
    if {a, b} == {pa.int64(), _BIG_INT}:
        return _BIG_INT
    return _JSON


def _inferred(arrow_type: pa.DataType, column: pa.ChunkedArray) -> pa.DataType | None:
    """The learned type of a column the reader inferred, ``None`` where the reader may have lost it.

    The reader reads integers beyond int64, and integers among floats, as doubles: a double of
    magnitude 2**53 or more may have been an integer a double does not hold, so Python decides.
    Text that looks like a time is inferred as a timestamp; it is text all the same.

    :param arrow_type: the type the reader inferred.
    :param column: the values it read.
    """
    if pa.types.is_struct(arrow_type):
        fields = [(f.name, _inferred(f.type, pc.struct_field(column, [i]))) for i, f in enumerate(arrow_type)]
        return None if any(learned is None for _name, learned in fields) else pa.struct(fields)
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
    """The kinds of values at one place of records the reader could not tell, looked at in Python."""

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
            self.kinds.add(_BIG_INT if value in _INT64 else _JSON)
        else:
            self.kinds.add(kind)

    def add_object(self, obj: dict[str, Any]) -> None:
        self.kinds.add(dict)
        shape = (*obj, *map(type, obj.values()))
        plan = self.plans.get(shape)
        if plan is None:
            for key, value in obj.items():
                self.fields.setdefault(key, _Kinds()).add(value)
            self.plans[shape] = tuple(key for key, value in obj.items() if type(value) in (dict, list, int))
        else:
            for key in plan:
                self.fields[key].add(obj[key])

    def learned(self) -> pa.DataType:
        """The learned type of the values."""
        learned = pa.null()
        for kind in self.kinds:
            if kind is dict:
                kind = pa.struct([(key, kinds.learned()) for key, kinds in self.fields.items()])
            elif kind is list:
                kind = pa.list_(self.item.learned() if self.item else pa.null())
            learned = _merge(
                learned, kind if isinstance(kind, pa.DataType) else _PYTHON_TYPES.get(kind, _JSON)
            )
        return learned


def _python_type(records: Iterable[dict[str, Any]]) -> pa.DataType:
    """The learned type of records the reader could not tell.

    :param records: the records of a block, parsed.
    """
    root = _Kinds()
    root.kinds.add(dict)
    for record in records:
        root.add_object(record)
    return root.learned()


def _field(name: str, learned: pa.DataType) -> pa.Field:
    """The field of a key of a learned type while records are spilled, marked in its metadata when
    its values are JSON text (a key holding only empty objects so far stays a struct: a later record
    may give it keys). The files' fields follow from the stored columns (:func:`_file_field`).

    :param name: the key.
    :param learned: its learned type.
    """
    column = learned
    if learned == _BIG_INT:
        column = pa.int64()
    elif learned == pa.null():
        column = pa.string()
    elif pa.types.is_struct(learned):
        column = pa.struct([_field(child.name, child.type) for child in learned])
    elif pa.types.is_list(learned):
        item = _field("item", learned.value_type)
        # A list holding JSON text is JSON text itself: items are never encoded one by one.
        column = _JSON if item.metadata or _json_paths(item.type) else pa.list_(item.type)
    if column == _JSON:
        return pa.field(name, pa.string(), metadata=JSON_ENCODING_METADATA)
    return pa.field(name, column)


def _json_paths(arrow_type: pa.DataType) -> dict[str, Any]:
    """The keys of a column type's structs whose values are JSON text (``True``) or hold some (a dict)."""
    paths: dict[str, Any] = {}
    for child in arrow_type if pa.types.is_struct(arrow_type) else ():
        inner = _json_paths(child.type)
        if child.metadata == JSON_ENCODING_METADATA or inner:
            paths[child.name] = inner or True
    return paths


def _holds(arrow_type: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    """Whether a type, or a type inside it, passes ``test``."""
    if pa.types.is_struct(arrow_type):
        return test(arrow_type) or any(_holds(child.type, test) for child in arrow_type)
    if pa.types.is_list(arrow_type):
        return _holds(arrow_type.value_type, test)
    return test(arrow_type)


# Columns that last from export to export -------------------------------------------------------
#
# A column's type as the stored schema keeps it (export.schemas), in JSON: "double", "int64",
# "string", "bool", "json" (JSON text), "null" (only nulls so far: decided by the first value),
# {"struct": [[key, type], ...]} or {"list": type}. A column first seen gets the type of its values
# (every number a double, unless an integer needs int64); once written, a column keeps its type,
# and values that do not fit it go to its variant column, "<key>__v_json", as JSON text.

Column = Any  # str | dict[str, Any]: see above

#: The name of a key's variant column is the key's with this appended.
VARIANT_SUFFIX = "__v_json"
_SCALAR_COLUMNS = {
    pa.null(): "null",
    pa.bool_(): "bool",
    pa.int64(): "double",
    pa.float64(): "double",
    _BIG_INT: "int64",
    pa.string(): "string",
    _JSON: "json",
}
# The learned types each scalar column holds as they are.
_HELD = {
    "double": (pa.int64(), pa.float64()),
    "int64": (pa.int64(), _BIG_INT),
    "string": (pa.string(),),
    "bool": (pa.bool_(),),
}


def _holds_json(column: Column) -> bool:
    if column == "json":
        return True
    if isinstance(column, dict) and "struct" in column:
        return any(_holds_json(child) for _key, child in column["struct"])
    return isinstance(column, dict) and _holds_json(column["list"])


def _new_column(learned: pa.DataType) -> Column:
    """The column of a key first seen, from its learned type (over every record of the export)."""
    if pa.types.is_struct(learned):
        if not learned.num_fields:  # only ever empty objects
            return "json"
        return {"struct": [[child.name, _new_column(child.type)] for child in learned]}
    if pa.types.is_list(learned):
        item = _new_column(learned.value_type)
        # Values inside lists are never made JSON text one by one: such a list is JSON text whole.
        return "json" if _holds_json(item) else {"list": item}
    return _SCALAR_COLUMNS[learned]


def _extend_column(column: Column, learned: pa.DataType, variants: bool) -> tuple[Column, bool]:
    """A column extended with values of a learned type: the column, and whether some of them do not fit.

    :param column: the column as stored.
    :param learned: the learned type of this export's values.
    :param variants: whether a struct's keys may get variant columns (not inside lists, whose items
        are never split: a list with an item that does not fit goes whole to its own variant).
    """
    if learned == pa.null() or column == "json":
        return column, False
    if column == "null":
        return _new_column(learned), False
    if isinstance(column, str):
        return column, learned not in _HELD[column]
    if "struct" in column:
        if not pa.types.is_struct(learned):
            return column, True
        fields = [[key, child] for key, child in column["struct"]]
        index = {key: position for position, (key, _child) in enumerate(fields)}
        for child in learned:
            position = index.get(child.name)
            if position is None:
                index[child.name] = len(fields)
                fields.append([child.name, _new_column(child.type)])
                continue
            extended, misfit = _extend_column(fields[position][1], child.type, variants)
            if not misfit:
                fields[position][1] = extended
            elif not variants:
                return column, True
            elif child.name + VARIANT_SUFFIX not in index:
                index[child.name + VARIANT_SUFFIX] = len(fields)
                fields.append([child.name + VARIANT_SUFFIX, "json"])
        return {"struct": fields}, False
    if not pa.types.is_list(learned):
        return column, True
    item, misfit = _extend_column(column["list"], learned.value_type, variants=False)
    if misfit or _holds_json(item):
        return column, True
    return {"list": item}, False


def extend_columns(stored: dict[str, Any] | None, learned: pa.DataType) -> dict[str, Any]:
    """The ``parquet`` section of a stored schema extended with an export's learned record type.

    :param stored: the section as stored (``{"columns": [[key, column], ...]}``), ``None`` if none.
    :param learned: the learned type of the export's records (a struct).
    """
    columns = {"struct": (stored or {}).get("columns", [])}
    try:
        extended, _misfit = _extend_column(columns, learned, variants=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportConfigError(
            f"The stored Parquet schema holds a column type this version does not know ({exc!r}); "
            'types are "double", "int64", "string", "bool", "json", "null", {"struct": [[key, type], ...]} '
            'and {"list": type}. Fix the schema object, or delete it to start afresh.'
        ) from exc
    return {"columns": extended["struct"]}


def _file_field(name: str, column: Column) -> pa.Field:
    """The Parquet field of a column."""
    if column == "json":
        return pa.field(name, pa.string(), metadata=JSON_ENCODING_METADATA)
    if isinstance(column, str):
        arrow_type = {"null": pa.string(), "double": pa.float64()}.get(column) or _FILE_SCALARS[column]
    elif "struct" in column:
        arrow_type = pa.struct([_file_field(key, child) for key, child in column["struct"]])
    else:
        arrow_type = pa.list_(_file_field("item", column["list"]).type)
    return pa.field(name, arrow_type)


_FILE_SCALARS = {"int64": pa.int64(), "string": pa.string(), "bool": pa.bool_()}


def file_fields(columns: list[list[Any]]) -> list[pa.Field]:
    """The Parquet fields of stored columns (``[[key, column], ...]``), in their order."""
    return [_file_field(key, column) for key, column in columns]


def _fits(value: Any, column: Column) -> bool:
    """Whether a value is written as it is in a column (else it goes to the key's variant column)."""
    kind = type(value)
    if value is None or column == "json":
        return True
    if column == "double":
        return kind is float or (kind is int and -_EXACT_DOUBLE <= value <= _EXACT_DOUBLE)
    if column == "int64":
        return kind is int and value in _INT64
    if column == "string":
        return kind is str
    if column == "bool":
        return kind is bool
    if column == "null":
        return False
    if "struct" in column:
        if kind is not dict:
            return False
        children = dict(column["struct"])
        return all(key in children and _fits(child, children[key]) for key, child in value.items())
    return kind is list and all(_fits(item, column["list"]) for item in value)


def _misfits(learned: pa.DataType, column: Column) -> bool:
    """Whether values of a learned type may not all fit a column (a block's rows are then routed)."""
    return _extend_column(column, learned, variants=False)[1]


def variant_router(columns: list[list[Any]]) -> _Encoder | None:
    """A function moving each value that does not fit its column to the key's variant column.

    The value is moved as it is (made JSON text afterwards, as the variant column is JSON text);
    ``None`` when no column has a variant.

    :param columns: the columns of a struct, ``[[key, column], ...]``.
    """
    keys = {key for key, _column in columns}
    # Per key: its column, its variant column's name (None: it has none), the router of its struct.
    steps: list[tuple[str, Column, str | None, _Encoder | None]] = []
    for key, column in columns:
        inner = variant_router(column["struct"]) if isinstance(column, dict) and "struct" in column else None
        variant = key + VARIANT_SUFFIX if key + VARIANT_SUFFIX in keys else None
        if variant is not None or inner is not None:
            steps.append((key, column, variant, inner))
    if not steps:
        return None

    def route(obj: dict[str, Any]) -> dict[str, Any]:
        copy = None
        for key, column, variant, inner in steps:
            value = obj.get(key)
            if value is None:
                continue
            if variant is not None and not (_fits(value, column) if inner is None else type(value) is dict):
                copy = copy or obj.copy()
                copy[key], copy[variant] = None, value
            elif inner is not None and type(value) is dict:
                routed = inner(value)
                if routed is not value:
                    copy = copy or obj.copy()
                    copy[key] = routed
        return obj if copy is None else copy

    return route


# JSON text ---------------------------------------------------------------------------------------

_Encoder = Callable[[dict[str, Any]], dict[str, Any]]


def json_text_encoder(paths: dict[str, Any]) -> _Encoder:
    """A function returning a record with the values at ``paths`` as JSON text (copied where changed).

    Built once per set of paths, one closure per level, because it runs for every record.

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
                copy = copy or obj.copy()
                copy[key] = new
        return obj if copy is None else copy

    return encode


def _decoded(obj: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`json_text_encoder`.

    :param obj: a record read back from the spill (modified).
    :param paths: the paths it was spilled with.
    """
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
    """Whole lines of a day's spill, read by the reader in one go.

    :param path: the day's spill file.
    :param start: offset of its first line in the day's spill file.
    :param end: offset just after its last line.
    :param paths: the JSON text paths its lines were spilled with.
    :param careful: whether a line holds an integer beyond 64 bits (never given to the reader).
    :param table_path: where the reader's table of the lines is kept (Arrow IPC), if it may serve.
    :param learned: the learned type of its records, once learned.
    """

    path: Path
    start: int
    end: int
    paths: dict[str, Any]
    careful: bool
    table_path: Path | None = None
    learned: pa.DataType | None = None


@dataclass
class _DaySpill:
    """One day's spill: its file, the lines of its current block not in it yet, its blocks, its types.

    Everything here follows from the day's own records: a block ends every ``_BLOCK_BYTES`` of
    lines, and the keys a block holds as JSON text are those its day's earlier blocks showed.
    """

    path: Path
    buffer: bytearray = field(default_factory=bytearray)
    careful: bool = False  # the current block holds an integer beyond 64 bits
    block_start: int = 0  # where the current block starts in the file
    written: int = 0  # bytes in the file
    blocks: list[_Block] = field(default_factory=list)
    learned: pa.DataType = field(default_factory=lambda: pa.struct([]))
    paths: dict[str, Any] = field(default_factory=dict)  # the JSON text paths lines are spilled with
    encode: _Encoder | None = None
    # The buffer's size that ends the current block (kept rather than worked out for every record).
    buffer_limit: int = 0

    def __post_init__(self) -> None:
        self.buffer_limit = self.block_limit

    @property
    def block_bytes(self) -> int:
        return self.written - self.block_start + len(self.buffer)

    @property
    def block_limit(self) -> int:
        """The size of the current block: a day's first is small, as the export waits for it."""
        return _BLOCK_BYTES if self.blocks else _BLOCK_BYTES // 8

    def write_buffer(self) -> None:
        """Append the waiting lines to the file (the block goes on)."""
        if self.buffer:
            with open(self.path, "ab") as handle:
                handle.write(self.buffer)
            self.written += len(self.buffer)
            self.buffer = bytearray()
            self.buffer_limit = self.block_limit - (self.written - self.block_start)


def _read_block(data: bytearray, table_path: Path) -> pa.DataType | None:
    """Read a block of JSON lines (in a helper thread): its learned type, ``None`` if the reader cannot tell.

    The reader works in C++ without the GIL, beside the export thread. The table read is kept at
    ``table_path`` to become row groups, unless it holds text read as timestamps or pyarrow made
    it invalid (pyarrow 26 drops the null that starts a list).

    :param data: whole JSON lines, one record each.
    :param table_path: where to keep the table.
    """
    options = pa_json.ReadOptions(block_size=len(data) + 1, use_threads=False)
    try:
        table = pa_json.read_json(pa.BufferReader(data), read_options=options)
    except pa.ArrowInvalid:  # a key whose values differ in kind
        return None
    read = pa.struct(list(table.schema))
    learned = _inferred(read, table.to_struct_array())
    if learned is None:
        return None
    try:
        table.validate(full=True)
    except pa.ArrowInvalid:
        return learned
    if not _holds(read, pa.types.is_timestamp):
        with pa.OSFile(str(table_path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as ipc:
            ipc.write_table(table)
    return learned


# The writer --------------------------------------------------------------------------------------


class ParquetWriter:
    """Spills records per day while learning the schema, then writes each day's Parquet files.

    :param delivery: where finished files go.
    :param spill_dir: a private directory for the spill files.
    :param event_name: the event name for the ``eventName`` column, ``None`` for profile exports.
    :param codec: the compression codec inside the files.
    :param schema: the event's stored schema, settled before the first file (see
        :mod:`~ct_airflow_provider.export.schemas`); without one, the files' columns are those of
        this export's records alone, by the same rules.
    """

    #: Event records arrive shaped (see :func:`~ct_airflow_provider.export.records.shape_event`).
    shapes_records = False

    def __init__(
        self,
        delivery: Delivery,
        spill_dir: Path,
        event_name: str | None,
        codec: str,
        schema: SchemaSettler | None = None,
    ) -> None:
        if codec not in PARQUET_CODECS:
            raise ExportConfigError(
                f"Unknown Parquet codec {codec!r}; choose one of {', '.join(PARQUET_CODECS)}."
            )
        self.delivery, self.spill_dir, self.event_name, self.codec = delivery, spill_dir, event_name, codec
        self.schema = schema
        self._days: dict[int, _DaySpill] = {}
        self._pending: deque[tuple[_DaySpill, _Block, bytearray, Future[pa.DataType | None] | None]] = deque()
        self._reader: ThreadPoolExecutor | None = None
        #: Records read again from their JSON lines for the files, as the table read while learning
        #: types could not serve (a key turned to JSON text later, ...). Mostly none.
        self.records_read_twice = 0

    def add(self, records: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Spill one page of records, and learn their types.

        :param records: ``(yyyymmdd, file record)`` pairs.
        """
        days = self._days
        dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE  # looked up once: this runs per record
        for day_number, record in records:
            spill = days.get(day_number)
            if spill is None:
                day_of(day_number)  # refuses what is not a calendar day
                spill = days[day_number] = _DaySpill(self.spill_dir / f"{day_number}.jsonl")
            if spill.encode is not None:
                record = spill.encode(record)
            try:
                line = dumps(record, option=option)
            except TypeError:  # an integer beyond 64 bits
                line, spill.careful = careful_line(record), True
            spill.buffer += line
            if len(spill.buffer) >= spill.buffer_limit:
                self._end_block(spill)
        total = sum(len(spill.buffer) for spill in days.values())
        for spill in sorted(days.values(), key=lambda spill: len(spill.buffer), reverse=True):
            if total <= _MAX_BUFFERED_BYTES:
                break
            total -= len(spill.buffer)
            spill.write_buffer()

    def _end_block(self, spill: _DaySpill) -> None:
        """End a day's block and hand it to the reader; its day's next block holds as JSON text the
        keys of mixed kinds its first block and the blocks before the last two showed."""
        self._submit(spill)
        # The first block (small) is waited for: it shows most keys of mixed kinds, which the blocks
        # after it then hold as JSON text, so that the reader can tell them. Later blocks are not:
        # two are read while the next is filled.
        blocks = spill.blocks
        if len(blocks) != 2:
            self._learn(until=blocks[0] if len(blocks) == 1 else blocks[-3])
        paths = _json_paths(_field("", spill.learned).type)
        if paths != spill.paths:
            spill.paths, spill.encode = paths, json_text_encoder(paths)
        while len(self._pending) > _MAX_PENDING_BLOCKS:  # they hold their lines in memory
            self._learn(until=self._pending[0][1])

    def _submit(self, spill: _DaySpill) -> None:
        """End a day's current block and hand it to the reader."""
        if not spill.block_bytes:
            return
        start, data = spill.block_start, spill.buffer
        early = spill.written > start  # part of the block went to the file early
        spill.write_buffer()
        if early:
            with open(spill.path, "rb") as handle:
                handle.seek(start)
                data = bytearray(handle.read(spill.written - start))
        block = _Block(spill.path, start, spill.written, spill.paths, spill.careful)
        spill.blocks.append(block)
        spill.block_start, spill.careful = spill.written, False
        spill.buffer_limit = spill.block_limit
        future = None
        if not block.careful:  # the reader would take such integers for doubles
            self._reader = self._reader or ThreadPoolExecutor(2, thread_name_prefix="parquet-types")
            block.table_path = self.spill_dir / f"{spill.path.stem}-{start}.arrow"
            future = self._reader.submit(_read_block, data, block.table_path)
        self._pending.append((spill, block, data, future))

    def _learn(self, until: _Block | None = None) -> None:
        """Merge the types of blocks into their days' types, oldest first (keys keep their order),
        up to the block ``until`` (every block by default), waiting for the reader where needed.

        Only blocks up to ``until`` are learned, even when later ones are ready: what a day's types
        are when its next block starts must not depend on the reader's timing.
        """
        if until is not None and all(block is not until for _spill, block, _data, _future in self._pending):
            return  # learned already
        while self._pending:
            spill, block, data, future = self._pending.popleft()
            learned = future.result() if future is not None else None
            if learned is None:
                loads = decoder(block.careful)
                learned = _python_type(loads(line) for line in data.splitlines())
            if block.table_path is not None and not block.table_path.exists():
                block.table_path = None
            block.learned = learned
            spill.learned = _merge(spill.learned, learned)
            if block is until:
                return

    def finish(self) -> None:
        """Write every day's files, in day order, from the spilled records."""
        for day_number in sorted(self._days):
            self._submit(self._days[day_number])
        self._learn()
        self.abort()
        if not self._days:
            return
        learned = pa.struct([])
        for day_number in sorted(self._days):  # keys in the order the days show them
            learned = _merge(learned, self._days[day_number].learned)
        if self.event_name is not None:  # ts is the files' timestamp column, not a stored one
            learned = pa.struct([child for child in learned if child.name != "ts"])

        def extend(stored: dict[str, Any] | None) -> dict[str, Any]:
            return extend_columns(stored, learned)

        columns = (extend(None) if self.schema is None else self.schema.settle("parquet", extend))["columns"]
        fields = {field.name: field for field in file_fields(columns)}
        if self.event_name is not None:
            fields["ts"] = pa.field("ts", pa.int64())  # made a timestamp for the files
            fields = {key: fields[key] for key in _EVENT_ORDER if key in fields} | fields
        with ThreadPoolExecutor(1, thread_name_prefix="parquet-tables") as pool:
            blocks = [block for day_number in sorted(self._days) for block in self._days[day_number].blocks]
            files = _Files(self, pa.schema(list(fields.values())), pool, blocks, columns)
            for day_number in sorted(self._days):
                spill = self._days[day_number]
                files.write_day(day_number, spill)
                spill.path.unlink()
                for block in spill.blocks:
                    if block.table_path is not None:
                        block.table_path.unlink()

    def abort(self) -> None:
        """Stop the reader's threads; the spill directory is the driver's to remove."""
        self._pending.clear()
        if self._reader is not None:
            self._reader.shutdown(wait=True, cancel_futures=True)
            self._reader = None


# A row group of a file: the index of its block, its first row in the block's table, its rows.
_Group = tuple[int, int, int]


class _Files:
    """Writes each day's files in row groups sized to keep every file within the limit.

    A row group is rows of a block's table, as many as the room left takes at the Parquet bytes
    per JSON byte of the row groups before. A file is closed before the next row group would pass
    the limit; should a closed file still pass it, it is written again without its last row group.

    :param writer: the export's writer.
    :param raw_schema: the schema of the records (``ts`` an integer).
    :param pool: the helper thread that makes the tables.
    :param blocks: every block, in the order they are written (day after day).
    :param columns: the columns as stored (``[[key, column], ...]``), to route values that do not
        fit theirs to their variant columns.
    """

    def __init__(
        self,
        writer: ParquetWriter,
        raw_schema: pa.Schema,
        pool: ThreadPoolExecutor,
        blocks: list[_Block],
        columns: list[list[Any]],
    ) -> None:
        self.writer, self.raw_schema, self.schema = writer, raw_schema, raw_schema
        if writer.event_name is not None:
            first = [pa.field("ts", pa.timestamp("ms")), pa.field("eventName", pa.string())]
            self.schema = pa.schema(first + [column for column in raw_schema if column.name != "ts"])
        self.paths = _json_paths(pa.struct(list(raw_schema)))
        self.encode = json_text_encoder(self.paths)
        self.columns: Column = {"struct": columns}
        self.route = variant_router(columns)
        self.limit = writer.delivery.max_file_bytes
        self.ratio = _INITIAL_RATIO
        # ParquetWriter rather than pq.write_table, which imports pandas (seconds, and memory).
        empty = pa.BufferOutputStream()
        pq.ParquetWriter(empty, self.schema, compression=writer.codec).close()
        self.footer_base = len(empty.getvalue())
        # A row group adds its columns' offsets and statistics to the footer: about as much as the
        # schema takes, until measured.
        self.footer_per_group = float(self.footer_base)
        self.pool = pool
        # The block written after each one, the next day's first after a day's last.
        self.successor = {id(block): following for block, following in itertools.pairwise(blocks)}
        # The table being written (asked for again and again), and the next one, being made.
        self.current: tuple[_Block, Future[pa.Table]] | None = None
        self.ahead: tuple[_Block, Future[pa.Table]] | None = None
        self.spill = _DaySpill(Path())

    def footer(self, groups: int) -> int:
        """Bytes to keep for the footer of a file of ``groups`` row groups (a margin included)."""
        return int(self.footer_base + self.footer_per_group * groups * 1.2) + 1024

    def write_day(self, day_number: int, spill: _DaySpill) -> None:
        """Write and deliver a day's files.

        :param day_number: the day, ``yyyymmdd``.
        :param spill: its spilled records.
        """
        self.spill, blocks = spill, spill.blocks
        cursor, index = (0, 0), 0  # the next row to write (block index, row), the next file's index
        while cursor[0] < len(blocks):
            path = self.writer.delivery.new_path()
            try:
                groups, cursor = self._fill(path, cursor)
                while path.stat().st_size > self.limit:
                    groups, cursor = self._shrink(path, groups)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            records = sum(rows for _block, _first, rows in groups)
            self.writer.delivery.deliver(path, digest_of_path(path), day_of(day_number), index, records)
            index += 1
        for made in (
            self.current,
            self.ahead,
        ):  # tables of the day still being made read its spill, removed next
            if made is not None and made[0].path == spill.path:
                made[1].exception()

    def _fill(self, path: Path, cursor: tuple[int, int]) -> tuple[list[_Group], tuple[int, int]]:
        """Write one file: its row groups, and the cursor after them.

        :param path: the file.
        :param cursor: the first row to write: block index and row.
        """
        blocks, groups = self.spill.blocks, list[_Group]()
        number, first = cursor
        with (
            pa.OSFile(str(path), "wb") as sink,
            pq.ParquetWriter(sink, self.schema, compression=self.writer.codec) as out,
        ):
            position = sink.tell()
            while number < len(blocks) and (not groups or position + self.footer(len(groups)) <= self.limit):
                table = self._table(number)
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
                position, first = sink.tell(), first + rows
                if first == table.num_rows:
                    number, first = number + 1, 0
        footer = path.stat().st_size - position
        self.footer_per_group = max((footer - self.footer_base) / len(groups), 0.5 * self.footer_per_group)
        return groups, (number, first)

    def _shrink(self, path: Path, groups: list[_Group]) -> tuple[list[_Group], tuple[int, int]]:
        """Write an over-size file again without its last row group (or half of its only one).

        :param path: the file.
        :param groups: its row groups.
        :return: the row groups left, and the cursor at the first row taken out.
        """
        number, first, rows = groups[-1]
        if len(groups) > 1:
            groups, cursor = groups[:-1], (number, first)
        elif rows > 1:
            groups, cursor = [(number, first, rows // 2)], (number, first + rows // 2)
        else:
            record_bytes = path.stat().st_size - self.footer_base
            raise too_small_error(record_bytes, self.footer_base, self.limit, "Parquet")
        with (
            pa.OSFile(str(path), "wb") as sink,
            pq.ParquetWriter(sink, self.schema, compression=self.writer.codec) as out,
        ):
            for number, first, rows in groups:
                out.write_table(self._table(number).slice(first, rows))
        return groups, cursor

    def _table(self, number: int) -> pa.Table:
        """The rows of the day's block ``number`` in the files' schema; the next block's are made meanwhile.

        Making a table (reading, casting) and writing Parquet both run in C++ without the GIL: the
        helper thread makes the next table (the next day's first after a day's last) while this one
        is written, and both cores work.

        :param number: the block's index in the day.
        """
        blocks = self.spill.blocks
        if self.current is None or self.current[0] is not blocks[number]:
            ahead = self.ahead
            if ahead is not None and ahead[0] is blocks[number]:
                self.current = ahead
            else:
                self.current = (blocks[number], self.pool.submit(self._make, blocks[number]))
            following = self.successor.get(id(blocks[number]))
            self.ahead = None if following is None else (following, self.pool.submit(self._make, following))
        return self.current[1].result()

    def _make(self, block: _Block) -> pa.Table:
        """A block's rows in the files' schema (in the helper thread)."""
        raw = None
        if block.table_path is not None and block.paths == self.paths and not self._routed(block):
            raw = _block_table(block.table_path, self.raw_schema)
        if raw is None:
            raw = self._read_again(block)
            self.writer.records_read_twice += raw.num_rows  # only this thread counts
        event_name = self.writer.event_name
        if event_name is None:
            return raw
        try:
            ts = pc.strptime(pc.cast(raw.column("ts"), pa.string()), format="%Y%m%d%H%M%S", unit="ms")
        except pa.ArrowInvalid as exc:
            raise ExportDataError(f"A record's ts is not a valid yyyyMMddHHmmss time: {exc}.") from exc
        columns = [ts, _repeated_text(event_name, raw.num_rows)]
        columns += [raw.column(column.name) for column in self.raw_schema if column.name != "ts"]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _routed(self, block: _Block) -> bool:
        """Whether some of a block's values go to variant columns (they do not fit their columns)."""
        return self.route is not None and (block.learned is None or _misfits(block.learned, self.columns))

    def _read_again(self, block: _Block) -> pa.Table:
        """A block's lines read with the schema, values made JSON text or moved to variant columns
        where it says so."""
        with open(block.path, "rb") as handle:
            handle.seek(block.start)
            data = handle.read(block.end - block.start)
        route = self.route if self._routed(block) else None
        if block.paths != self.paths or block.careful or route is not None:
            loads, encode = decoder(block.careful), self.encode
            records: Iterable[dict[str, Any]] = (
                _decoded(loads(line), block.paths) for line in data.splitlines()
            )
            if route is not None:
                records = map(route, records)
            data = b"".join(encode_line(encode(record)) for record in records)
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
                f"Records of {block.path.stem} do not match the export's Parquet schema: {exc}."
            ) from exc


def _block_table(table_path: Path, raw_schema: pa.Schema) -> pa.Table | None:
    """A table kept by :func:`_read_block` cast to the export's schema, ``None`` if the cast made it invalid.

    Every cast left gives what reading the lines with the schema gives: nulls to any type, integers
    to doubles (chosen only where every integer is exact in one), structs to structs with more keys.
    A table holding nulls gets a full validation: pyarrow 26 casts a list of nulls into an invalid array.

    :param table_path: where the table is kept.
    :param raw_schema: the export's schema (``ts`` an integer).
    """
    table = pa.ipc.open_file(pa.memory_map(str(table_path))).read_all()
    try:
        result = pa.Table.from_struct_array(table.to_struct_array().cast(pa.struct(list(raw_schema))))
        result.validate(full=_holds(pa.struct(list(table.schema)), pa.types.is_null))
    except pa.ArrowException:
        return None
    return result


def _repeated_text(text: str, count: int) -> pa.Array:
    """A string array holding ``text`` ``count`` times.

    Built from buffers: ``pa.array`` on a Python list (and ``pa.scalar``) imports pandas to look
    for pandas objects, which costs seconds and tens of MB in a process that has no other use for it.
    """
    encoded = text.encode("utf-8")
    offsets = np.arange(count + 1, dtype=np.int64) * len(encoded)
    strings = pa.LargeStringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(encoded * count))
    return strings.cast(pa.string())
