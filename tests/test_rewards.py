"""Rewards on real GSM8K answers: right, wrong, equivalent forms; the answer comes from the completion only."""

from __future__ import annotations

import pytest

pytest.importorskip("math_verify")

from rtpo_data.rewards import (  # noqa: E402
    accuracy_reward,
    format_reward,
    make_accuracy_reward,
    openrlhf_reward_func,
    score,
)

from helpers import gsm8k_rows  # noqa: E402


def test_real_gsm8k_answers_right_and_wrong():
    rows = gsm8k_rows()[:40]
    golds = [r["short_answer"] for r in rows]
    right = [f"So the total is \\boxed{{{g}}}." for g in golds]
    wrong = [f"So the total is \\boxed{{{int(g.replace(',', '')) + 1}}}." for g in golds]
    assert accuracy_reward(completions=right, answer=golds) == [1.0] * 40
    assert accuracy_reward(completions=wrong, answer=golds) == [0.0] * 40


@pytest.mark.parametrize("completion, gold", [
    ("The answer is \\boxed{1000}.", "1,000"),
    ("thus \\boxed{\\frac{1}{2}}", "0.5"),
    ("It costs $18 in total, so \\boxed{18}", "18"),
    ("reasoning here</think> The result is \\boxed{42}.", "42"),
    ("No box, the final result is 7", "7"),
])
def test_equivalent_forms(completion, gold):
    assert score(completion, gold) == 1.0


def test_answer_only_from_completion_and_trl_convention():
    # The prompt (with its hint) states 18; the completion does not: no reward.
    out = accuracy_reward(prompts=["... so she makes $18. \\boxed{18}"], completions=["I am not sure."], completion_ids=[[1]],
                          trainer_state=None, answer=["18"], rtpo_index=[0])
    assert out == [0.0]
    assert accuracy_reward(completions=[[{"role": "assistant", "content": "\\boxed{5}"}]], answer=["5"]) == [1.0]
    assert accuracy_reward(completions=["\\boxed{5}"], answer=[None]) == [None]
    assert make_accuracy_reward("gold")(completions=["\\boxed{5}"], gold=["5"]) == [1.0]
    assert make_accuracy_reward("gold").__name__ == "accuracy_reward"


def test_garbage_never_raises():
    for junk in ["\\boxed{", "\\frac{{{", "$$$$", "\\boxed{\\sqrt[}", ""]:
        assert score(junk, "3") == 0.0


def test_format_reward():
    assert format_reward(["steps</think>So \\boxed{3}.", "\\boxed{3}", "a</think>b</think>\\boxed{3}",
                          "\\boxed{3} and more text", "\\boxed{3}</think>"]) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_openrlhf_reward_func():
    out = openrlhf_reward_func(queries=["Q? hint \\boxed{4}", "Q2? \\boxed{9}"], prompts=["Q? hint ", "Q2? "],
                               labels=["4", {"answer": "8", "step": 3, "kept_fraction": 0.5}])
    assert out["rewards"].tolist() == [1.0, 0.0] and out["scores"].shape == (2,)
    assert set(out["extra_logs"]) == {"reward/accuracy", "reward/format", "hint/step", "hint/kept_fraction"}
