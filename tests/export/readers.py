"""Independent readers of export files and what each format's documentation says a record becomes.

Files are read back with libraries that share nothing with the writers (json, csv, lxml, pyarrow),
and the expectations below follow the format documentation in docs/export-formats.md, written
again from the rules rather than imported from the package.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from lxml import etree

# In the order deviceInfo holds them (docs/export-formats.md).
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
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
VALID_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")


def file_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


# -- the record every format starts from --------------------------------------------------------


def expected_record(api: dict[str, Any]) -> dict[str, Any]:
    """The file record of an API event record, by the shaping rules (JSON key order)."""
    out: dict[str, Any] = {}
    device: dict[str, Any] | None = None
    if "profile" in api:
        profile = api["profile"]
        if isinstance(profile, dict) and set(DEVICE_FIELDS) & set(profile):
            device = {k: profile[k] for k in DEVICE_FIELDS if k in profile}
            profile = {k: v for k, v in profile.items() if k not in DEVICE_FIELDS}
        out["profile"] = profile
    out["ts"] = api["ts"]
    if "deviceInfo" in api:
        out["deviceInfo"] = api["deviceInfo"] if device is None else {**device, **api["deviceInfo"]}
    elif device is not None:
        out["deviceInfo"] = device
    if "event_props" in api:
        out["eventProps"] = api["event_props"]
    if "session_props" in api:
        out["sessionProps"] = api["session_props"]
    for key, value in api.items():
        if key not in ("profile", "ts", "deviceInfo", "event_props", "session_props"):
            out[key] = value
    return out


def same(a: Any, b: Any, *, float_ok: bool = False) -> bool:
    """Equality that also compares types (``True`` is not ``1``), recursively."""
    if type(a) is not type(b):
        return float_ok and {type(a), type(b)} == {int, float} and a == b
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k], float_ok=float_ok) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y, float_ok=float_ok) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# -- JSON ---------------------------------------------------------------------------------------


def read_json(data: bytes) -> tuple[str, list[Any]]:
    text = data.decode("utf-8")
    assert text.endswith("\n")
    title, *lines = text[:-1].split("\n")
    return title, [json.loads(line) for line in lines]


# -- CSV ----------------------------------------------------------------------------------------


def read_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    assert not data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    return rows[0], rows[1:]


def csv_cell_matches(cell: str, value: Any) -> bool:
    """A cell against the value it stands for, by the CSV rules."""
    if value is None:
        return cell == ""
    if isinstance(value, bool):
        return cell == ("true" if value else "false")
    if isinstance(value, (dict, list)):
        return cell != "" and same(json.loads(cell), value)
    if isinstance(value, float):
        return float(cell) == value and cell == repr(value)
    return cell == str(value)


def csv_value(record: dict[str, Any], column: str, event_name: str | None) -> Any:
    """The value a CSV column holds for a file record (``None`` for an empty cell)."""
    if column == "eventName" and event_name is not None:
        return event_name
    if column in record and not isinstance(record[column], dict):
        return record[column]
    section, _, key = column.partition(".")
    inner = record.get(section)
    if isinstance(inner, dict):
        return inner.get(key)
    return None


# -- XML ----------------------------------------------------------------------------------------


def xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return XML_FORBIDDEN.sub("\ufffd", str(value))


Node = tuple[str, Any]  # (tag, text) for a leaf, (tag, [children]) for an element with children


def _valid(key: str) -> bool:
    return bool(VALID_XML_NAME.match(key)) and not key.lower().startswith("xml")


def xml_nodes(tag: str, value: Any, map_form: bool) -> list[Node]:
    """The elements a value becomes under ``tag`` (several for a list)."""
    if isinstance(value, list):
        if not value:
            return [(tag, "")]
        out: list[Node] = []
        for item in value:
            if isinstance(item, list):
                # A list inside a list: one element holding an <item> per sub-item.
                out.append((tag, xml_nodes("item", item, map_form)) if item else (tag, ""))
            else:
                out.extend(xml_nodes(tag, item, map_form))
        return out
    if isinstance(value, dict):
        if not value:
            return [(tag, "")]
        return [(tag, xml_children(value, map_form))]
    return [(tag, xml_text(value))]


def xml_children(obj: dict[str, Any], map_form: bool) -> list[Node]:
    out: list[Node] = []
    for key, value in obj.items():
        if not map_form and _valid(key):
            out.extend(xml_nodes(key, value, False))
        else:
            out.append(("entry", [("key", xml_text(key)), *xml_nodes("value", value, map_form)]))
    return out


def expected_event_element(record: dict[str, Any], event_name: str) -> Node:
    children: list[Node] = [("ts", str(record["ts"])), ("eventName", xml_text(event_name))]
    for key, map_form in (
        ("profile", False),
        ("deviceInfo", False),
        ("eventProps", True),
        ("sessionProps", True),
    ):
        if key in record:
            children.extend(xml_nodes(key, record[key], map_form))
    for key, value in record.items():
        if key not in ("ts", "profile", "deviceInfo", "eventProps", "sessionProps"):
            children.extend(xml_children({key: value}, False))
    return ("Event", children)


def element_node(element: Any) -> Node:
    if len(element):
        return (element.tag, [element_node(child) for child in element])
    return (element.tag, element.text or "")


def read_xml(data: bytes) -> Any:
    parser = etree.XMLParser(resolve_entities=False, huge_tree=True)
    return etree.fromstring(data, parser)


# -- Parquet ------------------------------------------------------------------------------------


def read_parquet(path: Path) -> pa.Table:
    return pq.read_table(path)


def is_json_field(field: pa.Field) -> bool:
    return field.metadata is not None and field.metadata.get(b"ct_airflow_provider.encoding") == b"json"


def parquet_matches(value: Any, original: Any, field: pa.Field) -> bool:
    """A value read from Parquet against the original value of that field (absent = ``None``)."""
    if is_json_field(field):
        return (value is None and original is None) or (
            value is not None and same(json.loads(value), original)
        )
    if original is None:
        return value is None or (pa.types.is_struct(field.type) and all(v is None for v in value.values()))
    if pa.types.is_struct(field.type):
        return (
            value is not None
            and set(original) <= {f.name for f in field.type}
            and all(parquet_matches(value[f.name], original.get(f.name), f) for f in field.type)
        )
    if pa.types.is_list(field.type):
        item = field.type.value_field
        return len(value) == len(original) and all(
            parquet_matches(v, o, item) for v, o in zip(value, original, strict=True)
        )
    if pa.types.is_floating(field.type):
        return isinstance(value, float) and value == original
    return same(value, original)


def ts_datetime(ts: int) -> dt.datetime:
    return dt.datetime.strptime(str(ts), "%Y%m%d%H%M%S")
