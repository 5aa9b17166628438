#!/usr/bin/env python
"""Per-round prompt preparation in TRL: ``RTPOTrainer`` versus the stock ``GRPOTrainer``, side by side.

    python benchmarks/trl_prompts.py            # 1,024 prompts a round, hints of 0, ~1k and ~8k tokens
    python benchmarks/trl_prompts.py --quick    # smaller curricula, fewer repetitions
    python benchmarks/trl_prompts.py --json out.json

What one generation round costs before generation starts, from the rows TRL's dataloader hands
``_generate_and_score_completions`` to the prompt token ids ``_generate`` passes on to HF generation
or vLLM (TRL 1.16), measured on real trainers (a tiny Qwen2 policy; nothing is generated):

- **stock GRPOTrainer, no-hint prompts**: ``[x["prompt"] for x in inputs]``, TRL's ``copy.deepcopy``
  of them in ``_generate``, and TRL's ``_tokenize_prompts`` (``processing_class(text=prompts)``).
- **RTPOTrainer**: its rendering of every row for the step (``rtpo_render``: the prompt texts and
  their stored ``prompt_ids``, the ``rtpo/*`` metrics), then the same list and ``deepcopy``, and its
  ``_tokenize_prompts``, which hands over the stored ids instead of tokenizing; with the ids as
  arrays (HF ``generate``, which makes a tensor of each) and as lists (vLLM, which needs lists).
  ``rtpo_render`` is that step, public on the trainer: timing it times the trainer's own code.
- **text prompts, TRL tokenizes**: the stock ``_tokenize_prompts`` on the hinted texts, which is what
  handing TRL text costs (RTPOTrainer before it handed over ids).

The stock trainer always gets the no-hint prompts; RTPOTrainer gets the same rows with hints of
about 0 (the schedule's last stage), 1k and 8k tokens (stage 0 of curricula whose R1-style traces
are that long). A round holds 1,024 prompts: 128 problems x 8 generations, and 512 x 2 (the most
distinct prompts GRPO allows). Timings are the best of ``--reps`` rounds in which the variants run
one after the other; the tokenizer (Qwen3, ``offline:qwen3``) uses its default thread pool, as in a
training run. Goal: goals.TRL_PROMPTS (RTPOTrainer not slower than the stock trainer).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import goals  # noqa: E402  (the project's goals, beside this file)

TOKENIZER = "offline:qwen3"
TOTAL_STEPS = 100
ROUNDS = ((128, 8), (512, 2))  # (distinct prompts, generations each): 1,024 prompts a round


def build_curricula(work: Path, rows: int) -> dict[int, Path]:
    """Curricula of ``rows`` R1-style problems with traces of about 1k and 8k tokens (built once)."""
    from harness import synthetic_r1_rows, write_jsonl

    from rtpo_data import BuildConfig, build

    out = {}
    for target in (1000, 8000):
        path = work / f"cur-{target}-{rows}"
        if not (path / "manifest.json").is_file():
            source = write_jsonl(work / f"r1-{target}-{rows}.jsonl", synthetic_r1_rows(rows, target, seed=target))
            build(BuildConfig(source=str(source), out=str(path), tokenizer=TOKENIZER, total_steps=TOTAL_STEPS,
                              stages=8, unit="word", overwrite=True))
        out[target] = path
    return out


def trainers(cur_path: Path, tok: Any, work: Path) -> tuple[Any, Any]:
    """A real RTPOTrainer on the curriculum and a real stock GRPOTrainer on its no-hint prompts."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rtpo_data.adapters.trl import RTPOTrainer, curriculum_dataset

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32768,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    args = GRPOConfig(output_dir=str(work / "run"), use_cpu=True, bf16=False, report_to="none", num_generations=8,
                      per_device_train_batch_size=8, max_steps=TOTAL_STEPS, max_completion_length=16,
                      save_strategy="no", disable_tqdm=True)

    def reward(completions: list[Any], **kwargs: Any) -> list[float]:
        return [0.0] * len(completions)

    rtpo = RTPOTrainer(model=Qwen2ForCausalLM(config), reward_funcs=reward, args=args, processing_class=tok,
                       curriculum=cur_path)
    stock = GRPOTrainer(model=Qwen2ForCausalLM(config), reward_funcs=reward, args=args, processing_class=tok,
                        train_dataset=curriculum_dataset(rtpo.curriculum))
    return rtpo, stock


