#!/usr/bin/env python
"""Per-step rendering: ``Curriculum.render`` versus re-tokenizing, and the per-row methods.

    python benchmarks/render.py --quick     # 128-row curriculum, fewer calls
    python benchmarks/render.py             # 1,024-row curriculum of ~8k-token R1-style traces

One generation batch of 1,024 prompts (random rows, random training step) with
``Curriculum.render(rows, stages)`` (text) / ``render(rows, stages, "arrays")`` (ids) versus the old
RTPO per-micro-step code (encode the whole trace, keep ``int(f * len)`` tokens, decode,
concatenate); and the per-row methods (``prompt``, ``prompt_ids``, ``hint``, and messages as
``render([i], stage, "messages")[0]``: one row per call, as a user's own dataset class calls them) on
the built-in example, MATH and the R1 rows, next to the batch path's cost per row. Goals:
goals.RENDER_VS_RETOKENIZE, goals.PER_ROW_US (typical rows) and goals.PER_ROW_LONG_US (R1 rows).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import goals
from harness import (
    DATA_VERSION,
    ROOT,
    TOKENIZER,
    Run,
    Topic,
    dataset_specs,
    fmt_s,
    main,
    run_child,
    synthetic_r1_rows,
    timed,
    write_jsonl,
)

SCRIPT = Path(__file__).resolve()
RENDER_ROWS, RENDER_ROWS_QUICK = 1024, 128  # rows of the rendering benchmark's curriculum
MALLOC_TRIM = 256 << 20  # glibc keeps up to this much freed memory instead of returning it to the kernel

# ---------------------------------------------------------------------------------------------
# Children: each prints one JSON result line
# ---------------------------------------------------------------------------------------------


def child_render(p: dict[str, Any]) -> dict[str, Any]:
    """Generation batches of 1,024 prompts at random training steps: Curriculum versus encode/cut/decode.

    Two batch shapes: ``grpo`` is what a GRPO trainer renders, ``batch / G`` distinct problems each
    repeated ``G`` (num_generations) times, every row at the batch's one step (8 such batches at 8
    random steps; times are their mean); ``distinct`` is 1,024 different rows (as many as the
    curriculum has) with a random step each, the worst case. Each batch's time is the best of
    ``reps`` renderings.
    """
    import numpy as np

    import rtpo_data
    from rtpo_data.tokenizer import load_tokenizer

    cur = rtpo_data.Curriculum.open(p["curriculum"])
    n, batch, g = len(cur), p["batch"], p["generations"]
    rng = np.random.default_rng(0)
    shapes: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"grpo": []}
    for step in rng.integers(0, cur.total_steps, size=8).tolist():
        problems = rng.choice(n, size=batch // g, replace=n < batch // g)
        shapes["grpo"].append((np.repeat(problems, g), np.full(batch, cur.stage_at(step))))
    distinct = rng.permutation(n)[:batch]
    steps = rng.integers(0, cur.total_steps, size=len(distinct))
    shapes["distinct"] = [(distinct, np.array([cur.stage_at(int(s)) for s in steps]))]
    cur.render(distinct[:8], shapes["distinct"][0][1][:8])  # warm-up: first use of each column
    out: dict[str, Any] = {"rows": n, "batch": batch, "generations": g}

    def best(fn: Any) -> float:
        return min(timed(fn)[0] for _ in range(p["reps"]))

    for name, batches in shapes.items():
        text_t = [best(lambda: cur.render(i, s)) for i, s in batches]
        ids_t = [best(lambda: cur.render(i, s, "arrays")) for i, s in batches]
        out[name] = {"batches": len(batches), "prompts": len(batches[0][0]),
                     "unique": len(set(zip(batches[0][0].tolist(), batches[0][1].tolist()))),
                     "stages": [int(s[0]) for _, s in batches] if name == "grpo" else None,
                     "text_s": float(np.mean(text_t)), "ids_s": float(np.mean(ids_t)),
                     "chars": float(np.mean([sum(map(len, cur.render(i, s))) for i, s in batches])),
                     "ids": float(np.mean([sum(map(len, cur.render(i, s, "arrays"))) for i, s in batches]))}

    if not p.get("old", True):
        return out
    # The old RTPO code: per prompt and micro-step (the G copies included), encode the whole trace,
    # keep int(f * len) tokens, decode them and concatenate with the prompt. Timed on a subsample of
    # the distinct rows and scaled to the batch: its cost per prompt does not depend on the batch.
    tok = load_tokenizer(TOKENIZER)
    sample = p["old_sample"]
    indices, stages = shapes["distinct"][0]
    traces = [cur.trace(int(i)) for i in indices[:sample]]
    bare = cur.render(indices[:sample], None)
    fracs = [cur.stage_fractions[int(s)] for s in stages[:sample]]
    tok.decode(tok.encode(traces[0])[:10])  # warm-up
    old = []
    for _ in range(p["old_reps"]):
        t0 = time.perf_counter()
        for trace, prompt, f in zip(traces, bare, fracs):
            ids = tok.encode(trace)
            kept = ids[: int(f * len(ids))]
            _ = prompt + tok.decode(kept)
        old.append((time.perf_counter() - t0) * batch / sample)
    out.update(old_batch_s=old, old_sample=sample, mean_trace_tokens=float(np.mean(cur.trace_tokens(indices))))
    return out


def child_perrow(p: dict[str, Any]) -> dict[str, Any]:
    """Per-row methods, one row per call, over random (row, stage) pairs: microseconds per call
    (best of ``reps`` passes over ``calls`` pairs), and the batch path's microseconds per row for
    the same pairs (``render(rows, stages)`` / ``render(rows, stages, "arrays")`` of all of them at
    once). Chat messages have no per-row method: one row's are ``render([i], stage, "messages")[0]``."""
    import numpy as np

    import rtpo_data

    cur = rtpo_data.Curriculum.open(p["curriculum"])
    rng = np.random.default_rng(0)
    calls = p["calls"]
    pairs = list(zip(rng.integers(0, len(cur), calls).tolist(), rng.integers(0, cur.num_stages, calls).tolist()))
    out: dict[str, Any] = {"rows": len(cur), "calls": calls,
                           "mean_prompt_tokens": float(np.mean([len(cur.prompt_ids(i, s)) for i, s in pairs]))}
    prompt, prompt_ids, hint, render = cur.prompt, cur.prompt_ids, cur.hint, cur.render
    passes = {  # one pass: every pair, one call each
        "prompt": lambda pairs: [prompt(i, s) for i, s in pairs],
        "prompt_ids": lambda pairs: [prompt_ids(i, s) for i, s in pairs],
        "hint": lambda pairs: [hint(i, s) for i, s in pairs],
        "messages": lambda pairs: [render([i], s, "messages")[0] for i, s in pairs],
    }
    for name, one_pass in passes.items():
        one_pass(pairs[:16])  # warm-up: first use of each column
        best = min(timed(lambda f=one_pass: f(pairs))[0] for _ in range(p["reps"]))
        out[f"{name}_us"] = best / calls * 1e6
    idx, st = np.array([i for i, _ in pairs]), np.array([s for _, s in pairs])
    out["batch_text_us"] = min(timed(lambda: cur.render(idx, st))[0] for _ in range(p["reps"])) / calls * 1e6
    out["batch_ids_us"] = min(timed(lambda: cur.render(idx, st, "arrays"))[0] for _ in range(p["reps"])) / calls * 1e6
    return out


