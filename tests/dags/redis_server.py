"""A throwaway Redis server on loopback, from Debian's package, as the Celery deployment's broker.

Airflow's CeleryExecutor sends task instances to workers through a broker; Redis is the one Airflow's
own Docker Compose deployment uses. The server keeps nothing on disk (no RDB snapshots, no
append-only file), listens on 127.0.0.1 only, and lives in a temporary folder removed on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ct_airflow_provider.testing.processes import free_port, stop_process_group, tail
from ct_airflow_provider.testing.system_packages import ensure_redis

_STARTUP_DEADLINE_S = 30.0


@dataclass(frozen=True)
class RedisServer:
    """A running server started by :func:`run_redis`."""

    port: int
    folder: Path

    @property
    def url(self) -> str:
        """Database 0, as Celery's ``broker_url`` takes it."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.folder / "redis.log"


def _answers_ping(port: int) -> bool:
    """Whether a Redis server on ``port`` answers PING (it refuses commands while loading)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _command(server: Path, port: int, folder: Path) -> list[str]:
    return [
        str(server),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--dir", str(folder),
        "--daemonize", "no",
        # No persistence: the broker's queues live as long as the test module.
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip


@contextlib.contextmanager
def run_redis() -> Iterator[RedisServer]:
    """Start ``redis-server`` on a free loopback port; stop it (with its process group) on exit.

    :raises RuntimeError: the server did not answer PING in time; the message holds its log's tail.
    """
    server = ensure_redis()
    folder = Path(tempfile.mkdtemp(prefix="ct-redis-"))
    redis = RedisServer(port=free_port(), folder=folder)
    try:
        # Redis logs to stdout without --logfile; errors in its arguments go there too.
        with redis.log_path.open("ab") as log:
            process = subprocess.Popen(
                _command(server, redis.port, folder),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_until_ready(process, redis)
            yield redis
        finally:
            stop_process_group(process)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_ready(process: subprocess.Popen[bytes], redis: RedisServer) -> None:
    deadline = time.monotonic() + _STARTUP_DEADLINE_S
    while not _answers_ping(redis.port):
        if process.poll() is not None or time.monotonic() > deadline:
            state = (
                f"exited with {process.returncode}" if process.returncode is not None else "did not answer"
            )
            raise RuntimeError(
                f"redis-server on port {redis.port} {state}; last lines of {redis.log_path}:\n"
                f"{tail(redis.log_path)}"
            )
        time.sleep(0.1)
