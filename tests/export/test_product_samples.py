"""The JSON and XML samples of the product page, reproduced exactly from equivalent API records."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.export.conftest import Exporter

REFERENCE = Path("/work/shared/reference/clevertap-gcp-export.md")

# The samples as printed on the product page (kept here too, so the test runs without the page).
XML_SAMPLE = """\
<Event>
    <ts>20200220130735</ts>
    <eventName>Export Custom Event</eventName>
    <profile>
        <all_identities>exportProfile+81@clevertap.com</all_identities>
        <platform>Web</platform>
        <email>exportProfile+81@clevertap.com</email>
    </profile>
    <deviceInfo>
        <browser>Others</browser>
    </deviceInfo>
    <eventProps>
        <entry>
            <key>CT Source</key>
            <value>API</value>
        </entry>
        <entry>
            <key>Category</key>
            <value>Mens Watch</value>
        </entry>
        <entry>
            <key>Product name</key>
            <value>Casio Chronograph Watch</value>
        </entry>
        <entry>
            <key>Price</key>
            <value>59.99</value>
        </entry>
        <entry>
            <key>Currency</key>
            <value>USD</value>
        </entry>
    </eventProps>
</Event>
"""

JSON_SAMPLE = """\
{
\t"profile": {
\t\t"identity": "dqsndckfk234"
\t},
\t"ts": 20171109000015,
\t"eventProps": {
\t\t"ct_connected_to_wifi": "false",
\t\t"ct_bluetooth_version": "ble",
\t\t"ct_bluetooth_enabled": "false",
\t\t"ct_sdk_version": 30107,
\t\t"ct_latitude": -6.1975594,
\t\t"ct_longitude": 106.52913,
\t\t"ct_os_version": "5.1.1",
\t\t"ct_app_version": "2.30.1",
\t\t"ct_network_carrier": "3",
\t\t"ct_network_type": "4G"
\t}
}"""


def test_the_samples_here_are_the_product_page_samples() -> None:
    page = REFERENCE.read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:text|json)\n(.*?)```", page, flags=re.S)
    assert XML_SAMPLE in blocks
    assert JSON_SAMPLE + "\n" in blocks


def test_xml_sample_reproduced_exactly(run_export: Exporter) -> None:
    record = {
        "profile": {
            "all_identities": ["exportProfile+81@clevertap.com"],
            "platform": "Web",
            "email": "exportProfile+81@clevertap.com",
        },
        "ts": 20200220130735,
        "deviceInfo": {"browser": "Others"},
        "event_props": {
            "CT Source": "API",
            "Category": "Mens Watch",
            "Product name": "Casio Chronograph Watch",
            "Price": 59.99,
            "Currency": "USD",
        },
    }
    files, out = run_export([record], "xml", event_name="Export Custom Event")
    text = (out / files[0].object_name).read_text(encoding="utf-8")
    assert text == f'<?xml version="1.0" encoding="UTF-8"?>\n<Events>\n{XML_SAMPLE}</Events>\n'


def test_json_sample_reproduced_exactly(run_export: Exporter) -> None:
    sample = json.loads(JSON_SAMPLE)
    record = {"profile": sample["profile"], "ts": sample["ts"], "event_props": sample["eventProps"]}
    files, out = run_export([record], "json", event_name="App Launched")
    lines = (out / files[0].object_name).read_bytes().split(b"\n")
    assert lines[0] == b"App Launched"
    # The sample, written compactly on one line: same keys, same order, same values.
    assert lines[1] == json.dumps(sample, separators=(",", ":"), ensure_ascii=False).encode()
    assert lines[2:] == [b""]
