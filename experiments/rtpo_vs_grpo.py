"""RTPO against GRPO, end to end, on a task where a small model needs its reasoning steps.

    python experiments/rtpo_vs_grpo.py --out runs/rtpo_vs_grpo            # the CPU run (about 40 min, 2 cores)
    python experiments/rtpo_vs_grpo.py --out /tmp/smoke --smoke          # the whole path at tiny sizes
    python experiments/rtpo_vs_grpo.py --out runs/gpu --device cuda      # larger model, data and budget

What happens, in order (every file lands under ``--out``):

1. ``data/``: seeded chained-arithmetic problems (``chain_arithmetic.py``): an SFT set, an RL set
   and a held-out set, difficulty 2..8 operations.
2. ``tokenizer/``: a character-level fast tokenizer with a ChatML template, made in-process.
3. ``curricula/``: the RL and held-out sets go through ``rtpo-data build`` exactly as a user's data
   would, once per arm: ``grpo`` (a constant schedule at 0: the hint is always empty), ``rtpo-linear``
   and ``rtpo-staged``. Two more arms choose stages from the linear curriculum with a hint policy
   (``rtpo_data.policies``): ``rtpo-mixed`` (a stage drawn per row and step) and ``rtpo-frontier``
   (per row, the least hint that still earns reward).
4. ``sft/``: a Qwen2 made from scratch, trained briefly with TRL's ``SFTTrainer`` on full solutions:
   the starting policy of every arm. Its no-hint and hinted accuracy per difficulty are measured.
5. ``runs/ARM-seedS/``: GRPO through ``RTPOTrainer`` from that start, the same budget and the same
   hyperparameters for every arm; per step: reward, share of groups whose rewards are all equal (no
   gradient), generated tokens, step time, stage and hint tokens (those the curriculum logs and those
   counted in the token ids that reached ``model.generate``); every ``eval_every`` steps: greedy
   no-hint accuracy on the held-out set, per difficulty.
6. ``results.json`` and ``accuracy.png``, ``generated_tokens.png``, ``training.png``.

A finished run (``runs/ARM-seedS/metrics.json``) is not run again, so an interrupted experiment
continues where it stopped; ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import multiprocessing
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chain_arithmetic as task  # noqa: E402

ARMS = ("grpo", "rtpo-linear", "rtpo-staged", "rtpo-mixed", "rtpo-frontier")
# The hint policy of each arm (rtpo_data.policies), and the curriculum it draws its stages from.
POLICY = {"rtpo-mixed": "mixed", "rtpo-frontier": "frontier"}
CURRICULUM = {"rtpo-mixed": "rtpo-linear", "rtpo-frontier": "rtpo-linear"}


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes and budgets. Every RL hyperparameter is shared by all arms."""

    # task
    difficulties: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    # The starting policy is taught whole solutions of short problems, and only the last lines of long
    # ones (their first lines given in the prompt): it can continue a partial trace, but has never
    # written a long one from the start.
    sft_whole: tuple[int, ...] = (2, 3, 4)
    sft_endings: tuple[int, ...] = (5, 6, 7, 8)
    sft_ending_lines: tuple[int, ...] = (1, 2)
    sft_rows_per_difficulty: int = 1500
    rl_rows_per_difficulty: int = 400
    eval_rows_per_difficulty: int = 40
    # model
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    # starting policy
    sft_steps: int = 1000
    sft_batch: int = 32
    sft_lr: float = 2e-3
    # RL (all arms)
    rl_steps: int = 150
    prompts_per_step: int = 8
    num_generations: int = 8
    max_completion_length: int = 80
    rl_lr: float = 1e-4
    temperature: float = 1.0
    eval_every: int = 15
    seeds: tuple[int, ...] = (0, 1, 2)
    # curricula: the hint reaches empty at anneal_fraction of the run, then plain GRPO to the end
    anneal_fraction: float = 2 / 3
    linear_stages: int = 6
    staged_fractions: tuple[float, ...] = (1.0, 0.5, 0.25, 0.0)
    # execution
    jobs: int = 2
    device: str = "cpu"


