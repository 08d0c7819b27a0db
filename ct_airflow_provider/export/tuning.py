"""Process-wide settings that make an export faster or leaner, all in one place.

:func:`export_tuning` applies them for the duration of one export and restores what was there
before, also when the export fails; nothing here acts at import time, and nothing at all unless
asked: :class:`ExportTuning` changes nothing by default. The operators take the provider's values
from Airflow's ``[clevertap]`` section (:mod:`ct_airflow_provider.config`). What each setting does
and what it was measured to gain: docs/performance.md, "Tuning".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

#: Arrow allocators :attr:`ExportTuning.arrow_memory_pool` may name.
ARROW_MEMORY_POOLS = ("jemalloc", "mimalloc", "system")


@dataclass(frozen=True)
class ExportTuning:
    """The process-wide settings of an export; ``None`` (or ``False``, the defaults) leaves a setting alone.

    :param gc_threshold: allocations between two young-generation collections of Python's cyclic
        garbage collector while an export runs (Python's default: 700). Records and pages are
        millions of acyclic objects; with 20,000 collections still run, about 30 times less often.
    :param pause_gc_while_parsing: the CleverTap hook pauses the cyclic collector while it parses a
        page of 64 KiB or more (parsed JSON holds no cycles), for the parse only. The operators give
        it to the hook they build; :func:`export_tuning` does not apply it.
    :param arrow_memory_pool: Arrow's allocator while a Parquet export runs: ``jemalloc``,
        ``mimalloc`` or ``system`` (pyarrow's default pool is restored afterwards). Parquet's page
        buffers come from Arrow's C++ default pool, which no pyarrow call can choose and which Arrow
        fixes when pyarrow is first imported, from ``ARROW_DEFAULT_MEMORY_POOL``: on Linux, when an
        export is the first to import pyarrow and the variable is unset, it is set for that import
        only (the environment is as before afterwards, that pool stays Arrow's default).
    :param malloc_mmap_threshold: opt-in, and unlike the others **for the rest of the process**
        (glibc cannot go back to its adaptive threshold): allocations of at least this many bytes
        get their own mappings, given back to the system when freed. Keeps the memory of long
        exports flat where upload buffers would fragment the heap. A no-op without glibc.
    """

    gc_threshold: int | None = None
    pause_gc_while_parsing: bool = False
    arrow_memory_pool: str | None = None
    malloc_mmap_threshold: int | None = None

    def __post_init__(self) -> None:
        for name in ("gc_threshold", "malloc_mmap_threshold"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
        if self.arrow_memory_pool is not None and self.arrow_memory_pool not in ARROW_MEMORY_POOLS:
            raise ValueError(
                f"arrow_memory_pool={self.arrow_memory_pool!r}: choose one of {', '.join(ARROW_MEMORY_POOLS)}, "
                "or None for pyarrow's default."
            )


class _Held:
    """A process-wide setting changed while at least one export holds it: the first export to
    enter saves and changes it, the last to leave restores it (exports may run in threads side by side).
    """

    def __init__(self, read: Callable[[], Any], write: Callable[[Any], None]) -> None:
        self._read = read
        self._write = write
        self._lock = threading.Lock()
        self._holders = 0
        self._saved: Any = None

    @contextmanager
    def changed(self, change: Callable[[Any], Any]) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._saved = self._read()
                self._write(change(self._saved))
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._write(self._saved)


_gc_threshold = _Held(gc.get_threshold, lambda threshold: gc.set_threshold(*threshold))
_arrow_pool: _Held | None = None
_M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number
_mmap_threshold_set: int | None = None


@contextmanager
def export_tuning(tuning: ExportTuning, export_format: str = "") -> Iterator[None]:
    """Apply ``tuning`` while the block runs, and restore what it changed afterwards.

    :param tuning: the settings.
    :param export_format: the export's format; Arrow's allocator is chosen for ``parquet`` only
        (other formats do not import pyarrow).
    """
    with ExitStack() as stack:
        if tuning.gc_threshold is not None:
            young = tuning.gc_threshold
            stack.enter_context(_gc_threshold.changed(lambda saved: (max(saved[0], young), *saved[1:])))
        if tuning.arrow_memory_pool is not None and export_format == "parquet":
            stack.enter_context(_arrow_pool_changed(tuning.arrow_memory_pool))
        if tuning.malloc_mmap_threshold is not None:
            _set_mmap_threshold(tuning.malloc_mmap_threshold)
        yield


def _arrow_pool_changed(name: str) -> Any:
    global _arrow_pool
    # Arrow's C++ default pool, fixed at pyarrow's first import (see ExportTuning.arrow_memory_pool).
    first_import = sys.platform == "linux" and "pyarrow" not in sys.modules
    first_import = first_import and "ARROW_DEFAULT_MEMORY_POOL" not in os.environ
    if first_import:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = name
    try:
        import pyarrow as pa
    finally:
        if first_import:
            del os.environ["ARROW_DEFAULT_MEMORY_POOL"]

    if _arrow_pool is None:
        _arrow_pool = _Held(pa.default_memory_pool, pa.set_memory_pool)
    try:
        pool = getattr(pa, f"{name}_memory_pool")()
    except NotImplementedError:  # this pyarrow build lacks that allocator: keep the default
        pool = None
    return _arrow_pool.changed(lambda saved: saved if pool is None else pool)


def _set_mmap_threshold(size: int) -> None:
    global _mmap_threshold_set
    if _mmap_threshold_set == size:
        return
    _mmap_threshold_set = size
    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, size)
