#!/usr/bin/env python
"""Build speed: ``rtpo_data.build`` versus the bare fast tokenizer, side by side on the same data.

    python benchmarks/build.py --quick                    # steady-state ratios on small data
    python benchmarks/build.py --no-num-proc --reps 2     # end to end and steady, without num_proc=2

``rtpo_data.build`` versus the bare fast tokenizer (``tok(traces, add_special_tokens=False,
return_offsets_mapping=True)`` plus ``tok(prompts)`` once) on GSM8K, MATH, CHAMP's model-written
solutions (package ``champ-dataset``) and synthetic R1-style traces of ~8k and ~16k tokens;
end-to-end (fresh process: imports, tokenizer loading, reading the source) and steady state (time of
an N-row build minus a 1-row build of the same source in the same process, i.e. without the fixed
cost of loading the tokenizer, probing the template and writing the manifest); ``num_proc=2``
versus 1; a cProfile of the builds. Goals: goals.BUILD_VS_BARE and goals.NUM_PROC.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import goals
from harness import (
    TOKENIZER,
    Run,
    Topic,
    build_curriculum,
    cpu_seconds,
    dataset_specs,
    fmt_rate,
    fmt_s,
    main,
    run_child,
    timed,
)

SCRIPT = Path(__file__).resolve()


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _prompt_and_trace(row: dict[str, Any]) -> tuple[str, str]:
    return row.get("question") or row["problem"], row["solution"]


# ---------------------------------------------------------------------------------------------
# Children: each prints one JSON result line
# ---------------------------------------------------------------------------------------------


def child_bare_e2e(p: dict[str, Any]) -> dict[str, Any]:
    """A fresh process: import, load the tokenizer, read the source, tokenize traces (offsets) and
    prompts once."""
    t0 = time.perf_counter()
    from rtpo_data.tokenizer import load_tokenizer

    tok = load_tokenizer(p.get("tokenizer", TOKENIZER))
    t_loaded = time.perf_counter()
    rows = _read_jsonl(p["source"])
    prompts, traces = zip(*(_prompt_and_trace(r) for r in rows))
    enc = tok(list(traces), add_special_tokens=False, return_offsets_mapping=True)
    tok(list(prompts))
    total = time.perf_counter() - t0
    return {"seconds": total, "cpu_seconds": cpu_seconds(), "load_seconds": t_loaded - t0, "rows": len(rows),
            "trace_tokens": sum(len(x) for x in enc["input_ids"])}


def child_steady(p: dict[str, Any]) -> dict[str, Any]:
    """Bare tokenization and builds interleaved, ``reps`` times per dataset, in one process.

    Steady-state build = best N-row build - best 1-row build of the same source and settings (the
    fixed cost: loading the tokenizer, probing the chat template, spawning workers, the manifest).
    With ``one_once`` the 1-row build is measured on the first dataset only and reused (it does not
    depend on the data; with num_proc=2 it is the slow part)."""
    from rtpo_data.tokenizer import load_tokenizer

    tok = load_tokenizer(TOKENIZER)
    out: dict[str, Any] = {"single_thread": os.environ.get("TOKENIZERS_PARALLELISM") == "false"}
    num_proc = p.get("num_proc", 1)
    one_shared: list[float] = []
    for name, d in p["datasets"].items():
        rows = _read_jsonl(d["source"])
        prompts, traces = (list(x) for x in zip(*(_prompt_and_trace(r) for r in rows)))
        tok(traces[:1], add_special_tokens=False, return_offsets_mapping=True)  # warm-up
        trace_tokens = 0
        bare, full, one = [], [], []
        cpu: dict[str, list[float]] = {"bare": [], "build": [], "build_one": []}
        result = None
        bs = d["batch_size"]
        measure_one = not (p.get("one_once") and one_shared)
        if num_proc == 1 and not out.get("warmed"):
            build_curriculum(d["one"], d["out"] + "-one", num_proc)  # warm-up (lazy imports)
            out["warmed"] = True
        for _ in range(p["reps"]):
            if p.get("bare", True):
                t0, c0 = time.perf_counter(), cpu_seconds()
                enc = tok(traces, add_special_tokens=False, return_offsets_mapping=True)
                tok(prompts)
                bare.append(time.perf_counter() - t0)
                cpu["bare"].append(cpu_seconds() - c0)
                trace_tokens = sum(len(x) for x in enc["input_ids"])
                del enc
            c0 = cpu_seconds()
            dt, result = timed(lambda: build_curriculum(d["source"], d["out"], num_proc, bs))
            full.append(dt)
            cpu["build"].append(cpu_seconds() - c0)
            if measure_one:
                c0 = cpu_seconds()
                one.append(timed(lambda: build_curriculum(d["one"], d["out"] + "-one", num_proc))[0])
                cpu["build_one"].append(cpu_seconds() - c0)
        if measure_one:
            one_shared = one
        out[name] = {
            "rows": len(rows),
            "batch_size": bs,
            "bare_trace_tokens": trace_tokens,
            "build_trace_tokens": result.stats["trace_tokens"]["total"],
            "prompt_tokens": result.stats["prompt_tokens"]["total"],
            "bare": bare, "build": full, "build_one": one if measure_one else one_shared,
            "build_one_shared": not measure_one, "cpu": cpu,
        }
    return out


def child_profile(p: dict[str, Any]) -> dict[str, Any]:
    """cProfile of one steady build (after a warm-up build): top functions by own time."""
    import cProfile
    import pstats

    build_curriculum(p["one"], p["out"] + "-one")
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    build_curriculum(p["source"], p["out"], 1, p["batch_size"])
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}" if file != "~" else "<built-in>"
        rows.append({"function": f"{func} ({where})", "own_s": tt, "cum_s": ct, "calls": nc})
    rows.sort(key=lambda r: -r["own_s"])
    cum = sorted(rows, key=lambda r: -r["cum_s"])
    return {"seconds": total, "top_own": rows[: p.get("top", 15)], "top_cum": cum[: p.get("top", 25)]}


# ---------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------


def _batch_size(rows: int, quick: bool) -> int:
    """The full run compares num_proc=2 with 1, so every source gets at least 8 batches (2 workers
    both need work); else the default, 512."""
    return 512 if quick else max(1, min(512, -(-rows // 8)))


def _datasets(args: Any, paths: dict[str, Path], work: Path) -> dict[str, dict[str, Any]]:
    cur_dir = work / "curricula"
    return {
        name: {"source": str(paths[name]), "one": str(paths[name + ":one"]), "out": str(cur_dir / f"{name}-{n}"),
               "batch_size": _batch_size(n, args.quick)}
        for name, (_, n) in dataset_specs(args.quick).items()
    }


def section_build(run: Run) -> None:
    args, paths, work, table, raw = run.args, run.paths, run.work, run.table, run.raw
    specs = dataset_specs(args.quick)
    datasets = _datasets(args, paths, work)
    reps = args.reps or (1 if args.quick else 2)
    table.section("1. build vs bare tokenizer (Qwen3 tokenizer; num_proc=1 unless said)")

    # Steady state, num_proc=1 (the tokenizer's own thread pool on: what a user gets by default).
    print("  ... steady state, num_proc=1", flush=True)
    steady = run_child(SCRIPT, "steady", {"datasets": datasets, "reps": reps, "one_once": args.quick})
    raw["steady_np1"] = steady
    e2e: dict[str, Any] = {}
    if not args.quick:
        print("  ... end to end (fresh processes)", flush=True)
        for name, d in datasets.items():
            runs: dict[str, list[Any]] = {"bare": [], "build": []}
            for _ in range(reps):  # alternated, best of reps: the machine may be shared
                runs["bare"].append(run_child(SCRIPT, "bare_e2e", {"source": d["source"]}))
                runs["build"].append(run_child(SCRIPT, "build_e2e", {
                    "source": d["source"], "out": d["out"] + "-e2e", "batch_size": d["batch_size"],
                    "check_sample": 256}))
            e2e[name] = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
            e2e[name]["cpu"] = {k: min(r["cpu_seconds"] for r in v) for k, v in runs.items()}
        if "champ" in datasets:
            # CHAMP as a user of R1-style models builds it: R1-Distill tokenizer, 21 stages.
            d, r1 = datasets["champ"], {"tokenizer": "offline:deepseek-r1-distill-qwen-7b"}
            runs = {"bare": [], "build": []}
            for _ in range(reps):
                runs["bare"].append(run_child(SCRIPT, "bare_e2e", {"source": d["source"], **r1}))
                runs["build"].append(run_child(SCRIPT, "build_e2e", {
                    "source": d["source"], "out": d["out"] + "-e2e-r1", "batch_size": d["batch_size"],
                    "check_sample": 256, "stages": 21, **r1}))
            e2e["champ_r1"] = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
            e2e["champ_r1"]["cpu"] = {k: min(r["cpu_seconds"] for r in v) for k, v in runs.items()}
        raw["e2e"] = e2e

    for name, (desc, _) in specs.items():
        s = steady[name]
        bare = min(s["bare"])
        one = min(s["build_one"])
        build = min(s["build"]) - one
        rows, tb, tt = s["rows"], s["bare_trace_tokens"], s["build_trace_tokens"]
        label = f"{desc}: {rows:,} rows, {tt / rows:,.0f} trace tok/row"
        table.add(f"{name}: bare tokenizer, steady", f"{fmt_rate(rows / bare)} rows/s, {fmt_rate(tb / bare)} tok/s",
                  note=f"{fmt_s(bare)}; {label}")
        table.add(f"{name}: build, steady", f"{fmt_rate(rows / build)} rows/s, {fmt_rate(tt / build)} tok/s",
                  note=f"{fmt_s(min(s['build']))} - {fmt_s(one)} (1-row build); batch_size {s['batch_size']}")
        table.add(f"{name}: build / bare, steady", f"{build / bare:.2f}x", goals.BUILD_VS_BARE, build / bare)
        c = s.get("cpu") or {}
        if c.get("bare") and c.get("build") and c.get("build_one"):
            cb, cd = min(c["bare"]), min(c["build"]) - min(c["build_one"])
            table.add(f"{name}: build / bare, steady, CPU time", f"{cd / cb:.2f}x",
                      note=f"{cd:.2f} s vs {cb:.2f} s of user + system time, all threads")
        if name in e2e:
            eb, ed = e2e[name]["bare"]["seconds"], e2e[name]["build"]["seconds"]
            table.add(f"{name}: bare, end to end", f"{fmt_s(eb)}, {fmt_rate(rows / eb)} rows/s",
                      note=f"incl. {fmt_s(e2e[name]['bare']['load_seconds'])} import + tokenizer load")
            table.add(f"{name}: build, end to end", f"{fmt_s(ed)}, {fmt_rate(rows / ed)} rows/s")
            table.add(f"{name}: build / bare, end to end", f"{ed / eb:.2f}x", goals.BUILD_VS_BARE, ed / eb,
                      note="rtpo-data build's default check sample (256 rows) included")
            cb, cd = e2e[name]["cpu"]["bare"], e2e[name]["cpu"]["build"]
            table.add(f"{name}: build / bare, end to end, CPU time", f"{cd / cb:.2f}x",
                      note=f"{cd:.2f} s vs {cb:.2f} s of user + system time, all threads")

    if "champ_r1" in e2e:
        r = e2e["champ_r1"]
        eb, ed, cb, cd = r["bare"]["seconds"], r["build"]["seconds"], r["cpu"]["bare"], r["cpu"]["build"]
        table.add("champ, R1-Distill-Qwen tokenizer, 21 stages: build / bare, end to end", f"{ed / eb:.2f}x",
                  goals.BUILD_VS_BARE, ed / eb, note=f"{fmt_s(ed)} vs {fmt_s(eb)}; CPU time {cd / cb:.2f}x")

    if args.quick or args.no_num_proc:
        table.add("num_proc=2 speed-up", "skipped", note="--quick or --no-num-proc; spawning 2 workers alone takes ~10 s")
    else:
        # num_proc=2 versus 1, and versus 1 with the tokenizer's thread pool off (one core).
        np_sets = ["gsm8k", "math", "r1_8k"]
        sub = {k: datasets[k] for k in np_sets}
        print("  ... steady state, num_proc=1, TOKENIZERS_PARALLELISM=false (one core)", flush=True)
        st = run_child(SCRIPT, "steady", {"datasets": {k: {**v, "out": v["out"] + "-1t"} for k, v in sub.items()},
                                          "reps": reps}, env={"TOKENIZERS_PARALLELISM": "false"})
        raw["steady_np1_single_thread"] = st
        print("  ... steady state, num_proc=2", flush=True)
        np2 = run_child(SCRIPT, "steady", {"datasets": {k: {**v, "out": v["out"] + "-np2"} for k, v in sub.items()},
                                           "reps": reps, "num_proc": 2, "bare": False, "one_once": True})
        raw["steady_np2"] = np2
        for name in np_sets:
            b1 = min(steady[name]["build"]) - min(steady[name]["build_one"])
            b1t = min(st[name]["build"]) - min(st[name]["build_one"])
            b2 = min(np2[name]["build"]) - min(np2[name]["build_one"])
            bare1t = min(st[name]["bare"])
            table.add(f"{name}: build / bare, both on one core", f"{b1t / bare1t:.2f}x", goals.BUILD_VS_BARE,
                      b1t / bare1t, note=f"TOKENIZERS_PARALLELISM=false; {fmt_s(b1t)} vs {fmt_s(bare1t)}")
            table.add(f"{name}: num_proc=2 over num_proc=1, steady", f"{b1 / b2:.2f}x", goals.NUM_PROC,
                      b1 / b2, note=f"{fmt_s(b2)} vs {fmt_s(b1)}; num_proc=1 already runs 2 tokenizer threads")
            table.add(f"{name}: num_proc=2 over num_proc=1 on one core", f"{b1t / b2:.2f}x", goals.NUM_PROC,
                      b1t / b2, note=f"vs {fmt_s(b1t)} with TOKENIZERS_PARALLELISM=false")
        table.add("num_proc=2 fixed cost (1-row build)", fmt_s(min(np2[np_sets[0]]["build_one"])),
                  note="spawns 2 workers; each imports transformers and loads the tokenizer")

    if not args.quick and not args.no_profile:
        print("  ... profile (cProfile) of the builds", flush=True)
        raw["profile"] = {n: run_child(SCRIPT, "profile", datasets[n]) for n in ("gsm8k", "math", "r1_8k")}
        for n, prof in raw["profile"].items():
            print(f"  top own time, {n} build ({fmt_s(prof['seconds'])} under cProfile):")
            for r in prof["top_own"][:10]:
                print(f"      {r['own_s']:7.3f} s  {r['calls']:>8}  {r['function']}")


TOPIC = Topic("build", "1. build vs bare tokenizer", section_build, SCRIPT,
              {"bare_e2e": child_bare_e2e, "steady": child_steady, "profile": child_profile})

if __name__ == "__main__":
    main([TOPIC], __doc__.split("\n\n")[0])
