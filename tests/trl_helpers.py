"""A tiny real model + tokenizer + curriculum for running TRL's GRPOTrainer on a CPU in seconds."""

from __future__ import annotations

from pathlib import Path

from helpers import make_tokenizer, write_jsonl

WORDS = ["First", "compute", "the", "total", "Then", "subtract", "cost", "Finally", "divide", "by", "two"]


def tiny_rows(n: int = 16) -> list[dict]:
    rows = []
    for i in range(n):
        steps = "\n".join(f"Step {j}: {' '.join(WORDS[(i + j + k) % len(WORDS)] for k in range(4))} {i + j}." for j in range(1, 4))
        rows.append({"id": f"p{i}", "question": f"Problem {i}: what is {i} + {i}?", "solution": f"{steps}\n#### {2 * i}"})
    return rows


def tiny_setup(tmp: Path, *, total_steps: int | None = 6, stages: int = 3, n: int = 16):
    """Returns (curriculum path, tokenizer, model) — all made in-process, nothing downloaded."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok_dir = make_tokenizer(tmp / "tok", vocab_size=600)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    src = write_jsonl(tmp / "rows.jsonl", tiny_rows(n))
    from rtpo_data import BuildConfig, build

    out = tmp / "cur"
    build(BuildConfig(source=str(src), out=str(out), tokenizer=tok_dir, total_steps=total_steps, stages=stages, unit="line"))
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(config)
    return out, tok, model


def grpo_args(out_dir: Path, **overrides):
    from trl import GRPOConfig

    base = dict(output_dir=str(out_dir), bf16=False, use_cpu=True, use_vllm=False, report_to="none",
                num_generations=4, max_completion_length=8, per_device_train_batch_size=8, max_steps=6,
                logging_steps=1, save_strategy="no", seed=7, dataloader_num_workers=0, disable_tqdm=True)
    base.update(overrides)
    return GRPOConfig(**base)


def length_reward(completions, **kwargs):
    return [float(len(c)) / 10.0 for c in completions]