def interleaved_best(reps: int, fns: dict[str, Any]) -> dict[str, tuple[float, Any]]:
    """Best time of each function over ``reps`` rounds that run them one after the other (a shared
    machine's load then weighs on all of them alike), with each one's last result."""
    best: dict[str, tuple[float, Any]] = {name: (float("inf"), None) for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - start
            best[name] = (min(best[name][0], elapsed), out)
    return best


def measure(rtpo: Any, stock: Any, inputs: list[dict[str, Any]], step: int, reps: int) -> dict[str, Any]:
    from trl import GRPOTrainer

    # TRL's own private hook, read on purpose: _tokenize_prompts is where TRL 1.16 tokenizes a round's
    # prompts (GRPOTrainer._generate calls it), so calling it times the stock trainer's own code, and
    # RTPOTrainer's override of it (which hands over the stored ids) times the adapter's.
    def stock_round(rows: list[dict[str, Any]]) -> Any:
        prompts = copy.deepcopy([x["prompt"] for x in rows])  # as GRPOTrainer._generate does
        return GRPOTrainer._tokenize_prompts(stock, prompts)[0]

    def rtpo_round(vllm: bool) -> Any:
        # The id form follows the generation path (lists for vLLM, arrays for HF generate); only that
        # choice reads use_vllm, and nothing is generated here. rtpo_render: see the module docstring.
        rtpo.use_vllm = vllm
        rendered = rtpo.rtpo_render(inputs)
        prompts = copy.deepcopy([x["prompt"] for x in rendered])
        ids = rtpo._tokenize_prompts(prompts)[0]
        return rendered, ids

    rtpo.state.global_step = step
    rtpo.model.train()
    timed = interleaved_best(reps, {"stock": lambda: stock_round(inputs), "hf": lambda: rtpo_round(False),
                                    "vllm": lambda: rtpo_round(True)})
    rtpo.use_vllm = False
    rendered, rtpo_ids = timed["vllm"][1]
    stock_ids = timed["stock"][1]
    # hinted text tokenized by TRL: 100x slower and more, so 3 runs
    text = interleaved_best(min(reps, 3), {"text": lambda: stock_round(rendered)})["text"]
    drift = sum(a != list(b) for a, b in zip(rtpo_ids, text[1]))
    same = all(list(a) == list(b) for a, b in zip(timed["hf"][1][1], rtpo_ids))
    cur = rtpo.curriculum
    index = [x["rtpo_index"] for x in inputs]
    hint = cur.cuts(index, cur.stage_at(step, TOTAL_STEPS))[0]
    t_stock = timed["stock"][0]
    return {
        "prompts": len(inputs),
        "distinct": len(set(index)),
        "hint_tokens_mean": float(hint.mean()),
        "prompt_tokens_mean": sum(map(len, rtpo_ids)) / len(rtpo_ids),
        "no_hint_prompt_tokens_mean": sum(map(len, stock_ids)) / len(stock_ids),
        "stock_ms": t_stock * 1e3,
        "rtpo_hf_ms": timed["hf"][0] * 1e3,
        "rtpo_vllm_ms": timed["vllm"][0] * 1e3,
        "text_ms": text[0] * 1e3,
        "rtpo_hf_over_stock": timed["hf"][0] / t_stock,
        "rtpo_vllm_over_stock": timed["vllm"][0] / t_stock,
        "goal": goals.TRL_PROMPTS.label,
        "rtpo_hf_verdict": goals.TRL_PROMPTS.verdict(timed["hf"][0] / t_stock),
        "rtpo_vllm_verdict": goals.TRL_PROMPTS.verdict(timed["vllm"][0] / t_stock),
        "ids_differing_from_tokenized_text": drift,
        "hf_and_vllm_ids_equal": same,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="128 problems per curriculum, 3 repetitions")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per timing (best is kept); default 7")
    ap.add_argument("--work", type=Path, default=None, help="where the curricula are built (kept between runs)")
    ap.add_argument("--json", type=Path, default=None, help="write every figure as JSON too")
    args = ap.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    rows = 128 if args.quick else 512
    work = args.work or Path(tempfile.gettempdir()) / "rtpo-bench-trl"
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    import trl

    from rtpo_data.tokenizer import load_tokenizer

    tok = load_tokenizer(TOKENIZER)
    paths = build_curricula(work, rows)
    results = []
    rng = np.random.default_rng(0)
    # hint ~0 tokens: the 8k curriculum at its last stage; ~1k and ~8k: stage 0 of the 1k and 8k curricula
    cases = [(0, paths[8000], TOTAL_STEPS), (1000, paths[1000], 0), (8000, paths[8000], 0)]
    for target, path, step in cases:
        rtpo, stock = trainers(path, tok, work)
        dataset = rtpo.train_dataset
        for distinct, generations in ROUNDS:
            if distinct > rows:
                continue
            problems = rng.choice(rows, size=distinct, replace=False)
            inputs = [dataset[int(i)] for i in problems for _ in range(generations)]  # as RepeatSampler orders them
            result = {"hint": target, "generations": generations, **measure(rtpo, stock, inputs, step, reps)}
            results.append(result)
            print(f"hint ~{target:>5} tokens ({result['hint_tokens_mean']:6.0f} mean), {distinct:>3} x {generations}: "
                  f"stock {result['stock_ms']:6.1f} ms, RTPOTrainer HF {result['rtpo_hf_ms']:6.1f} ms "
                  f"({result['rtpo_hf_over_stock']:.2f}x {result['rtpo_hf_verdict']}), vLLM "
                  f"{result['rtpo_vllm_ms']:6.1f} ms ({result['rtpo_vllm_over_stock']:.2f}x "
                  f"{result['rtpo_vllm_verdict']}), text tokenized {result['text_ms']:8.1f} ms", flush=True)
    print("\n| hint tokens (mean) | prompts a round | stock GRPOTrainer, no hint | RTPOTrainer, HF generate "
          "| RTPOTrainer, vLLM | hinted text tokenized by TRL |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['hint_tokens_mean']:,.0f} | {r['distinct']} x {r['generations']} | {r['stock_ms']:.1f} ms | "
              f"{r['rtpo_hf_ms']:.1f} ms (**{r['rtpo_hf_over_stock']:.2f}x**) | "
              f"{r['rtpo_vllm_ms']:.1f} ms (**{r['rtpo_vllm_over_stock']:.2f}x**) | {r['text_ms']:,.0f} ms |")
    verdicts = [r[f"rtpo_{path}_verdict"] for r in results for path in ("hf", "vllm")]
    print(f"\ngoal: {goals.TRL_PROMPTS.describe()}\nmet in {verdicts.count('ok')} of {len(verdicts)} "
          "(HF generate and vLLM, every hint length and round shape)")
    info = {"python": platform.python_version(), "trl": trl.__version__, "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "reps": reps, "rows": rows}
    print(f"\n{info}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
