"""How long `import fastrec` takes in a fresh interpreter, against the floor of its own imports.

Each run starts a new Python (``-X importtime``) and reads the cumulative time of the
``fastrec`` import from its report; the floor is the same for ``numpy``, the one dependency
``import fastrec`` loads (scipy, numba, pandas, dask and the backends load on first use).
Prints the medians and the heaviest imports of the last run.

    python benchmarks/bench_import.py [--runs 15] [--module fastrec]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys

LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_report(statement: str) -> list[tuple[int, int, str]]:
    """(self us, cumulative us, module) for each import that ``statement`` triggers."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = []
    for line in out.stderr.splitlines():
        m = LINE.match(line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), m.group(4)))
    return rows


def top_level_ms(statement: str, module: str) -> tuple[float, list]:
    rows = import_report(statement)
    total = sum(cum for _, cum, name in rows if name == module)
    return total / 1000.0, rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--module", default="fastrec")
    args = parser.parse_args(argv)
    wall, floor = [], []
    rows = []
    for _ in range(args.runs):
        ms, rows = top_level_ms(f"import {args.module}", args.module)
        wall.append(ms)
        floor.append(top_level_ms("import numpy", "numpy")[0])
    med, med_floor = statistics.median(wall), statistics.median(floor)
    print(
        f"import {args.module}: median {med:.0f} ms over {args.runs} runs "
        f"(min {min(wall):.0f}, max {max(wall):.0f})"
    )
    print(
        f"numpy alone: median {med_floor:.0f} ms; fastrec's own share "
        f"{med - med_floor:.0f} ms ({med / med_floor:.2f}x the floor)"
    )
    print("heaviest imports (cumulative ms, last run):")
    for _, cum, name in sorted(rows, key=lambda r: -r[1])[:8]:
        print(f"  {cum / 1000:7.1f}  {name}")


if __name__ == "__main__":
    main()
