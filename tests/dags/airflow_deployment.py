"""A small real Airflow deployment for tests, with LocalExecutor or CeleryExecutor.

Airflow 3: api-server, scheduler and dag-processor on SQLite. Task execution goes through the
api-server's execution API, so the three components run as separate processes the way ``airflow
standalone`` runs them (Airflow 3.3 accepts LocalExecutor on SQLite: only the components touch the
database; task processes talk HTTP).

Airflow 3 with CeleryExecutor (``executor="CeleryExecutor"``): a distributed deployment on one
machine, as production runs one on several. PostgreSQL holds the metadata and Celery's results,
Redis is Celery's broker (both Debian's, started on loopback), and ``celery_workers`` workers
(``airflow celery worker``, named ``worker-1``, ``worker-2``...) run the tasks, reaching the
api-server's execution API over HTTP. Each worker records its own hostname on the task instances it
runs, so a test can tell which worker ran what, and kill one (:meth:`AirflowDeployment.kill_worker`).

Airflow 2: webserver and scheduler (which parses the DAGs itself) on PostgreSQL, since Airflow 2
refuses LocalExecutor on SQLite; the REST API is ``/api/v1``.

Each component runs in its own process group, stopped with everything it forked when the ``with``
block ends, also on failure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import urllib3

from ct_airflow_provider.testing.processes import WORKER_HOSTNAME_ENV, free_port, stop_process_group, tail
from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS
from tests.dags.postgres_server import PostgresServer, run_postgres
from tests.dags.redis_server import run_redis
from tests.ui.airflow_server import isolated_airflow_env

_AIRFLOW = Path(sys.executable).parent / "airflow"
#: Cold start of a component on 2 busy cores takes 15-30 s; the margin is for CI running other suites.
_STARTUP_DEADLINE_S = 180.0
_COMPONENTS = (
    ("api-server", "scheduler", "dag-processor") if AIRFLOW_V_3_0_PLUS else ("webserver", "scheduler")
)
_API_PATH = "/api/v2" if AIRFLOW_V_3_0_PLUS else "/api/v1"
_HEALTH = "monitor/health" if AIRFLOW_V_3_0_PLUS else "health"
_LOCKED_ATTEMPTS = 4
CELERY_EXECUTOR = "CeleryExecutor"
_LOCAL_EXECUTOR = "LocalExecutor"
#: Each Celery worker reports its own hostname on the task instances it runs (see ``worker_hostname``).
_WORKER_HOSTNAME_CALLABLE = "ct_airflow_provider.testing.processes.worker_hostname"
#: A worker killed with its tasks stops their heartbeats; the scheduler fails (and retries) a task
#: instance silent this long. Airflow's 300 s fits production; here a lost worker's task is retried
#: within about a minute. Healthy tasks heartbeat every ``_TASK_HEARTBEAT_S``, several times per timeout
#: even on 2 busy cores.
_TASK_HEARTBEAT_TIMEOUT_S = 20
_TASK_HEARTBEAT_S = 3


class DeploymentError(RuntimeError):
    """The deployment could not start, a component died, or something did not happen in time."""


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class AirflowDeployment:
    """A running deployment started by :func:`run_airflow_deployment`."""

    home: Path
    env: dict[str, str]
    api_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: Celery workers by name (``worker-1``...): their Celery hostname, which is also the ``hostname``
    #: of every task instance they run. Empty with LocalExecutor.
    worker_hostnames: dict[str, str] = field(default_factory=dict)
    #: Task processes each Celery worker runs at once.
    worker_concurrency: int = 2

    def __post_init__(self) -> None:
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=30.0))

    # -- the command line, as a user runs it ---------------------------------------------------
    def cli(
        self, *args: str, check: bool = True, timeout_s: float = 240.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` against this deployment; its output is returned and logged in ``home``.

        A command refused with SQLite's "database is locked" is run again (at most
        ``_LOCKED_ATTEMPTS`` times): SQLite answers so at once, whatever the busy timeout, when a
        transaction that has read must write after another process wrote. Airflow undoes what the
        command had begun (``airflow backfill create`` removes its half-made backfill), and a user
        on SQLite would simply run the command again.
        """
        for attempt in range(1, _LOCKED_ATTEMPTS + 1):
            result = subprocess.run(
                [str(_AIRFLOW), *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            with (self.home / "cli.log").open("a") as log:
                log.write(
                    f"$ airflow {' '.join(args)}\n(exit {result.returncode})\n{result.stdout}{result.stderr}\n"
                )
            locked = result.returncode != 0 and "database is locked" in result.stdout + result.stderr
            if not locked or attempt == _LOCKED_ATTEMPTS:
                break
            time.sleep(2.0 * attempt)
        if check and result.returncode != 0:
            raise DeploymentError(
                f"`airflow {' '.join(args)}` exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    # -- the REST API (every user is admin here: no token) -------------------------------------
    def api(self, path: str, **query: Any) -> Any:
        url = f"{self.api_url}{_API_PATH}/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        response = self._http.request("GET", url)
        if response.status != 200:
            raise DeploymentError(f"GET {url} answered {response.status}: {response.data[:300]!r}")
        return response.json()

    def trigger(self, dag_id: str, logical_date: dt.datetime | None) -> dict[str, Any]:
        """Trigger a run by hand as the UI's Trigger button does (a logical date, or none)."""
        url = f"{self.api_url}{_API_PATH}/dags/{dag_id}/dagRuns"
        body = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": {}}
        response = self._http.request("POST", url, json=body)
        if response.status != 200:
            raise DeploymentError(f"POST {url} answered {response.status}: {response.data[:300]!r}")
        run: dict[str, Any] = response.json()
        return run

    def wait_for_runs(self, dag_id: str, run_ids: set[str], timeout_s: float) -> list[dict[str, Any]]:
        """Wait until the named runs have finished; returns them."""

        def runs() -> list[dict[str, Any]]:
            return [run for run in self.dag_runs(dag_id) if run["dag_run_id"] in run_ids]

        self.wait_until(
            f"runs {sorted(run_ids)} of {dag_id} finished",
            lambda: len(runs()) == len(run_ids) and all(r["state"] in ("success", "failed") for r in runs()),
            timeout_s,
            poll_s=2.0,
        )
        return runs()

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.api(f"dags/{dag_id}/dagRuns", limit=1000)["dag_runs"]
        return sorted(runs, key=lambda run: run["logical_date"] or "")

    def task_instances(self, dag_id: str) -> list[dict[str, Any]]:
        tis: list[dict[str, Any]] = self.api(f"dags/{dag_id}/dagRuns/~/taskInstances", limit=1000)[
            "task_instances"
        ]
        return tis

    def backfills(self, dag_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("backfills", dag_id=dag_id, limit=100)["backfills"]
        return found

    def task_instance_tries(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> list[dict[str, Any]]:
        """Every try of one task instance, oldest first, each with its ``state`` and ``hostname``."""
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
        tries: list[dict[str, Any]] = self.api(path, map_index=map_index)["task_instances"]
        return sorted(tries, key=lambda ti: int(ti["try_number"]))

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The task log file the executor's task process wrote for one try (workers share ``home``)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        path = folder / f"attempt={try_number}.log"
        if not path.exists():
            present = sorted(p.name for p in folder.glob("*")) if folder.exists() else []
            raise DeploymentError(f"no log {path}; the folder holds {present}")
        return path.read_text(errors="replace")

    # -- components ----------------------------------------------------------------------------
    def start(self, name: str, api_port: int | None = None) -> None:
        """Start one component, logging to ``<home>/<name>.log``.

        :param name: ``api-server``, ``webserver`` (both need ``api_port``), ``scheduler``,
            ``dag-processor``, or a Celery worker's name (a key of ``worker_hostnames``; starting
            a killed worker again brings it back under the same hostname).
        """
        if name in self.worker_hostnames:
            self._launch(name, self._worker_args(name), self._worker_env(name))
            return
        args = [name]
        if name == "api-server":
            args += ["--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"]
        elif name == "webserver":
            args += ["--hostname", "127.0.0.1", "--port", str(api_port), "--workers", "1"]
        self._launch(name, args, self.env)

    def _launch(self, name: str, args: list[str], env: dict[str, str]) -> None:
        """Run ``airflow <args>`` in a process group of its own, so stopping it stops what it forked."""
        with (self.home / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [str(_AIRFLOW), *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    # -- Celery workers ------------------------------------------------------------------------
    def _worker_args(self, name: str) -> list[str]:
        return [
            "celery", "worker",
            "--celery-hostname", self.worker_hostnames[name],
            "--concurrency", str(self.worker_concurrency),
            # Every worker would serve its logs on the same port; the api-server reads them from
            # ``home/logs``, which the workers share on this machine.
            "--skip-serve-logs",
            # Nothing to synchronise between workers at start-up, and less broker traffic on 2 cores.
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip

    def _worker_env(self, name: str) -> dict[str, str]:
        return {
            **self.env,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": _WORKER_HOSTNAME_CALLABLE,
            WORKER_HOSTNAME_ENV: self.worker_hostnames[name],
        }

    def worker_named(self, hostname: str) -> str:
        """The name (``worker-1``...) of the worker whose hostname a task instance recorded."""
        for name, worker_hostname in self.worker_hostnames.items():
            if worker_hostname == hostname:
                return name
        raise DeploymentError(
            f"no Celery worker has the hostname {hostname!r}; the workers are {self.worker_hostnames}"
        )

    def worker_ready(self, name: str) -> bool:
        """Whether the worker has connected to the broker and consumes tasks (Celery logs "<hostname> ready.")."""
        log = self.home / f"{name}.log"
        return log.exists() and f"{self.worker_hostnames[name]} ready." in log.read_text(errors="replace")

    def wait_for_workers(self, timeout_s: float = _STARTUP_DEADLINE_S) -> None:
        """Wait until every running Celery worker consumes tasks."""
        running = [name for name in self.worker_hostnames if name in self.processes]
        try:
            self.wait_until(
                f"Celery workers {running} ready",
                lambda: all(self.worker_ready(name) for name in running),
                timeout_s,
                poll_s=0.5,
            )
        except DeploymentError as error:
            logs = "".join(
                f"\nlast lines of {name}.log:\n{tail(self.home / f'{name}.log', 15)}"
                for name in running
                if not self.worker_ready(name)
            )
            raise DeploymentError(f"{error}{logs}") from None

    def kill_worker(self, name: str, sig: signal.Signals = signal.SIGKILL, timeout_s: float = 30.0) -> None:
        """Send ``sig`` to a Celery worker's whole process group and wait until the worker has exited.

        With SIGKILL (the default) the worker goes as if its machine had been lost: the task
        processes, which Airflow's supervisor puts in process groups of their own, are killed too,
        so no heartbeat of their task instances arrives any more. Other signals go to the worker's
        group only (SIGTERM: Celery's warm shutdown, which waits for running tasks).

        The worker leaves ``processes`` (:meth:`check_alive` no longer expects it); :meth:`start`
        with its name starts it again.
        """
        if name not in self.processes or name not in self.worker_hostnames:
            raise DeploymentError(f"no running Celery worker {name!r}; running: {sorted(self.processes)}")
        process = self.processes.pop(name)
        tasks: list[psutil.Process] = []
        if sig == signal.SIGKILL:
            with contextlib.suppress(psutil.Error):
                tasks = psutil.Process(process.pid).children(recursive=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        for task in tasks:
            with contextlib.suppress(psutil.Error):
                task.send_signal(sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DeploymentError(
                f"Celery worker {name} (pid {process.pid}) still runs {timeout_s:.0f} s after {sig.name}"
            ) from None
        psutil.wait_procs(tasks, timeout=timeout_s)

    @contextlib.contextmanager
    def scheduler_stopped(self) -> Iterator[None]:
        """Stop the scheduler for the block, then start it again.

        ``airflow backfill create`` deletes the backfill it made when SQLite refuses it a lock, and
        tries again; a scheduler creating task instances for those runs meanwhile fails on their
        foreign key and exits (Airflow 3.3 with SQLite). Nothing runs while a backfill is created.
        """
        _stop_components({"scheduler": self.processes.pop("scheduler")})
        try:
            yield
        finally:
            self.start("scheduler")

    # -- waiting -------------------------------------------------------------------------------
    def check_alive(self) -> None:
        """Raise with the last log lines if a component has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise DeploymentError(
                    f"airflow {name} exited with {process.returncode}; last lines of its log:\n"
                    f"{tail(self.home / f'{name}.log')}"
                )

    def wait_until(
        self, what: str, condition: Callable[[], bool], timeout_s: float, poll_s: float = 1.0
    ) -> None:
        """Poll ``condition`` until true; fail naming ``what`` (and a dead component, if any)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            with contextlib.suppress(DeploymentError, urllib3.exceptions.HTTPError):
                if condition():
                    return
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"{what}: not reached within {timeout_s:.0f} s; last scheduler lines:\n"
                    f"{tail(self.home / 'scheduler.log', 20)}"
                )
            time.sleep(poll_s)

    def wait_for_dag(self, dag_id: str, timeout_s: float = _STARTUP_DEADLINE_S) -> None:
        """Wait until the dag-processor has parsed ``dag_id`` into the database."""
        self.wait_until(f"DAG {dag_id} parsed", lambda: bool(self.api(f"dags/{dag_id}")["dag_id"]), timeout_s)

    def backfill_runs(self, dag_id: str, backfill_id: int) -> list[dict[str, Any]]:
        """The runs of one backfill (``airflow backfill create`` has created them all when it returns)."""
        (backfill,) = [b for b in self.backfills(dag_id) if b["id"] == backfill_id]
        # The REST API does not say which backfill a run belongs to: the backfill's range does.
        first, last = _time(backfill["from_date"]), _time(backfill["to_date"])
        return [
            run
            for run in self.dag_runs(dag_id)
            if run["run_type"] == "backfill" and first <= _time(run["logical_date"]) <= last
        ]

    def wait_for_backfill_runs(self, dag_id: str, backfill_id: int, timeout_s: float) -> list[dict[str, Any]]:
        """Wait until every run of a backfill has finished; returns them."""

        def finished() -> bool:
            runs = self.backfill_runs(dag_id, backfill_id)
            return bool(runs) and all(run["state"] in ("success", "failed") for run in runs)

        self.wait_until(
            f"runs of backfill {backfill_id} of {dag_id} finished", finished, timeout_s, poll_s=2.0
        )
        return self.backfill_runs(dag_id, backfill_id)

    def wait_for_backfills_complete(self, dag_id: str, timeout_s: float = 120.0) -> None:
        """Wait until the scheduler has marked every backfill of ``dag_id`` complete.

        It does so every 30 s once a backfill's runs have finished; until then Airflow refuses another
        backfill of the same DAG ("There can be only one running backfill per Dag").
        """
        self.wait_until(
            f"backfills of {dag_id} marked complete",
            lambda: all(b["completed_at"] is not None for b in self.backfills(dag_id)),
            timeout_s,
            poll_s=2.0,
        )


def _celery_settings(broker_url: str, postgres: PostgresServer) -> dict[str, str]:
    """CeleryExecutor with Redis as broker and PostgreSQL for results, tuned so a lost worker shows quickly."""
    return {
        "AIRFLOW__CORE__EXECUTOR": CELERY_EXECUTOR,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": postgres.celery_result_backend,
        # Publishing a task to Redis may take longer than the default 1 s while 2 cores are busy.
        "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(_TASK_HEARTBEAT_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": str(_TASK_HEARTBEAT_S),
    }


def _deployment_env(
    home: Path, api_port: int, database_url: str, extra_env: dict[str, str], executor: dict[str, str]
) -> dict[str, str]:
    settings = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        "AIRFLOW__CORE__EXECUTOR": _LOCAL_EXECUTOR,
        "AIRFLOW__CORE__PARALLELISM": "8",
        # The DAGs are unpaused when parsed: a paused DAG's backfill runs never start tasks.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__PORT": str(api_port),
        # The scheduler's and triggerer's log servers default to fixed ports other suites may hold.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # Executors and backfills start task processes as `airflow ...`, found on the PATH.
        "PATH": f"{_AIRFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **executor,
    }
    if not AIRFLOW_V_3_0_PLUS:
        settings |= {
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
            # Airflow 2's REST API lets every request in with this backend, as the simple auth manager does on 3.x.
            "AIRFLOW__API__AUTH_BACKENDS": "airflow.api.auth.backend.default",
            "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(api_port),
        }
    return isolated_airflow_env(home, settings, extra_env)


@contextlib.contextmanager
def run_airflow_deployment(
    home: Path,
    dag_files: list[Path],
    *,
    extra_env: dict[str, str] | None = None,
    pools: dict[str, int] | None = None,
    executor: str = _LOCAL_EXECUTOR,
    celery_workers: int = 2,
    worker_concurrency: int = 2,
) -> Iterator[AirflowDeployment]:
    """Migrate a fresh database, create the pools, start the components.

    :param home: an empty folder used as ``AIRFLOW_HOME`` (and for SQLite's file on Airflow 3); logs of
        every component stay there.
    :param dag_files: files copied into the deployment's DAGs folder.
    :param extra_env: more environment for every component and CLI call (connections, emulator host);
        it may override the deployment's own settings.
    :param pools: pools to create with ``airflow pools set`` before the scheduler starts.
    :param executor: ``LocalExecutor``, or ``CeleryExecutor`` (Airflow 3 only) for PostgreSQL, Redis
        and ``celery_workers`` workers, every one running ``worker_concurrency`` tasks at once.
    :raises ValueError: an executor other than these two, or CeleryExecutor on Airflow 2.
    """
    celery = _check_executor(executor, celery_workers)
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    for dag_file in dag_files:
        shutil.copy(dag_file, dags / dag_file.name)
    api_port = free_port()
    with contextlib.ExitStack() as stack:
        executor_settings: dict[str, str] = {}
        if AIRFLOW_V_3_0_PLUS and not celery:
            # Three processes share the file: wait for a lock rather than fail after sqlite's default 5 s.
            database_url = f"sqlite:///{home / 'airflow.db'}?timeout=60"
        else:
            postgres = stack.enter_context(run_postgres())
            database_url = postgres.sqlalchemy_url
            if celery:
                executor_settings = _celery_settings(stack.enter_context(run_redis()).url, postgres)
        deployment = AirflowDeployment(
            home=home,
            env=_deployment_env(home, api_port, database_url, extra_env or {}, executor_settings),
            api_url=f"http://127.0.0.1:{api_port}",
            worker_hostnames=_worker_hostnames(celery_workers if celery else 0),
            worker_concurrency=worker_concurrency,
        )
        yield from _run_components(deployment, api_port, pools or {})


def _check_executor(executor: str, celery_workers: int) -> bool:
    """Whether the deployment runs Celery; refuses what this module cannot start."""
    if executor not in (_LOCAL_EXECUTOR, CELERY_EXECUTOR):
        raise ValueError(f"executor must be {_LOCAL_EXECUTOR!r} or {CELERY_EXECUTOR!r}, not {executor!r}")
    celery = executor == CELERY_EXECUTOR
    if celery and not AIRFLOW_V_3_0_PLUS:
        raise ValueError("the Celery deployment needs Airflow 3 (its workers reach the execution API)")
    if celery and celery_workers < 1:
        raise ValueError(f"a Celery deployment needs at least one worker, not {celery_workers}")
    return celery


def _worker_hostnames(count: int) -> dict[str, str]:
    """``worker-<n>`` -> ``worker-<n>@<this machine>``, Celery's ``name@host`` form."""
    host = socket.gethostname()
    return {f"worker-{n}": f"worker-{n}@{host}" for n in range(1, count + 1)}


def _run_components(
    deployment: AirflowDeployment, api_port: int, pools: dict[str, int]
) -> Iterator[AirflowDeployment]:
    deployment.cli("db", "migrate")
    if deployment.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
        # Write-ahead logging lets readers (the api-server, CLI calls) go on while the scheduler writes;
        # the mode is stored in the database file, so every component gets it.
        with contextlib.closing(sqlite3.connect(deployment.home / "airflow.db")) as database:
            database.execute("PRAGMA journal_mode=WAL")
    for pool, slots in pools.items():
        deployment.cli("pools", "set", pool, str(slots), f"test pool {pool}")
    try:
        for name in (*_COMPONENTS, *deployment.worker_hostnames):
            deployment.start(name, api_port)
        deployment.wait_until(
            f"{_COMPONENTS[0]} healthy",
            lambda: deployment.api(_HEALTH)["metadatabase"]["status"] == "healthy",
            _STARTUP_DEADLINE_S,
            poll_s=0.5,
        )
        deployment.wait_for_workers()
        yield deployment
    finally:
        _stop_components(deployment.processes)


def _stop_components(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """Stop every component's process group, then anything they started in a session of its own."""
    descendants: list[psutil.Process] = []
    for process in processes.values():
        with contextlib.suppress(psutil.Error):
            descendants += psutil.Process(process.pid).children(recursive=True)
    # The scheduler first, so it starts no new task while the api-server goes away; the api-server
    # last, so the workers' running tasks can still report.
    workers = [name for name in processes if name.startswith("worker-")]
    for name in ("scheduler", "dag-processor", *workers, "api-server", "webserver"):
        if name in processes:
            stop_process_group(processes[name])
    for leftover in descendants:
        with contextlib.suppress(psutil.Error):
            leftover.kill()
    psutil.wait_procs(descendants, timeout=5)
