#!/usr/bin/env python3
"""Summaries of fusion runs for results/fusion.md: for each run folder (a sweep's
output), the candidates fine-tuned or evaluated, the median and quartiles of the
worst task's drop, how many passed, the fine-tune epochs spent and per passed
candidate, and the best speed-up. With --paired, candidates with the same id in
the first run and each other run (the random policy proposes the same graphs
under the same seed) are compared one by one.

usage: stats.py [--paired] RUN [RUN ...]"""
import csv
import statistics
import sys


def rows(run):
    with open(f"{run}/candidates.csv") as f:
        return [r for r in csv.DictReader(f) if r["status"] in ("passed", "failed", "aborted")]


def quartiles(v):
    v = sorted(v)
    if not v:
        return (float("nan"),) * 3
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return q[0], statistics.median(v), q[2]


def summary(run):
    rs = rows(run)
    drops = [100 * float(r["worst_drop"]) for r in rs]
    passed = [r for r in rs if r["status"] == "passed"]
    epochs = sum(int(r["epochs"]) for r in rs)
    best = max((float(r["speedup"]) for r in passed), default=float("nan"))
    q1, med, q3 = quartiles(drops)
    print(f"{run}: {len(rs)} candidates, worst drop median {med:.2f} points (quartiles {q1:.2f}, {q3:.2f}); "
          f"passed {len(passed)}; {epochs} fine-tune epochs"
          + (f", {epochs / len(passed):.1f} per passed" if passed else "")
          + f"; best search-time speed-up {best:.2f}x")
    return {r["id"]: r for r in rs}


def main(argv):
    paired = "--paired" in argv
    runs = [a for a in argv if a != "--paired"]
    if not runs:
        print(__doc__)
        return 2
    tables = [summary(r) for r in runs]
    if paired:
        for run, t in zip(runs[1:], tables[1:]):
            ids = [i for i in tables[0] if i in t]
            a = [100 * float(tables[0][i]["worst_drop"]) for i in ids]
            b = [100 * float(t[i]["worst_drop"]) for i in ids]
            better = sum(y < x for x, y in zip(a, b))
            ratio = statistics.median(a) / statistics.median(b) if ids and statistics.median(b) > 0 else float("inf")
            print(f"paired {runs[0]} -> {run}: {len(ids)} candidates, median drop {statistics.median(a):.2f} -> "
                  f"{statistics.median(b):.2f} points ({ratio:.1f}x smaller), lower in {better} of {len(ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
