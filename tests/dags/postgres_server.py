"""A throwaway PostgreSQL server on loopback, from Debian's package, for deployments that need one.

Airflow 2 refuses LocalExecutor (and CeleryExecutor) on SQLite, so its deployment tests run on
PostgreSQL as a production deployment does; so does the Celery deployment on Airflow 3, whose
workers and scheduler share Celery's result backend there. The cluster lives in a temporary folder, trusts local
connections and runs without fsync: it exists for one test module.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ct_airflow_provider.testing.processes import free_port, stop_process_group, tail
from ct_airflow_provider.testing.system_packages import ensure_postgresql

_STARTUP_DEADLINE_S = 60.0
#: PostgreSQL refuses to run as root; Debian's package creates this account.
_SERVER_USER = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    """A running server started by :func:`run_postgres`."""

    port: int
    database: str
    user: str

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def celery_result_backend(self) -> str:
        """The URL of Celery's database result backend: SQLAlchemy's URL behind a ``db+`` prefix.

        The driver is named: SQLAlchemy 2.1 takes psycopg 3 for a bare ``postgresql://``, and the
        tests have psycopg2 only.
        """
        return f"db+{self.sqlalchemy_url}"


def _as_server_user() -> dict[str, str]:
    """``subprocess`` arguments that run a server program as ``postgres`` when the tests run as root."""
    return {"user": _SERVER_USER} if os.geteuid() == 0 else {}


@contextlib.contextmanager
def run_postgres(database: str = "airflow") -> Iterator[PostgresServer]:
    """Create a cluster in a new temporary folder, start it on a free loopback port, create ``database``.

    The server is stopped and its folder removed on exit. The folder is not under pytest's
    temporary folders: those are private to the user running the tests, and the server may run as
    ``postgres``.

    :param database: the database to create, owned by the user ``airflow``.
    """
    bin_dir = ensure_postgresql()
    folder = Path(tempfile.mkdtemp(prefix="ct-postgres-"))
    data, log_path = folder / "data", folder / "postgres.log"
    data.mkdir()
    if os.geteuid() == 0:
        server_user = pwd.getpwnam(_SERVER_USER)
        for path in (folder, data):
            shutil.chown(path, server_user.pw_uid, server_user.pw_gid)
    try:
        yield from _serve(bin_dir, folder, data, log_path, database)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _serve(
    bin_dir: Path, folder: Path, data: Path, log_path: Path, database: str
) -> Iterator[PostgresServer]:
    user = "airflow"
    initdb = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        check=False,
        **_as_server_user(),  # type: ignore[arg-type]
    )
    if initdb.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                "-k", str(folder), "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_as_server_user(),  # type: ignore[arg-type]
        )  # fmt: skip
    try:
        deadline = time.monotonic() + _STARTUP_DEADLINE_S
        while True:
            created = subprocess.run(
                [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database],
                capture_output=True,
                text=True,
                check=False,
            )
            if created.returncode == 0:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL did not start on port {port} ({created.stderr.strip()}); "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
            time.sleep(0.25)
        yield PostgresServer(port=port, database=database, user=user)
    finally:
        stop_process_group(process)
