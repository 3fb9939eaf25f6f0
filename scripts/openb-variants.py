#!/usr/bin/env python3
"""Writes generated variants of the openb default pod list, to check a
placement rule on load shapes it was not tuned on (issue 19).

    scripts/openb-variants.py OUT_DIR
    phalanx-sim openb --pods OUT_DIR/openb_pod_list_gen-uniform.csv,... --policies fgd,phalanx

Each variant keeps the default trace's pods, arrival order and CPU/memory, and
redraws one thing with a fixed seed:

- gen-uniform:  every GPU share drawn uniformly from 100-900 milli (step 10);
- gen-mig:      every share one to four sevenths of a GPU (143-571 milli);
- gen-halves:   every share a quarter, third, half, two thirds or three quarters;
- gen-cpuheavy: every CPU-only pod asks for 1-3 times its CPU.
"""

import csv
import random
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "simulator/data/openb_pod_list_default.csv"


def is_share(row):
    return row["num_gpu"] == "1" and int(row["gpu_milli"]) < 1000


def uniform(row, rng):
    if is_share(row):
        row["gpu_milli"] = str(rng.randrange(100, 910, 10))


def mig(row, rng):
    if is_share(row):
        row["gpu_milli"] = str(rng.choice([143, 143, 286, 286, 429, 571]))


def halves(row, rng):
    if is_share(row):
        row["gpu_milli"] = str(rng.choice([250, 500, 500, 750, 330, 660]))


def cpuheavy(row, rng):
    if row["num_gpu"] == "0":
        row["cpu_milli"] = str(int(row["cpu_milli"]) * rng.choice([1, 2, 3]))


VARIANTS = [("gen-uniform", uniform, 1), ("gen-mig", mig, 2), ("gen-halves", halves, 3),
            ("gen-cpuheavy", cpuheavy, 4)]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: openb-variants.py OUT_DIR")
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    with SOURCE.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = list(reader)
    for name, redraw, seed in VARIANTS:
        rng = random.Random(seed)
        path = out_dir / f"openb_pod_list_{name}.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                row = dict(row)
                redraw(row, rng)
                writer.writerow(row)
        print(path)


if __name__ == "__main__":
    main()
