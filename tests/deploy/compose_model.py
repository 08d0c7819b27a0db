"""docker-compose.yaml as the deploy tests read it: anchors merged, Compose's variable defaults applied."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker-compose.yaml"
DOCKERFILE_PATH = ROOT / "Dockerfile"
DOCKERIGNORE_PATH = ROOT / ".dockerignore"
LOCK_PATH = ROOT / "requirements.lock"

#: Ports the official images listen on without being told (their documented defaults).
IMAGE_DEFAULT_PORTS = {"postgres": 5432, "redis": 6379}
#: Ports a URL scheme implies when the URL names none.
SCHEME_DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "postgresql": 5432, "postgres": 5432}

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<escaped>\$))")
_URL = re.compile(r"[a-z][a-z0-9+.]*://[^\s\"',}]+")
# A health check that opens a socket: socket.create_connection(('127.0.0.1', 4480), 2).
_LOCAL_SOCKET = re.compile(r"\(\s*'(?:127\.0\.0\.1|localhost)'\s*,\s*(\d+)\s*\)")


class UndefinedVariableError(ValueError):
    """A ``${VAR}`` without a default: `docker compose up` would need it set."""


def interpolate(text: str, environment: dict[str, str]) -> str:
    """Apply Compose's interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``$$``.

    :param text: a string value of the compose file.
    :param environment: the variables set (none in the tests: every default must work).
    """

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        expression = match.group("braced") if match.group("braced") is not None else match.group("plain")
        for separator in (":-", "-", ":?", "?"):
            name, found, default = expression.partition(separator)
            if found:
                value = environment.get(name)
                if separator == ":-":
                    return value if value else default
                if separator == "-":
                    return default if value is None else value
                if value is None or (separator == ":?" and not value):
                    raise UndefinedVariableError(f"${{{expression}}} is required and not set")
                return value
        if expression not in environment:
            raise UndefinedVariableError(f"${{{expression}}} has no default")
        return environment[expression]

    return _VARIABLE.sub(replace, text)


def _interpolate_tree(node: Any, environment: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environment)
    if isinstance(node, list):
        return [_interpolate_tree(item, environment) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, environment) for key, value in node.items()}
    return node


def as_arguments(value: Any) -> list[str]:
    """A command or entrypoint as its argument list (the string form is split as a shell would)."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(item) for item in value]


@dataclass(frozen=True)
class PortUse:
    """A place where the stack names a service's port: ``where`` says which value, for messages."""

    service: str
    port: int
    where: str


class ComposeFile:
    """``docker-compose.yaml`` parsed (YAML anchors merged) and interpolated with no variable set."""

    def __init__(self, path: Path = COMPOSE_PATH, environment: dict[str, str] | None = None) -> None:
        self.path = path
        self.raw: dict[str, Any] = yaml.safe_load(path.read_text())
        self.data: dict[str, Any] = _interpolate_tree(self.raw, environment or {})
        self.services: dict[str, dict[str, Any]] = self.data["services"]

    def service(self, name: str) -> dict[str, Any]:
        return self.services[name]

    def command(self, name: str) -> list[str]:
        return as_arguments(self.services[name].get("command"))

    def entrypoint(self, name: str) -> list[str]:
        return as_arguments(self.services[name].get("entrypoint"))

    def environment(self, name: str) -> dict[str, str]:
        environment = self.services[name].get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        return {key: "" if value is None else str(value) for key, value in environment.items()}

    def option(self, name: str, flag: str) -> str:
        """The value after ``flag`` in the service's entrypoint and command."""
        arguments = self.entrypoint(name) + self.command(name)
        if flag not in arguments:
            raise KeyError(f"service {name!r} passes no {flag}")
        return arguments[arguments.index(flag) + 1]

    def python_module(self, name: str) -> str | None:
        """The module a service runs with ``python -m``, if it does."""
        arguments = self.entrypoint(name) + self.command(name)
        for index, argument in enumerate(arguments[:-1]):
            if argument == "-m" and index > 0 and Path(arguments[index - 1]).name.startswith("python"):
                return arguments[index + 1]
        return None

    def listening_ports(self, name: str) -> set[int]:
        """Ports the service's process listens on: its ``--port``/``-port`` options or the image default."""
        service = self.services[name]
        ports: set[int] = set()
        arguments = self.entrypoint(name) + self.command(name)
        for index, argument in enumerate(arguments[:-1]):
            if argument in ("--port", "-port", "-p"):
                ports.add(int(arguments[index + 1]))
        image_name = str(service.get("image", "")).split("/")[-1].split(":")[0]
        if image_name in IMAGE_DEFAULT_PORTS:
            ports.add(IMAGE_DEFAULT_PORTS[image_name])
        return ports

    def texts(self, name: str) -> list[tuple[str, str]]:
        """Every string of a service that may name another service: (where, text)."""
        found = [(f"{name}.environment.{key}", value) for key, value in self.environment(name).items()]
        arguments = self.entrypoint(name) + self.command(name)
        found += [(f"{name}.command", argument) for argument in arguments]
        healthcheck = self.services[name].get("healthcheck") or {}
        found += [(f"{name}.healthcheck", argument) for argument in as_arguments(healthcheck.get("test"))]
        return found

    def port_uses(self) -> list[PortUse]:
        """Every ``service:port`` the stack's values name, in URLs or as ``host:port`` arguments."""
        uses: list[PortUse] = []
        for name in self.services:
            for where, text in self.texts(name):
                for url in _URL.findall(text):
                    parts = urlsplit(url)
                    if not parts.hostname:
                        continue
                    port = parts.port or SCHEME_DEFAULT_PORTS.get(parts.scheme.split("+")[0])
                    target = name if parts.hostname in ("localhost", "127.0.0.1") else parts.hostname
                    if port is not None:
                        uses.append(PortUse(target, port, f"{where}: {url}"))
                for port_text in _LOCAL_SOCKET.findall(text):
                    uses.append(PortUse(name, int(port_text), f"{where}: {text}"))
                bare = re.fullmatch(r"([a-z0-9][a-z0-9-]*):(\d+)", text)
                if bare and bare.group(1) in self.services:
                    uses.append(PortUse(bare.group(1), int(bare.group(2)), f"{where}: {text}"))
        return uses


def dockerfile_heredoc(delimiter: str) -> str:
    match = re.search(rf"<<'{delimiter}'\n(.*?)\n{delimiter}\n", DOCKERFILE_PATH.read_text(), re.S)
    assert match, f"the Dockerfile has no <<'{delimiter}' heredoc"
    return match.group(1)


def runtime_subset(tmp_path: Path) -> tuple[str, dict[str, set[str]]]:
    """Run the Dockerfile's own lock-subset script: (the subset's text, package -> versions)."""
    script = tmp_path / "subset.py"
    script.write_text(dockerfile_heredoc("LOCK_SUBSET"))
    subset = tmp_path / "runtime.lock"
    result = subprocess.run(
        [sys.executable, str(script), str(LOCK_PATH), str(subset)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    text = subset.read_text()
    names: dict[str, set[str]] = {}
    for match in re.finditer(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", text, re.M):
        names.setdefault(match.group(1).lower(), set()).add(match.group(2))
    return text, names
