"""Run every benchmark module in ``bench/`` (or the ones named) and print their tables.

    python -m bench                 # all
    python -m bench merge_batch     # one
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    failed = []
    for name in names:
        print(f"\n## bench.{name}\n", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        try:
            module.main()
        except Exception as exc:  # report and carry on with the next benchmark
            failed.append(name)
            print(f"bench.{name} failed: {exc!r}")
        print(f"\n({time.perf_counter() - start:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
