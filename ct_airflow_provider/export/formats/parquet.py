"""Parquet: one schema for every file of an event in one export, each file within ``max_file_bytes``.

Types are learned over every record before the first file is written: records are spilled to
per-day files meanwhile, pyarrow's JSON reader infers each spilled block in helper threads, and
Python decides the blocks pyarrow cannot; a key whose values disagree becomes a column of JSON text.
Columns, type rules, how the size limit is kept: docs/export-formats.md, "Parquet".
"""

from __future__ import annotations

import bisect
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
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
from ct_airflow_provider.export.files import FileDigest, digest_of_path
from ct_airflow_provider.export.formats import PARQUET_CODECS
from ct_airflow_provider.export.formats.json import careful_line, decoder, json_text
from ct_airflow_provider.export.records import day_of

JSON_ENCODING_METADATA = {b"ct_airflow_provider.encoding": b"json"}

_NULL, _BOOL, _INT, _FLOAT, _STR, _LIST, _OBJECT, _OTHER = (1 << bit for bit in range(8))
_KIND_BITS: dict[type, int] = {
    type(None): _NULL,
    bool: _BOOL,
    int: _INT,
    float: _FLOAT,
    str: _STR,
    list: _LIST,
    dict: _OBJECT,
}
_EXACT_DOUBLE = 2**53
# Leaf types pyarrow's JSON reader infers, as the kind of value they stand for. Strings that look
# like times are inferred as timestamps: they are text all the same (the files are read with an
# explicit schema, where they are strings).
_ARROW_KINDS: dict[int, int] = {
    pa.null().id: _NULL,
    pa.bool_().id: _BOOL,
    pa.float64().id: _FLOAT,
    pa.string().id: _STR,
    pa.timestamp("s").id: _STR,
}
# A key's place in the records: its key at each depth, ``None`` for "an item of a list".
_Path = tuple[str | None, ...]
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_SIGNATURES = 512
_FLAT_KINDS = frozenset({str, float, bool, type(None)})
# A remembered shape with no integers, objects or lists: a repeat needs no further look.
_NOTHING_TO_DO: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = ((), (), ())
# Each day's spilled lines are handed to pyarrow's JSON reader for type inference in blocks of about
# this size: large enough that the reader's per-call cost vanishes, small enough to keep few in memory.
_INFER_BLOCK_BYTES = 4 << 20
# Lines waiting in the days' buffers, all days together: beyond it, the fullest day's block goes early
# (an export of many interleaved days makes smaller blocks instead of more memory).
_MAX_BUFFERED_BYTES = 16 << 20
# Blocks handed over but not yet looked at; the writer waits for the oldest beyond this.
_MAX_PENDING_BLOCKS = 2

# Row groups are read from the spill in blocks of at most this many bytes of JSON lines: 8 MB made
# no faster and peaked 20 MB higher (a block is converted while the one before it is written).
_BLOCK_BYTES = 4 << 20
# Compressed bytes per byte of JSON assumed before any row group was measured.
_INITIAL_RATIO = 1.0
_RATIO_MARGIN = 1.25
# Days whose files are written side by side.
_DAYS_AT_ONCE = 2


