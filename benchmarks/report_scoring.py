"""Turn a pytest-benchmark JSON of test_bench_scoring.py into the markdown tables of
benchmarks/README.md:
per group and thread count, each implementation's median and its figure, with ratios to the
named baseline measured in the same run."""

from __future__ import annotations

import json
import sys
from collections import defaultdict

OBJ = "objective - sklearn's"
BASELINES = {"sigmoid dense": "read-bandwidth", "sigmoid CSR": "scipy", "fit": "sklearn-lbfgs"}


def main(path):
    with open(path) as f:
        runs = json.load(f)["benchmarks"]
    groups = defaultdict(list)
    for r in runs:
        groups[r["group"]].append(r)
    for group, rows in groups.items():
        base_name = next(v for k, v in BASELINES.items() if group.startswith(k))
        print(f"\n**{group}**\n")
        print("| threads | implementation | median | figure | vs " + base_name + " |")
        print("|---|---|---|---|---|")
        by_threads = defaultdict(dict)
        for r in rows:
            by_threads[r["extra_info"]["threads"]][r["extra_info"]["impl"]] = r
        for threads in sorted(by_threads):
            impls = by_threads[threads]
            base = impls.get(base_name)
            for impl, r in impls.items():
                info, med = r["extra_info"], r["stats"]["median"]
                if "GB/s" in info:
                    figure = f"{info['GB/s']:.1f} GB/s"
                    ratio = info["GB/s"] / base["extra_info"]["GB/s"] if base else float("nan")
                    ratio = f"{ratio:.2f} of bandwidth"
                elif "Mrows/s" in info:
                    figure = f"{info['Mrows/s']:.1f} Mrows/s"
                    ratio = f"{base['stats']['median'] / med:.2f}x" if base else "-"
                else:
                    hv = f" ({info['hessp']} Hv)" if info.get("hessp") else ""
                    opt = f"vs optimum {info['vs optimum']:.1e}, " if "vs optimum" in info else ""
                    figure = (
                        f"{info['iterations']} it{hv}, {opt}coef diff "
                        f"{info['max |coef diff| / max |coef|']:.1e}, objective diff "
                        f"{info[OBJ]:.1e}"
                    )
                    ratio = f"{base['stats']['median'] / med:.2f}x" if base else "-"
                print(f"| {threads} | {impl} | {med * 1e3:.1f} ms | {figure} | {ratio} |")


if __name__ == "__main__":
    main(sys.argv[1])
