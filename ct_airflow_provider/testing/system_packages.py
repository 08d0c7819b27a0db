"""Debian packages the deployment tests run for real: Chromium (browser tests), PostgreSQL and Redis.

``python -m ct_airflow_provider.testing.system_packages`` installs what is missing with apt-get and
does nothing when everything is there, so ``make test`` runs it every time. Nothing is downloaded
from anywhere but the system's package manager.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


class SystemPackageError(RuntimeError):
    """A package is missing and could not be installed; the message says what to do."""


def _run(command: list[str], package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    completed = subprocess.run(command, env=env, check=False)
    if completed.returncode != 0:
        raise SystemPackageError(
            f"`{' '.join(command)}` failed with exit code {completed.returncode}. Install Debian's {package} "
            f"package by hand (apt-get install {package}) and run the tests again."
        )


def ensure_debian_package(package: str, find: Callable[[], Path | None]) -> Path:
    """Return what ``find`` finds, installing ``package`` with apt-get first when it finds nothing.

    :param package: the Debian package that provides the file.
    :param find: returns the installed file (a binary, a folder), or None when it is missing.
    :raises SystemPackageError: apt-get is unavailable, not run as root, or the install failed.
    """
    found = find()
    if found is not None:
        return found
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise SystemPackageError(
            f"Debian's {package} package is missing and apt-get is not available on this machine: install "
            f"{package} with the system's package manager, or run the tests on a Debian-based machine."
        )
    if os.geteuid() != 0:
        raise SystemPackageError(
            f"Debian's {package} package is missing and installing it needs root. Run "
            f"`sudo apt-get install -y {package}` once, then the tests again."
        )
    print(f"installing Debian's {package} package with apt-get", flush=True)
    _run([apt_get, "update", "-q"], package)
    _run([apt_get, "install", "-y", "-q", "--no-install-recommends", package], package)
    found = find()
    if found is None:
        raise SystemPackageError(
            f"apt-get installed {package} but its files are still not where expected: check "
            f"`dpkg -L {package}`."
        )
    return found


def _postgresql_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding ``initdb`` and ``postgres``."""
    folders = [
        p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if (p.parent / "postgres").exists()
    ]
    return max(folders, key=lambda folder: int(folder.parent.name), default=None)


def ensure_postgresql() -> Path:
    """The folder of PostgreSQL's server programs (``initdb``, ``postgres``, ``pg_ctl``), installed when missing."""
    return ensure_debian_package("postgresql", _postgresql_bin)


#: Where Debian's redis-server package puts the server.
REDIS_SERVER = Path("/usr/bin/redis-server")


def _redis_server() -> Path | None:
    return REDIS_SERVER if REDIS_SERVER.exists() else None


def ensure_redis() -> Path:
    """The ``redis-server`` program, installed when missing.

    The Celery deployment test uses Redis as Celery's broker, as Airflow's own Docker Compose
    deployment does.
    """
    return ensure_debian_package("redis-server", _redis_server)


def main() -> int:
    """Install Chromium, PostgreSQL and Redis when missing; print where they are."""
    from ct_airflow_provider.testing.browser_setup import ensure_chromium

    try:
        chromium, postgresql, redis = ensure_chromium(), ensure_postgresql(), ensure_redis()
    except SystemPackageError as error:
        print(f"system_packages: {error}", file=sys.stderr)
        return 1
    print(f"system_packages: Chromium at {chromium}, PostgreSQL at {postgresql}, Redis at {redis}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
