"""Processes that tests and ``make airflow`` start: free ports, log tails, stopping a process group,
a hostname per Celery worker."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

#: The hostname :func:`worker_hostname` reports, set per Celery worker by the deployment tests.
WORKER_HOSTNAME_ENV = "CT_AIRFLOW_WORKER_HOSTNAME"


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def worker_hostname() -> str:
    """The hostname a task instance records: ``$CT_AIRFLOW_WORKER_HOSTNAME``, else the machine's FQDN.

    Airflow records the result of ``[core] hostname_callable`` as the task instance's ``hostname``.
    Two Celery workers on one machine share its FQDN, so the deployment tests point each worker's
    ``hostname_callable`` here with its Celery hostname in the variable, and can tell from a task
    instance which worker ran it.
    """
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _group_alive(process_group: int) -> bool:
    try:
        os.killpg(process_group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """Stop a process started with ``start_new_session=True`` and every process it started.

    The api-server forks uvicorn workers; terminating only the leader could leave a worker holding
    the port, so the whole group gets SIGTERM, then SIGKILL after ``grace_s``.

    :raises RuntimeError: some process of the group survived SIGKILL.
    """
    group = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process.poll()
        if not _group_alive(group):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    deadline = time.monotonic() + 5
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(group):
        raise RuntimeError(f"processes of group {group} survived SIGKILL: check `ps -g {group}`")
