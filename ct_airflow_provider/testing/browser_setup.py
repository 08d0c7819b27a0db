"""Make sure Debian's Chromium is installed for the browser tests (``python -m ct_airflow_provider.testing.browser_setup``).

The browser tests drive the system's Chromium through Playwright's ``executable_path``: no browser
is ever downloaded by Playwright. This module installs the Debian package when it is missing and
does nothing when it is there, so ``make test`` can run it every time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


class BrowserSetupError(RuntimeError):
    """Chromium is missing and could not be installed; the message says what to do."""


def _run(command: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    completed = subprocess.run(command, env=env, check=False)
    if completed.returncode != 0:
        raise BrowserSetupError(
            f"`{' '.join(command)}` failed with exit code {completed.returncode}. Install Debian's chromium "
            "package by hand (apt-get install chromium) and run the browser tests again."
        )


def ensure_chromium(chromium_path: Path = CHROMIUM_PATH) -> Path:
    """Return the path of Debian's Chromium, installing the ``chromium`` package with apt when missing.

    :param chromium_path: where the browser is expected.
    :raises BrowserSetupError: apt is unavailable, not run as root, or the install failed.
    """
    if chromium_path.exists():
        return chromium_path
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise BrowserSetupError(
            f"{chromium_path} is missing and apt-get is not available on this machine. The browser tests "
            "need Debian's (or Ubuntu's) chromium package at that path: install it with the system's package "
            "manager, or run them on a Debian-based machine."
        )
    if os.geteuid() != 0:
        raise BrowserSetupError(
            f"{chromium_path} is missing and installing it needs root. Run `sudo apt-get install -y chromium` "
            "once, then the browser tests again."
        )
    print(f"{chromium_path} is missing: installing Debian's chromium package with apt-get", flush=True)
    _run([apt_get, "update", "-q"])
    _run([apt_get, "install", "-y", "-q", "--no-install-recommends", "chromium"])
    if not chromium_path.exists():
        raise BrowserSetupError(
            f"apt-get installed chromium but {chromium_path} still does not exist: check which package "
            "provides the browser on this distribution (`dpkg -L chromium`)."
        )
    return chromium_path


def main() -> int:
    """Install Chromium when missing; print where it is."""
    try:
        path = ensure_chromium()
    except BrowserSetupError as error:
        print(f"browser_setup: {error}", file=sys.stderr)
        return 1
    print(f"browser_setup: Chromium ready at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
