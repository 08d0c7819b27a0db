"""Importing the provider changes nothing in the process; the hooks load none of the export core, and the
export core none of Airflow.

Each check runs in a fresh interpreter: this test process has imported everything long ago.
"""

from __future__ import annotations

import subprocess
import sys

import orjson

#: Every module of the provider but the testing helpers (which a worker never imports).
_MODULES = [
    "ct_airflow_provider.hooks.clevertap",
    "ct_airflow_provider.hooks.gcs",
    "ct_airflow_provider.operators",
    "ct_airflow_provider.sensors",
    "ct_airflow_provider.triggers.profile_export",
    "ct_airflow_provider.export",
    "ct_airflow_provider.export.formats.parquet",
    "ct_airflow_provider.export.tuning",
    "ct_airflow_provider.config",
]

_STATE = "import gc, os, orjson; print(orjson.dumps([gc.isenabled(), gc.get_threshold(), dict(os.environ)]).decode())"


def _run(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()


def test_importing_the_provider_changes_no_process_wide_setting() -> None:
    imports = "".join(f"import {module}\n" for module in _MODULES)
    before, after = _run(f"{_STATE}\n{imports}{_STATE}")[-2:]
    assert orjson.loads(after) == orjson.loads(before)


def test_importing_the_parquet_writer_leaves_arrow_s_allocator_to_pyarrow() -> None:
    backend = "import pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    assert _run(f"import ct_airflow_provider.export.formats.parquet\n{backend}")[-1] == _run(backend)[-1]


def test_the_clevertap_hook_loads_none_of_the_export_core() -> None:
    code = (
        "import sys\nimport ct_airflow_provider.hooks.clevertap\n"
        "print(sorted(name for name in sys.modules if name.startswith('ct_airflow_provider.export')))"
    )
    assert _run(code)[-1] == "[]"


def test_the_export_core_loads_no_airflow_module() -> None:
    # Plain Python under thin Airflow glue: a bench or a user's script pays nothing for Airflow.
    code = (
        "import sys\nimport ct_airflow_provider.export.job, ct_airflow_provider.export.formats.parquet\n"
        "print(sorted(name for name in sys.modules if name == 'airflow' or name.startswith('airflow.')))"
    )
    assert _run(code)[-1] == "[]"
