"""The RTPO-vs-GRPO experiment (experiments/rtpo_vs_grpo.py) end to end at tiny sizes: data through
``rtpo-data build``, a real SFT start, real GRPO steps through ``RTPOTrainer`` for every arm.

What is checked is the path, never an outcome: ``results.json`` has its promised structure, the
hinted prompts reached ``model.generate`` and shrank over the steps (counted in the token ids that
reached it, and equal to what the curriculum says it rendered), and the held-out evaluation saw no
hint at all.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

pytestmark = pytest.mark.trl

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("grpo", "rtpo-linear", "rtpo-staged", "rtpo-mixed", "rtpo-frontier")
POLICY_ARMS = ("rtpo-mixed", "rtpo-frontier")
PER_STEP = ("reward", "all_equal_groups", "generated_tokens", "step_seconds", "stage", "hint_tokens",
            "hint_tokens_at_generation")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("experiment")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "rtpo_vs_grpo.py"), "--out", str(out), "--smoke"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text())


def test_results_have_every_arm_seed_and_measure(smoke) -> None:
    out, results = smoke
    config = results["config"]
    steps, difficulties = config["rl_steps"], [str(d) for d in config["difficulties"]]
    assert set(results["arms"]) == set(ARMS) and set(results["summary"]) == set(ARMS)
    for arm in ARMS:
        assert set(results["arms"][arm]) == {str(s) for s in config["seeds"]}
        for run in results["arms"][arm].values():
            assert run["steps"] == list(range(steps))
            for key in PER_STEP:
                assert len(run[key]) == steps, key
            assert all(0.0 <= x <= 1.0 for x in run["reward"] + run["all_equal_groups"])
            assert all(x > 0 for x in run["generated_tokens"] + run["step_seconds"])
            acc = run["no_hint_accuracy"]
            # before the first step, every eval_every steps, and after the last
            assert acc["steps"] == sorted({0, *range(config["eval_every"], steps + 1, config["eval_every"]), steps})
            assert list(acc["by_difficulty"]) == difficulties
            assert all(len(v) == len(acc["steps"]) for v in [acc["overall"], *acc["by_difficulty"].values()])
    start = results["start_policy"]
    assert list(start["no_hint_accuracy"]["by_difficulty"]) == difficulties
    assert "1" in start["hinted_accuracy"]  # the whole trace as hint
    for name in ("accuracy.png", "generated_tokens.png", "training.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hinted_prompts_reached_generation_and_shrank(smoke) -> None:
    _, results = smoke
    for arm in ("rtpo-linear", "rtpo-staged"):
        for run in results["arms"][arm].values():
            seen, logged = run["hint_tokens_at_generation"], run["hint_tokens"]
            # what reached model.generate is what the curriculum rendered for that step
            assert seen == pytest.approx(logged)
            assert seen[0] > 0 and seen[-1] == 0
            assert all(a >= b for a, b in zip(seen, seen[1:])), seen
            assert run["stage"][0] == 0 and run["stage"][-1] == max(run["stage"]) > 0
            first, last = (run["prompt_at_generation"][str(s)] for s in (run["steps"][0], run["steps"][-1]))
            hint = first.rsplit("<|im_start|>assistant\n", 1)[1]
            assert re.fullmatch(r"(\d+[+-]\d=\d+\n?)+", hint), first  # whole lines of the trace
            assert last.endswith("<|im_start|>assistant\n")
    for run in results["arms"]["grpo"].values():
        assert set(run["hint_tokens_at_generation"]) == {0} and set(run["hint_tokens"]) == {0}
    for arm in POLICY_ARMS:  # a stage per row from the hint policy: what reached generate is what it chose
        for run in results["arms"][arm].values():
            assert run["hint_tokens_at_generation"] == pytest.approx(run["hint_tokens"])
            assert run["hint_tokens_at_generation"][-1] == 0  # the floor: no hint at the horizon
            assert len(run["all_fail_groups"]) == len(run["steps"])
            assert all(0.0 <= x <= 1.0 for x in run["all_fail_groups"])


def test_no_hint_evaluation_saw_no_hint(smoke) -> None:
    _, results = smoke
    assert results["start_policy"]["no_hint_accuracy"]["hint_tokens_max"] == 0
    for arm in ARMS:
        for run in results["arms"][arm].values():
            assert run["no_hint_accuracy"]["hint_tokens_max"] == 0
