#!/usr/bin/env python
"""Speed and memory of rtpo-data, measured side by side in one run on the same data.

    python benchmarks/bench.py                 # full run (about 10 minutes on 2 cores)
    python benchmarks/bench.py --quick         # under a minute: the key ratios on small data
    python benchmarks/bench.py --only render   # one section: build, render, scale or ray
    python benchmarks/bench.py --json out.json # every raw measurement as JSON as well

Sections, one file each (each runs alone with the same flags: ``python benchmarks/render.py --quick``)
--------------------------------------------------------------------------------------------------
build.py   ``rtpo_data.build`` versus the bare fast tokenizer on GSM8K, MATH, CHAMP and synthetic
           R1-style traces of ~8k and ~16k tokens: end to end, steady state, one core, ``num_proc=2``.
render.py  one generation batch of 1,024 prompts with ``Curriculum.render`` versus the old RTPO
           per-micro-step code (encode, cut, decode); the per-row methods, one row per call.
scale.py   curricula of 10k, 100k and 1M GSM8K-like rows: ``Curriculum.open`` time and RSS in a fresh
           process, render cost, build peak RSS, bytes on disk per row.
ray_build.py  ``--engine ray`` against ``--engine local`` on 100k rows: throughput, peak RSS of every
           process, the same shards; what bounds scaling out (skipped without Ray).

What they share (data, measuring helpers, child processes, the report table) is in harness.py; every
goal the figures are held to is in goals.py. Every timed piece runs in its own subprocess
(``TOPIC.py --child TASK``; ``bench.py --child TASK`` runs any of them), so memory figures start from
a clean interpreter and one measurement cannot warm caches for another. Timings are the best of
several repetitions (``--reps``); the machine may be shared, so the best run is the least noisy
estimate of the code's own cost.
"""

from __future__ import annotations

import importlib

from harness import main

# The topic modules by name (build.py, render.py, scale.py beside this file): a plain ``import build``
# reads, to linters, as the PyPA package ``build`` or the checkout's ignored build/ folder.
TOPICS = [importlib.import_module(name).TOPIC for name in ("build", "render", "scale", "ray_build")]

if __name__ == "__main__":
    main(TOPICS, __doc__.split("\n\n")[0])
