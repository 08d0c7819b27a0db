"""XML: ``<Event>`` elements exactly as the product page shows them, under one root element.

Every file is well-formed whatever the data: keys that are not element names are kept as
``<entry><key/><value/></entry>``, and characters XML 1.0 forbids become U+FFFD. The layout and
every rule: docs/export-formats.md, "XML".
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_VALID_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})

_Tag = tuple[str, str, str]
_VALUE_TAG: _Tag = ("<value>", "</value>", "<value/>")
_ITEM_TAG: _Tag = ("<item>", "</item>", "<item/>")
_MAX_CACHED_TAGS = 10_000


def _indent(depth: int) -> str:
    return "\n" + "    " * depth


_INDENTS = tuple(_indent(depth) for depth in range(64))


def escape_text(text: str) -> str:
    """Return ``text`` escaped for XML character data (``& < >`` and carriage return).

    :param text: any string.
    """
    if "&" in text or "<" in text or ">" in text or "\r" in text:
        return text.translate(_ESCAPES)
    return text


def replace_forbidden(text: str) -> str:
    """Return ``text`` with every character XML 1.0 forbids replaced by U+FFFD.

    :param text: any string.
    """
    return _FORBIDDEN.sub("\ufffd", text)


class XmlEncoder:
    """Turns file records into ``<Event>`` (or ``<Profile>``) text: the RecordEncoder of XML.

    :param event_name: the event name written in each ``<eventName>``; ``None`` for profiles.
    """

    def __init__(self, event_name: str | None) -> None:
        self.profiles = event_name is None
        self.root = "Profiles" if self.profiles else "Events"
        self._event_name = replace_forbidden(escape_text(event_name)) if event_name is not None else ""
        self._tags: dict[str, _Tag | None] = {}
        #: The bytes each file starts and ends with.
        self.header = f"{_DECLARATION}<{self.root}>\n".encode()
        self.footer = f"</{self.root}>\n".encode()

    def _tag(self, key: str) -> _Tag | None:
        tag = self._tags.get(key, _VALUE_TAG)
        if tag is _VALUE_TAG:
            valid = _VALID_NAME.match(key) is not None and key[:3].lower() != "xml"
            tag = (f"<{key}>", f"</{key}>", f"<{key}/>") if valid else None
            if len(self._tags) >= _MAX_CACHED_TAGS:
                self._tags.clear()
            self._tags[key] = tag
        return tag

    def encode(self, record: dict[str, Any]) -> bytes:
        """Return one record as UTF-8 XML text (an ``<Event>`` or ``<Profile>`` element and a newline).

        :param record: a file record (see :mod:`ct_airflow_provider.export.records`).
        """
        # One pass of the fast JSON serializer tells whether any string of the record needs
        # escaping or holds a character XML forbids; most records need neither, and then their
        # strings are copied as they are.
        try:
            as_json = orjson.dumps(record)
        except TypeError:  # integers beyond 64 bits, lone surrogates: take the careful path
            plain, forbidden = False, True
        else:
            plain = not (b"&" in as_json or b"<" in as_json or b">" in as_json or b"\\r" in as_json)
            forbidden = (
                b"\\u00" in as_json
                or b"\\b" in as_json
                or b"\\f" in as_json
                or b"\xef\xbf\xbe" in as_json
                or b"\xef\xbf\xbf" in as_json
            )
        parts: list[str] = []
        if self.profiles:
            parts.append("<Profile>")
            self._object(parts, record, 1, False, plain)
            parts.append("\n</Profile>\n")
        else:
            self._event(parts, record, plain)
        text = "".join(parts)
        if forbidden:
            text = replace_forbidden(text)
        return text.encode("utf-8")

    def _event(self, parts: list[str], record: dict[str, Any], plain: bool) -> None:
        parts.append("<Event>\n    <ts>")
        parts.append(str(record.get("ts", "")))
        parts.append("</ts>\n    <eventName>")
        parts.append(self._event_name)
        parts.append("</eventName>")
        known = 1
        for key, map_form in _EVENT_PARTS:
            value = record.get(key, _ABSENT)
            if value is not _ABSENT:
                known += 1
                if type(value) is dict and value:
                    parts.append(_OPEN_TAGS[key])
                    self._object(parts, value, 2, map_form, plain)
                    parts.append(_CLOSE_TAGS[key])
                else:
                    self._value(parts, _TOP_TAGS[key], value, 1, map_form, plain)
        if len(record) > known:
            extras = {key: value for key, value in record.items() if key not in _EVENT_KEYS}
            self._object(parts, extras, 1, False, plain)
        parts.append("\n</Event>\n")

    def _object(self, parts: list[str], obj: dict[str, Any], depth: int, map_form: bool, plain: bool) -> None:
        indent = _INDENTS[depth] if depth < 64 else _indent(depth)
        inner = _INDENTS[depth + 1] if depth < 63 else _indent(depth + 1)
        tags = self._tags
        append = parts.append
        for key, value in obj.items():
            # Scalars are written here directly; objects and lists go through _value.
            kind = type(value)
            if kind is str:
                text: str | None = value if plain else escape_text(value)
            elif kind is int:
                text = str(value)
            elif kind is float:
                text = repr(value)
            elif kind is bool:
                text = "true" if value else "false"
            else:
                text = None
            if not map_form:
                tag = tags.get(key, _VALUE_TAG)
                if tag is _VALUE_TAG:
                    tag = self._tag(key)
                if tag is not None:
                    if text:
                        append(f"{indent}{tag[0]}{text}{tag[1]}")
                    elif text is not None:
                        append(indent + tag[2])
                    else:
                        self._value(parts, tag, value, depth, False, plain)
                    continue
            key_text = key if plain else escape_text(key)
            if text and key:
                append(
                    f"{indent}<entry>{inner}<key>{key_text}</key>{inner}<value>{text}</value>{indent}</entry>"
                )
                continue
            append(f"{indent}<entry>{inner}<key>{key_text}</key>" if key else f"{indent}<entry>{inner}<key/>")
            if text is not None:
                append(f"{inner}<value>{text}</value>" if text else inner + "<value/>")
            else:
                self._value(parts, _VALUE_TAG, value, depth + 1, map_form, plain)
            append(f"{indent}</entry>")

    def _value(
        self, parts: list[str], tag: _Tag, value: Any, depth: int, map_form: bool, plain: bool
    ) -> None:
        kind = type(value)
        if kind is str:
            text = value if plain else escape_text(value)
        elif kind is int:
            text = str(value)
        elif kind is float:
            text = repr(value)
        elif kind is bool:
            text = "true" if value else "false"
        elif value is None:
            text = ""
        elif kind is dict:
            indent = _INDENTS[depth] if depth < 64 else _indent(depth)
            if value:
                parts.append(indent + tag[0])
                self._object(parts, value, depth + 1, map_form, plain)
                parts.append(indent + tag[1])
            else:
                parts.append(indent + tag[2])
            return
        elif kind is list:
            self._items(parts, tag, value, depth, map_form, plain)
            return
        else:
            text = escape_text(str(value))
        indent = _INDENTS[depth] if depth < 64 else _indent(depth)
        if text:
            parts.append(f"{indent}{tag[0]}{text}{tag[1]}")
        else:
            parts.append(indent + tag[2])

    def _items(
        self, parts: list[str], tag: _Tag, items: list[Any], depth: int, map_form: bool, plain: bool
    ) -> None:
        indent = _INDENTS[depth] if depth < 64 else _indent(depth)
        if not items:
            parts.append(indent + tag[2])
            return
        for item in items:
            if type(item) is list:
                if item:
                    parts.append(indent + tag[0])
                    self._items(parts, _ITEM_TAG, item, depth + 1, map_form, plain)
                    parts.append(indent + tag[1])
                else:
                    parts.append(indent + tag[2])
            else:
                self._value(parts, tag, item, depth, map_form, plain)


_ABSENT: Any = object()
_EVENT_KEYS = frozenset({"ts", "profile", "deviceInfo", "eventProps", "sessionProps"})
# The objects of an event after ts and eventName, in order, and whether each is a map.
_EVENT_PARTS = (("profile", False), ("deviceInfo", False), ("eventProps", True), ("sessionProps", True))
_TOP_TAGS: dict[str, _Tag] = {key: (f"<{key}>", f"</{key}>", f"<{key}/>") for key, _ in _EVENT_PARTS}
_OPEN_TAGS = {key: f"\n    <{key}>" for key, _ in _EVENT_PARTS}
_CLOSE_TAGS = {key: f"\n    </{key}>" for key, _ in _EVENT_PARTS}