class _Node:
    """What one key (at one path) held across the export's records: value kinds and sub-keys."""

    __slots__ = ("fields", "inexact_in_double", "item", "kinds", "outside_int64", "signatures")

    def __init__(self) -> None:
        self.kinds = 0
        self.fields: dict[str, _Node] | None = None
        self.item: _Node | None = None
        self.inexact_in_double = False
        self.outside_int64 = False
        self.signatures: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}

    def merge(self, value: Any) -> None:
        kind = type(value)
        if kind is dict:
            self.kinds |= _OBJECT
            self.merge_object(value)
        elif kind is list:
            self.kinds |= _LIST
            self.merge_list(value)
        elif kind is int:
            self.kinds |= _INT
            if not -_EXACT_DOUBLE <= value <= _EXACT_DOUBLE:
                self.big_int(value)
        else:
            self.kinds |= _KIND_BITS.get(kind, _OTHER)

    def big_int(self, value: int) -> None:
        self.inexact_in_double = True
        if not _INT64_MIN <= value <= _INT64_MAX:
            self.outside_int64 = True

    def merge_object(self, obj: dict[str, Any]) -> None:
        # Records mostly repeat a few shapes (same keys, same value types): remember each shape so
        # that a repeat only needs the checks that depend on values (big integers, nested values).
        signature = (*obj, *map(type, obj.values()))
        known = self.signatures.get(signature)
        fields = self.fields
        if known is None:
            if fields is None:
                fields = self.fields = {}
            for key, value in obj.items():
                node = fields.get(key)
                if node is None:
                    node = fields[key] = _Node()
                node.merge(value)
            if len(self.signatures) >= _MAX_SIGNATURES:
                self.signatures.clear()
            plan = (
                tuple(key for key, value in obj.items() if type(value) is int),
                tuple(key for key, value in obj.items() if type(value) is dict),
                tuple(key for key, value in obj.items() if type(value) is list),
            )
            self.signatures[signature] = plan if any(plan) else _NOTHING_TO_DO
            return
        if known is _NOTHING_TO_DO:
            return
        assert fields is not None
        int_keys, dict_keys, list_keys = known
        for key in int_keys:
            value = obj[key]
            if value > _EXACT_DOUBLE or value < -_EXACT_DOUBLE:
                fields[key].big_int(value)
        for key in dict_keys:
            fields[key].merge_object(obj[key])
        for key in list_keys:
            fields[key].merge_list(obj[key])

    def merge_list(self, items: list[Any]) -> None:
        item = self.item
        if item is None:
            item = self.item = _Node()
        kinds = set(map(type, items))
        if kinds <= _FLAT_KINDS:
            for kind in kinds:
                item.kinds |= _KIND_BITS[kind]
            return
        for value in items:
            item.merge(value)

    def merge_arrow(self, arrow_type: pa.DataType, path: _Path, big_ints: frozenset[_Path]) -> None:
        """Merge what pyarrow inferred for this key over a block of records (see :func:`_infer_block`).

        The result is what :meth:`merge` would have learned from the same records: the kinds seen,
        and for integers whether one is beyond what a double holds exactly (``big_ints``).

        :param arrow_type: the inferred type, one that :func:`_check_inferred` accepted.
        :param path: the keys leading here, ``None`` standing for "an item of a list".
        :param big_ints: the paths of integer columns holding a value beyond +-2**53.
        """
        if pa.types.is_struct(arrow_type):
            self.kinds |= _OBJECT
            fields = self.fields
            if fields is None:
                fields = self.fields = {}
            for field in arrow_type:
                node = fields.get(field.name)
                if node is None:
                    node = fields[field.name] = _Node()
                node.merge_arrow(field.type, (*path, field.name), big_ints)
        elif pa.types.is_list(arrow_type):
            self.kinds |= _LIST
            if self.item is None:
                self.item = _Node()
            self.item.merge_arrow(arrow_type.value_type, (*path, None), big_ints)
        elif pa.types.is_int64(arrow_type):
            self.kinds |= _INT
            if path in big_ints:
                # Within int64 (the reader turns larger integers into doubles, which are refused).
                self.inexact_in_double = True
        else:
            self.kinds |= _ARROW_KINDS[arrow_type.id]

    def is_json(self, final: bool) -> bool:
        """Whether values are stored as JSON text; ``final`` once every record was seen.

        Before the end the answer only ever turns from no to yes as records arrive (so values
        can be encoded as the spill is written); the one exception, a key seen only with empty
        objects, is settled at the end.
        """
        kinds = self.kinds & ~_NULL
        if kinds in (0, _BOOL, _STR):
            return False
        if kinds == _INT:
            return self.outside_int64
        if kinds in (_FLOAT, _INT | _FLOAT):
            return self.inexact_in_double
        if kinds == _LIST:
            return self.item is not None and (self.item.is_json(final) or self.item.holds_json(final))
        if kinds == _OBJECT:
            return final and not self.fields
        return True

    def holds_json(self, final: bool) -> bool:
        """Whether some value inside (a struct field, at any depth) is stored as JSON text."""
        if self.kinds & ~_NULL != _OBJECT or not self.fields:
            return False
        return any(child.is_json(final) or child.holds_json(final) for child in self.fields.values())

    def json_paths(self, final: bool) -> dict[str, Any]:
        """The keys below this object whose values are JSON text (``True``) or hold some (a subtree)."""
        paths: dict[str, Any] = {}
        for key, child in (self.fields or {}).items():
            if child.is_json(final):
                paths[key] = True
            elif child.holds_json(final):
                paths[key] = child.json_paths(final)
        return paths

    def arrow_type(self) -> tuple[pa.DataType, bool]:
        """The column type for this node, and whether values are stored as JSON text."""
        if self.is_json(final=True):
            return pa.string(), True
        kinds = self.kinds & ~_NULL
        if kinds == _BOOL:
            return pa.bool_(), False
        if kinds == _INT:
            return pa.int64(), False
        if kinds in (_FLOAT, _INT | _FLOAT):
            return pa.float64(), False
        if kinds == _LIST and self.item is not None:
            return pa.list_(self.item.arrow_type()[0]), False
        if kinds == _OBJECT and self.fields:
            return pa.struct([field_of(key, node) for key, node in self.fields.items()]), False
        return pa.string(), False


def field_of(name: str, node: _Node) -> pa.Field:
    """The Arrow field of a key, marked when its values are JSON text."""
    arrow_type, as_json = node.arrow_type()
    return pa.field(name, arrow_type, nullable=True, metadata=JSON_ENCODING_METADATA if as_json else None)


_Encoder = Callable[[dict[str, Any]], dict[str, Any]]


