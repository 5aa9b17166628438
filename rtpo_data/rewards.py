"""Rewards for RTPO runs, usable from Python, from TRL by dotted path, and from OpenRLHF.

- :func:`accuracy_reward`: 1.0 when the completion's final answer is mathematically equivalent to
  the gold answer (``math-verify``), else 0.0; ``None`` when the row has no gold answer (TRL skips it).
- :func:`format_reward`: 1.0 when the completion ends with a ``\\boxed{}`` answer and has at most one
  ``</think>``, placed before that answer.

The answer is always taken from the **completion**, never from the prompt: with RTPO the prompt ends
with a hint that continues as the completion, and at stage 0 the hint may already contain the
computation that leads to the answer. A completion that only repeats nothing cannot earn the reward
from what the hint said.

TRL calls ``reward(prompts=, completions=, completion_ids=, trainer_state=, **columns)``: every
dataset column arrives as a keyword list, so the curriculum's ``answer`` column is ``answer=[...]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rtpo_data.traces import last_boxed

_THINK_CLOSE = "</think>"


def _text(completion: Any) -> str:
    """TRL passes text completions as strings and conversational ones as message lists."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def _answer_part(text: str) -> str:
    # After reasoning closes, the answer follows; a completion without </think> is all answer.
    tail = text.rsplit(_THINK_CLOSE, 1)[-1] if _THINK_CLOSE in text else text
    return tail if tail.strip() else text


def _gold_latex(gold: str) -> str:
    gold = gold.strip()
    if "\\boxed" in gold or gold.startswith("$"):
        return gold
    return f"${gold}$"


def score(completion: str, gold: str | None) -> float | None:
    """1.0 / 0.0 for one completion against one gold answer; None without a gold answer."""
    if gold is None or not str(gold).strip():
        return None
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # parsing_timeout/timeout_seconds=None: math-verify's timeouts use SIGALRM, which only works in
    # the main thread; reward functions also run in threads and Ray actors.
    try:
        gold_parsed = parse(_gold_latex(str(gold).replace(",", "")), extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                            parsing_timeout=None)
        if not gold_parsed:
            return 0.0
        answer = _answer_part(completion)
        boxed = last_boxed(answer)
        target = f"$\\boxed{{{boxed[2]}}}$" if boxed else answer
        pred = parse(target.replace(",", "") if boxed else target,
                     extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
                     parsing_timeout=None)
        if not pred:
            return 0.0
        return 1.0 if verify(gold_parsed, pred, timeout_seconds=None) else 0.0
    except Exception:  # math-verify raises on odd LaTeX; a reward must never crash a run
        return 0.0


def make_accuracy_reward(answer_column: str = "answer") -> Callable[..., list[float | None]]:
    """An accuracy reward reading the gold answer from ``answer_column``."""

    def accuracy_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        golds = kwargs.get(answer_column)
        if golds is None:
            golds = next((kwargs[k] for k in ("answer", "solution", "final_answer") if k in kwargs), None)
        if golds is None:
            return [None] * len(completions)
        return [score(_text(c), g) for c, g in zip(completions, golds)]

    return accuracy_reward


accuracy_reward = make_accuracy_reward("answer")


def _format_ok(text: str) -> bool:
    if text.count(_THINK_CLOSE) > 1:
        return False
    boxed = last_boxed(text)
    if boxed is None:
        return False
    start, end, _ = boxed
    if _THINK_CLOSE in text and text.index(_THINK_CLOSE) > start:
        return False
    # Only closing punctuation, math delimiters and whitespace may follow the boxed answer.
    return re.fullmatch(r"[\s$.)\\\]]*", text[end:]) is not None


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion ends with a boxed answer after (at most one) ``</think>``."""
    return [1.0 if _format_ok(_text(c)) else 0.0 for c in completions]


def openrlhf_reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's ``--reward.remote_url file.py`` convention; labels are an answer or a dict
    ``{"answer", "step", "kept_fraction"}`` whose step and fraction are logged."""
    import torch

    completions = [q[len(p):] if q.startswith(p) else q for q, p in zip(queries, prompts)]
    answers = [lab.get("answer") if isinstance(lab, dict) else lab for lab in labels]
    acc = [score(c, a) or 0.0 for c, a in zip(completions, answers)]
    fmt = format_reward(completions)
    logs = {"reward/accuracy": torch.tensor(sum(acc) / max(len(acc), 1)),
            "reward/format": torch.tensor(sum(fmt) / max(len(fmt), 1))}
    for key in ("step", "kept_fraction"):
        values = [float(lab[key]) for lab in labels if isinstance(lab, dict) and key in lab]
        if values:
            logs[f"hint/{key}"] = torch.tensor(sum(values) / len(values))
    rewards = torch.tensor(acc, dtype=torch.float32)
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": logs}
