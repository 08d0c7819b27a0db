"""Parquet exports allocate Arrow memory from jemalloc unless the environment or an earlier import chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the allocator is chosen on Linux only")

_BACKEND = "import pyarrow\nprint(pyarrow.default_memory_pool().backend_name)"


def _run(code: str, **environment: str) -> list[str]:
    """The lines a fresh interpreter prints running ``code``, with ``environment`` and no allocator chosen."""
    env = {key: value for key, value in os.environ.items() if key != "ARROW_DEFAULT_MEMORY_POOL"}
    env.update(environment)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return done.stdout.split()


def test_a_parquet_export_process_uses_jemalloc_by_default() -> None:
    assert _run("import ct_airflow_provider.export.formats.parquet\n" + _BACKEND) == ["jemalloc"]


def test_the_environment_s_choice_of_allocator_wins() -> None:
    code = "import ct_airflow_provider.export.formats.parquet\n" + _BACKEND
    assert _run(code, ARROW_DEFAULT_MEMORY_POOL="system") == ["system"]


def test_a_process_that_imported_pyarrow_first_is_left_as_it_is() -> None:
    code = "import os, pyarrow\nimport ct_airflow_provider.export.formats.parquet\n"
    # Neither its allocator nor its environment (which child processes inherit) changes.
    assert _run(code + _BACKEND) == _run(_BACKEND)
    assert _run(code + "print(os.environ.get('ARROW_DEFAULT_MEMORY_POOL'))") == ["None"]