PRESETS = {
    "cpu": Preset(),
    "smoke": Preset(
        sft_rows_per_difficulty=8, rl_rows_per_difficulty=8, eval_rows_per_difficulty=2, hidden=32, layers=1,
        heads=2, sft_steps=4, sft_batch=8, rl_steps=4, prompts_per_step=2, num_generations=4,
        max_completion_length=24, eval_every=2, seeds=(0,), linear_stages=4, jobs=1,
    ),
    "cuda": Preset(
        difficulties=(2, 3, 4, 5, 6, 7, 8, 9, 10), sft_endings=(5, 6, 7, 8, 9, 10), sft_rows_per_difficulty=2000,
        rl_rows_per_difficulty=2000,
        eval_rows_per_difficulty=100, hidden=256, layers=6, heads=8, sft_steps=1500, sft_batch=64,
        rl_steps=400, prompts_per_step=32, num_generations=16, max_completion_length=112, eval_every=25,
        jobs=1, device="cuda",
    ),
}


# ------------------------------------------------------------------------------------------- setup


def _rtpo_data(*args: str) -> None:
    """``rtpo-data ARGS`` as a user runs it (the module form, so the venv's interpreter is used)."""
    proc = subprocess.run([sys.executable, "-m", "rtpo_data.cli.main", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"rtpo-data {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def curriculum_options(arm: str, p: Preset) -> list[str]:
    anneal = max(1, round(p.rl_steps * p.anneal_fraction))
    if arm == "grpo":
        return ["--schedule", "constant", "--value", "0", "--stages", "2", "--total-steps", str(anneal)]
    if arm == "rtpo-linear":
        return ["--schedule", "linear", "--stages", str(p.linear_stages), "--total-steps", str(anneal)]
    if arm == "rtpo-staged":
        fractions = ",".join(f"{f:g}" for f in p.staged_fractions)
        return ["--schedule", "staged", "--fractions", fractions, "--stages", str(len(p.staged_fractions)),
                "--total-steps", str(anneal)]
    raise ValueError(arm)


def prepare(out: Path, p: Preset) -> dict[str, Path]:
    """Data, tokenizer and curricula (skipped when already there)."""
    sizes = {"sft": p.sft_rows_per_difficulty, "rl": p.rl_rows_per_difficulty, "heldout": p.eval_rows_per_difficulty}
    paths = {name: out / "data" / f"{name}.jsonl" for name in sizes}
    for seed, (name, per) in enumerate(sizes.items()):
        if not paths[name].exists():
            difficulties = (*p.sft_whole, *p.sft_endings) if name == "sft" else p.difficulties
            task.write_jsonl(paths[name], task.make_rows(1000 + seed, {d: per for d in difficulties}, name))
    paths["tokenizer"] = out / "tokenizer"
    if not (paths["tokenizer"] / "tokenizer.json").exists():
        task.make_tokenizer(paths["tokenizer"])
    common = ["--tokenizer", str(paths["tokenizer"]), "--keep-column", "difficulty", "--unit", "line",
              "--answer-format", "gsm8k", "--overwrite", "--no-progress"]
    # The held-out set is built with hints too: evaluation renders it without (stage None), and the
    # starting policy is also measured with its first stages (the whole trace, half, a quarter).
    for name, source, arm in [("cur:heldout", paths["heldout"], "rtpo-staged"),
                              *[(f"cur:{a}", paths["rl"], a) for a in ARMS if a not in CURRICULUM]]:
        paths[name] = target = out / "curricula" / name.split(":")[1]
        if not (target / "manifest.json").exists():
            _rtpo_data("build", str(source), "--out", str(target), *common, *curriculum_options(arm, p))
    return paths


# ------------------------------------------------------------------------------------------- evaluation


def assistant_header(tokenizer: Any) -> list[int]:
    return tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]


def hint_tokens_in(ids: list[int], header: list[int]) -> int:
    """Tokens after the last assistant header of a prompt: the hint that reached the model."""
    n = len(header)
    for start in range(len(ids) - n, -1, -1):
        if ids[start:start + n] == header:
            return len(ids) - start - n
    raise ValueError("no assistant header in the prompt")


def greedy_accuracy(model: Any, tokenizer: Any, prompt_ids: list[list[int]], answers: list[str],
                    difficulties: list[int], max_new_tokens: int, batch: int = 256) -> dict[str, Any]:
    """Greedy completions of the given prompts, scored with the training reward, per difficulty."""
    import torch

    from rtpo_data.rewards import accuracy_reward

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    texts: list[str] = []
    generate = type(model).generate  # the class's, not a recording wrapper on the instance
    for a in range(0, len(prompt_ids), batch):
        chunk = prompt_ids[a:a + batch]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, row in enumerate(chunk):
            ids[r, width - len(row):] = torch.tensor(row)
            mask[r, width - len(row):] = 1
        with torch.no_grad():
            out = generate(model, input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                           max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
        texts.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    model.train(was_training)
    scores = accuracy_reward(texts, answer=answers)
    by: dict[str, list[float]] = {}
    for d, s in zip(difficulties, scores):
        by.setdefault(str(d), []).append(float(s))
    return {
        "overall": sum(scores) / len(scores),
        "by_difficulty": {d: sum(v) / len(v) for d, v in sorted(by.items(), key=lambda kv: int(kv[0]))},
    }


class HeldOut:
    """The held-out problems, rendered with no hint from their own curriculum."""

    def __init__(self, path: Path, tokenizer: Any) -> None:
        from rtpo_data import Curriculum

        cur = Curriculum.open(path)
        rows = range(len(cur))
        self.prompt_ids = cur.render(rows, None, output="ids")
        table = cur.table(["answer", "difficulty"]).to_pydict()
        self.answers, self.difficulties = table["answer"], [int(d) for d in table["difficulty"]]
        header = assistant_header(tokenizer)
        self.hint_tokens = max(hint_tokens_in(ids, header) for ids in self.prompt_ids)

    def accuracy(self, model: Any, tokenizer: Any, max_new_tokens: int) -> dict[str, Any]:
        result = greedy_accuracy(model, tokenizer, self.prompt_ids, self.answers, self.difficulties, max_new_tokens)
        return {**result, "hint_tokens_max": self.hint_tokens}


# ------------------------------------------------------------------------------------------- starting policy


def sft(out: Path, paths: dict[str, Path], p: Preset) -> Path:
    """Train the starting policy on full solutions with TRL's SFTTrainer; measure it."""
    target = out / "sft"
    if (target / "start.json").exists():
        return target
    import datasets
    import torch
    from transformers import AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    rows = [json.loads(line) for line in paths["sft"].read_text().splitlines()]
    rng = random.Random(0)
    prompts, completions = [], []
    for r in rows:
        prompt = tok.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                         add_generation_prompt=True)
        solution = r["solution"]
        if r["difficulty"] in p.sft_endings:  # the first lines go to the prompt, as a hint would
            lines = solution.split("\n")
            given = len(lines) - 1 - rng.choice(p.sft_ending_lines)
            prompt += "".join(line + "\n" for line in lines[:given])
            solution = "\n".join(lines[given:])
        prompts.append(prompt)
        completions.append(solution)
    data = datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})
    model = task.make_model(tok, hidden=p.hidden, layers=p.layers, heads=p.heads, seed=0)
    config = SFTConfig(
        output_dir=str(target / "trainer"), max_steps=p.sft_steps, per_device_train_batch_size=p.sft_batch,
        learning_rate=p.sft_lr, lr_scheduler_type="cosine", warmup_steps=max(1, p.sft_steps // 20),
        logging_steps=max(1, p.sft_steps // 10), save_strategy="no", report_to="none", bf16=False,
        use_cpu=p.device == "cpu", seed=0, disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok)
    trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model = trainer.model
    model.save_pretrained(target)
    start = measure_start(model, tok, paths, p)
    start.update(sft_seconds=round(seconds, 1), sft_loss=[h["loss"] for h in trainer.state.log_history if "loss" in h],
                 parameters=sum(t.numel() for t in model.parameters()))
    (target / "start.json").write_text(json.dumps(start, indent=2))
    del trainer
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return target


def measure_start(model: Any, tok: Any, paths: dict[str, Path], p: Preset) -> dict[str, Any]:
    """No-hint accuracy of the starting policy per difficulty, and with the staged curriculum's hints
    (the whole trace, half, a quarter): can it continue a partial trace?"""
    from rtpo_data import Curriculum

    held = HeldOut(paths["cur:heldout"], tok)
    result: dict[str, Any] = {"no_hint_accuracy": held.accuracy(model, tok, p.max_completion_length)}
    cur = Curriculum.open(paths["cur:heldout"])
    rows = range(len(cur))
    result["hinted_accuracy"] = {
        f"{cur.stage_fractions[s]:g}": greedy_accuracy(model, tok, cur.render(rows, s, output="ids"), held.answers,
                                                       held.difficulties, p.max_completion_length)
        for s in range(cur.num_stages - 1)
    }
    return result


# ------------------------------------------------------------------------------------------- one RL run


def run_one(out: Path, arm: str, seed: int, p: Preset, threads: int, tag: str = "") -> dict[str, Any]:
    """GRPO through RTPOTrainer from the starting policy: one arm, one seed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig

    from rtpo_data.adapters.trl import RTPOTrainer
    from rtpo_data.rewards import accuracy_reward

    torch.set_num_threads(threads)
    run_dir = out / "runs" / f"{arm}-seed{seed}{tag}"
    # the curriculum's tokenizer folder: loaded from sft/, whose config.json names a Qwen2 model,
    # transformers would give a Qwen2Tokenizer with a byte-level pre-tokenizer that drops spaces here
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    model = AutoModelForCausalLM.from_pretrained(out / "sft")
    if p.device == "cuda":
        model = model.to("cuda")
    held = HeldOut(out / "curricula" / "heldout", tok)
    header = assistant_header(tok)

    # What reached generation: the token ids TRL hands model.generate, per training step.
    seen: dict[int, list[int]] = {}
    samples: dict[int, str] = {}
    original = model.generate
    step = {"now": 0}

    def recording_generate(*args: Any, **kwargs: Any) -> Any:
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        rows = [ids[r][mask[r].bool()].tolist() for r in range(len(ids))]
        seen.setdefault(step["now"], []).extend(hint_tokens_in(r, header) for r in rows)
        samples.setdefault(step["now"], tok.decode(rows[0]))
        return original(*args, **kwargs)

    model.generate = recording_generate

    evals: list[dict[str, Any]] = []
    times: dict[int, float] = {}

    class Measure(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            evals.append({"step": 0, **held.accuracy(model, tok, p.max_completion_length)})

        def on_step_begin(self, args, state, control, **kwargs):
            step["now"] = state.global_step
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times[state.global_step - 1] = time.perf_counter() - self.t0
            if state.global_step % p.eval_every == 0 or state.global_step == p.rl_steps:
                evals.append({"step": state.global_step, **held.accuracy(model, tok, p.max_completion_length)})

    batch = p.prompts_per_step * p.num_generations
    args = GRPOConfig(
        output_dir=str(run_dir / "trainer"), max_steps=p.rl_steps, per_device_train_batch_size=batch,
        num_generations=p.num_generations, max_completion_length=p.max_completion_length,
        learning_rate=p.rl_lr, lr_scheduler_type="constant", temperature=p.temperature, beta=0.0,
        logging_steps=1, save_strategy="no", report_to="none", bf16=False, use_cpu=p.device == "cpu",
        use_vllm=False, seed=seed, disable_tqdm=True, dataloader_num_workers=0, shuffle_dataset=True,
    )
    trainer = RTPOTrainer(model=model, reward_funcs=accuracy_reward, args=args, processing_class=tok,
                          curriculum=out / "curricula" / CURRICULUM.get(arm, arm), horizon="curriculum",
                          policy=POLICY.get(arm, "global"), callbacks=[Measure()])
    trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    logs = [h for h in trainer.state.log_history if "reward" in h]
    steps = [int(h["step"]) - 1 for h in logs]
    metrics = {
        "arm": arm, "seed": seed, "steps": steps,
        "reward": [h["reward"] for h in logs],
        "all_equal_groups": [h["frac_reward_zero_std"] for h in logs],
        "generated_tokens": [h["completions/mean_length"] * batch for h in logs],
        "step_seconds": [round(times[s], 4) for s in steps],
        "stage": [h.get("rtpo/stage") for h in logs],
        "all_fail_groups": [h.get("rtpo/all_fail_groups") for h in logs],
        "hint_tokens": [h.get("rtpo/hint_tokens") for h in logs],
        "hint_tokens_at_generation": [sum(seen[s]) / len(seen[s]) for s in steps],
        "prompt_at_generation": {str(s): samples[s] for s in (steps[0], steps[-1])},
        "no_hint_accuracy": {
            "steps": [e["step"] for e in evals],
            "overall": [e["overall"] for e in evals],
            "by_difficulty": {d: [e["by_difficulty"][d] for e in evals] for d in evals[0]["by_difficulty"]},
            "hint_tokens_max": max(e["hint_tokens_max"] for e in evals),
        },
        "wall_seconds": round(wall, 1),
        "threads": threads,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir / "trainer", ignore_errors=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def _run_one_job(job: tuple[str, str, int, dict[str, Any], int, str]) -> dict[str, Any]:
    out, arm, seed, preset, threads, tag = job
    return run_one(Path(out), arm, seed, Preset(**{k: tuple(v) if isinstance(v, list) else v for k, v in preset.items()}),
                   threads, tag)


# ------------------------------------------------------------------------------------------- results


def mean_spread(values: list[float]) -> dict[str, float]:
    import numpy as np

    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def summarize(runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    summary = {}
    for arm, seeds in runs.items():
        final = [r["no_hint_accuracy"]["overall"][-1] for r in seeds.values()]
        difficulties = next(iter(seeds.values()))["no_hint_accuracy"]["by_difficulty"]
        summary[arm] = {
            "final_no_hint_accuracy": mean_spread(final),
            "final_no_hint_accuracy_by_difficulty": {
                d: mean_spread([r["no_hint_accuracy"]["by_difficulty"][d][-1] for r in seeds.values()])
                for d in difficulties
            },
            "generated_tokens_total": mean_spread([sum(r["generated_tokens"]) for r in seeds.values()]),
            "train_seconds": mean_spread([sum(r["step_seconds"]) for r in seeds.values()]),
            "all_equal_groups_mean": mean_spread([sum(r["all_equal_groups"]) / len(r["all_equal_groups"])
                                                  for r in seeds.values()]),
            "seeds": len(seeds),
        }
    return summary


def plot(out: Path, runs: dict[str, dict[str, dict[str, Any]]], tag: str = "") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colors = {"grpo": "tab:gray", "rtpo-linear": "tab:blue", "rtpo-staged": "tab:orange"}

    def band(ax, arm, xs, ys, cumulative=False):
        y = np.asarray(ys, dtype=float)
        if cumulative:
            y = np.cumsum(y, axis=1)
        mean = y.mean(axis=0)
        ax.plot(xs, mean, color=colors.get(arm), label=f"{arm} (n={len(y)})")
        if len(y) > 1:
            ax.fill_between(xs, y.min(axis=0), y.max(axis=0), color=colors.get(arm), alpha=0.2)

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, seeds in runs.items():
        rs = list(seeds.values())
        xs = rs[0]["no_hint_accuracy"]["steps"]
        band(axes[0], arm, xs, [r["no_hint_accuracy"]["overall"] for r in rs])
        hardest = max(rs[0]["no_hint_accuracy"]["by_difficulty"], key=int)
        band(axes[1], arm, xs, [r["no_hint_accuracy"]["by_difficulty"][hardest] for r in rs])
    axes[0].set(title="Held-out no-hint greedy accuracy (all difficulties)", xlabel="step", ylabel="accuracy")
    axes[1].set(title=f"Held-out no-hint greedy accuracy ({hardest} operations)", xlabel="step")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out / f"accuracy{tag}.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, seeds in runs.items():
        rs = list(seeds.values())
        band(axes[0], arm, rs[0]["steps"], [r["generated_tokens"] for r in rs])
        band(axes[1], arm, rs[0]["steps"], [r["generated_tokens"] for r in rs], cumulative=True)
    axes[0].set(title="Generated tokens per step", xlabel="step", ylabel="tokens")
    axes[1].set(title="Generated tokens, cumulative", xlabel="step")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out / f"generated_tokens{tag}.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for arm, seeds in runs.items():
        rs = list(seeds.values())
        band(axes[0], arm, rs[0]["steps"], [r["reward"] for r in rs])
        band(axes[1], arm, rs[0]["steps"], [r["all_equal_groups"] for r in rs])
        band(axes[2], arm, rs[0]["steps"], [r["hint_tokens_at_generation"] for r in rs])
    axes[0].set(title="Mean reward (with the step's hint)", xlabel="step")
    axes[1].set(title="Share of groups with all-equal rewards", xlabel="step")
    axes[2].set(title="Hint tokens reaching generation", xlabel="step")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out / f"training{tag}.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def markdown(results: dict[str, Any]) -> str:
    """The figures as Markdown tables (what docs/experiments.md shows)."""

    def pm(s: dict[str, float], scale: float = 1.0, digits: int = 1) -> str:
        return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"

    summary, start = results["summary"], results["start_policy"]
    difficulties = list(start["no_hint_accuracy"]["by_difficulty"])
    seeds = next(iter(summary.values()))["seeds"]
    lines = [
        f"Final no-hint greedy accuracy on held-out problems, % (mean ± std over {seeds} seeds), by number of operations:",
        "",
        "| arm | all | " + " | ".join(difficulties) + " |",
        "| --- | --- | " + " | ".join("---" for _ in difficulties) + " |",
        "| start (SFT) | " + f"{100 * start['no_hint_accuracy']['overall']:.1f} | "
        + " | ".join(f"{100 * start['no_hint_accuracy']['by_difficulty'][d]:.1f}" for d in difficulties) + " |",
    ]
    for arm, s in summary.items():
        by = s["final_no_hint_accuracy_by_difficulty"]
        lines.append(f"| {arm} | {pm(s['final_no_hint_accuracy'], 100)} | "
                     + " | ".join(pm(by[d], 100, 0) for d in difficulties) + " |")
    lines += [
        "",
        "Cost of the RL phase per run (mean ± std over seeds):",
        "",
        "| arm | generated tokens | train seconds | groups with all-equal rewards, % of groups |",
        "| --- | --- | --- | --- |",
    ]
    for arm, s in summary.items():
        lines.append(f"| {arm} | {s['generated_tokens_total']['mean']:,.0f} ± {s['generated_tokens_total']['std']:,.0f} | "
                     f"{pm(s['train_seconds'], 1, 0)} | {pm(s['all_equal_groups_mean'], 100)} |")
    hinted = start["hinted_accuracy"]
    lines += [
        "",
        "Starting policy, greedy accuracy % on the held-out problems with a hint of the given share of the trace:",
        "",
        "| kept share of the trace | " + " | ".join(difficulties) + " |",
        "| --- | " + " | ".join("---" for _ in difficulties) + " |",
    ]
    for share, acc in hinted.items():
        lines.append(f"| {share} | " + " | ".join(f"{100 * acc['by_difficulty'].get(d, float('nan')):.0f}"
                                               for d in difficulties) + " |")
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Folder for data, curricula, runs and results.")
    parser.add_argument("--smoke", action="store_true", help="The whole path at tiny sizes (under a minute).")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: a larger model, more data and steps, on the GPU.")
    parser.add_argument("--seeds", type=int, nargs="+", help="RL seeds (default: the preset's).")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--jobs", type=int, help="Runs in parallel (each with cores / jobs threads).")
    parser.add_argument("--rl-lr", type=float, help="RL learning rate for every arm (default: the preset's); "
                        "runs at another rate than the preset's go to runs/ARM-seedS-lrX.")
    parser.add_argument("--fresh", action="store_true", help="Delete --out first instead of continuing it.")
    a = parser.parse_args(argv)
    if a.smoke and a.device == "cuda":
        parser.error("--smoke and --device cuda: choose one")
    p = PRESETS["smoke" if a.smoke else a.device]
    if a.seeds:
        p = dataclasses.replace(p, seeds=tuple(a.seeds))
    if a.jobs:
        p = dataclasses.replace(p, jobs=a.jobs)
    if a.rl_lr:
        p = dataclasses.replace(p, rl_lr=a.rl_lr)
    tag = "" if p.rl_lr == PRESETS["smoke" if a.smoke else a.device].rl_lr else f"-lr{p.rl_lr:g}"
    if p.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device here. Run the CPU mode instead.")
    out = a.out
    if a.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print(f"[1/4] data, tokenizer and curricula in {out}", flush=True)
    paths = prepare(out, p)
    print("[2/4] starting policy (SFT)", flush=True)
    sft(out, paths, p)
    start = json.loads((out / "sft" / "start.json").read_text())
    print(f"      no-hint accuracy per difficulty: {start['no_hint_accuracy']['by_difficulty']}", flush=True)

    print(f"[3/4] RL: arms {', '.join(a.arms)} x seeds {list(p.seeds)}", flush=True)
    jobs = [(arm, seed) for seed in p.seeds for arm in a.arms
            if not (out / "runs" / f"{arm}-seed{seed}{tag}" / "metrics.json").exists()]
    threads = max(1, (os.cpu_count() or 1) // p.jobs) if p.device == "cpu" else 1
    preset = dataclasses.asdict(p)
    work = [(str(out), arm, seed, preset, threads, tag) for arm, seed in jobs]
    if p.jobs > 1 and len(work) > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(p.jobs, mp_context=context) as pool:
            for m in pool.map(_run_one_job, work):
                print(f"      {m['arm']} seed {m['seed']}: final no-hint accuracy "
                      f"{m['no_hint_accuracy']['overall'][-1]:.3f} in {m['wall_seconds']:.0f}s", flush=True)
    else:
        for job in work:
            m = _run_one_job(job)
            print(f"      {m['arm']} seed {m['seed']}: final no-hint accuracy "
                  f"{m['no_hint_accuracy']['overall'][-1]:.3f} in {m['wall_seconds']:.0f}s", flush=True)

    print("[4/4] results and plots", flush=True)
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for arm in a.arms:
        for seed in p.seeds:
            metrics = out / "runs" / f"{arm}-seed{seed}{tag}" / "metrics.json"
            runs.setdefault(arm, {})[str(seed)] = json.loads(metrics.read_text())
    results = {
        "config": {**preset, "mode": "smoke" if a.smoke else p.device, "threads_per_run": threads},
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", "experiments/rtpo_vs_grpo.py", *(argv if argv is not None else sys.argv[1:])]),
        "start_policy": start,
        "arms": runs,
        "summary": summarize(runs),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / f"results{tag}.json").write_text(json.dumps(results, indent=1))
    (out / f"results{tag}.md").write_text(markdown(results))
    for path in plot(out, runs, tag):
        print(f"      wrote {path}", flush=True)
    for arm, s in results["summary"].items():
        acc, tokens = s["final_no_hint_accuracy"], s["generated_tokens_total"]
        print(f"      {arm:12s} final no-hint accuracy {acc['mean']:.3f} +- {acc['std']:.3f}; "
              f"generated tokens {tokens['mean']:,.0f}", flush=True)
    return results


if __name__ == "__main__":
    main()
