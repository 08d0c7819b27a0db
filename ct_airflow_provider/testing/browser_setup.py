"""Make sure Debian's Chromium is installed for the browser tests (``python -m ct_airflow_provider.testing.browser_setup``).

The browser tests drive the system's Chromium through Playwright's ``executable_path``: no browser
is ever downloaded by Playwright. This module installs the Debian package when it is missing and
does nothing when it is there, so ``make test`` can run it every time.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ct_airflow_provider.testing.system_packages import SystemPackageError, ensure_debian_package

#: Where Debian's ``chromium`` package puts the browser.
CHROMIUM_PATH = Path("/usr/bin/chromium")

#: Command-line switches for a headless Chromium on a machine without outside network: the
#: background services (updates, sync, safe browsing lists, QUIC probes) would otherwise hang or
#: fill the log with failures.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ensure_chromium(chromium_path: Path = CHROMIUM_PATH) -> Path:
    """Return the path of Debian's Chromium, installing the ``chromium`` package with apt when missing.

    :param chromium_path: where the browser is expected.
    :raises SystemPackageError: apt is unavailable, not run as root, or the install failed.
    """
    return ensure_debian_package("chromium", lambda: chromium_path if chromium_path.exists() else None)


def main() -> int:
    """Install Chromium when missing; print where it is."""
    try:
        path = ensure_chromium()
    except SystemPackageError as error:
        print(f"browser_setup: {error}", file=sys.stderr)
        return 1
    print(f"browser_setup: Chromium ready at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
