"""The connection guide shows every picture the browser tests take, and only those."""

from __future__ import annotations

import re
import struct

from tests.ui.connections_page import DOCS_SCREENSHOTS, REPO_ROOT, SCREENSHOTS

GUIDE = REPO_ROOT / "docs" / "connections.md"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_guide_shows_every_screenshot_and_each_is_committed() -> None:
    guide = GUIDE.read_text()
    shown = re.findall(r"!\[[^\]]*\]\(screenshots/([^)]+)\)", guide)
    assert sorted(shown) == sorted(SCREENSHOTS), "docs/connections.md and SCREENSHOTS disagree"
    committed = sorted(path.name for path in DOCS_SCREENSHOTS.glob("*.png"))
    assert committed == sorted(SCREENSHOTS), "run `make screenshots` to refresh docs/screenshots"
    for name in SCREENSHOTS:
        data = (DOCS_SCREENSHOTS / name).read_bytes()
        assert data[:8] == _PNG_SIGNATURE, f"{name} is not a PNG"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 600 and height >= 300, f"{name} is {width}x{height}: too small to read"


def test_guide_gives_the_refresh_command() -> None:
    assert "make screenshots" in GUIDE.read_text()
