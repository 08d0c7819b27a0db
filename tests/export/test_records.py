"""Shaping rules of records.py that every format relies on: device fields leave the profile in one order."""

from __future__ import annotations

from ct_airflow_provider.export.records import DEVICE_FIELDS, shape_event, split_device_fields


def test_device_fields_leave_the_profile_in_their_own_order() -> None:
    profile = {"browser": "b", "identity": "u1", "make": "m", "platform": "Web"}
    device, rest = split_device_fields(profile)
    assert list(device.items()) == [("make", "m"), ("browser", "b")]
    assert list(rest.items()) == [("identity", "u1"), ("platform", "Web")]
    assert profile == {"browser": "b", "identity": "u1", "make": "m", "platform": "Web"}


def test_a_profile_without_device_fields_is_kept_as_it_is() -> None:
    profile = {"identity": "u1", "platform": "Web"}
    device, rest = split_device_fields(profile)
    assert device == {} and rest is profile


def test_a_profile_with_every_device_field() -> None:
    profile = {key: key.upper() for key in reversed(DEVICE_FIELDS)} | {"identity": "u1"}
    device, rest = split_device_fields(profile)
    assert list(device) == list(DEVICE_FIELDS) and rest == {"identity": "u1"}
    shaped = shape_event({"profile": profile, "ts": 20240101000000, "event_props": {}, "session_props": {}})
    assert list(shaped) == ["profile", "ts", "deviceInfo", "eventProps", "sessionProps"]
    assert shaped["deviceInfo"] == device
