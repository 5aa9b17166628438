"""What ``rtpo-data inspect`` shows: a summary of a curriculum, one row's exact prompt, a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rtpo_data.curriculum import Curriculum
from rtpo_data.errors import RtpoDataError


def _histogram(values: np.ndarray, bins: int = 20) -> dict[str, list[float]] | None:
    if not len(values):
        return None
    counts, edges = np.histogram(values, bins=bins)
    return {"counts": counts.tolist(), "edges": [round(float(e), 1) for e in edges]}


def summary(cur: Curriculum) -> dict[str, Any]:
    m = cur.manifest
    hints = cur.hint_tokens().astype(np.int64)
    trace_len = cur.lengths("trace_ids")
    trace_total = int(m.stats["trace_tokens"]["total"])
    stages = []
    for s, fraction in enumerate(cur.stage_fractions):
        col = hints[:, s]
        saved = int(col.sum())
        stages.append(
            {
                "stage": s,
                "fraction": fraction,
                "kept_fraction_mean": m.stats["kept_fraction_mean"][s],
                "hint_tokens_mean": round(float(col.mean()), 2) if len(col) else 0.0,
                "hint_tokens_p95": float(np.percentile(col, 95)) if len(col) else 0.0,
                "rows_with_hint": int((col > 0).sum()),
                # Tokens a rollout no longer has to generate, per sample, versus no hint at all.
                "rollout_tokens_saved_mean": round(saved / max(len(col), 1), 2),
                "rollout_tokens_saved_pct": round(100.0 * saved / max(trace_total, 1), 2),
            }
        )
    steps = None
    if cur.total_steps:
        clock = cur.clock()
        steps = [list(clock.steps_of(s)) for s in range(clock.num_stages)]  # the last one is [first, None]
        for row, span in zip(stages, steps):
            row["steps"] = span
    return {
        "path": str(cur.path),
        "source": m.source,
        "tokenizer": {"name": m.tokenizer["name"], "special_prefix_ids": m.tokenizer["special_prefix_ids"]},
        "prompt": m.prompt,
        "unit": m.unit,
        "measure": m.measure,
        "rows": {
            "kept": m.stats["rows_kept"],
            "read": m.stats["rows_read"],
            "dropped": m.stats["rows_dropped"],
        },
        "tokens": {"prompt": m.stats["prompt_tokens"], "trace": m.stats["trace_tokens"]},
        "schedule": {**m.schedule, "num_stages": m.num_stages},
        "stages": stages,
        "checks": m.checks,
        "stats": {"leaks": m.stats.get("leaks", {"on_leak": "keep"})},
        "trace_tokens_hist": _histogram(trace_len),
    }


def row_record(cur: Curriculum, row: int, stage: int, step: int | None = None) -> dict[str, Any]:
    if not 0 <= row < len(cur):
        raise RtpoDataError(f"--row {row}: out of range; this curriculum has rows 0..{len(cur) - 1}.")
    if not 0 <= stage < cur.num_stages:
        raise RtpoDataError(f"--stage {stage}: out of range; this curriculum has stages 0..{cur.num_stages - 1}.")
    k, c = cur.cut(row, stage)
    prompt = cur.prompt(row, stage)
    if k == 0:
        start = end = len(prompt)
    else:
        start = len(cur.table(["prefix"]).column("prefix")[row].as_py())
        end = start + c
    trace_tokens = int(cur.trace_tokens([row])[0])
    return {
        "row": row,
        "row_id": cur.row_id(row),
        "stage": stage,
        "step": step,
        "fraction": cur.stage_fractions[stage],
        "hint_tokens": k,
        "trace_tokens": trace_tokens,
        "hint_chars": c,
        "hint_start": start,
        "hint_end": end,
        "prompt": prompt,
        "prompt_ids": cur.prompt_ids(row, stage),
        "answer": cur.answer(row),
    }


def plot(cur: Curriculum, path: str | Path) -> Path:
    """Schedule curve, mean hint tokens per stage, and the trace-length histogram, in one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RtpoDataError("--plot needs matplotlib: pip install 'rtpo-data[plot]'") from None
    from rtpo_data.schedule import ScheduleConfig, keep_fraction

    m = cur.manifest
    sched = {k: v for k, v in m.schedule.items() if k not in ("num_stages", "total_steps", "stage_fractions", "warnings")}
    config = ScheduleConfig.from_dict(sched)
    hints = cur.hint_tokens()
    trace_len = cur.lengths("trace_ids")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    p = np.linspace(0, 1, 400)
    k = cur.num_stages
    axes[0].plot(p, [keep_fraction(config, x) for x in p], label="schedule f(p)")
    edges = np.arange(k + 1) / k
    axes[0].step(edges, list(cur.stage_fractions) + [cur.stage_fractions[-1]], where="post", label=f"{k} stages")
    axes[0].set(xlabel="training progress", ylabel="kept fraction of the trace", title=f"{config.kind} {config.direction}")
    axes[0].legend()
    axes[1].bar(range(k), hints.mean(axis=0) if len(hints) else np.zeros(k), color="tab:orange")
    axes[1].set(xlabel="stage", ylabel="mean hint tokens", title="hint length per stage")
    axes[2].hist(trace_len, bins=40, color="tab:green")
    axes[2].set(xlabel="trace tokens", ylabel="rows", title=f"trace lengths ({len(cur):,} rows)")
    fig.suptitle(f"{cur.path.name}: unit {m['unit']}, tokenizer {m['tokenizer']['name']}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
