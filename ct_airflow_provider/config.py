"""The ``[clevertap]`` section of Airflow's configuration: how the export operators tune the process.

Each option is a field of :class:`~ct_airflow_provider.export.tuning.ExportTuning`, under the same
name; the defaults here are the provider's (the core itself changes nothing unless asked), and an
empty value leaves that setting alone. The provider info declares the section to Airflow (``airflow
config list``), the operators read it when they run. What each option does and what it was measured
to gain: docs/performance.md, "Tuning". Nothing of the export core is imported here until it is read:
Airflow reads the provider info in every process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ct_airflow_provider.export.tuning import ExportTuning

SECTION = "clevertap"

#: Each option's type (as the provider info names it), default, and description.
OPTIONS: dict[str, tuple[str, str, str]] = {
    "gc_threshold": (
        "integer",
        "20000",
        "Allocations between two young-generation collections of Python's garbage collector while an "
        "export runs (Python's own: 700). Empty: Python's.",
    ),
    "pause_gc_while_parsing": (
        "boolean",
        "True",
        "Pause Python's garbage collector while a page of CleverTap's answer is parsed (for the parse only).",
    ),
    "arrow_memory_pool": (
        "string",
        "jemalloc",
        "Arrow's allocator while a Parquet export runs: jemalloc, mimalloc or system. Empty: pyarrow's default.",
    ),
    "malloc_mmap_threshold": (
        "integer",
        "",
        "Opt-in, and for the rest of the worker process: glibc serves allocations of at least this many "
        "bytes from their own mappings, given back to the system when freed. Empty: glibc's own threshold.",
    ),
}


def config_section() -> dict[str, Any]:
    """The provider info's ``config`` entry, which declares the section to Airflow."""
    options = {
        name: {
            "description": description,
            "version_added": "0.1.0",
            "type": kind,
            "example": None,
            "default": default,
        }
        for name, (kind, default, description) in OPTIONS.items()
    }
    description = (
        "Process-wide tuning of the CleverTap exports, applied while an export runs and undone after it."
    )
    return {SECTION: {"description": description, "options": options}}


def export_tuning_from_config() -> ExportTuning:
    """The export's tuning as Airflow's configuration sets it (each option's default where it is silent).

    :raises ExportConfigError: for a value that is not of the option's type or not allowed.
    """
    from airflow.providers.common.compat.sdk import conf

    return _tuning(
        {name: str(conf.get(SECTION, name, fallback=default)) for name, (_, default, _) in OPTIONS.items()}
    )


def default_export_tuning() -> ExportTuning:
    """The tuning the operators use where Airflow's configuration is silent, without reading it.

    For the export core in plain Python (the benchmarks run it so), where Airflow need not be loaded.
    """
    return _tuning({name: default for name, (_, default, _) in OPTIONS.items()})


def _tuning(texts: dict[str, str]) -> ExportTuning:
    """Parse each option's text as Airflow's configuration does (booleans: true/t/1, false/f/0)."""
    from ct_airflow_provider.export.errors import ExportConfigError
    from ct_airflow_provider.export.tuning import ExportTuning

    values: dict[str, Any] = {}
    for name, (kind, default, _) in OPTIONS.items():
        text = texts[name].strip()
        try:
            if kind == "boolean":
                values[name] = _boolean(text)
            else:
                values[name] = None if not text else int(text) if kind == "integer" else text
        except ValueError as error:
            raise ExportConfigError(
                f"Airflow's configuration sets [{SECTION}] {name} = {text!r}, which is not a {kind} "
                f"({error}); the default is {default!r}."
            ) from None
    try:
        return ExportTuning(**values)
    except ValueError as error:
        raise ExportConfigError(f"Airflow's configuration, section [{SECTION}]: {error}") from None


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "t", "1"):
        return True
    if text.lower() in ("false", "f", "0"):
        return False
    raise ValueError("not one of true, t, 1, false, f, 0")
