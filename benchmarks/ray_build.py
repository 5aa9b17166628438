#!/usr/bin/env python
"""The Ray engine against the local one: the same 100k GSM8K-like rows built side by side.

    python benchmarks/ray_build.py                 # 100k rows (about 4 minutes on 2 cores)
    python benchmarks/ray_build.py --quick         # 3,000 rows, one repetition
    python benchmarks/ray_build.py --sizes 30000   # another size

``rtpo-data build`` with ``--engine local`` (``num_proc`` 1 and 2) and ``--engine ray`` (2 workers,
and 1), each in a fresh process: wall time and throughput end to end (for Ray: starting a local Ray,
its workers loading the tokenizer, the build, stopping Ray) and with Ray already started, peak RSS
of the whole process tree (Ray's own processes included), the driver's own CPU time, and whether
the shards are the local build's (sha256). Then what bounds scaling out, measured here: the driver's
pass over a jsonl source (counting rows, noting shard starts), and a build on two Ray nodes (two
raylets of one CPU each, ``ray.cluster_utils.Cluster``) on this machine. Needs Ray
(``pip install 'rtpo-data[ray]'``).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from harness import PeakRss, Run, Topic, cpu_seconds, fmt_rate, fmt_s, main, run_child

SCRIPT = Path(__file__).resolve()
SHARD_ROWS, BATCH_SIZE = 10_000, 500  # 10 shards at 100k rows: work for every worker


def _config(p: dict[str, Any]) -> Any:
    import rtpo_data

    extra = {"workers": p["workers"]} if p["engine"] == "ray" else {"num_proc": p["num_proc"]}
    return rtpo_data.BuildConfig(source=p["source"], out=p["out"], tokenizer="offline:qwen3", total_steps=1000,
                                 overwrite=True, shard_rows=p["shard_rows"], batch_size=BATCH_SIZE, check_sample=0,
                                 engine=p["engine"], **extra)


def child_engine_build(p: dict[str, Any]) -> dict[str, Any]:
    """A fresh process: one build, sampling the RSS of the whole process tree. ``ray``: "own" (the
    build starts and stops a local Ray: its cost included), "started" (Ray started before the clock
    starts), "two_nodes" (a cluster of two raylets of one CPU each, started before the clock)."""
    import rtpo_data

    ray, cluster, started = None, None, time.perf_counter()
    if p.get("ray") in ("started", "two_nodes"):
        import ray
        from ray.cluster_utils import Cluster

        env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
        if p["ray"] == "two_nodes":
            cluster = Cluster()
            for _ in range(2):
                cluster.add_node(num_cpus=1, include_dashboard=False)
            ray.init(address=cluster.address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(num_cpus=2, include_dashboard=False, runtime_env=env, log_to_driver=False)
    ray_start = time.perf_counter() - started
    c0 = cpu_seconds()
    with PeakRss() as peak:
        t0 = time.perf_counter()
        result = rtpo_data.build(_config(p), progress=False)
        seconds = time.perf_counter() - t0
    nodes = len(ray.nodes()) if ray is not None else None
    if ray is not None:
        ray.shutdown()
    if cluster is not None:
        cluster.shutdown()
    shards = result.manifest.shards
    return {
        "seconds": seconds, "ray_start_seconds": ray_start, "driver_cpu_seconds": cpu_seconds() - c0,
        "rows": result.stats["rows_kept"], "trace_tokens": result.stats["trace_tokens"]["total"],
        "peak_tree_rss_mb": peak.peak_mb, "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sha256": {t: [s["sha256"] for s in shards[t]] for t in ("rows", "cuts")}, "nodes": nodes,
    }


def child_index(p: dict[str, Any]) -> dict[str, Any]:
    """The driver's pass over the source before the Ray engine starts: rows counted, shard starts noted."""
    from rtpo_data.sources import SourceSpec, index_rows

    t0 = time.perf_counter()
    index = index_rows(SourceSpec(p["source"]), p["shard_rows"])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": index.rows, "bytes": Path(p["source"]).stat().st_size}


