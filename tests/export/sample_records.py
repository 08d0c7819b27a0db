"""Awkward CleverTap-shaped API records for the export tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ct_airflow_provider.export import ExportNaming

NAMING = ExportNaming(request_id="1700000000", run_timestamp=1700000123, database_id=7)


def awkward_records() -> list[dict[str, Any]]:
    """Records with everything that breaks naive writers, over three days and out of ts order."""
    records: list[dict[str, Any]] = []
    texts = [
        "plain",
        "comma, inside",
        'double "quotes"',
        "single 'quote'",
        "new\nline",
        "carriage\r\nreturn",
        "tab\there",
        "<tag> & ampersand ]]>",
        "unicode: é 紅 Привет 🎉 עברית",
        "",
        "  spaces  ",
        "control\x01\x02char",
        "nul\x00byte",
        "\ufffe noncharacter",
    ]
    for index in range(60):
        day = 20240105 + index % 3
        ts = day * 1_000_000 + (59 - index) * 100 + index % 60
        text = texts[index % len(texts)]
        props: dict[str, Any] = {"Amount": round(index * 1.37, 2), "Category": text, "Quantity": index}
        if index % 2:
            props["Tags"] = ["a", text, "c,d"]
        if index % 3 == 0:
            props["Nested"] = {"level": {"deep": [1, 2.5, None, True, text]}, "empty": {}}
        if index % 4 == 0:
            props["Mixed"] = index if index % 8 else f"text {index}"
        if index % 5 == 0:
            props['key with spaces, commas and "quotes"'] = text
            props["123 starts with digit"] = index
            props["xmlReserved"] = True
        if index % 7 == 0:
            props["Flag"] = index % 2 == 0
            props["Empty list"] = []
            props["Null"] = None
        profile: dict[str, Any] = {
            "objectId": f"__{index:032x}",
            "identity": f"user-{index}",
            "email": f"user{index}@example.com",
            "name": text or "Nameless",
            "platform": ["Android", "iOS", "Web"][index % 3],
            "all_identities": [f"user-{index}", f"user{index}@example.com"],
            "profileData": {"Customer Type": "Gold, VIP" if index % 2 else "Silver", "Age": 20 + index},
        }
        if index % 6 == 0:
            profile.update(make="Samsung", model="SM-G991B", os_version="13.4", app_version="2.23.0")
        record: dict[str, Any] = {"profile": profile, "ts": ts, "event_props": props}
        if index % 4 != 3:
            record["session_props"] = {"utm_source": text, "session_source": "Direct"}
        if index % 9 == 0:
            record["deviceInfo"] = {"browser": "Others"}
        records.append(record)
    return records


def pages_of(records: list[dict[str, Any]], size: int = 7) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]
