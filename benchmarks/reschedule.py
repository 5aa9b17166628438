#!/usr/bin/env python
"""``rtpo-data reschedule`` against ``rtpo-data build`` with the same new options, side by side.

    python benchmarks/reschedule.py            # the built-in example and 100k synthetic R1-style rows
    python benchmarks/reschedule.py --quick    # 10k synthetic rows

Each dataset is built once (the parent: word unit, linear, 8 stages). Then, in fresh processes and
interleaved, best of ``--reps``: the whole ``rtpo-data build`` command with a new schedule (cosine,
12 stages, 500 steps), against ``rtpo-data reschedule`` of the parent with the same options; and the
same for a new unit (``--unit line``: the row shards are rewritten with the narrower boundaries). Goal:
goals.RESCHEDULE.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from goals import RESCHEDULE  # noqa: E402  (the project's goals)
from harness import ROOT, TOKENIZER, synthetic_r1_rows, write_jsonl  # noqa: E402  (the shared data)

CLI = [sys.executable, "-m", "rtpo_data.cli.main"]
CHANGES = {
    "new schedule": ["--schedule", "cosine", "--stages", "12", "--total-steps", "500"],
    "new unit": ["--unit", "line"],
}


def run(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k synthetic rows instead of 100k")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per synthetic trace (about)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rtpo-bench-reschedule"))
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    rows = 10_000 if args.quick else 100_000
    synthetic = work / f"r1-{rows}-{args.tokens}.jsonl"
    if not synthetic.exists():
        write_jsonl(synthetic, synthetic_r1_rows(rows, args.tokens, seed=0))
    sources = {"built-in example (24 rows)": ROOT / "rtpo_data" / "examples" / "mixed_math.jsonl",
               f"synthetic R1-style, {rows:,} rows of ~{args.tokens:,} tokens": synthetic}
    common = ["--tokenizer", TOKENIZER, "--overwrite", "--no-progress"]
    print("| data | change | build | reschedule | reschedule / build | goal |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, source in sources.items():
        parent = work / f"parent-{source.stem}"
        run(["build", str(source), "--out", str(parent), *common])
        for change, options in CHANGES.items():
            built, rescheduled = [], []
            for _ in range(args.reps):
                built.append(run(["build", str(source), "--out", str(work / "built"), *common, *options]))
                rescheduled.append(run(["reschedule", str(parent), "--out", str(work / "rescheduled"), "--overwrite",
                                        *options]))
            b, r = min(built), min(rescheduled)
            print(f"| {name} | {change} | {b:.2f} s | {r:.2f} s | {r / b:.3f}x | "
                  f"{RESCHEDULE.label} {RESCHEDULE.verdict(r / b)} |", flush=True)
        shutil.rmtree(work / "built", ignore_errors=True)
        shutil.rmtree(work / "rescheduled", ignore_errors=True)
    print(f"\ngoal: {RESCHEDULE.describe()}")


if __name__ == "__main__":
    main()
