#!/usr/bin/env python
"""Scale: curricula of 10k, 100k and 1M rows, built, opened and rendered.

    python benchmarks/scale.py --quick                        # 300 and 3,000 rows, num_proc=1
    python benchmarks/scale.py --sizes 10000,100000,1000000   # the full run's sizes (the default)

Curricula of 10k, 100k and 1M GSM8K-like rows: ``Curriculum.open`` time and RSS in a fresh process,
render cost, build peak RSS, bytes on disk per row; with the full sizes, ``num_proc=2`` against 1 on
100k rows. Goals: goals.OPEN_TIME, goals.OPEN_MEMORY, goals.RENDER_VS_ROWS, goals.BUILD_MEMORY
(the largest curriculum against the smallest), goals.NUM_PROC and goals.DISK_PER_ROW.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import goals
from harness import PeakRss, Run, Topic, build_curriculum, fmt_rate, fmt_s, main, run_child, status_kb, timed

SCRIPT = Path(__file__).resolve()

# ---------------------------------------------------------------------------------------------
# Children: each prints one JSON result line
# ---------------------------------------------------------------------------------------------


def child_open(p: dict[str, Any]) -> dict[str, Any]:
    """A fresh process: time and RSS of ``Curriculum.open`` (cold: the first in the process, with
    whatever it imports lazily; warm: a second, independent open, RSS of the first such, time the
    best of 5), then the cost of a 1,024 batch."""
    import gc

    import numpy as np

    import rtpo_data

    def rss() -> dict[str, int]:
        gc.collect()
        return {f: status_kb(f) for f in ("VmRSS", "RssAnon", "RssFile")}

    before = rss()
    t_cold, cur = timed(lambda: rtpo_data.Curriculum.open(p["curriculum"]))
    after = rss()
    t_warm, cur2 = timed(lambda: rtpo_data.Curriculum.open(p["curriculum"]))
    after2 = rss()
    t_warm = min([t_warm] + [timed(lambda: rtpo_data.Curriculum.open(p["curriculum"]))[0] for _ in range(4)])
    rng = np.random.default_rng(0)
    n = len(cur)
    indices = rng.integers(0, n, size=p["batch"])
    stages = rng.integers(0, cur.num_stages, size=p["batch"])
    first, _ = timed(lambda: cur.render(indices, stages))
    text_t = [timed(lambda: cur.render(indices, stages))[0] for _ in range(p["reps"])]
    ids_t = [timed(lambda: cur.render(indices, stages, "arrays"))[0] for _ in range(p["reps"])]
    rendered = rss()
    disk = sum(f.stat().st_size for f in Path(p["curriculum"]).iterdir() if f.is_file())
    del cur2
    return {
        "rows": n, "open_cold_s": t_cold, "open_warm_s": t_warm,
        "rss_before_kb": before, "rss_after_kb": after, "rss_after_second_kb": after2, "rss_rendered_kb": rendered,
        "first_render_s": first, "text_s": text_t, "ids_s": ids_t, "disk_bytes": disk,
        "shards": len(cur.manifest.shards["rows"]),
        "trace_tokens_total": cur.manifest.stats["trace_tokens"]["total"],
    }


def child_build_mem(p: dict[str, Any]) -> dict[str, Any]:
    """A build with the RSS of the whole process tree (workers included) sampled every 250 ms."""
    import resource

    with PeakRss() as peak:
        dt, result = timed(lambda: build_curriculum(p["source"], p["out"], p["num_proc"], p["batch_size"]))
    return {
        "seconds": dt, "rows": result.stats["rows_kept"], "trace_tokens": result.stats["trace_tokens"]["total"],
        "peak_tree_rss_mb": peak.peak_mb,
        "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "maxrss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


# ---------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------


def section_scale(run: Run) -> None:
    args, paths, work, table, raw, sizes = run.args, run.paths, run.work, run.table, run.raw, run.sizes
    num_proc = 1 if args.quick else 2
    table.section(f"3. scale (GSM8K-like rows, num_proc={num_proc}, batch_size=4096)")
    res: dict[int, Any] = {}
    for n in sizes:
        out = work / "curricula" / f"scale-{n}"
        print(f"  ... build {n:,} rows", flush=True)
        b = run_child(SCRIPT, "build_mem", {"source": str(paths[f"scale{n}"]), "out": str(out),
                                            "num_proc": num_proc, "batch_size": 4096}, timeout=1800)
        o = run_child(SCRIPT, "open", {"curriculum": str(out), "batch": 1024, "reps": 5})
        res[n] = {"build": b, "open": o}
    raw["scale"] = {str(k): v for k, v in res.items()}
    np1 = None
    if not args.quick and 100_000 in sizes:
        print("  ... build 100,000 rows with num_proc=1", flush=True)
        np1 = run_child(SCRIPT, "build_mem", {"source": str(paths["scale100000"]),
                                              "out": str(work / "curricula" / "scale-100000-np1"),
                                              "num_proc": 1, "batch_size": 4096}, timeout=1800)
        raw["scale_100k_np1"] = np1

    def mb(o: dict[str, Any], a: str, b: str, field: str = "VmRSS") -> float:
        return (o[a][field] - o[b][field]) / 1024

    for n in sizes:
        b, o = res[n]["build"], res[n]["open"]
        per_row = o["disk_bytes"] / o["rows"]
        raw_tok = 4 * o["trace_tokens_total"] / o["rows"]
        table.add(f"{n:>9,} rows: build", f"{fmt_s(b['seconds'])}, {fmt_rate(b['rows'] / b['seconds'])} rows/s",
                  note=f"{fmt_rate(b['trace_tokens'] / b['seconds'])} trace tok/s, end to end")
        table.add(f"{n:>9,} rows: build peak RSS (all processes)", f"{b['peak_tree_rss_mb']:,.0f} MB",
                  note=f"main maxrss {b['maxrss_self_mb']:,.0f} MB, largest worker {b['maxrss_children_mb']:,.0f} MB")
        table.add(f"{n:>9,} rows: Curriculum.open, cold / warm", f"{fmt_s(o['open_cold_s'])} / {fmt_s(o['open_warm_s'])}",
                  note=f"{o['shards']} shard(s); cold = first open in a fresh process")
        table.add(f"{n:>9,} rows: RSS delta of open, cold / warm",
                  f"{mb(o, 'rss_after_kb', 'rss_before_kb'):,.1f} / {mb(o, 'rss_after_second_kb', 'rss_after_kb'):,.1f} MB",
                  note=f"cold: anon {mb(o, 'rss_after_kb', 'rss_before_kb', 'RssAnon'):,.1f} MB, "
                       f"file-backed {mb(o, 'rss_after_kb', 'rss_before_kb', 'RssFile'):,.1f} MB")
        table.add(f"{n:>9,} rows: render 1,024 text / ids", f"{fmt_s(min(o['text_s']))} / {fmt_s(min(o['ids_s']))}",
                  note=f"first call {fmt_s(o['first_render_s'])}; RSS after rendering "
                       f"+{mb(o, 'rss_rendered_kb', 'rss_before_kb'):,.0f} MB over before open")
        table.add(f"{n:>9,} rows: disk bytes/row vs 4 B x trace tokens", f"{per_row:,.0f} B vs {raw_tok:,.0f} B",
                  goals.DISK_PER_ROW, per_row, note=f"{per_row / raw_tok:.1f}x; {o['disk_bytes'] / 1e6:,.0f} MB total")
    lo, hi = sizes[0], sizes[-1]
    so, bo = res[lo]["open"], res[hi]["open"]

    def ratio(a: float, b: float) -> float:
        return a / max(b, 1e-12)

    floor = goals.RSS_NOISE_MB  # memory deltas under this count as this much (noise of the allocator)
    checks = [
        ("open time, cold", goals.OPEN_TIME, ratio(bo["open_cold_s"], so["open_cold_s"])),
        ("open time, warm", goals.OPEN_TIME, ratio(bo["open_warm_s"], so["open_warm_s"])),
        ("open RSS delta, cold", goals.OPEN_MEMORY, ratio(max(mb(bo, "rss_after_kb", "rss_before_kb"), floor),
                                                          max(mb(so, "rss_after_kb", "rss_before_kb"), floor))),
        ("open RSS delta, warm", goals.OPEN_MEMORY, ratio(max(mb(bo, "rss_after_second_kb", "rss_after_kb"), floor),
                                                          max(mb(so, "rss_after_second_kb", "rss_after_kb"), floor))),
        ("render 1,024 text", goals.RENDER_VS_ROWS, ratio(min(bo["text_s"]), min(so["text_s"]))),
        ("render 1,024 ids", goals.RENDER_VS_ROWS, ratio(min(bo["ids_s"]), min(so["ids_s"]))),
        ("build peak RSS", goals.BUILD_MEMORY,
         ratio(res[hi]["build"]["peak_tree_rss_mb"], res[lo]["build"]["peak_tree_rss_mb"])),
    ]
    for what, goal, r in checks:
        table.add(f"{what}, {hi:,} vs {lo:,} rows ({hi // lo:,}x rows)", f"{r:.2f}x", goal, r)
    if np1 is not None:
        b2 = res[100_000]["build"]
        table.add("100,000 rows: num_proc=1 build", f"{fmt_s(np1['seconds'])}, {fmt_rate(np1['rows'] / np1['seconds'])} rows/s",
                  note=f"peak RSS {np1['peak_tree_rss_mb']:,.0f} MB")
        sp = np1["seconds"] / b2["seconds"]
        table.add("100,000 rows: num_proc=2 over 1, end to end", f"{sp:.2f}x", goals.NUM_PROC, sp)
    if args.quick:
        table.add("100k / 1M rows", "skipped in --quick", note="the full run builds 10k / 100k / 1M with num_proc=2")


TOPIC = Topic("scale", "3. scale", section_scale, SCRIPT, {"open": child_open, "build_mem": child_build_mem})

if __name__ == "__main__":
    main([TOPIC], __doc__.split("\n\n")[0])
