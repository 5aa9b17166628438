#!/usr/bin/env python
"""Rendering speed of two checkouts of rtpo-data, side by side on the same curricula.

    git worktree add /tmp/rtpo-base <commit>
    python benchmarks/revisions.py --base /tmp/rtpo-base            # this checkout against that one

For a change to the render path: the per-row calls (``prompt``, ``prompt_ids``, ``hint``; microseconds
a call over random (row, stage) pairs) and a GRPO generation batch (1,024 prompts: 128 rows x 8 copies,
text and ids) on the built-in example and on R1-style rows of ~4k-token traces (built once, with this
checkout, in the work folder; both checkouts read the same files, the format being the same). Each
measurement runs in a fresh process of one checkout or the other (``PYTHONPATH`` points at it),
alternating, and the best of ``--reps`` is kept, so load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, TOKENIZER, synthetic_r1_rows, write_jsonl  # noqa: E402  (the shared data)

CHILD = r'''
import json, sys, time
import numpy as np
from rtpo_data import Curriculum
cur = Curriculum.open(sys.argv[1])
rng = np.random.default_rng(0)
n, k = len(cur), cur.num_stages
pairs = [(int(i), int(s)) for i, s in zip(rng.integers(0, n, 2000), rng.integers(0, k, 2000))]
def per_call(fn):
    fn(*pairs[0])
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for i, s in pairs:
            fn(i, s)
        best = min(best, (time.perf_counter() - t) / len(pairs))
    return best * 1e6
rows = np.repeat(rng.integers(0, n, 128), 8)
stage = int(rng.integers(0, k))
from rtpo_data.curriculum import OUTPUTS
new = "arrays" in OUTPUTS  # render(rows, stages, "arrays"); before it, prompts / prompt_ids_batch
text = (lambda: cur.render(rows, stage)) if new else (lambda: cur.prompts(rows, stage))
ids = (lambda: cur.render(rows, stage, "arrays")) if new else (lambda: cur.prompt_ids_batch(rows, stage))
def best_ms(fn):
    fn()
    out = float("inf")
    for _ in range(5):
        t = time.perf_counter(); fn(); out = min(out, time.perf_counter() - t)
    return out * 1e3
print(json.dumps({"prompt_us": per_call(cur.prompt), "prompt_ids_us": per_call(cur.prompt_ids),
                  "hint_us": per_call(cur.hint), "batch_text_ms": best_ms(text), "batch_ids_ms": best_ms(ids)}))
'''


def measure(checkout: Path, curriculum: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(curriculum)], capture_output=True, text=True, env=env,
                          cwd="/")
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (a git worktree)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rtpo-bench-revisions"))
    args = parser.parse_args()
    from rtpo_data import BuildConfig, build

    args.workdir.mkdir(parents=True, exist_ok=True)
    long_rows = args.workdir / "r1-200-4000.jsonl"
    if not long_rows.exists():
        write_jsonl(long_rows, synthetic_r1_rows(200, 4000, seed=0))
    curricula = {}
    for name, source in (("built-in example", ROOT / "rtpo_data" / "examples" / "mixed_math.jsonl"),
                         ("R1-style, ~4k-token traces", long_rows)):
        out = args.workdir / name.split()[0].lower().strip(",")
        if not (out / "manifest.json").exists():
            build(BuildConfig(source=str(source), out=str(out), tokenizer=TOKENIZER, stages=8, total_steps=100),
                  progress=False)
        curricula[name] = out
    print(f"| data | figure | base ({args.base}) | this checkout | this / base |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, cur in curricula.items():
        results: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
        for _ in range(args.reps):
            results["base"].append(measure(args.base, cur))
            results["this"].append(measure(ROOT, cur))
        for figure in results["base"][0]:
            base = min(r[figure] for r in results["base"])
            this = min(r[figure] for r in results["this"])
            print(f"| {name} | {figure} | {base:.2f} | {this:.2f} | {this / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