# ---------------------------------------------------------------------------------------------
# The sections
# ---------------------------------------------------------------------------------------------


def section_render(run: Run) -> None:
    args, work, table, raw = run.args, run.work, run.table, run.raw
    rows = RENDER_ROWS_QUICK if args.quick else RENDER_ROWS
    source = work / f"sources-v{DATA_VERSION}" / f"render-r1_8k-{rows}.jsonl"
    if not source.exists():
        write_jsonl(source, synthetic_r1_rows(rows, 8192, seed=81))
    out = work / "curricula" / f"render-r1_8k-{rows}"
    if not (out / "manifest.json").exists():
        run_child(SCRIPT, "build_e2e", {"source": str(source), "out": str(out), "batch_size": 64})
    g = 8
    table.section(f"2. per-step rendering vs re-tokenizing (1,024 prompts; synthetic R1 ~8k tok, {rows:,} rows)")
    params = {"curriculum": str(out), "batch": 1024, "generations": g, "reps": 7,
              "old_sample": 16 if args.quick else 64, "old_reps": 1 if args.quick else 2}
    r = run_child(SCRIPT, "render", params)
    # The same batches with glibc keeping freed memory (default: it returns the heap's top to the
    # kernel once over 128 KB free, so every batch's fresh strings fault in new zeroed pages).
    kept = run_child(SCRIPT, "render", {**params, "old": False}, env={"MALLOC_TRIM_THRESHOLD_": str(MALLOC_TRIM)})
    raw["render"], raw["render_malloc_trim"] = r, kept
    old = min(r["old_batch_s"])
    table.add("old: encode + cut + decode per prompt, 1,024 prompts", fmt_s(old),
              note=f"timed on {r['old_sample']} rows, x {1024 // r['old_sample']}; {r['mean_trace_tokens']:,.0f} tok/trace")
    labels = {"grpo": f"GRPO batch ({1024 // g} problems x {g} generations)",
              "distinct": f"{r['distinct']['prompts']:,} distinct rows, random steps"}
    for shape, label in labels.items():
        m, mk = r[shape], kept[shape]
        scale = 1024 / m["prompts"]  # the distinct batch is smaller when the curriculum has fewer rows
        where = (f"mean of {m['batches']} batches at stages {m['stages']}" if m["stages"] is not None
                 else f"{m['unique']} distinct prompts")
        for kind, unit in (("text", "chars"), ("ids", "ids")):
            t, tk = m[f"{kind}_s"], mk[f"{kind}_s"]
            table.add(f"{label}: {kind}", fmt_s(t), note=f"{m[unit] / 1e6:.2f}M {unit} out; {where}")
            speedup, speedup_kept = old / (t * scale), old / (tk * scale)
            table.add(f"{label}: {kind}, speed-up", f"{speedup:,.0f}x", goals.RENDER_VS_RETOKENIZE, speedup)
            table.add(f"{label}: {kind}, speed-up, freed memory kept", f"{speedup_kept:,.0f}x",
                      goals.RENDER_VS_RETOKENIZE, speedup_kept,
                      note=f"{fmt_s(tk)}; MALLOC_TRIM_THRESHOLD_={MALLOC_TRIM}")


