"""Run every benchmark in turn (``make bench``); ``--quick`` passes each its small mode.

Each script measures ratios against a baseline in the same run and prints a markdown table; see the
README's performance section for the figures recorded on a 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPTS = ["bench_clevertap_hook.py", "bench_formats.py", "bench_tuning.py", "bench_export_e2e.py"]


def main() -> int:
    extra = ["--quick"] if "--quick" in sys.argv[1:] else []
    failed = []
    for script in SCRIPTS:
        print(f"\n## {script}\n", flush=True)
        if subprocess.run([sys.executable, str(BENCH / script), *extra], check=False).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
