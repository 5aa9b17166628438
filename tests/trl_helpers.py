"""A tiny real model + tokenizer + curriculum for running TRL's GRPOTrainer on a CPU in seconds."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import BOS_TEMPLATE, make_tokenizer, write_jsonl

WORDS = ["First", "compute", "the", "total", "Then", "subtract", "cost", "Finally", "divide", "by", "two"]


def tiny_rows(n: int = 16, start: int = 0) -> list[dict]:
    """``n`` problems numbered from ``start`` ("Problem i: ..."; id ``p<i>``), each with a 3-line trace."""
    rows = []
    for i in range(start, start + n):
        steps = "\n".join(f"Step {j}: {' '.join(WORDS[(i + j + k) % len(WORDS)] for k in range(4))} {i + j}." for j in range(1, 4))
        rows.append({"id": f"p{i}", "question": f"Problem {i}: what is {i} + {i}?", "solution": f"{steps}\n#### {2 * i}"})
    return rows


def build_curriculum(tmp: Path, name: str, tok_dir: str, *, n: int = 16, start: int = 0, total_steps: int | None = 6,
                     stages: int = 3, unit: str = "line") -> Path:
    """A curriculum of ``tiny_rows(n, start)`` built with the tokenizer folder ``tok_dir``."""
    from rtpo_data import BuildConfig, build

    src = write_jsonl(tmp / f"{name}.jsonl", tiny_rows(n, start))
    out = tmp / name
    build(BuildConfig(source=str(src), out=str(out), tokenizer=tok_dir, total_steps=total_steps, stages=stages, unit=unit))
    return out


def tiny_setup(tmp: Path, *, total_steps: int | None = 6, stages: int = 3, n: int = 16, bos: bool = False,
               unit: str = "line"):
    """Returns (curriculum path, tokenizer, model) — all made in-process, nothing downloaded.

    The model and its tokenizer are saved in ``tmp/"model"``, and the curriculum is built with the
    tokenizer loaded from there, as a user builds it with the policy's tokenizer (transformers loads a
    tokenizer saved beside a Qwen2 config as a ``Qwen2Tokenizer``, whose normalizer and pre-tokenizer
    are not those of the tokenizer trained here). ``bos=True``: a tokenizer that adds a BOS token, with
    a template that writes it (Llama style).
    """
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    template = {"bos": True, "template": BOS_TEMPLATE} if bos else {}
    trained = AutoTokenizer.from_pretrained(make_tokenizer(tmp / "tok", vocab_size=600, **template))
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(trained), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=trained.eos_token_id, pad_token_id=trained.pad_token_id)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(tmp / "model")
    trained.save_pretrained(tmp / "model")
    tok = AutoTokenizer.from_pretrained(tmp / "model")
    out = build_curriculum(tmp, "cur", str(tmp / "model"), n=n, total_steps=total_steps, stages=stages, unit=unit)
    return out, tok, model


def grpo_args(out_dir: Path, **overrides):
    from trl import GRPOConfig

    base = {"output_dir": str(out_dir), "bf16": False, "use_cpu": True, "use_vllm": False, "report_to": "none",
            "num_generations": 4, "max_completion_length": 8, "per_device_train_batch_size": 8, "max_steps": 6,
            "logging_steps": 1, "save_strategy": "no", "seed": 7, "dataloader_num_workers": 0, "disable_tqdm": True}
    base.update(overrides)
    return GRPOConfig(**base)


def length_reward(completions, **kwargs):
    return [float(len(c)) / 10.0 for c in completions]


def even_rows_reward(completions, row_id, **kwargs):
    """A reward that can score only even problems (as if odd ones had no gold answer): None for the others."""
    return [float(len(c)) / 10.0 if int(r[1:]) % 2 == 0 else None for c, r in zip(completions, row_id)]


PROBLEM = re.compile(r"Problem (\d+):")


class GenerateRecorder:
    """Records the token ids that reach the model's ``generate`` (TRL's HF generation path).

    Each record is ``(mode, global_step, problem number, ids)``; the problem number is read from the
    decoded prompt ("Problem i:"), independently of how the ids were made. Left padding is removed
    with the attention mask. Install with ``monkeypatch``; set ``trainer`` before training.
    """

    def __init__(self, monkeypatch, tokenizer) -> None:
        from transformers.generation.utils import GenerationMixin

        self.tokenizer = tokenizer
        self.trainer = None
        self.seen: list[tuple[str, int, int, list[int]]] = []
        original = GenerationMixin.generate
        recorder = self

        def spy(model, *args, **kwargs):
            ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
            trainer = recorder.trainer
            mode = "train" if trainer.model.training else "eval"
            for row, keep in zip(ids.tolist(), mask.bool().tolist()):
                prompt = [t for t, k in zip(row, keep) if k]
                problem = int(PROBLEM.search(recorder.tokenizer.decode(prompt)).group(1))
                recorder.seen.append((mode, int(trainer.state.global_step), problem, prompt))
            return original(model, *args, **kwargs)

        monkeypatch.setattr(GenerationMixin, "generate", spy)

    def train(self) -> list[tuple[int, int, list[int]]]:
        return [(step, problem, ids) for mode, step, problem, ids in self.seen if mode == "train"]

    def eval(self) -> list[tuple[int, int, list[int]]]:
        return [(step, problem, ids) for mode, step, problem, ids in self.seen if mode == "eval"]


class RewardRecorder:
    """A reward function (named ``recorded_reward``) that records every keyword TRL passes it."""

    __name__ = "recorded_reward"

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, prompts, completions, **kwargs):
        state = kwargs.get("trainer_state")
        self.calls.append({"prompts": list(prompts), "step": int(state.global_step), **{
            k: list(v) for k, v in kwargs.items() if isinstance(v, list)}})
        return [float(len(c)) / 10.0 for c in completions]


def record_tokenized(monkeypatch, tok) -> list[str]:
    """Every text ``tok`` is called on from now on (its ``__call__``), in a list that grows."""
    texts: list[str] = []
    original = type(tok).__call__

    def spy(self, text=None, *args, **kwargs):
        texts.extend([text] if isinstance(text, str) else list(text or []))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tok), "__call__", spy)
    return texts