PER_ROW_CALLS = {"prompt": "prompt(i, stage)", "prompt_ids": "prompt_ids(i, stage)", "hint": "hint(i, stage)",
                 "messages": 'render([i], stage, "messages")[0]'}


def section_perrow(run: Run) -> None:
    """Per-row methods on typical rows (the built-in example, MATH) and on long R1 rows."""
    args, paths, work, table, raw = run.args, run.paths, run.work, run.table, run.raw
    example = ROOT / "rtpo_data" / "examples" / "mixed_math.jsonl"
    sets = {"built-in example": (example, work / "curricula" / "perrow-example"),
            "MATH test": (paths["math"], work / "curricula" / f"perrow-math-{dataset_specs(args.quick)['math'][1]}")}
    r1 = work / "curricula" / f"render-r1_8k-{RENDER_ROWS_QUICK if args.quick else RENDER_ROWS}"
    table.section("2b. per-row methods, one row per call (random rows and stages)")
    raw["perrow"] = {}
    for source, out in sets.values():
        if not (out / "manifest.json").exists():
            run_child(SCRIPT, "build_e2e", {"source": str(source), "out": str(out), "batch_size": 512})
    for label, cur in [*((k, v[1]) for k, v in sets.items()), ("synthetic R1 ~8k tok", r1)]:
        r = run_child(SCRIPT, "perrow", {"curriculum": str(cur), "calls": 2000 if args.quick else 20000, "reps": 5})
        raw["perrow"][label] = r
        goal = goals.PER_ROW_US if label != "synthetic R1 ~8k tok" else goals.PER_ROW_LONG_US
        for name, call in PER_ROW_CALLS.items():
            us = r[f"{name}_us"]
            table.add(f"{label}: {call}", f"{us:.2f} us", goal, us,
                      note=f"{r['mean_prompt_tokens']:,.0f} prompt tokens on average")
        table.add(f"{label}: batch path, per row", f"{r['batch_text_us']:.2f} / {r['batch_ids_us']:.2f} us",
                  note=f'render(rows, stages) / render(rows, stages, "arrays") of the same {r["calls"]:,} pairs '
                       "at once")


def run_render(run: Run) -> None:
    """The batch render, then the per-row methods on the same R1 curriculum and two typical ones."""
    section_render(run)
    section_perrow(run)


TOPIC = Topic("render", "2. per-step rendering", run_render, SCRIPT,
              {"render": child_render, "perrow": child_perrow})

if __name__ == "__main__":
    main([TOPIC], __doc__.split("\n\n")[0])