def json_text_encoder(paths: dict[str, Any]) -> _Encoder:
    """A function returning a record with the values at ``paths`` as JSON text.

    The record is copied where changed, never modified. The function is built once per set of
    paths, with one step per key, because it runs for every record (a generic walk of ``paths``
    cost about 1.7 µs a record, as much as serializing it).

    :param paths: keys whose values become JSON text (``True``) or hold such keys (a subtree).
    """
    steps = [(key, None if sub is True else json_text_encoder(sub)) for key, sub in paths.items()]
    if len(steps) == 1:  # the usual case: one mixed key, found down one path
        key, inner = steps[0]
        if inner is None:

            def encode_value(obj: dict[str, Any]) -> dict[str, Any]:
                value = obj.get(key)
                if value is None:
                    return obj
                copy = obj.copy()
                copy[key] = json_text(value)
                return copy

            return encode_value

        def encode_inside(obj: dict[str, Any]) -> dict[str, Any]:
            value = obj.get(key)
            if type(value) is not dict:
                return obj
            new = inner(value)
            if new is value:
                return obj
            copy = obj.copy()
            copy[key] = new
            return copy

        return encode_inside

    def encode_keys(obj: dict[str, Any]) -> dict[str, Any]:
        copy = None
        for key, inner in steps:
            value = obj.get(key)
            if value is None:
                continue
            if inner is None:
                new: Any = json_text(value)
            elif type(value) is dict:
                new = inner(value)
                if new is value:
                    continue
            else:
                continue
            if copy is None:
                copy = obj.copy()
            copy[key] = new
        return obj if copy is None else copy

    return encode_keys