def section_ray(run: Run) -> None:
    args, paths, work, table, raw = run.args, run.paths, run.work, run.table, run.raw
    try:
        import ray  # noqa: F401
    except ImportError:
        table.add("Ray engine", "skipped", note="pip install 'rtpo-data[ray]' to measure it")
        return
    n = 100_000 if 100_000 in run.sizes else run.sizes[-1]
    source = str(paths[f"scale{n}"])
    shard_rows = SHARD_ROWS if n >= 4 * SHARD_ROWS else max(1, n // 8)
    reps = args.reps or (1 if args.quick else 2)
    table.section(f"4. the Ray engine ({n:,} GSM8K-like rows, {-(-n // shard_rows)} shards of {shard_rows:,} "
                  f"source rows, batch_size {BATCH_SIZE}, fresh process each)")
    runs = {
        "local, num_proc=1": {"engine": "local", "num_proc": 1},
        "local, num_proc=2": {"engine": "local", "num_proc": 2},
        "ray, 2 workers": {"engine": "ray", "workers": 2, "ray": "own"},
        "ray, 2 workers, Ray already up": {"engine": "ray", "workers": 2, "ray": "started"},
        "ray, 1 worker, Ray already up": {"engine": "ray", "workers": 1, "ray": "started"},
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for _ in range(reps):  # alternated, best of reps: the machine may be shared
        for name, params in runs.items():
            print(f"  ... {name}", flush=True)
            out = str(work / "curricula" / f"ray-bench-{n}-{name.replace(' ', '').replace(',', '-')}")
            results[name].append(run_child(SCRIPT, "engine_build", {
                **params, "source": source, "out": out, "shard_rows": shard_rows}, timeout=1800))
    best = {name: min(r, key=lambda x: x["seconds"]) for name, r in results.items()}
    raw["ray_build"] = results
    local = best["local, num_proc=1"]
    for name, b in best.items():
        same = b["sha256"] == local["sha256"]
        note = f"{fmt_rate(b['trace_tokens'] / b['seconds'])} trace tok/s; shards {'=' if same else '!='} local's"
        if b["ray_start_seconds"] > 0.5:
            note += f"; Ray started in {fmt_s(b['ray_start_seconds'])} before the clock"
        table.add(f"{name}: build", f"{fmt_s(b['seconds'])}, {fmt_rate(b['rows'] / b['seconds'])} rows/s", note=note)
        table.add(f"{name}: peak RSS (all processes)", f"{b['peak_tree_rss_mb']:,.0f} MB",
                  note=f"driver maxrss {b['maxrss_self_mb']:,.0f} MB, driver CPU {fmt_s(b['driver_cpu_seconds'])}")
    r2, r1 = best["ray, 2 workers, Ray already up"], best["ray, 1 worker, Ray already up"]
    table.add("ray: 2 workers over 1, Ray already up", f"{r1['seconds'] / r2['seconds']:.2f}x",
              note="2 cores: the driver, Ray's own processes and the workers share them")
    table.add("ray over local (num_proc=1), end to end", f"{best['ray, 2 workers']['seconds'] / local['seconds']:.2f}x",
              note="time; > 1 is slower")

    print("  ... the driver's pass over the jsonl source; a build on two Ray nodes", flush=True)
    index = run_child(SCRIPT, "index", {"source": source, "shard_rows": shard_rows})
    two = run_child(SCRIPT, "engine_build", {"engine": "ray", "workers": 2, "ray": "two_nodes", "source": source,
                                             "shard_rows": shard_rows,
                                             "out": str(work / "curricula" / f"ray-bench-{n}-two-nodes")}, timeout=1800)
    raw["ray_index"], raw["ray_two_nodes"] = index, two
    table.add("driver's pass over the jsonl source (index_rows)",
              f"{fmt_s(index['seconds'])}, {fmt_rate(index['rows'] / index['seconds'])} rows/s",
              note=f"{index['bytes'] / index['seconds'] / 1e6:,.0f} MB/s; once per build, before any worker starts")
    table.add(f"ray on {two['nodes']} nodes (raylets of 1 CPU, one machine): build",
              f"{fmt_s(two['seconds'])}, {fmt_rate(two['rows'] / two['seconds'])} rows/s",
              note=f"shards {'=' if two['sha256'] == local['sha256'] else '!='} local's; peak RSS "
                   f"{two['peak_tree_rss_mb']:,.0f} MB")
    print(json.dumps({k: {x: v[x] for x in ("seconds", "peak_tree_rss_mb", "driver_cpu_seconds")}
                      for k, v in best.items()}), flush=True)


TOPIC = Topic("ray", "4. the Ray engine", section_ray, SCRIPT, {"engine_build": child_engine_build,
                                                                "index": child_index})

if __name__ == "__main__":
    import sys

    if "--sizes" not in sys.argv and "--child" not in sys.argv:
        sys.argv += ["--sizes", "3000" if "--quick" in sys.argv else "100000"]
    main([TOPIC], __doc__.split("\n\n")[0])
