"""pyarrow, as the Parquet writer imports it: with jemalloc as Arrow's allocator where nobody chose one.

Arrow picks its memory allocator once, when pyarrow is first imported, from the environment
variable ``ARROW_DEFAULT_MEMORY_POOL`` (``jemalloc``, ``mimalloc`` or ``system``); without it, Linux
wheels use mimalloc. Parquet exports peaked about 40 MB higher with mimalloc than with jemalloc, at
the same speed (mimalloc keeps what the JSON reader and the Parquet writer free, per thread): 275
against 235 MB for 4,000,000 records. So on Linux, if pyarrow is not imported yet and the variable is
unset, it is set to ``jemalloc`` here before the import. A choice made in the environment wins, and a
process that imported pyarrow earlier keeps the allocator it has.
"""

from __future__ import annotations

import os
import sys

if sys.platform == "linux" and "pyarrow" not in sys.modules:
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

import pyarrow
import pyarrow.compute
import pyarrow.json
import pyarrow.parquet

__all__ = ["pyarrow"]