def _decoded(obj: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`json_text_encoder` (modifies ``obj``, a record read back from the spill)."""
    for key, sub in paths.items():
        value = obj.get(key)
        if value is None:
            continue
        if sub is True:
            # Parsed carefully (integers of any size exact); these values are rare.
            obj[key] = decoder(True)(value)
        elif type(value) is dict:
            _decoded(value, sub)
    return obj


_Inferred = tuple[pa.Schema, frozenset[_Path]]


def _infer_block(data: bytearray, table_path: Path) -> _Inferred | None:
    """The schema pyarrow infers for a block of spilled JSON lines, or ``None`` where it cannot tell.

    Runs in a helper thread: the JSON reader works in C++ without the GIL, so the types are
    learned on the second core while the export thread shapes and spills the next records. The
    reader refuses a key whose values differ in kind (text in one record, a number in another);
    it also reads integers beyond int64 as doubles and integers among floats as doubles, which
    would hide an integer a double cannot hold exactly. For such blocks (``None``) the records
    are looked at in Python instead (:meth:`_Node.merge`), which tells every case apart.

    The table read is kept at ``table_path`` (Arrow IPC): when its types turn out to fit the
    export's schema, the files are made from it without reading the JSON lines a second time.

    :param data: whole JSON lines, one record each.
    :param table_path: where to keep the table read.
    :return: the inferred schema and the paths of integer columns holding a value beyond
        +-2**53, or ``None``. The table is kept only when pyarrow made it valid.
    """
    options = pa_json.ReadOptions(block_size=len(data) + 1, use_threads=False)
    try:
        table = pa_json.read_json(pa.BufferReader(data), read_options=options)
    except pa.ArrowInvalid:
        return None
    big_ints: set[_Path] = set()
    for field, column in zip(table.schema, table.columns, strict=True):
        for chunk in column.chunks:
            if not _check_inferred(field.type, chunk, (field.name,), big_ints):
                return None
    try:
        # pyarrow 26's reader, inferring, drops the null that starts a list ([null, 1]) and makes
        # an invalid array; its types are right, its table is not kept.
        table.validate(full=True)
    except pa.ArrowInvalid:
        return table.schema, frozenset(big_ints)
    with pa.OSFile(str(table_path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as ipc:
        ipc.write_table(table)
    return table.schema, frozenset(big_ints)


def _check_inferred(arrow_type: pa.DataType, array: pa.Array, path: _Path, big_ints: set[_Path]) -> bool:
    """Whether an inferred column says all :meth:`_Node.merge` would learn; collects ``big_ints``.

    A double column with a value of magnitude 2**53 or more may have been an integer a double
    does not hold exactly (or one beyond int64): the answer is then no, as for a type the
    reader is not known to infer.
    """
    if pa.types.is_struct(arrow_type):
        return all(
            _check_inferred(field.type, array.field(index), (*path, field.name), big_ints)
            for index, field in enumerate(arrow_type)
        )
    if pa.types.is_list(arrow_type):
        return _check_inferred(arrow_type.value_type, array.flatten(), (*path, None), big_ints)
    if pa.types.is_int64(arrow_type) or pa.types.is_float64(arrow_type):
        bounds = pc.min_max(array)
        if not bounds["min"].is_valid:  # nothing but nulls
            return True
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if pa.types.is_float64(arrow_type):
            return bool(low > -_EXACT_DOUBLE and high < _EXACT_DOUBLE)
        if low < -_EXACT_DOUBLE or high > _EXACT_DOUBLE:
            big_ints.add(path)
        return True
    return arrow_type.id in _ARROW_KINDS


class _Block:
    """A run of whole lines of a day's spill, read by pyarrow in one go; its table may be reused.

    :param start: offset of its first line in the day's spill file.
    :param end: offset just after its last line.
    :param table_path: where pyarrow's table of these lines is kept, once read and checked.
    """

    __slots__ = ("end", "start", "table_path")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.table_path: Path | None = None


class _PendingBlock:
    """A block of spilled lines whose inferred schema is awaited, kept for a look in Python."""

    __slots__ = ("block", "careful", "data", "inferred", "table_path")

    def __init__(
        self,
        block: _Block,
        data: bytearray,
        careful: bool,
        inferred: Future[_Inferred | None] | None,
        table_path: Path,
    ) -> None:
        self.block = block
        self.data = data
        self.careful = careful
        self.inferred = inferred
        self.table_path = table_path


class _DaySpill:
    """The spilled JSON lines of one day: a file, the lines not yet in it, and its blocks.

    Lines wait in ``buffer`` until a block's worth is there; the block is then appended to the
    file and handed to type inference. ``blocks`` cover the file from ``reparse_until`` on; lines
    before it (rewritten when a key turned to JSON text) are read from the JSON when the files are
    written.
    """

    __slots__ = (
        "blocks",
        "buffer",
        "buffer_careful",
        "careful",
        "longest",
        "path",
        "reparse_until",
        "size",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self.buffer = bytearray()
        self.buffer_careful = False
        self.longest = 0
        self.careful = False
        self.size = 0
        self.blocks: list[_Block] = []
        self.reparse_until = 0

    def remove(self) -> None:
        """Delete the spill file and the tables kept for its blocks (the day's files are written)."""
        self.path.unlink(missing_ok=True)
        for block in self.blocks:
            if block.table_path is not None:
                block.table_path.unlink(missing_ok=True)

    def take_block(self) -> tuple[_Block, bytearray, bool] | None:
        """Append the waiting lines to the file as a new block: ``(block, its lines, careful)``."""
        data = self.buffer
        if not data:
            return None
        with open(self.path, "ab") as handle:
            handle.write(data)
        block = _Block(self.size, self.size + len(data))
        self.blocks.append(block)
        careful = self.buffer_careful
        self.size = block.end
        self.buffer = bytearray()
        self.buffer_careful = False
        return block, data, careful


class ParquetWriter:
    """Spills records per day while learning the schema, then writes each day's Parquet files.

    :param delivery: where finished files go.
    :param spill_dir: a private directory for the spill files.
    :param event_name: the event name for the ``eventName`` column, ``None`` for profile exports.
    :param codec: the compression codec inside the files.
    """

    def __init__(self, delivery: Delivery, spill_dir: Path, event_name: str | None, codec: str) -> None:
        if codec not in PARQUET_CODECS:
            raise ExportConfigError(
                f"Unknown Parquet codec {codec!r}; choose one of {', '.join(PARQUET_CODECS)}."
            )
        self.delivery = delivery
        self.spill_dir = spill_dir
        self.event_name = event_name
        self.codec = codec
        self._root = _Node()
        self._days: dict[int, _DaySpill] = {}
        self._encoded_paths: dict[str, Any] = {}
        self._encode: _Encoder | None = None  # json_text_encoder(self._encoded_paths), if any
        self._pending: deque[_PendingBlock] = deque()
        self._inference: ThreadPoolExecutor | None = None
        self._tables = 0
        #: Records read again from their JSON lines when the files were written, because the table
        #: pyarrow read while learning types could not be used (a key turned to JSON text later,
        #: a block pyarrow could not tell, ...). Most exports read every record once.
        self.records_read_twice = 0

    #: Event records arrive shaped (see :func:`~ct_airflow_provider.export.records.shape_event`).
    shapes_records = False

    def add(self, records: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Spill one page of records, and learn their types.

        :param records: ``(yyyymmdd, file record)`` pairs.
        """
        days = self._days
        dumps = orjson.dumps
        option = orjson.OPT_APPEND_NEWLINE
        encode = self._encode
        for day_number, record in records:
            spill = days.get(day_number)
            if spill is None:
                day_of(day_number)
                spill = days[day_number] = _DaySpill(self.spill_dir / f"{day_number}.jsonl")
            if encode is not None:
                record = encode(record)
            try:
                line = dumps(record, option=option)
            except TypeError:
                line = careful_line(record)
                spill.careful = True
                spill.buffer_careful = True
            buffer = spill.buffer
            buffer += line
            if len(line) > spill.longest:
                spill.longest = len(line)
            if len(buffer) >= _INFER_BLOCK_BYTES:
                self._submit_block(spill)
        buffered = sorted(days.values(), key=lambda spill: len(spill.buffer), reverse=True)
        total = sum(len(spill.buffer) for spill in buffered)
        for spill in buffered:
            if total <= _MAX_BUFFERED_BYTES:
                break
            total -= len(spill.buffer)
            self._submit_block(spill)
        self._learn(wait=False)
        self._encode_spill(self._root.json_paths(final=False))

    # Learning the types ----------------------------------------------------------------------

    def _submit_block(self, spill: _DaySpill) -> None:
        """Write a day's waiting lines to its spill file, and hand them to type inference."""
        taken = spill.take_block()
        if taken is None:
            return
        block, data, careful = taken
        self._tables += 1
        table_path = self.spill_dir / f"block-{self._tables}.arrow"
        inferred: Future[_Inferred | None] | None = None
        if not careful:  # such lines hold values pyarrow reads wrong (integers beyond 64 bits)
            if self._inference is None:
                self._inference = ThreadPoolExecutor(max_workers=2, thread_name_prefix="parquet-types")
            inferred = self._inference.submit(_infer_block, data, table_path)
        self._pending.append(_PendingBlock(block, data, careful, inferred, table_path))
        if len(self._pending) > _MAX_PENDING_BLOCKS:
            self._learn(wait=True, keep=_MAX_PENDING_BLOCKS)

    def _learn(self, wait: bool, keep: int = 0) -> None:
        """Merge the types of finished blocks into the schema, oldest first (so keys keep their order).

        :param wait: wait for blocks still being inferred, until at most ``keep`` are pending.
        :param keep: how many pending blocks may stay when waiting.
        """
        pending = self._pending
        while pending:
            oldest = pending[0]
            inferred = oldest.inferred
            if inferred is not None and not inferred.done() and not (wait and len(pending) > keep):
                return
            pending.popleft()
            result = inferred.result() if inferred is not None else None
            if result is None:
                self._merge_lines(oldest.data, oldest.careful)
            else:
                schema, big_ints = result
                self._root.merge_arrow(pa.struct(list(schema)), (), big_ints)
                if oldest.table_path.exists():  # kept only when pyarrow made it valid
                    oldest.block.table_path = oldest.table_path

    def _merge_lines(self, data: bytearray, careful: bool) -> None:
        """Learn the types of a block's records in Python, one record at a time."""
        loads = decoder(careful)
        merge = self._root.merge_object
        for line in data.splitlines():
            merge(loads(line))

    def _encode_spill(self, paths: dict[str, Any]) -> None:
        """Make every spilled record hold the values at ``paths`` as JSON text.

        The Arrow JSON reader that turns the spill into Parquet needs one type per field, so a key
        found to hold values of several types has its values stored as JSON text from then on, and
        what was spilled before is rewritten once. Keys turn mixed early in an export (the first
        pages show most shapes), so this costs little; it happens once per such key.
        """
        if paths == self._encoded_paths:
            return
        old = self._encoded_paths
        encode = json_text_encoder(paths)
        for spill in self._days.values():
            # The waiting lines are learned from as they are (their kinds are what made a key
            # JSON text), then rewritten with the rest.
            self._submit_block(spill)
            if not spill.path.exists():
                continue
            loads = decoder(spill.careful)
            rewritten = spill.path.with_suffix(".rewrite")
            longest = 0
            careful = False
            with open(spill.path, "rb") as source, open(rewritten, "wb") as target:
                for line in source:
                    record = encode(_decoded(loads(line), old))
                    try:
                        out = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
                    except TypeError:
                        out = careful_line(record)
                        careful = True
                    target.write(out)
                    longest = max(longest, len(out))
            rewritten.replace(spill.path)
            spill.longest = longest
            spill.careful = careful
            # Tables read so far hold the values before they turned to JSON text: not reusable.
            spill.size = spill.reparse_until = spill.path.stat().st_size
            spill.blocks = []
        self._encoded_paths = paths
        self._encode = encode if paths else None

    # Schema -----------------------------------------------------------------------------------

    def _schemas(self) -> tuple[pa.Schema, pa.Schema]:
        """The schema read from the spill (``ts`` as integer) and the schema of the files."""
        fields = self._root.fields or {}
        order = list(fields)
        if self.event_name is not None:
            preferred = ["ts", "profile", "deviceInfo", "eventProps", "sessionProps"]
            order = [key for key in preferred if key in fields] + [
                key for key in fields if key not in preferred
            ]
        raw_fields = []
        for key in order:
            if key == "ts" and self.event_name is not None:
                raw_fields.append(pa.field("ts", pa.int64()))
            else:
                raw_fields.append(field_of(key, fields[key]))
        raw = pa.schema(raw_fields)
        if self.event_name is None:
            return raw, raw
        final_fields = [pa.field("ts", pa.timestamp("ms")), pa.field("eventName", pa.string())]
        final_fields += [field for field in raw_fields if field.name != "ts"]
        return raw, pa.schema(final_fields)

    # Writing ----------------------------------------------------------------------------------

    def finish(self) -> None:
        """Write every day's files, in day order, from the spilled records."""
        for spill in self._days.values():
            self._submit_block(spill)
        self._learn(wait=True)
        self._stop_inference()
        if not self._days:
            return
        self._encode_spill(self._root.json_paths(final=True))
        raw_schema, schema = self._schemas()
        sizes = _SizeModel(
            footer_base=self._empty_file_size(schema),
            footer_per_group=150.0 * sum(_leaf_count(field.type) for field in schema),
        )
        days = sorted(self._days)
        # Days are written two at a time (pyarrow writes without the GIL: both cores work), and
        # their files handed to the sink in day order by this thread.
        with ThreadPoolExecutor(max_workers=_DAYS_AT_ONCE, thread_name_prefix="parquet-days") as pool:
            written = [pool.submit(self._write_day, day, raw_schema, schema, sizes.copy()) for day in days]
            try:
                for day_number, future in zip(days, written, strict=True):
                    files, read_twice = future.result()
                    self.records_read_twice += read_twice
                    for path, digest, day, index, records in files:
                        self.delivery.deliver(path, digest, day, index, records)
                    self._days[day_number].remove()
            except BaseException:
                for future in written:
                    future.cancel()
                for future in written:  # files written but never handed over
                    if not future.cancelled() and future.exception() is None:
                        for path, *_ in future.result()[0]:
                            path.unlink(missing_ok=True)
                raise

    def _write_day(
        self, day_number: int, raw_schema: pa.Schema, schema: pa.Schema, sizes: _SizeModel
    ) -> tuple[list[_WrittenFile], int]:
        """Write one day's files (in a helper thread): the files, and the records read twice."""
        # One more helper thread converts the next range while a row group is written.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-read-ahead") as read_ahead:
            writer = _DayWriter(
                self, self._days[day_number], day_number, raw_schema, schema, read_ahead, sizes
            )
            return writer.write(), writer.records_read_twice

    def _empty_file_size(self, schema: pa.Schema) -> int:
        # ParquetWriter rather than pq.write_table, which imports pandas (seconds, and memory).
        sink = pa.BufferOutputStream()
        pq.ParquetWriter(sink, schema, compression=self.codec).close()
        return len(sink.getvalue())

    def abort(self) -> None:
        """Stop the type inference; nothing to delete beyond the spill directory, which the driver removes."""
        self._pending.clear()
        self._stop_inference()

    def _stop_inference(self) -> None:
        if self._inference is not None:
            self._inference.shutdown(wait=True, cancel_futures=True)
            self._inference = None


class _SizeModel:
    """What one day's writer learns of Parquet sizes: bytes per byte of JSON, footer bytes per row group.

    :param footer_base: size of a file without rows.
    :param footer_per_group: footer bytes each row group adds, before any was measured.
    """

    def __init__(self, footer_base: int, footer_per_group: float) -> None:
        self.footer_base = footer_base
        self.footer_per_group = footer_per_group
        self.ratio: float | None = None

    def copy(self) -> _SizeModel:
        return _SizeModel(self.footer_base, self.footer_per_group)

    def footer_estimate(self, groups: int) -> int:
        return int(self.footer_base + self.footer_per_group * groups * 1.2) + 1024

    def ratio_estimate(self) -> float:
        return (self.ratio if self.ratio is not None else _INITIAL_RATIO) * _RATIO_MARGIN

    def learn(self, json_bytes: int, parquet_bytes: int, footer_bytes: int | None, groups: int) -> None:
        if json_bytes > 0:
            ratio = parquet_bytes / json_bytes
            # Follow the data, but let a larger ratio take over at once: overshooting costs a rewrite.
            self.ratio = ratio if self.ratio is None or ratio > self.ratio else 0.8 * self.ratio + 0.2 * ratio
        if footer_bytes is not None and groups:
            per_group = max(0.0, (footer_bytes - self.footer_base) / groups)
            self.footer_per_group = max(per_group, 0.5 * self.footer_per_group)


# A finished file of a day, not yet handed to the sink: path, digest, day, index, records.
_WrittenFile = tuple[Path, FileDigest, date, int, int]


def _leaf_count(arrow_type: pa.DataType) -> int:
    if pa.types.is_struct(arrow_type):
        return sum(_leaf_count(field.type) for field in arrow_type) or 1
    if pa.types.is_list(arrow_type):
        return _leaf_count(arrow_type.value_type)
    return 1


def _block_table(block: _Block, raw_schema: pa.Schema) -> pa.Table | None:
    """The table pyarrow read for ``block``, cast to ``raw_schema``, or ``None`` if it does not fit exactly."""
    if block.table_path is None:
        return None
    table = pa.ipc.open_file(pa.memory_map(str(block.table_path))).read_all()
    fields = {field.name: field.type for field in raw_schema}
    if any(
        field.name not in fields or not _casts_exactly(field.type, fields[field.name])
        for field in table.schema
    ):
        return None
    columns = []
    try:
        for field in raw_schema:
            index = table.schema.get_field_index(field.name)
            columns.append(
                table.column(index).cast(field.type) if index >= 0 else pa.nulls(table.num_rows, field.type)
            )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if not columns:  # records with no keys at all: the rows, without columns
        return table.select([])
    result = pa.Table.from_arrays(columns, schema=raw_schema)
    try:
        result.validate()  # cheap (no look at the values); a cast gone wrong is read from JSON instead
    except pa.ArrowInvalid:
        return None
    return result


def _casts_exactly(source: pa.DataType, target: pa.DataType, in_list: bool = False) -> bool:
    """Whether values read as ``source`` become the same values as ``target`` (as if read as it).

    Nulls become anything (but items of a list: pyarrow 26 casts a list of nulls into an invalid
    array); integers become doubles (the schema chose doubles only where every integer is exact
    in one); structs and lists when their fields and items do. Anything else -- strings pyarrow
    read as timestamps, for one -- is read again from the JSON lines instead.
    """
    if source == target:
        return True
    if pa.types.is_null(source):
        return not in_list
    if pa.types.is_int64(source):
        return bool(pa.types.is_float64(target))
    if pa.types.is_struct(source):
        if not pa.types.is_struct(target):
            return False
        names = {field.name: field.type for field in target}
        return all(
            field.name in names and _casts_exactly(field.type, names[field.name], in_list) for field in source
        )
    if pa.types.is_list(source):
        return bool(pa.types.is_list(target)) and _casts_exactly(source.value_type, target.value_type, True)
    return False


class _DayWriter:
    """Writes the Parquet files of one day from its spill.

    A row group is made of whole blocks of the spill when it can be: their tables, read by pyarrow
    while the types were learned, are cast to the export's schema. Lines outside such blocks (a
    block cut at the end of a file, lines rewritten when a key turned to JSON text, a block whose
    types do not cast exactly) are read again from their JSON.
    """

    def __init__(
        self,
        owner: ParquetWriter,
        spill: _DaySpill,
        day_number: int,
        raw_schema: pa.Schema,
        schema: pa.Schema,
        read_ahead: ThreadPoolExecutor,
        sizes: _SizeModel,
    ) -> None:
        self.owner = owner
        self.read_ahead = read_ahead
        self.sizes = sizes
        self.files: list[_WrittenFile] = []
        self.records_read_twice = 0
        # The byte range converted ahead, with its table and the records read from JSON for it.
        self.ahead: tuple[int, int, Future[tuple[pa.Table, int]]] | None = None
        self.spill = spill
        self.day = day_of(day_number)
        self.raw_schema = raw_schema
        self.schema = schema
        self.limit = owner.delivery.max_file_bytes
        self.blocks = spill.blocks
        self.block_at = {block.start: index for index, block in enumerate(spill.blocks)}
        self.boundaries = [block.start for block in spill.blocks]
        largest = max((block.end - block.start for block in spill.blocks), default=0)
        self.block_bytes = max(_BLOCK_BYTES, spill.longest, largest)
        self.read_options = pa_json.ReadOptions(block_size=max(1 << 20, 2 * spill.longest + 1))
        self.parse_options = pa_json.ParseOptions(
            explicit_schema=raw_schema, unexpected_field_behavior="error"
        )

    def write(self) -> list[_WrittenFile]:
        """Write the day's files; return them, in order (none is left behind on failure)."""
        with open(self.spill.path, "rb") as handle:
            self.fd = handle.fileno()
            self.size = os.fstat(self.fd).st_size
            self.offset = 0
            index = 0
            try:
                while self.offset < self.size:
                    self._write_file(index)
                    index += 1
            except BaseException:
                for path, *_ in self.files:
                    path.unlink(missing_ok=True)
                raise
            finally:
                self._drop_ahead()
        return self.files

    # Reading the spill --------------------------------------------------------------------------

    def _read(self, start: int, end: int) -> bytes:
        # pread: the read-ahead thread reads too, and must not move a shared file position.
        parts = []
        while start < end:
            part = os.pread(self.fd, end - start, start)
            if not part:
                break
            parts.append(part)
            start += len(part)
        return b"".join(parts)

    def _take(self, budget: int, at_least_one: bool) -> tuple[int, int] | None:
        """The byte range of whole lines from the current offset within ``budget`` bytes."""
        return self._take_from(self.offset, budget, at_least_one)

    def _take_from(self, start: int, budget: int, at_least_one: bool) -> tuple[int, int] | None:
        """The byte range of whole lines from ``start`` within ``budget`` bytes.

        Whole blocks when ``start`` begins one and the block fits; otherwise whole lines, up to
        the next block at most, so that the following range begins a block again.
        """
        index = self.block_at.get(start)
        if index is not None:
            end = start
            while index < len(self.blocks) and self.blocks[index].end - start <= budget:
                end = self.blocks[index].end
                index += 1
            if end > start:
                return start, end
        following = bisect.bisect_right(self.boundaries, start)
        stop = self.boundaries[following] if following < len(self.boundaries) else self.size
        data = self._read(start, min(stop, start + max(budget, 0)))
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if not at_least_one:
                return None
            cut = self._line_length(start)
        return start, start + cut

    def _line_length(self, start: int) -> int:
        """Length of the line at ``start``, its line feed included."""
        step = 1 << 16
        while True:
            data = self._read(start, min(self.size, start + step))
            cut = data.find(b"\n") + 1
            if cut or start + len(data) >= self.size:
                return cut or len(data)
            step *= 4

    # Converting ---------------------------------------------------------------------------------

    def _convert_ahead(self, start: int) -> None:
        """Start converting the range most likely read next, a full block from ``start``.

        Reading and converting, and writing Parquet, run in C++ without the GIL: converting the
        next range while this one is written keeps both cores busy. Should the next row group
        be cut differently (near the end of a file) the range is converted again, and this
        conversion thrown away.
        """
        self._drop_ahead()
        if start >= self.size:
            return
        taken = self._take_from(start, self.block_bytes, at_least_one=True)
        assert taken is not None
        self.ahead = (*taken, self.read_ahead.submit(self._convert, *taken))

    def _drop_ahead(self) -> None:
        if self.ahead is not None:
            future = self.ahead[2]
            self.ahead = None
            if not future.cancel():
                future.exception()  # wait for it; its error, if any, is that of an unused range

    def _table(self, start: int, end: int) -> pa.Table:
        ahead = self.ahead
        if ahead is not None and ahead[0] == start and ahead[1] == end:
            self.ahead = None
            table, read_twice = ahead[2].result()
        else:
            self._drop_ahead()
            table, read_twice = self._convert(start, end)
        self.records_read_twice += read_twice
        return table

    def _convert(self, start: int, end: int) -> tuple[pa.Table, int]:
        """The row group of the lines in ``[start, end)``, and how many were read from JSON."""
        raw = self._reused(start, end)
        read_twice = 0
        if raw is None:
            raw = self._parsed(self._read(start, end))
            read_twice = raw.num_rows
        if self.owner.event_name is None:
            return raw, read_twice
        try:
            stamps = pc.strptime(pc.cast(raw.column("ts"), pa.string()), format="%Y%m%d%H%M%S", unit="ms")
        except pa.ArrowInvalid as exc:
            raise ExportDataError(f"A record's ts is not a valid yyyyMMddHHmmss time: {exc}.") from exc
        names = _repeated_text(self.owner.event_name, raw.num_rows)
        columns = [stamps, names] + [
            raw.column(field.name) for field in self.raw_schema if field.name != "ts"
        ]
        return pa.Table.from_arrays(columns, schema=self.schema), read_twice

    def _parsed(self, data: bytes) -> pa.Table:
        try:
            return pa_json.read_json(
                pa.BufferReader(data), read_options=self.read_options, parse_options=self.parse_options
            )
        except pa.ArrowInvalid as exc:  # the schema was learned from these very records
            raise ExportDataError(
                f"Records of {self.day} do not match the export's Parquet schema: {exc}."
            ) from exc

    def _reused(self, start: int, end: int) -> pa.Table | None:
        """The tables of the whole blocks making up ``[start, end)``, in the export's schema, if they fit."""
        index = self.block_at.get(start)
        if index is None:
            return None
        tables = []
        for block in self.blocks[index:]:
            table = _block_table(block, self.raw_schema)
            if table is None or block.end > end:
                return None
            tables.append(table)
            if block.end == end:
                return tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        return None

    # Files --------------------------------------------------------------------------------------

    def _open(self, path: Path) -> tuple[Any, pq.ParquetWriter]:
        sink = pa.OSFile(str(path), "wb")
        writer = pq.ParquetWriter(sink, self.schema, compression=self.owner.codec)
        return sink, writer

    def _write_groups(self, path: Path, groups: list[tuple[int, int, int]]) -> int:
        sink, writer = self._open(path)
        try:
            for start, end, _rows in groups:
                writer.write_table(self._table(start, end))
        finally:
            writer.close()
            sink.close()
        return path.stat().st_size

    def _write_file(self, index: int) -> None:
        sizes = self.sizes
        path = self.owner.delivery.new_path()
        groups: list[tuple[int, int, int]] = []
        sink, writer = self._open(path)
        position = sink.tell()
        try:
            while self.offset < self.size:
                room = self.limit - position - sizes.footer_estimate(len(groups) + 1)
                budget = min(self.block_bytes, int(room / sizes.ratio_estimate()))
                taken = self._take(budget, at_least_one=not groups)
                if taken is None:
                    break
                start, end = taken
                table = self._table(start, end)
                self._convert_ahead(end)
                writer.write_table(table)
                after = sink.tell()
                sizes.learn(end - start, after - position, None, 0)
                position = after
                groups.append((start, end, table.num_rows))
                del table
                self.offset = end
                if position + sizes.footer_estimate(len(groups)) > self.limit:
                    break
        except BaseException:
            writer.close()
            sink.close()
            path.unlink(missing_ok=True)
            raise
        writer.close()
        sink.close()
        size = path.stat().st_size
        sizes.learn(0, 0, size - position, len(groups))
        while size > self.limit:
            size = self._shrink(path, groups)
        records = sum(rows for _start, _end, rows in groups)
        digest = digest_of_path(path)
        self.files.append((path, digest, self.day, index, records))

    def _shrink(self, path: Path, groups: list[tuple[int, int, int]]) -> int:
        """Rewrite an over-size file without its last row group (or half of its only one)."""
        start, end, rows = groups[-1]
        if len(groups) > 1:
            groups.pop()
            self.offset = start
        else:
            data = self._read(start, end)
            if rows <= 1:
                path.unlink(missing_ok=True)
                raise too_small_error(
                    end - start, self.sizes.footer_estimate(1), self.limit, "Parquet (as JSON text)"
                )
            middle = start + _nth_line_end(data, rows // 2)
            groups[-1] = (start, middle, rows // 2)
            self.offset = middle
        return self._write_groups(path, groups)


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


def _nth_line_end(data: bytes, count: int) -> int:
    """Offset just after the ``count``-th newline of ``data``."""
    position = -1
    for _ in range(count):
        position = data.index(b"\n", position + 1)
    return position + 1
