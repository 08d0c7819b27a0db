"""Object names as CleverTap writes them, and the manifest written last."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ct_airflow_provider.export import (
    ExportConfigError,
    ExportedFile,
    ExportNaming,
    build_manifest,
    event_object_name,
    manifest_object_name,
    sanitize_event_name,
)
from ct_airflow_provider.export.records import shape_event


def test_file_name_format_of_the_product_page() -> None:
    name = event_object_name("1581000000", 1582204055, "Charged", dt.date(2020, 2, 20), 0, 5, "json")
    assert name == "1581000000-1582204055-Charged-20200220-0-5.json"


@pytest.mark.parametrize(
    ("raw", "sanitized"),
    [
        ("App Launched", "App-Launched"),
        ("Reward\tClaimed", "Reward-Claimed"),
        ("Added To Cart/Wishlist", "Added-To-Cart-Wishlist"),
        ("nul\x00byte", "nul-byte"),
        ("bell\x07and\x1bescape\x7f", "bell?and?escape?"),
        ("line\nbreak", "line-break"),
        ("Réservation Confirmée", "Réservation-Confirmée"),
        ("no\u00a0break", "no-break"),
    ],
)
def test_event_names_sanitized_as_clevertap_does(raw: str, sanitized: str) -> None:
    assert sanitize_event_name(raw) == sanitized


@given(st.text(min_size=1))
def test_sanitized_names_hold_no_white_space_slash_or_control_character(name: str) -> None:
    sanitized = sanitize_event_name(name)
    assert len(sanitized) == len(name)
    assert not any(c.isspace() or c in "/\x00" or unicodedata.category(c) == "Cc" for c in sanitized)
    assert all(a == b for a, b in zip(name, sanitized, strict=True) if b not in "-?")
    assert sanitize_event_name(sanitized) == sanitized


def test_naming_prefix_profiles_and_manifest() -> None:
    naming = ExportNaming(
        request_id="42", run_timestamp=1700000000, database_id=3, prefix="clevertap/exports"
    )
    assert naming.prefix == "clevertap/exports/"
    day = dt.date(2024, 1, 5)
    assert (
        naming.event_object_name("A B", day, 2, "csv.gz")
        == "clevertap/exports/42-1700000000-A-B-20240105-2-3.csv.gz"
    )
    assert (
        naming.profile_object_name(day, 0, "parquet")
        == "clevertap/exports/42-1700000000-profiles-20240105-0-3.parquet"
    )
    assert manifest_object_name(naming) == "clevertap/exports/42-1700000000-manifest.json"
    assert naming.run_prefix() == "clevertap/exports/42-1700000000-"
    assert ExportNaming(request_id=7, run_timestamp=1, database_id=0, prefix=None).request_id == "7"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"request_id": ""}, "request id must be a non-empty"),
        ({"request_id": "a/b"}, "contains '/'"),
        ({"run_timestamp": -1}, "run timestamp must be a non-negative integer"),
        ({"database_id": "3"}, "database id must be a non-negative integer"),
        ({"prefix": "/abs"}, "starts with '/'"),
    ],
)
def test_bad_naming_is_refused(kwargs: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"request_id": "1", "run_timestamp": 2, "database_id": 3, **kwargs}
    with pytest.raises(ExportConfigError, match=message):
        ExportNaming(**values)  # type: ignore[arg-type]


def test_object_names_over_the_storage_limit_are_refused() -> None:
    naming = ExportNaming(request_id="1", run_timestamp=2, database_id=3, prefix="p" * 1000)
    with pytest.raises(ExportConfigError, match="over the 1024-byte limit"):
        naming.event_object_name("Charged", dt.date(2024, 1, 1), 0, "json")


def test_manifest_lists_files_totals_and_status() -> None:
    naming = ExportNaming(request_id="42", run_timestamp=1700000000, database_id=3)
    files = [
        ExportedFile("b", "Charged", dt.date(2024, 1, 6), 0, 5, 500, "Y3Jj", "text/csv"),
        ExportedFile("a", "Charged", dt.date(2024, 1, 5), 1, 2, 200, "AAAAAA==", "text/csv"),
        ExportedFile("c", "App Launched", dt.date(2024, 1, 5), 0, 1, 100, "AAAAAA==", "text/csv"),
    ]
    manifest = json.loads(
        build_manifest(
            naming=naming, files=files, export_format="csv", window="days 2024-01-05..2024-01-06",
            skipped_events={"Notification Viewed": "Export not allowed for this event"},
        )
    )  # fmt: skip
    assert manifest["status"] == "complete"
    assert manifest["request_id"] == "42" and manifest["run_timestamp"] == 1700000000
    assert manifest["format"] == "csv" and manifest["window"] == "days 2024-01-05..2024-01-06"
    assert [f["object_name"] for f in manifest["files"]] == ["c", "a", "b"]
    assert manifest["files"][1] == {
        "object_name": "a", "event_name": "Charged", "day": "20240105", "file_index": 1, "records": 2,
        "bytes": 200, "crc32c": "AAAAAA==", "content_type": "text/csv",
    }  # fmt: skip
    assert manifest["totals"] == {"files": 3, "records": 8, "bytes": 800}
    assert manifest["events"]["Charged"] == {"files": 2, "records": 7, "bytes": 700}
    assert manifest["skipped_events"] == {"Notification Viewed": "Export not allowed for this event"}


def test_shaping_renames_moves_device_fields_and_keeps_unknown_keys() -> None:
    api = {
        "profile": {"identity": "u", "platform": "Android", "make": "Samsung", "os_version": "13"},
        "ts": 20240105120000,
        "session_props": {"utm_source": "x"},
        "event_props": {"Amount": 1},
        "future_field": [1],
    }
    shaped = shape_event(api)
    assert list(shaped) == ["profile", "ts", "deviceInfo", "eventProps", "sessionProps", "future_field"]
    assert shaped["profile"] == {"identity": "u", "platform": "Android"}
    assert shaped["deviceInfo"] == {"make": "Samsung", "os_version": "13"}
    assert api["profile"]["make"] == "Samsung"  # the API record itself is left alone
    assert "deviceInfo" not in shape_event({"profile": {"identity": "u"}, "ts": 20240105120000})
    assert shape_event({"ts": 20240105120000, "device_info": {"browser": "x"}})["deviceInfo"] == {
        "browser": "x"
    }


def test_shaping_of_the_api_layout_lists_device_fields_in_one_order() -> None:
    # The API's own four keys, with device fields wherever app=true puts them in the profile.
    api = {
        "profile": {"os_version": "13", "identity": "u", "make": "Samsung", "platform": "Android"},
        "ts": 20240105120000,
        "event_props": {"Amount": 1},
        "session_props": {"utm_source": "x"},
    }
    shaped = shape_event(api)
    assert list(shaped) == ["profile", "ts", "deviceInfo", "eventProps", "sessionProps"]
    assert list(shaped["profile"].items()) == [("identity", "u"), ("platform", "Android")]
    assert list(shaped["deviceInfo"].items()) == [("make", "Samsung"), ("os_version", "13")]
    assert list(api["profile"]) == ["os_version", "identity", "make", "platform"]  # left alone
    without_device = shape_event({**api, "profile": {"identity": "u"}})
    assert list(without_device) == ["profile", "ts", "eventProps", "sessionProps"]
    # Four keys, but not the API's four: the general rules apply, with their errors.
    assert shape_event({"profile": {}, "ts": 20240105120000, "eventProps": {}, "sessionProps": {}}) == {
        "profile": {}, "ts": 20240105120000, "eventProps": {}, "sessionProps": {},
    }  # fmt: skip
    from ct_airflow_provider.export import ExportDataError

    with pytest.raises(ExportDataError, match="has no 'ts'"):
        shape_event({"profile": {}, "time": 1, "event_props": {}, "session_props": {}})


def test_shaping_refuses_ambiguous_records() -> None:
    from ct_airflow_provider.export import ExportDataError

    with pytest.raises(ExportDataError, match="under two spellings"):
        shape_event({"ts": 20240105120000, "event_props": {}, "eventProps": {}})
    with pytest.raises(ExportDataError, match="carries its own 'eventName'"):
        shape_event({"ts": 20240105120000, "eventName": "x"})
