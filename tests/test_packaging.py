"""What users install: it refuses an Airflow it cannot run on, declares what it imports, ships no test code."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import ct_airflow_provider
from ct_airflow_provider import MIN_AIRFLOW_VERSION

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ct_airflow_provider"
# Import name -> distribution, for the third-party imports of the provider's runtime code.
DISTRIBUTIONS = {
    "airflow": "apache-airflow",
    "asgiref": "asgiref",
    "cryptography": "cryptography",
    "google.api_core": "google-api-core",
    "google.auth": "google-auth",
    "google.cloud": "google-cloud-storage",
    "google_crc32c": "google-crc32c",
    "numpy": "numpy",
    "orjson": "orjson",
    "packaging": "apache-airflow",  # Airflow's own dependency, used only to read Airflow's version
    "pyarrow": "pyarrow",
    "tenacity": "tenacity",
    "urllib3": "urllib3",
    # The connection form widgets of Airflow < 3.2, imported only by the webserver that has them.
    "flask_appbuilder": "apache-airflow",
    "flask_babel": "apache-airflow",
    "markupsafe": "apache-airflow",
    "wtforms": "apache-airflow",
}


def _runtime_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts]


def _distribution_key(module: str) -> str:
    """The top-level name, or two levels for the ``google`` namespace that several distributions share."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "google" else parts[0]


def _imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(_distribution_key(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(_distribution_key(node.module))
    return names


def test_importing_on_an_airflow_older_than_2_11_names_both_versions(tmp_path: Path) -> None:
    # An interpreter whose ``airflow`` is an Airflow 2.10 as far as its version and metadata say.
    fake = tmp_path / "airflow"
    fake.mkdir()
    (fake / "__init__.py").write_text('__version__ = "2.10.5"\n')
    metadata_dir = tmp_path / "apache_airflow-2.10.5.dist-info"
    metadata_dir.mkdir()
    (metadata_dir / "METADATA").write_text("Metadata-Version: 2.1\nName: apache-airflow\nVersion: 2.10.5\n")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        sys.path.insert(1, {str(ROOT)!r})
        import ct_airflow_provider
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("RuntimeError: ct-airflow-provider")
    assert f"needs Apache Airflow {MIN_AIRFLOW_VERSION} or newer" in last_line
    assert "apache-airflow 2.10.5 is installed" in last_line


def test_runtime_code_never_imports_the_testing_package() -> None:
    for path in _runtime_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("ct_airflow_provider.testing"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("ct_airflow_provider.testing") for a in node.names), path


def test_every_third_party_import_of_runtime_code_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        dep.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for dep in project["dependencies"]
    }
    stdlib = set(sys.stdlib_module_names) | {"__future__", "ct_airflow_provider"}
    for path in _runtime_modules():
        for name in _imported_top_levels(path) - stdlib:
            assert name in DISTRIBUTIONS, f"{path}: {name} is imported but not mapped to a distribution"
            assert DISTRIBUTIONS[name] in declared, f"{path}: {name} ({DISTRIBUTIONS[name]}) is not declared"


def test_no_declared_dependency_goes_unused() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    used = {
        DISTRIBUTIONS[n] for p in _runtime_modules() for n in _imported_top_levels(p) if n in DISTRIBUTIONS
    }
    # Imported as ``airflow.providers...``, which the airflow key stands for.
    indirect = {"apache-airflow-providers-common-compat", "apache-airflow-providers-google"}
    for dep in project["dependencies"]:
        name = dep.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        assert name in used | indirect, f"{name} is declared but runtime code does not import it"


def test_the_pytest_plugin_without_pytest_says_which_extra_to_install(tmp_path: Path) -> None:
    # ``pytest`` shadowed by a module that fails to import, as where the testing extra is missing.
    (tmp_path / "pytest.py").write_text("raise ImportError('No module named pytest')\n")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import ct_airflow_provider.testing.pytest_plugin
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "pip install 'ct-airflow-provider[testing]'" in result.stderr


def test_the_installed_package_is_the_one_under_test() -> None:
    assert Path(ct_airflow_provider.__file__).resolve().parent == PACKAGE
